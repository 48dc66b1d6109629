//! Autobahn-style conformance, sections 1-4: framing, ping/pong, reserved
//! bits and reserved opcodes, against `/echo`, with hand-built frames.

mod support;

use std::time::Duration;

use support::{
    client_frame, encode_frame, encode_header, op, random_mask, rsv, server_frame, start_server,
    test_config, RawClient, TestServer,
};

/// How long a test waits to be sure that nothing more comes.
const QUIET: Duration = Duration::from_millis(300);

fn echo() -> (TestServer, RawClient) {
    let server = start_server(test_config());
    let client = RawClient::connect(server.addr(), "/echo");
    (server, client)
}

/// Sends one message of `len` bytes (text `*` or binary 0xfe) and checks the
/// echo byte for byte, header included; `chop` sends the frame in writes of
/// that many bytes.
fn echo_one(opcode: u8, len: usize, chop: Option<usize>) {
    let (_server, mut c) = echo();
    let fill = if opcode == op::TEXT { b'*' } else { 0xfe };
    let payload = vec![fill; len];
    let frame = client_frame(true, opcode, &payload);
    match chop {
        Some(n) => c.send_in_chunks(&frame, n),
        None => c.send_raw(&frame),
    }
    let got = c.read_frame();
    assert_eq!(
        got.header,
        encode_header(true, 0, opcode, len as u64, None),
        "echo header for length {len}: {got:?}"
    );
    assert_eq!(got.to_bytes(), server_frame(true, opcode, &payload));
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
}

// ---------------------------------------------------------------------------
// Section 1: framing
// ---------------------------------------------------------------------------

#[test]
fn s1_1_text_length_0_echoed() {
    echo_one(op::TEXT, 0, None);
}

#[test]
fn s1_1_text_length_125_echoed_with_7_bit_length() {
    echo_one(op::TEXT, 125, None);
}

#[test]
fn s1_1_text_length_126_echoed_with_16_bit_length() {
    echo_one(op::TEXT, 126, None);
}

#[test]
fn s1_1_text_length_127_echoed() {
    echo_one(op::TEXT, 127, None);
}

#[test]
fn s1_1_text_length_128_echoed() {
    echo_one(op::TEXT, 128, None);
}

#[test]
fn s1_1_text_length_65535_echoed_with_16_bit_length() {
    echo_one(op::TEXT, 65535, None);
}

#[test]
fn s1_1_text_length_65536_echoed_with_64_bit_length() {
    echo_one(op::TEXT, 65536, None);
}

#[test]
fn s1_1_text_length_65536_sent_in_chops_of_997_echoed() {
    echo_one(op::TEXT, 65536, Some(997));
}

#[test]
fn s1_2_binary_length_0_echoed() {
    echo_one(op::BINARY, 0, None);
}

#[test]
fn s1_2_binary_length_125_echoed() {
    echo_one(op::BINARY, 125, None);
}

#[test]
fn s1_2_binary_length_126_echoed() {
    echo_one(op::BINARY, 126, None);
}

#[test]
fn s1_2_binary_length_127_echoed() {
    echo_one(op::BINARY, 127, None);
}

#[test]
fn s1_2_binary_length_128_echoed() {
    echo_one(op::BINARY, 128, None);
}

#[test]
fn s1_2_binary_length_65535_echoed() {
    echo_one(op::BINARY, 65535, None);
}

#[test]
fn s1_2_binary_length_65536_echoed() {
    echo_one(op::BINARY, 65536, None);
}

#[test]
fn s1_2_binary_length_65536_sent_in_chops_of_997_echoed() {
    echo_one(op::BINARY, 65536, Some(997));
}

#[test]
fn s1_binary_with_all_byte_values_echoed_unchanged() {
    let (_server, mut c) = echo();
    let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    c.send_binary(&payload);
    c.expect_binary(&payload);
}

#[test]
fn s1_text_and_binary_keep_their_opcode() {
    let (_server, mut c) = echo();
    c.send_text("hello");
    c.send_binary(b"hello");
    c.expect_text("hello");
    c.expect_binary(b"hello");
}

#[test]
fn s1_64_bit_length_header_written_one_byte_at_a_time_echoed() {
    let (_server, mut c) = echo();
    let payload = vec![0xfe; 65536];
    let frame = client_frame(true, op::BINARY, &payload);
    // 2 + 8 length bytes + 4 mask bytes, one write each, then the payload.
    c.send_in_chunks_paced(&frame[..14], 1, Duration::from_millis(2));
    c.send_raw(&frame[14..]);
    c.expect_binary(&payload);
}

#[test]
fn s1_16_bit_length_header_written_one_byte_at_a_time_echoed() {
    let (_server, mut c) = echo();
    let payload = vec![b'*'; 300];
    let frame = client_frame(true, op::TEXT, &payload);
    c.send_in_chunks_paced(&frame[..8], 1, Duration::from_millis(2));
    c.send_raw(&frame[8..]);
    c.expect_frame(op::TEXT, &payload);
}

#[test]
fn s1_unmasked_empty_ping_closes_1002_without_pong() {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, op::PING, b"", false);
    c.expect_close(1002);
}

