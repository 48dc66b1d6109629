//! Request-head handling: finding the end incrementally, parsing, routing
//! and the upgrade checks never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::handshake::{check_request_line, find_head_end, parse_head};
use wschat::server::router::{route, Routes};
use wschat::Config;

fuzz_target!(|data: &[u8]| {
    // Feed the head in pieces, as reads would deliver it.
    let mut scanned = 0;
    let mut end = None;
    for cut in (0..=data.len()).step_by(7) {
        if let Some(e) = find_head_end(&data[..cut], scanned) {
            end = Some(e);
            break;
        }
        scanned = cut;
    }
    let end = end.or_else(|| find_head_end(data, scanned));
    if let Some(nl) = data.iter().position(|&b| b == b'\n') {
        let _ = check_request_line(&data[..=nl]);
    }
    if let Some(end) = end {
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
