//! Autobahn-style conformance, section 5: fragmentation, against `/echo`.

mod support;

use std::time::Duration;

use support::{client_frame, op, start_server, test_config, RawClient, TestServer};

/// How long a test waits to be sure that nothing more comes.
const QUIET: Duration = Duration::from_millis(300);

/// Upper bound for an answer that must come "immediately".
const PROMPT: Duration = Duration::from_secs(2);

fn echo() -> (TestServer, RawClient) {
    let server = start_server(test_config());
    let client = RawClient::connect(server.addr(), "/echo");
    (server, client)
}

/// Writes `bytes`, stopping quietly if the server has already closed.
fn send_ignoring_errors(c: &mut RawClient, bytes: &[u8], chunk: usize) {
    for part in bytes.chunks(chunk) {
        if c.try_send_raw(part).is_err() {
            return;
        }
    }
}

#[test]
fn s5_1_fragmented_ping_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(false, 0, op::PING, b"fragment1", true);
    c.send_frame(true, 0, op::CONTINUATION, b"fragment2", true);
    c.expect_close(1002);
}

#[test]
fn s5_2_fragmented_pong_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(false, 0, op::PONG, b"fragment1", true);
    c.send_frame(true, 0, op::CONTINUATION, b"fragment2", true);
    c.expect_close(1002);
}

#[test]
fn s5_fragmented_close_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(false, 0, op::CLOSE, &1000u16.to_be_bytes(), true);
    c.expect_close(1002);
}

#[test]
fn s5_3_text_in_two_fragments_echoed_as_one_frame() {
    let (_server, mut c) = echo();
    c.send_frame(false, 0, op::TEXT, b"fragment1", true);
    c.send_frame(true, 0, op::CONTINUATION, b"fragment2", true);
    c.expect_text("fragment1fragment2");
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
}

#[test]
fn s5_4_text_in_two_fragments_with_delay_between_echoed() {
    let (_server, mut c) = echo();
    c.send_frame(false, 0, op::TEXT, b"fragment1", true);
    c.expect_no_frame_within(QUIET);
    c.send_frame(true, 0, op::CONTINUATION, b"fragment2", true);
    c.expect_text("fragment1fragment2");
}

#[test]
fn s5_5_text_in_two_fragments_sent_octet_wise_echoed() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::TEXT, b"fragment1");
    bytes.extend(client_frame(true, op::CONTINUATION, b"fragment2"));
    c.send_in_chunks_paced(&bytes, 1, Duration::from_millis(1));
    c.expect_text("fragment1fragment2");
}

#[test]
fn s5_6_ping_between_fragments_answered_then_message_echoed() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::TEXT, b"fragment1");
    bytes.extend(client_frame(true, op::PING, b"ping payload"));
    bytes.extend(client_frame(true, op::CONTINUATION, b"fragment2"));
    c.send_raw(&bytes);
    c.expect_pong(b"ping payload");
    c.expect_text("fragment1fragment2");
}

#[test]
fn s5_7_ping_between_fragments_answered_before_message_completes() {
    let (_server, mut c) = echo();
    c.send_frame(false, 0, op::TEXT, b"fragment1", true);
    c.send_ping(b"ping payload");
    // The pong must not wait for the end of the message.
    let pong = c.read_frame_within(PROMPT);
    assert_eq!(
        pong.to_bytes(),
        support::server_frame(true, op::PONG, b"ping payload")
    );
    c.send_frame(true, 0, op::CONTINUATION, b"fragment2", true);
    c.expect_text("fragment1fragment2");
}

#[test]
fn s5_8_ping_between_fragments_sent_octet_wise() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::TEXT, b"fragment1");
    bytes.extend(client_frame(true, op::PING, b"ping payload"));
    bytes.extend(client_frame(true, op::CONTINUATION, b"fragment2"));
    c.send_in_chunks_paced(&bytes, 1, Duration::from_millis(1));
    c.expect_pong(b"ping payload");
    c.expect_text("fragment1fragment2");
}

#[test]
fn s5_pong_between_fragments_is_ignored() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::BINARY, b"fragment1");
    bytes.extend(client_frame(true, op::PONG, b"unsolicited"));
    bytes.extend(client_frame(true, op::CONTINUATION, b"fragment2"));
    c.send_raw(&bytes);
    c.expect_binary(b"fragment1fragment2");
    c.expect_no_frame_within(QUIET);
}

