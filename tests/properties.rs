//! Property tests of the codecs: encode/decode round trips, and any split
//! of a byte stream into reads gives the same result.

use proptest::prelude::*;
use wschat::protocol::deflate::Inflater;
use wschat::protocol::frame::{decode_header, FrameHeader, OpCode};
use wschat::protocol::mask::apply_mask;
use wschat::protocol::session::{Event, Input, Limits, Session};
use wschat::protocol::utf8::Utf8Validator;

const LIMITS: Limits = Limits {
    max_message_size: 1 << 20,
    in_place_max: 64 * 1024,
};

fn opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

fn masked_frame(fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut h = FrameHeader::new(fin, opcode, payload.len() as u64);
    h.mask = Some(mask);
    let mut out = Vec::new();
    h.encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
    out
}

/// Feeds `stream` to a fresh session in reads that end at `cuts`.
fn events_with_cuts(stream: &[u8], cuts: &[usize]) -> Vec<Event> {
    let mut session = Session::new();
    let mut events = Vec::new();
    let mut carried = Vec::new();
    let mut inflater = Inflater::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let end = end.clamp(start, stream.len());
        carried.extend_from_slice(&stream[start..end]);
        let mut input = Input {
            limits: LIMITS,
            inflater: &mut inflater,
            spare: &mut Vec::new(),
        };
        let mut fresh = Vec::new();
        let used = session.receive(&mut carried, &mut input, &mut fresh);
        // In-place payloads point into `carried`, which changes next.
        events.extend(fresh.into_iter().map(|e| e.into_owned(&carried)));
        carried.drain(..used);
        start = end;
    }
    assert!(carried.is_empty(), "complete frames are used whole");
    events
}

proptest! {
    #[test]
    fn header_round_trips(
        fin: bool, rsv1: bool, opcode in opcode(), len in any::<u64>().prop_map(|l| l >> 1),
        mask in proptest::option::of(any::<[u8; 4]>()),
    ) {
        let mut h = FrameHeader::new(fin, opcode, len);
        h.rsv1 = rsv1;
        h.mask = mask;
        let mut bytes = Vec::new();
        h.encode(&mut bytes);
        prop_assert_eq!(bytes.len(), h.encoded_len());
        prop_assert_eq!(decode_header(&bytes), Ok(Some((h, bytes.len()))));
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode_header(&bytes[..cut]), Ok(None));
        }
    }

    #[test]
    fn any_split_of_a_frame_stream_gives_the_same_events(
        messages in proptest::collection::vec(
            (any::<bool>(), "\\PC{0,40}", proptest::collection::vec(any::<u8>(), 0..300), any::<[u8; 4]>()),
            1..6,
        ),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for (text, s, bytes, mask) in &messages {
            if *text {
                // A text message in two fragments with a ping between.
                let b = s.as_bytes();
                let mid = b.len() / 2;
                stream.extend(masked_frame(false, OpCode::Text, &b[..mid], *mask));
                stream.extend(masked_frame(true, OpCode::Ping, b"p", *mask));
                stream.extend(masked_frame(true, OpCode::Continuation, &b[mid..], *mask));
            } else {
                stream.extend(masked_frame(true, OpCode::Binary, bytes, *mask));
            }
        }
        let whole = events_with_cuts(&stream, &[]);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(events_with_cuts(&stream, &cuts), whole);
    }

    #[test]
    fn utf8_validation_agrees_with_std_on_any_split(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(bytes.len() + 1);
        let mut v = Utf8Validator::new();
        let ok = v.feed(&bytes[..cut]).is_ok() && v.feed(&bytes[cut..]).is_ok() && v.finish().is_ok();
        prop_assert_eq!(ok, std::str::from_utf8(&bytes).is_ok());
    }
}