#[test]
fn s1_unmasked_close_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, op::CLOSE, &1000u16.to_be_bytes(), false);
    c.expect_close(1002);
}

#[test]
fn s1_unmasked_text_frame_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, op::TEXT, b"Hello", false);
    c.expect_close(1002);
}

#[test]
fn s1_unmasked_frame_after_valid_message_closes_1002_after_echo() {
    let (_server, mut c) = echo();
    c.send_text("first");
    c.send_frame(true, 0, op::BINARY, b"second", false);
    c.expect_text("first");
    c.expect_close(1002);
}

#[test]
fn s1_64_bit_length_with_top_bit_set_closes_1002() {
    let (_server, mut c) = echo();
    let mut bytes = encode_header(true, 0, op::BINARY, 1 << 63, Some(random_mask()));
    bytes.extend_from_slice(b"abcd");
    c.send_raw(&bytes);
    c.expect_close(1002);
}

// ---------------------------------------------------------------------------
// Section 2: ping / pong
// ---------------------------------------------------------------------------

#[test]
fn s2_1_ping_without_payload_gets_empty_pong() {
    let (_server, mut c) = echo();
    c.send_ping(b"");
    c.expect_pong(b"");
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
}

#[test]
fn s2_2_ping_with_text_payload_gets_same_pong() {
    let (_server, mut c) = echo();
    c.send_ping(b"Hello, world!");
    c.expect_pong(b"Hello, world!");
}

#[test]
fn s2_3_ping_with_binary_payload_gets_same_pong() {
    let (_server, mut c) = echo();
    let payload = [0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    c.send_ping(&payload);
    c.expect_pong(&payload);
}

#[test]
fn s2_4_ping_with_125_byte_payload_gets_same_pong() {
    let (_server, mut c) = echo();
    let payload = [0xfe; 125];
    c.send_ping(&payload);
    c.expect_pong(&payload);
}

#[test]
fn s2_5_ping_with_126_byte_payload_closes_1002_without_pong() {
    let (_server, mut c) = echo();
    c.send_ping(&[0xfe; 126]);
    c.expect_close(1002);
}

#[test]
fn s2_6_ping_sent_in_one_byte_chops_gets_pong() {
    let (_server, mut c) = echo();
    let payload = [0xfe; 125];
    c.send_in_chunks_paced(
        &client_frame(true, op::PING, &payload),
        1,
        Duration::from_millis(1),
    );
    c.expect_pong(&payload);
}

#[test]
fn s2_7_unsolicited_empty_pong_is_ignored() {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, op::PONG, b"", true);
    c.expect_no_frame_within(QUIET);
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
}

#[test]
fn s2_8_unsolicited_pong_with_payload_is_ignored() {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, op::PONG, b"unsolicited pong payload", true);
    c.expect_no_frame_within(QUIET);
}

#[test]
fn s2_9_unsolicited_pong_then_ping_gets_only_one_pong() {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, op::PONG, b"unsolicited pong payload", true);
    c.send_ping(b"ping payload");
    c.expect_pong(b"ping payload");
    c.expect_no_frame_within(QUIET);
}

#[test]
fn s2_10_ten_pings_get_ten_pongs_in_order() {
    let (_server, mut c) = echo();
    let mut bytes = Vec::new();
    for i in 0..10 {
        bytes.extend(client_frame(
            true,
            op::PING,
            format!("payload-{i}").as_bytes(),
        ));
    }
    c.send_raw(&bytes);
    for i in 0..10 {
        c.expect_pong(format!("payload-{i}").as_bytes());
    }
    c.expect_no_frame_within(QUIET);
}

#[test]
fn s2_11_ten_pings_in_one_byte_chops_get_ten_pongs() {
    let (_server, mut c) = echo();
    let mut bytes = Vec::new();
    for i in 0..10 {
        bytes.extend(client_frame(
            true,
            op::PING,
            format!("payload-{i}").as_bytes(),
        ));
    }
    c.send_in_chunks(&bytes, 1);
    for i in 0..10 {
        c.expect_pong(format!("payload-{i}").as_bytes());
    }
}

#[test]
fn s2_pong_is_sent_before_a_later_message_echo() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(true, op::PING, b"p");
    bytes.extend(client_frame(true, op::TEXT, b"t"));
    c.send_raw(&bytes);
    c.expect_pong(b"p");
    c.expect_text("t");
}

// ---------------------------------------------------------------------------
// Section 3: reserved bits
// ---------------------------------------------------------------------------

#[test]
fn s3_1_text_with_rsv3_bit_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(true, rsv::RSV3, op::TEXT, b"Hello", true);
    c.expect_close(1002);
}

#[test]
fn s3_1_text_with_rsv1_compression_bit_closes_1002_without_extension() {
    let (_server, mut c) = echo();
    c.send_frame(true, rsv::RSV1, op::TEXT, b"Hello", true);
    c.expect_close(1002);
}