#[test]
fn s5_9_final_continuation_without_start_closes_1002() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(true, op::CONTINUATION, b"non-continuation payload");
    bytes.extend(client_frame(true, op::TEXT, b"Hello, world!"));
    c.send_raw(&bytes);
    c.expect_close(1002);
}

#[test]
fn s5_10_final_continuation_without_start_frame_by_frame_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, op::CONTINUATION, b"non-continuation payload", true);
    let rest = client_frame(true, op::TEXT, b"Hello, world!");
    send_ignoring_errors(&mut c, &rest, rest.len());
    c.expect_close(1002);
}

#[test]
fn s5_11_final_continuation_without_start_octet_wise_closes_1002() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(true, op::CONTINUATION, b"non-continuation payload");
    bytes.extend(client_frame(true, op::TEXT, b"Hello, world!"));
    send_ignoring_errors(&mut c, &bytes, 1);
    c.expect_close(1002);
}

#[test]
fn s5_12_nonfinal_continuation_without_start_closes_1002() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::CONTINUATION, b"non-continuation payload");
    bytes.extend(client_frame(true, op::TEXT, b"Hello, world!"));
    c.send_raw(&bytes);
    c.expect_close(1002);
}

#[test]
fn s5_13_nonfinal_continuation_without_start_frame_by_frame_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(
        false,
        0,
        op::CONTINUATION,
        b"non-continuation payload",
        true,
    );
    let rest = client_frame(true, op::TEXT, b"Hello, world!");
    send_ignoring_errors(&mut c, &rest, rest.len());
    c.expect_close(1002);
}

#[test]
fn s5_14_nonfinal_continuation_without_start_octet_wise_closes_1002() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::CONTINUATION, b"non-continuation payload");
    bytes.extend(client_frame(true, op::TEXT, b"Hello, world!"));
    send_ignoring_errors(&mut c, &bytes, 1);
    c.expect_close(1002);
}

#[test]
fn s5_15_new_text_while_fragmented_message_open_closes_1002_after_first_echo() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::TEXT, b"fragment1");
    bytes.extend(client_frame(true, op::CONTINUATION, b"fragment2"));
    bytes.extend(client_frame(false, op::CONTINUATION, b"fragment3"));
    bytes.extend(client_frame(true, op::TEXT, b"fragment4"));
    c.send_raw(&bytes);
    c.expect_text("fragment1fragment2");
    c.expect_close(1002);
}

#[test]
fn s5_16_continuation_then_message_twice_closes_1002() {
    let (_server, mut c) = echo();
    let mut bytes = Vec::new();
    for _ in 0..2 {
        bytes.extend(client_frame(false, op::CONTINUATION, b"fragment1"));
        bytes.extend(client_frame(false, op::TEXT, b"fragment2"));
        bytes.extend(client_frame(true, op::CONTINUATION, b"fragment3"));
    }
    c.send_raw(&bytes);
    c.expect_close(1002);
}

#[test]
fn s5_17_final_continuation_then_message_twice_closes_1002() {
    let (_server, mut c) = echo();
    let mut bytes = Vec::new();
    for _ in 0..2 {
        bytes.extend(client_frame(true, op::CONTINUATION, b"fragment1"));
        bytes.extend(client_frame(false, op::TEXT, b"fragment2"));
        bytes.extend(client_frame(true, op::CONTINUATION, b"fragment3"));
    }
    c.send_raw(&bytes);
    c.expect_close(1002);
}

#[test]
fn s5_18_text_fragment_followed_by_new_text_closes_1002() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::TEXT, b"fragment1");
    bytes.extend(client_frame(true, op::TEXT, b"fragment2"));
    c.send_raw(&bytes);
    c.expect_close(1002);
}

#[test]
fn s5_binary_fragment_followed_by_new_binary_closes_1002() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::BINARY, b"fragment1");
    bytes.extend(client_frame(true, op::BINARY, b"fragment2"));
    c.send_raw(&bytes);
    c.expect_close(1002);
}

