//! The frame decoder, UTF-8 checking and the session state machine: never
//! panic, never hold more than the limits allow, and any split of the input
//! into reads gives the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::deflate::Inflater;
use wschat::protocol::session::{Event, Inflate, Input, Limits, Session};

const LIMITS: Limits = Limits {
    max_message_size: 4096,
    in_place_max: 64 * 1024,
};

/// Feeds `data` in pieces of `step` bytes, carrying unused bytes over the
/// way a connection does; returns the events.
fn run(data: &[u8], step: usize, inflate: Inflate) -> Vec<Event> {
    let mut session = Session::with_inflate(inflate);
    let mut events = Vec::new();
    let mut carried: Vec<u8> = Vec::new();
    let mut inflater = Inflater::new();
    for piece in data.chunks(step.max(1)) {
        carried.extend_from_slice(piece);
        let mut input = Input {
            limits: LIMITS,
            inflater: &mut inflater,
            spare: &mut Vec::new(),
        };
        let mut fresh = Vec::new();
        let used = session.receive(&mut carried, &mut input, &mut fresh);
        assert!(used <= carried.len());
        // In-place payloads point into `carried`, which changes next.
        events.extend(fresh.into_iter().map(|e| e.into_owned(&carried)));
        carried.drain(..used);
        // Only an unfinished header or control frame is ever kept.
        assert!(carried.len() <= 14 + 125, "kept {} bytes", carried.len());
    }
    for event in &events {
        if let Event::Message { payload, .. } = event {
            assert!(payload.bytes(&[]).len() <= LIMITS.max_message_size);
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    // The high bits choose whether permessage-deflate was negotiated.
    let inflate = match step >> 6 {
        0 => Inflate::Off,
        1 => Inflate::On { reset: false },
        _ => Inflate::On { reset: true },
    };
    let whole = run(rest, rest.len().max(1), inflate);
    let pieces = run(rest, usize::from(step % 16) + 1, inflate);
    assert_eq!(whole, pieces);
});