#[test]
fn s3_2_rsv2_bit_after_valid_text_echo_comes_first_then_1002_and_no_pong() {
    let (_server, mut c) = echo();
    c.send_text("Hello");
    c.send_frame(true, rsv::RSV2, op::TEXT, b"Hello", true);
    c.send_ping(b"Hello");
    c.expect_text("Hello");
    c.expect_close(1002);
}

#[test]
fn s3_3_rsv2_and_rsv3_bits_in_one_write_echo_first_then_1002() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(true, op::TEXT, b"Hello");
    bytes.extend(encode_frame(
        true,
        3,
        op::TEXT,
        b"Hello",
        Some(random_mask()),
    ));
    bytes.extend(client_frame(true, op::PING, b"Hello"));
    c.send_raw(&bytes);
    c.expect_text("Hello");
    c.expect_close(1002);
}

#[test]
fn s3_4_rsv1_bit_in_one_byte_chops_echo_first_then_1002() {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(true, op::TEXT, b"Hello");
    bytes.extend(encode_frame(
        true,
        4,
        op::TEXT,
        b"Hello",
        Some(random_mask()),
    ));
    bytes.extend(client_frame(true, op::PING, b"Hello"));
    // The server may close while the chops are still being written.
    for b in &bytes {
        if c.try_send_raw(std::slice::from_ref(b)).is_err() {
            break;
        }
    }
    c.expect_text("Hello");
    c.expect_close(1002);
}

#[test]
fn s3_5_binary_with_rsv1_and_rsv3_bits_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(true, 5, op::BINARY, &[0xff; 8], true);
    c.expect_close(1002);
}

#[test]
fn s3_6_ping_with_rsv1_and_rsv2_bits_closes_1002_without_pong() {
    let (_server, mut c) = echo();
    c.send_frame(true, 6, op::PING, b"Hello", true);
    c.expect_close(1002);
}

#[test]
fn s3_7_close_with_all_rsv_bits_closes_1002() {
    let (_server, mut c) = echo();
    c.send_frame(true, 7, op::CLOSE, &1000u16.to_be_bytes(), true);
    c.expect_close(1002);
}

#[test]
fn s3_each_rsv_value_on_continuation_closes_1002() {
    let server = start_server(test_config());
    for bits in 1..=7u8 {
        let mut c = RawClient::connect(server.addr(), "/echo");
        c.send_frame(false, 0, op::TEXT, b"frag1", true);
        c.send_frame(true, bits, op::CONTINUATION, b"frag2", true);
        c.expect_close(1002);
    }
}

// ---------------------------------------------------------------------------
// Section 4: reserved opcodes
// ---------------------------------------------------------------------------

fn reserved_opcode_alone(opcode: u8, payload: &[u8]) {
    let (_server, mut c) = echo();
    c.send_frame(true, 0, opcode, payload, true);
    c.expect_close(1002);
}

fn reserved_opcode_after_valid_message(opcode: u8, payload: &[u8]) {
    let (_server, mut c) = echo();
    let mut bytes = client_frame(true, op::TEXT, b"Hello");
    bytes.extend(client_frame(true, opcode, payload));
    bytes.extend(client_frame(true, op::PING, b""));
    c.send_raw(&bytes);
    c.expect_text("Hello");
    c.expect_close(1002);
}

#[test]
fn s4_1_1_opcode_3_closes_1002() {
    reserved_opcode_alone(3, b"");
}

#[test]
fn s4_1_2_opcode_4_with_payload_closes_1002() {
    reserved_opcode_alone(4, b"reserved opcode payload");
}

#[test]
fn s4_1_3_opcode_5_after_valid_text_echo_then_1002() {
    reserved_opcode_after_valid_message(5, b"");
}

#[test]
fn s4_1_4_opcode_6_with_payload_after_valid_text_echo_then_1002() {
    reserved_opcode_after_valid_message(6, b"reserved opcode payload");
}

#[test]
fn s4_1_5_opcode_7_with_payload_after_valid_text_echo_then_1002() {
    reserved_opcode_after_valid_message(7, b"reserved opcode payload");
}

#[test]
fn s4_2_1_opcode_0xb_closes_1002() {
    reserved_opcode_alone(0xB, b"");
}

#[test]
fn s4_2_2_opcode_0xc_with_payload_closes_1002() {
    reserved_opcode_alone(0xC, b"reserved opcode payload");
}

#[test]
fn s4_2_3_opcode_0xd_after_valid_text_echo_then_1002() {
    reserved_opcode_after_valid_message(0xD, b"");
}

#[test]
fn s4_2_4_opcode_0xe_with_payload_after_valid_text_echo_then_1002() {
    reserved_opcode_after_valid_message(0xE, b"reserved opcode payload");
}

#[test]
fn s4_2_5_opcode_0xf_with_payload_after_valid_text_echo_then_1002() {
    reserved_opcode_after_valid_message(0xF, b"reserved opcode payload");
}

#[test]
fn s4_reserved_opcode_with_fin_clear_closes_1002() {
    let server = start_server(test_config());
    for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let mut c = RawClient::connect(server.addr(), "/echo");
        c.send_frame(false, 0, opcode, b"x", true);
        c.expect_close(1002);
    }
}