/// Autobahn 5.19 / 5.20: five fragments with pings in between and pauses;
/// each pong must come while the message is still open.
fn five_fragments_with_pings(octet_wise: bool) {
    let (_server, mut c) = echo();
    let send = |c: &mut RawClient, bytes: Vec<u8>| {
        if octet_wise {
            c.send_in_chunks(&bytes, 1);
        } else {
            c.send_raw(&bytes);
        }
    };
    send(&mut c, client_frame(false, op::TEXT, b"fragment1"));
    send(&mut c, client_frame(false, op::CONTINUATION, b"fragment2"));
    send(&mut c, client_frame(true, op::PING, b"pongme 1!"));
    let pong = c.read_frame_within(PROMPT);
    assert_eq!(
        pong.to_bytes(),
        support::server_frame(true, op::PONG, b"pongme 1!")
    );
    send(&mut c, client_frame(false, op::CONTINUATION, b"fragment3"));
    c.expect_no_frame_within(QUIET);
    send(&mut c, client_frame(false, op::CONTINUATION, b"fragment4"));
    send(&mut c, client_frame(true, op::PING, b"pongme 2!"));
    let pong = c.read_frame_within(PROMPT);
    assert_eq!(
        pong.to_bytes(),
        support::server_frame(true, op::PONG, b"pongme 2!")
    );
    send(&mut c, client_frame(true, op::CONTINUATION, b"fragment5"));
    c.expect_text("fragment1fragment2fragment3fragment4fragment5");
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
}

#[test]
fn s5_19_five_fragments_with_pings_and_pauses_pongs_come_promptly() {
    five_fragments_with_pings(false);
}

#[test]
fn s5_20_five_fragments_with_pings_octet_wise() {
    five_fragments_with_pings(true);
}

#[test]
fn s5_binary_in_many_fragments_including_empty_ones_echoed() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::BINARY, b"");
    bytes.extend(client_frame(false, op::CONTINUATION, &[0x00, 0x01]));
    bytes.extend(client_frame(false, op::CONTINUATION, b""));
    bytes.extend(client_frame(false, op::CONTINUATION, &[0xfe, 0xff]));
    bytes.extend(client_frame(true, op::CONTINUATION, b""));
    c.send_raw(&bytes);
    c.expect_binary(&[0x00, 0x01, 0xfe, 0xff]);
}

#[test]
fn s5_empty_fragmented_text_echoed_as_empty_text() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::TEXT, b"");
    bytes.extend(client_frame(true, op::CONTINUATION, b""));
    c.send_raw(&bytes);
    c.expect_text("");
}

#[test]
fn s5_fragmented_messages_back_to_back_echoed_in_order() {
    let (_server, mut c) = echo();
    let mut bytes = Vec::new();
    for i in 0..5 {
        bytes.extend(client_frame(
            false,
            op::TEXT,
            format!("msg{i}-a").as_bytes(),
        ));
        bytes.extend(client_frame(
            true,
            op::CONTINUATION,
            format!("-b{i}").as_bytes(),
        ));
        bytes.extend(client_frame(true, op::BINARY, &[i]));
    }
    c.send_raw(&bytes);
    for i in 0..5u8 {
        c.expect_text(&format!("msg{i}-a-b{i}"));
        c.expect_binary(&[i]);
    }
}

#[test]
fn s5_fragmented_message_with_frames_split_across_writes_echoed() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(false, op::TEXT, &[b'a'; 300]);
    bytes.extend(client_frame(false, op::CONTINUATION, &[b'b'; 70_000]));
    bytes.extend(client_frame(true, op::PING, b"in between"));
    bytes.extend(client_frame(true, op::CONTINUATION, &[b'c'; 5]));
    c.send_in_chunks(&bytes, 7);
    c.expect_pong(b"in between");
    let mut want = vec![b'a'; 300];
    want.extend(vec![b'b'; 70_000]);
    want.extend(vec![b'c'; 5]);
    c.expect_frame(op::TEXT, &want);
}

#[test]
fn s5_new_connection_per_case_does_not_leak_fragment_state() {
    let server = start_server(test_config());
    let mut a = RawClient::connect(server.addr(), "/echo");
    a.send_frame(false, 0, op::TEXT, b"open-on-a", true);
    let mut b = RawClient::connect(server.addr(), "/echo");
    b.send_frame(true, 0, op::CONTINUATION, b"x", true);
    b.expect_close(1002);
    a.send_frame(true, 0, op::CONTINUATION, b"-closed", true);
    a.expect_text("open-on-a-closed");
}
