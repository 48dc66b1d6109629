//! Conformance of the opening handshake as the other conformance tests rely
//! on it (RFC 6455 section 4.2.2), and a self-check of the test helper.

mod support;

use support::{
    accept_key, client_frame, handshake_request, op, random_key, start_server, test_config,
    RawClient,
};

#[test]
fn helper_accept_key_matches_rfc_6455_example() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn helper_decoder_reads_rfc_6455_examples() {
    // Section 5.7: unmasked "Hello", and a 256-byte binary with 16-bit length.
    let frames = support::decode_all(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(frames[0].payload, b"Hello");
    assert!(frames[0].fin && frames[0].opcode == op::TEXT);
    let masked = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        support::encode_frame(true, 0, op::TEXT, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d])),
        masked
    );
    let mut big = vec![0x82, 0x7E, 0x01, 0x00];
    big.extend([0u8; 256]);
    assert_eq!(support::decode_all(&big)[0].payload.len(), 256);
}

#[test]
fn handshake_answers_101_with_accept_and_no_unrequested_headers() {
    let server = start_server(test_config());
    let c = RawClient::connect(server.addr(), "/echo");
    let head = c.handshake_response().unwrap();
    assert_eq!(head.status, 101);
    assert_eq!(
        head.header("Sec-WebSocket-Extensions"),
        None,
        "no extension was offered: {head:?}"
    );
    assert_eq!(
        head.header("Sec-WebSocket-Protocol"),
        None,
        "no subprotocol was offered: {head:?}"
    );
}

#[test]
fn handshake_pipelined_first_frame_in_same_write_is_processed() {
    let server = start_server(test_config());
    let mut c = RawClient::connect_tcp(server.addr());
    let key = random_key();
    let mut bytes = handshake_request(&server.addr().to_string(), "/echo", &key, &[]);
    bytes.extend(client_frame(true, op::TEXT, b"pipelined"));
    bytes.extend(client_frame(true, op::PING, b"p"));
    c.send_raw(&bytes);
    let head = c.read_http_head();
    support::check_101(&head, &key);
    c.expect_text("pipelined");
    c.expect_pong(b"p");
}

#[test]
fn handshake_pipelined_invalid_frame_gets_close_after_101() {
    let server = start_server(test_config());
    let mut c = RawClient::connect_tcp(server.addr());
    let key = random_key();
    let mut bytes = handshake_request(&server.addr().to_string(), "/echo", &key, &[]);
    bytes.extend(support::encode_frame(true, 0, op::TEXT, b"unmasked", None));
    c.send_raw(&bytes);
    let head = c.read_http_head();
    support::check_101(&head, &key);
    c.expect_close(1002);
}
