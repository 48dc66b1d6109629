//! Autobahn-style conformance, section 7: the closing handshake, against
//! `/echo`, plus the server's own close timeout and graceful shutdown.

mod support;

use std::net::Shutdown;
use std::time::Duration;

use support::{
    check_all, client_frame, close_payload, op, start_server, test_config, RawClient, TestServer,
};

/// How long a test waits to be sure that nothing more comes.
const QUIET: Duration = Duration::from_millis(300);

fn echo() -> (TestServer, RawClient) {
    let server = start_server(test_config());
    let client = RawClient::connect(server.addr(), "/echo");
    (server, client)
}

#[test]
fn s7_1_1_message_echoed_then_close_1000_echoed_and_tcp_closed() {
    let (_server, mut c) = echo();
    c.send_text("Hello World!");
    c.expect_text("Hello World!");
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
}

#[test]
fn s7_1_2_second_close_gets_no_second_answer() {
    let (_server, mut c) = echo();
    let mut b = client_frame(true, op::CLOSE, &close_payload(Some(1000), b""));
    b.extend(client_frame(
        true,
        op::CLOSE,
        &close_payload(Some(1000), b""),
    ));
    c.send_raw(&b);
    c.expect_close(1000);
}

#[test]
fn s7_1_3_ping_after_close_is_ignored() {
    let (_server, mut c) = echo();
    let mut b = client_frame(true, op::CLOSE, &close_payload(Some(1000), b""));
    b.extend(client_frame(true, op::PING, b"Hello World!"));
    c.send_raw(&b);
    c.expect_close(1000);
}

#[test]
fn s7_1_4_text_after_close_is_ignored() {
    let (_server, mut c) = echo();
    let mut b = client_frame(true, op::CLOSE, &close_payload(Some(1000), b""));
    b.extend(client_frame(true, op::TEXT, b"Hello World!"));
    c.send_raw(&b);
    c.expect_close(1000);
}

#[test]
fn s7_1_4_text_sent_later_after_close_is_ignored() {
    let (_server, mut c) = echo();
    c.send_close(Some(1000), b"");
    let reply = c.expect_close_frame();
    assert_eq!(reply.close_code(), Some(1000));
    // The server may already have closed its side; the write may fail.
    let _ = c.try_send_raw(&client_frame(true, op::TEXT, b"too late"));
    c.expect_eof();
}

#[test]
fn s7_1_5_close_in_the_middle_of_a_fragmented_message_is_answered() {
    let (_server, mut c) = echo();
    let mut b = client_frame(false, op::TEXT, b"fragment1");
    b.extend(client_frame(
        true,
        op::CLOSE,
        &close_payload(Some(1000), b""),
    ));
    b.extend(client_frame(true, op::CONTINUATION, b"fragment2"));
    c.send_raw(&b);
    c.expect_close(1000);
}

#[test]
fn s7_1_6_large_message_then_close_then_ping_echo_close_and_no_pong() {
    let (_server, mut c) = echo();
    let text = "BAsd7&jh23".repeat(256 * 1024 / 10);
    let mut b = client_frame(true, op::TEXT, text.as_bytes());
    b.extend(client_frame(
        true,
        op::CLOSE,
        &close_payload(Some(1000), b""),
    ));
    b.extend(client_frame(true, op::PING, b"Hello World!"));
    c.send_raw(&b);
    c.expect_text(&text);
    c.expect_close(1000);
}

#[test]
fn s7_3_1_empty_close_gets_empty_close() {
    let (_server, mut c) = echo();
    c.send_close(None, b"");
    c.expect_empty_close();
}

#[test]
fn s7_3_2_close_with_one_byte_payload_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, op::CLOSE, &[0x03], true);
    c.expect_close(1002);
}

#[test]
fn s7_3_3_close_1000_without_reason_echoed() {
    let (_server, mut c) = echo();
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
}

#[test]
fn s7_3_4_close_1000_with_reason_echoed() {
    let (_server, mut c) = echo();
    c.send_close(Some(1000), b"Hello World!");
    c.expect_close(1000);
}

#[test]
fn s7_3_5_close_with_123_byte_reason_echoed() {
    let (_server, mut c) = echo();
    c.send_close(Some(1000), &[b'*'; 123]);
    c.expect_close(1000);
}

#[test]
fn s7_3_6_close_with_124_byte_reason_closes_1002() {
    let (_server, mut c) = echo();
    c.send_close(Some(1000), &[b'*'; 124]);
    c.expect_close(1002);
}

#[test]
fn s7_5_1_close_reason_with_invalid_utf8_closes_1007() {
    let (_server, mut c) = echo();
    c.send_close(
        Some(1000),
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
    );
    c.expect_close(1007);
}

#[test]
fn s7_5_close_reason_truncated_inside_codepoint_closes_1007() {
    let (_server, mut c) = echo();
    c.send_close(Some(1000), b"bye \xe2\x82");
    c.expect_close(1007);
}

#[test]
fn s7_5_close_reason_with_multibyte_utf8_echoed() {
    let (_server, mut c) = echo();
    c.send_close(Some(1001), "bye \u{3ba}\u{1f600}".as_bytes());
    c.expect_close(1001);
}

#[test]
fn s7_7_every_valid_close_code_is_echoed() {
    let server = start_server(test_config());
    let codes: Vec<u16> = [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011]
        .into_iter()
        .chain([1012, 1013, 1014, 3000, 3999, 4000, 4999])
        .collect();
    check_all(&codes, |&code| {
        let mut c = RawClient::connect(server.addr(), "/echo");
        c.send_close(Some(code), b"");
        c.expect_close(code);
    });
}

