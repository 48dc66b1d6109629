//! Property-style conformance: the server's answer to a byte stream must not
//! depend on how the stream is cut into writes.
//!
//! One fixed stream (handshake, a text message, a fragmented binary message
//! with a ping inside, a ping, a text message split inside a code point, a
//! 16-bit-length message, and a close) is sent whole, one byte per write,
//! cut into two writes at every offset, and cut at random offsets; every
//! time the bytes after the 101 head must be exactly the expected frames.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{
    check_101, close_payload, encode_frame, handshake_request, hex, op, server_frame, start_server,
    test_config, RawClient, Response,
};

/// RFC 6455 section 1.3's sample key.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Fixed masking keys, so the stream is the same on every run.
const MASKS: [[u8; 4]; 4] = [
    [0x37, 0xfa, 0x21, 0x3d],
    [0x00, 0x00, 0x00, 0x00],
    [0xff, 0x80, 0x01, 0x7f],
    [0x12, 0x34, 0x56, 0x78],
];

/// The client stream and the server bytes expected after the 101 head.
fn stream_and_expected() -> (Vec<u8>, Vec<u8>) {
    let long = vec![b'L'; 200];
    let mut n = 0;
    let mut frame = |fin: bool, opcode: u8, payload: &[u8]| {
        n += 1;
        encode_frame(fin, 0, opcode, payload, Some(MASKS[n % MASKS.len()]))
    };
    let mut s = handshake_request("127.0.0.1", "/echo", KEY, &[]);
    s.extend(frame(true, op::TEXT, b"Hello"));
    s.extend(frame(false, op::BINARY, &[1, 2, 3]));
    s.extend(frame(true, op::PING, b"mid"));
    s.extend(frame(false, op::CONTINUATION, &[4, 5]));
    s.extend(frame(true, op::CONTINUATION, &[6]));
    s.extend(frame(true, op::PING, b""));
    s.extend(frame(false, op::TEXT, b"\xce\xba\xe1"));
    s.extend(frame(true, op::CONTINUATION, b"\xbd\xb9!"));
    s.extend(frame(true, op::TEXT, &long));
    s.extend(frame(true, op::CLOSE, &close_payload(Some(1000), b"bye")));

    let mut e = server_frame(true, op::TEXT, b"Hello");
    e.extend(server_frame(true, op::PONG, b"mid"));
    e.extend(server_frame(true, op::BINARY, &[1, 2, 3, 4, 5, 6]));
    e.extend(server_frame(true, op::PONG, b""));
    e.extend(server_frame(true, op::TEXT, "\u{3ba}\u{1f79}!".as_bytes()));
    e.extend(server_frame(true, op::TEXT, &long));
    e.extend(server_frame(true, op::CLOSE, &1000u16.to_be_bytes()));
    (s, e)
}

/// Sends `stream` cut at `cuts` (ascending offsets), pausing briefly between
/// writes, and returns everything the server sent until it closed.
fn run_cut(addr: SocketAddr, stream: &[u8], cuts: &[usize], pause: Duration) -> Vec<u8> {
    let mut c = RawClient::connect_tcp(addr);
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        if cut > start {
            if start > 0 && !pause.is_zero() {
                std::thread::sleep(pause);
            }
            c.send_raw(&stream[start..cut]);
            start = cut;
        }
    }
    c.read_until_eof(Duration::from_secs(10))
}

/// Checks the 101 head, then compares the frames byte for byte; the close
/// frame may carry a reason, so it is compared by code.
fn check_response(response: &[u8], expected: &[u8], what: &str) {
    let head = Response::parse(response)
        .unwrap_or_else(|| panic!("{what}: no HTTP head in [{}]", hex(response)));
    assert_eq!(head.status, 101, "{what}: {:?}", head.status_line());
    check_101(&head, KEY);
    let frames = support::decode_all(&head.body);
    let want = support::decode_all(expected);
    assert_eq!(
        frames.len(),
        want.len(),
        "{what}: frame count\n got:  {frames:?}\n want: {want:?}"
    );
    for (got, want) in frames.iter().zip(&want) {
        if want.opcode == op::CLOSE {
            assert_eq!(got.opcode, op::CLOSE, "{what}: {got:?}");
            assert_eq!(got.close_code(), want.close_code(), "{what}: {got:?}");
        } else {
            assert_eq!(got, want, "{what}");
        }
    }
}

#[test]
fn stream_sent_whole_gives_expected_frames() {
    let server = start_server(test_config());
    let (stream, expected) = stream_and_expected();
    let got = run_cut(server.addr(), &stream, &[], Duration::ZERO);
    check_response(&got, &expected, "whole");
}

#[test]
fn stream_sent_one_byte_per_write_gives_same_frames() {
    let server = start_server(test_config());
    let (stream, expected) = stream_and_expected();
    let cuts: Vec<usize> = (1..stream.len()).collect();
    let got = run_cut(server.addr(), &stream, &cuts, Duration::from_micros(300));
    check_response(&got, &expected, "one byte per write");
}

#[test]
fn stream_cut_into_two_writes_at_every_offset_gives_same_frames() {
    let server = start_server(test_config());
    let (stream, expected) = stream_and_expected();
    for cut in 1..stream.len() {
        let got = run_cut(server.addr(), &stream, &[cut], Duration::from_millis(1));
        check_response(&got, &expected, &format!("cut at {cut}"));
    }
}

#[test]
fn stream_cut_at_random_offsets_gives_same_frames() {
    use proptest::test_runner::{Config, TestRunner};

    let server = start_server(test_config());
    let addr = server.addr();
    let (stream, expected) = stream_and_expected();
    let len = stream.len();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::btree_set(1..len, 0..12), |cuts| {
            let cuts: Vec<usize> = cuts.into_iter().collect();
            let got = run_cut(addr, &stream, &cuts, Duration::from_micros(200));
            check_response(&got, &expected, &format!("cuts {cuts:?}"));
            Ok(())
        })
        .unwrap();
}

#[test]
fn handshake_head_alone_then_frames_in_later_write() {
    let server = start_server(test_config());
    let (stream, expected) = stream_and_expected();
    let head_end = stream.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut c = RawClient::connect_tcp(server.addr());
    c.send_raw(&stream[..head_end]);
    let head = c.read_http_head();
    check_101(&head, KEY);
    c.send_raw(&stream[head_end..]);
    let rest = c.read_until_eof(Duration::from_secs(10));
    let mut full = head.head.into_bytes();
    full.extend(rest);
    check_response(&full, &expected, "head then frames");
}
