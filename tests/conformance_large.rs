//! Autobahn-style conformance, sections 9 (limits and performance, bounded
//! in time) and 10 (fragmentation at arbitrary sizes), plus the
//! `max_message_size` limit (Close 1009), against `/echo`.

mod support;

use std::time::Instant;

use support::{
    apply_mask, client_frame, encode_header, op, random_mask, start_server, test_config, RawClient,
    TestServer,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn echo() -> (TestServer, RawClient) {
    let server = start_server(test_config());
    let client = RawClient::connect(server.addr(), "/echo");
    (server, client)
}

/// `len` bytes of the repeated ASCII pattern Autobahn uses for text.
fn text_payload(len: usize) -> Vec<u8> {
    b"BAsd7&jh23".iter().copied().cycle().take(len).collect()
}

/// `len` bytes of a binary pattern covering every byte value.
fn binary_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

fn payload(opcode: u8, len: usize) -> Vec<u8> {
    if opcode == op::TEXT {
        text_payload(len)
    } else {
        binary_payload(len)
    }
}

/// Sends one `len`-byte message as a single frame and checks the echo;
/// prints the round-trip time.
fn echo_single_frame(opcode: u8, len: usize) {
    let (_server, mut c) = echo();
    let data = payload(opcode, len);
    let started = Instant::now();
    c.send_raw(&client_frame(true, opcode, &data));
    c.expect_frame(opcode, &data);
    eprintln!(
        "{len} bytes opcode {opcode}: round trip {:?}",
        started.elapsed()
    );
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
}

/// Sends one `len`-byte message in frames of `frame_size` bytes (written in
/// one go) and checks the single-frame echo.
fn echo_fragmented(opcode: u8, len: usize, frame_size: usize) {
    let (_server, mut c) = echo();
    let data = payload(opcode, len);
    let mut bytes = Vec::with_capacity(len + len / frame_size * 8 + 16);
    let pieces: Vec<&[u8]> = data.chunks(frame_size).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let code = if i == 0 { opcode } else { op::CONTINUATION };
        bytes.extend(client_frame(i + 1 == pieces.len(), code, piece));
    }
    let started = Instant::now();
    c.send_raw(&bytes);
    c.expect_frame(opcode, &data);
    eprintln!(
        "{len} bytes in {frame_size}-byte frames: round trip {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 9.1 / 9.2: large single-frame messages
// ---------------------------------------------------------------------------

#[test]
fn s9_1_1_text_64_kib_echoed() {
    echo_single_frame(op::TEXT, 64 * KIB);
}

#[test]
fn s9_1_3_text_1_mib_echoed() {
    echo_single_frame(op::TEXT, MIB);
}

#[test]
fn s9_1_6_text_16_mib_echoed() {
    echo_single_frame(op::TEXT, 16 * MIB);
}

#[test]
fn s9_2_1_binary_64_kib_echoed() {
    echo_single_frame(op::BINARY, 64 * KIB);
}

#[test]
fn s9_2_3_binary_1_mib_echoed() {
    echo_single_frame(op::BINARY, MIB);
}

#[test]
fn s9_2_6_binary_16_mib_echoed() {
    echo_single_frame(op::BINARY, 16 * MIB);
}

// ---------------------------------------------------------------------------
// 9.3 / 9.4: fragmented 4 MiB messages
// ---------------------------------------------------------------------------

#[test]
fn s9_3_1_text_4_mib_in_64_byte_frames_echoed() {
    echo_fragmented(op::TEXT, 4 * MIB, 64);
}

#[test]
fn s9_3_5_text_4_mib_in_64_kib_frames_echoed() {
    echo_fragmented(op::TEXT, 4 * MIB, 64 * KIB);
}

#[test]
fn s9_4_1_binary_4_mib_in_64_byte_frames_echoed() {
    echo_fragmented(op::BINARY, 4 * MIB, 64);
}

#[test]
fn s9_4_5_binary_4_mib_in_64_kib_frames_echoed() {
    echo_fragmented(op::BINARY, 4 * MIB, 64 * KIB);
}

// ---------------------------------------------------------------------------
// 9.5 / 9.6: one large frame written in small chops
// ---------------------------------------------------------------------------

#[test]
fn s9_5_text_1_mib_frame_written_in_64_byte_chops_echoed() {
    let (_server, mut c) = echo();
    let data = text_payload(MIB);
    c.send_in_chunks(&client_frame(true, op::TEXT, &data), 64);
    c.expect_frame(op::TEXT, &data);
}

#[test]
fn s9_6_binary_1_mib_frame_written_in_4_kib_chops_echoed() {
    let (_server, mut c) = echo();
    let data = binary_payload(MIB);
    c.send_in_chunks(&client_frame(true, op::BINARY, &data), 4 * KIB);
    c.expect_frame(op::BINARY, &data);
}

// ---------------------------------------------------------------------------
// 9.7 / 9.8: many small messages
// ---------------------------------------------------------------------------

#[test]
fn s9_7_thousand_text_messages_round_trip_one_at_a_time() {
    let (_server, mut c) = echo();
    let started = Instant::now();
    for i in 0..1000 {
        let text = format!("{i:016}");
        c.send_text(&text);
        c.expect_text(&text);
    }
    eprintln!("1000 round trips: {:?}", started.elapsed());
}

#[test]
fn s9_8_thousand_binary_messages_pipelined_echoed_in_order() {
    let (_server, mut c) = echo();
    let mut bytes = Vec::new();
    for i in 0..1000u32 {
        let mut data = vec![0u8; 64];
        data[..4].copy_from_slice(&i.to_be_bytes());
        bytes.extend(client_frame(true, op::BINARY, &data));
    }
    c.send_raw(&bytes);
    for i in 0..1000u32 {
        let mut data = vec![0u8; 64];
        data[..4].copy_from_slice(&i.to_be_bytes());
        c.expect_binary(&data);
    }
}

// ---------------------------------------------------------------------------
// 10: auto-fragmentation
// ---------------------------------------------------------------------------

#[test]
fn s10_1_1_text_64_kib_in_1300_byte_fragments_echoed_intact() {
    echo_fragmented(op::TEXT, 64 * KIB, 1300);
}

#[test]
fn s10_binary_64_kib_in_1300_byte_fragments_echoed_intact() {
    echo_fragmented(op::BINARY, 64 * KIB, 1300);
}

// ---------------------------------------------------------------------------
// max_message_size: Close 1009 as soon as a header makes the size known
// ---------------------------------------------------------------------------

fn limited(max: usize) -> (TestServer, RawClient) {
    let mut config = test_config();
    config.max_message_size = max;
    let server = start_server(config);
    let client = RawClient::connect(server.addr(), "/echo");
    (server, client)
}

/// A header announcing `len` payload bytes plus the first `sent` of them:
/// the rest is never sent, so only a server that decides on the header
/// answers.
fn partial_frame(fin: bool, opcode: u8, len: u64, sent: usize) -> Vec<u8> {
    let key = random_mask();
    let mut bytes = encode_header(fin, 0, opcode, len, Some(key));
    let mut data = text_payload(sent);
    apply_mask(&mut data, key, 0);
    bytes.extend(data);
    bytes
}

#[test]
fn limit_message_of_exactly_max_size_is_echoed() {
    let (_server, mut c) = limited(64 * KIB);
    let data = text_payload(64 * KIB);
    c.send_raw(&client_frame(true, op::TEXT, &data));
    c.expect_frame(op::TEXT, &data);
}

#[test]
fn limit_fragmented_message_of_exactly_max_size_is_echoed() {
    let (_server, mut c) = limited(64 * KIB);
    let data = binary_payload(64 * KIB);
    let mut bytes = client_frame(false, op::BINARY, &data[..40 * KIB]);
    bytes.extend(client_frame(true, op::CONTINUATION, &data[40 * KIB..]));
    c.send_raw(&bytes);
    c.expect_binary(&data);
}

#[test]
fn limit_frame_over_max_size_closes_1009_from_header_alone() {
    let (_server, mut c) = limited(64 * KIB);
    c.send_raw(&partial_frame(true, op::BINARY, 64 * KIB as u64 + 1, 100));
    c.expect_close(1009);
}

#[test]
fn limit_text_frame_over_max_size_closes_1009_before_payload() {
    let (_server, mut c) = limited(64 * KIB);
    c.send_raw(&partial_frame(true, op::TEXT, 10 * MIB as u64, 0));
    c.expect_close(1009);
}

#[test]
fn limit_fragments_adding_up_over_max_size_close_1009_at_header() {
    let (_server, mut c) = limited(64 * KIB);
    let mut bytes = client_frame(false, op::TEXT, &text_payload(40 * KIB));
    bytes.extend(partial_frame(true, op::CONTINUATION, 30 * KIB as u64, 10));
    c.send_raw(&bytes);
    c.expect_close(1009);
}

#[test]
fn limit_default_max_rejects_16_mib_plus_one_from_header() {
    let (_server, mut c) = echo();
    c.send_raw(&partial_frame(true, op::BINARY, 16 * MIB as u64 + 1, 1000));
    c.expect_close(1009);
}

#[test]
fn limit_huge_64_bit_length_closes_1009() {
    let (_server, mut c) = echo();
    c.send_raw(&partial_frame(true, op::BINARY, (1u64 << 63) - 1, 0));
    c.expect_close(1009);
}

#[test]
fn limit_messages_after_a_large_one_still_echoed() {
    let (_server, mut c) = limited(MIB);
    let big = binary_payload(MIB);
    c.send_binary(&big);
    c.send_text("small");
    c.expect_binary(&big);
    c.expect_text("small");
}