#[test]
fn s7_9_invalid_close_codes_close_1002() {
    let server = start_server(test_config());
    let codes = [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999];
    check_all(&codes, |&code| {
        let mut c = RawClient::connect(server.addr(), "/echo");
        c.send_close(Some(code), b"");
        c.expect_close(1002);
    });
}

#[test]
fn s7_13_close_codes_5000_and_above_close_1002() {
    let server = start_server(test_config());
    let codes = [5000u16, 5001, 65535];
    check_all(&codes, |&code| {
        let mut c = RawClient::connect(server.addr(), "/echo");
        c.send_close(Some(code), b"reason");
        c.expect_close(1002);
    });
}

#[test]
fn s7_close_then_client_fin_gets_close_reply_and_fin() {
    let (_server, mut c) = echo();
    c.send_close(Some(1000), b"done");
    c.stream.shutdown(Shutdown::Write).unwrap();
    c.expect_close(1000);
}

#[test]
fn s7_server_initiated_close_ignores_data_sent_after_it() {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, op::TEXT, b"unmasked", false);
    let close = c.expect_close_frame();
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    let _ = c.try_send_raw(&client_frame(true, op::TEXT, b"after the close"));
    let _ = c.try_send_raw(&client_frame(true, op::PING, b"after the close"));
    c.expect_eof();
}

/// Whether the server has let go of its socket: bytes we send then meet no
/// socket and are answered with a reset, which a later write reports. A
/// socket the server still holds (even one it shut down for writing)
/// takes the bytes without complaint.
fn server_released_socket(c: &mut RawClient) -> bool {
    let first = c.try_send_raw(&client_frame(true, op::PING, b"x"));
    std::thread::sleep(Duration::from_millis(200));
    let second = c.try_send_raw(&client_frame(true, op::PING, b"y"));
    first.is_err() || second.is_err()
}

#[test]
fn s7_server_releases_socket_after_close_timeout_if_client_never_closes() {
    let mut config = test_config();
    config.close_timeout = Duration::from_millis(300);
    let server = start_server(config);
    let mut c = RawClient::connect(server.addr(), "/echo");
    // A failed connection: the server sent its Close, and waits (at most
    // the close timeout) for our end of TCP so its Close is not lost to a
    // reset. Keep our side open and silent past the timeout.
    c.send_frame(true, 0, op::TEXT, b"unmasked", false);
    assert_eq!(c.expect_close_frame().close_code(), Some(1002));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        server_released_socket(&mut c),
        "server socket still open 1.5 s after a 300 ms close timeout"
    );
}

#[test]
fn s7_server_closes_tcp_once_both_closes_are_exchanged() {
    // Section 7.1.1: after sending and receiving a Close the server closes
    // TCP first, without waiting for the client's FIN. A close timeout far
    // beyond the test shows the socket was not released by the timer.
    let mut config = test_config();
    config.close_timeout = Duration::from_secs(60);
    let server = start_server(config);
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
    // Our side stays open: no FIN from us.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        server_released_socket(&mut c),
        "server kept its socket after the closing handshake, waiting for our FIN"
    );
}

#[test]
fn s7_server_closes_tcp_when_the_reply_to_its_close_arrives() {
    let mut config = test_config();
    config.close_timeout = Duration::from_secs(60);
    let server = start_server(config);
    let mut c = RawClient::connect(server.addr(), "/echo");
    server.handle().shutdown();
    assert_eq!(c.expect_close_frame().close_code(), Some(1001));
    c.send_close(Some(1001), b"");
    c.expect_eof();
    // We never close TCP: the server must be done with us all the same,
    // long before its 60 s close timeout.
    let started = std::time::Instant::now();
    server.stop().expect("server run() result after shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop took {:?}: the server waited for our FIN",
        started.elapsed()
    );
    drop(c);
}

#[test]
fn s7_graceful_shutdown_sends_close_1001_to_every_client() {
    let server = start_server(test_config());
    let mut a = RawClient::connect(server.addr(), "/echo");
    let mut b = RawClient::connect(server.addr(), "/echo");
    // b is in the middle of a fragmented message.
    b.send_frame(false, 0, op::TEXT, b"half a message", true);
    a.send_text("before shutdown");
    a.expect_text("before shutdown");
    b.expect_no_frame_within(QUIET);
    server.handle().shutdown();
    for c in [&mut a, &mut b] {
        let close = c.expect_close_frame();
        assert_eq!(close.close_code(), Some(1001), "{close:?}");
        c.send_close(Some(1001), b"");
        c.expect_eof();
    }
    drop((a, b));
    let started = std::time::Instant::now();
    server.stop().expect("server run() result after shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop took {:?} after every client closed",
        started.elapsed()
    );
}

#[test]
fn s7_graceful_shutdown_completes_when_client_never_answers_close() {
    let mut config = test_config();
    config.close_timeout = Duration::from_millis(300);
    let server = start_server(config);
    let mut c = RawClient::connect(server.addr(), "/echo");
    server.handle().shutdown();
    let close = c.expect_close_frame();
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
    // No close reply: the server must still stop (bounded by TestServer).
    let started = std::time::Instant::now();
    server.stop().expect("server run() result after shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?} with a 300 ms close timeout",
        started.elapsed()
    );
    drop(c);
}
