//! Request-head handling: reading the head incrementally, parsing, routing
//! and the upgrade checks never panic, whatever the bytes, and the reader
//! finds the same end (or the same error) however the bytes are split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::handshake::{parse_head, HeadReader, HeadStatus};
use wschat::server::router::{route, Routes};
use wschat::Config;

const MAX_HEAD: usize = 8 * 1024;

/// Feeds `data` as reads of `step` bytes would deliver it.
fn read_in_steps(data: &[u8], step: usize) -> Result<Option<usize>, String> {
    let mut reader = HeadReader::new();
    let mut len = 0;
    loop {
        len = (len + step).min(data.len());
        match reader.read(&data[..len], MAX_HEAD) {
            Ok(HeadStatus::Complete(end)) => return Ok(Some(end)),
            Ok(HeadStatus::Partial) if len == data.len() => return Ok(None),
            Ok(HeadStatus::Partial) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = read_in_steps(data, data.len().max(1));
    let split = read_in_steps(data, 7);
    // A refusal may come earlier in pieces (the request line alone), but a
    // complete head is found at the same place.
    if let (Ok(Some(a)), Ok(Some(b))) = (&whole, &split) {
        assert_eq!(a, b);
    }
    if let Ok(Some(end)) = whole {
        assert!(end <= data.len());
        if let Ok(head) = parse_head(&data[..end]) {
            let config = Config {
                allowed_origins: vec!["https://a.example".to_string()],
                ..Config::default()
            };
            let _ = route(&head, &Routes::from_config(&config));
        }
    }
});
