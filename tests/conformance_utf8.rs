//! Autobahn-style conformance, section 6: UTF-8 handling of text messages,
//! against `/echo`.
//!
//! Valid texts must be echoed however they are split; invalid ones must get
//! Close 1007 and no echo, and as soon as the invalid byte arrives (fail
//! fast), not when the message ends.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{
    check_all, client_frame, encode_header, op, random_mask, start_server, test_config, RawClient,
};

/// How long the fail-fast cases wait to show that the valid first part is
/// accepted without an answer.
const QUIET: Duration = Duration::from_millis(300);

/// "κόσμε": multi-byte code points of 2 and 3 bytes.
const KOSME: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";

/// Valid texts used for the split tests: 1-, 2-, 3- and 4-byte code points.
fn valid_texts() -> Vec<Vec<u8>> {
    vec![
        "Hello-\u{b5}@\u{df}\u{f6}\u{e4}\u{fc}\u{e0}\u{e1}-UTF-8!!"
            .as_bytes()
            .to_vec(),
        KOSME.to_vec(),
        b"hello\xF0\xA4\xAD\xA2world".to_vec(),
        b"\xf4\x8f\xbf\xbf\xef\xbf\xbd\xc2\x80\x00\x7f".to_vec(),
    ]
}

/// One text message in one frame: echoed if valid, else Close 1007.
fn text_in_one_frame(addr: SocketAddr, payload: &[u8], valid: bool) {
    let mut c = RawClient::connect(addr, "/echo");
    c.send_frame(true, 0, op::TEXT, payload, true);
    if valid {
        c.expect_frame(op::TEXT, payload);
        c.send_close(Some(1000), b"");
        c.expect_close(1000);
    } else {
        c.expect_close(1007);
    }
}

fn expect_all_invalid(cases: &[Vec<u8>]) {
    let server = start_server(test_config());
    let addr = server.addr();
    check_all(cases, |p| text_in_one_frame(addr, p, false));
}

fn expect_all_valid(cases: &[Vec<u8>]) {
    let server = start_server(test_config());
    let addr = server.addr();
    check_all(cases, |p| text_in_one_frame(addr, p, true));
}

fn bytes(list: &[&[u8]]) -> Vec<Vec<u8>> {
    list.iter().map(|b| b.to_vec()).collect()
}

// ---------------------------------------------------------------------------
// 6.1, 6.2: valid text, any split
// ---------------------------------------------------------------------------

#[test]
fn s6_1_1_empty_text_echoed() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_text("");
    c.expect_text("");
}

#[test]
fn s6_1_2_empty_text_in_three_empty_fragments_echoed() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let mut b = client_frame(false, op::TEXT, b"");
    b.extend(client_frame(false, op::CONTINUATION, b""));
    b.extend(client_frame(true, op::CONTINUATION, b""));
    c.send_raw(&b);
    c.expect_text("");
}

#[test]
fn s6_1_3_text_with_empty_first_and_last_fragments_echoed() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let mut b = client_frame(false, op::TEXT, b"");
    b.extend(client_frame(
        false,
        op::CONTINUATION,
        b"middle frame payload",
    ));
    b.extend(client_frame(true, op::CONTINUATION, b""));
    c.send_raw(&b);
    c.expect_text("middle frame payload");
}

#[test]
fn s6_2_valid_text_in_two_fragments_split_at_every_byte_offset_echoed() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    for text in valid_texts() {
        for k in 0..=text.len() {
            let mut b = client_frame(false, op::TEXT, &text[..k]);
            b.extend(client_frame(true, op::CONTINUATION, &text[k..]));
            c.send_raw(&b);
            c.expect_frame(op::TEXT, &text);
        }
    }
    c.send_close(Some(1000), b"");
    c.expect_close(1000);
}

#[test]
fn s6_2_3_valid_text_in_one_byte_fragments_echoed() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    for text in valid_texts() {
        let mut b = Vec::new();
        for (i, byte) in text.iter().enumerate() {
            let opcode = if i == 0 { op::TEXT } else { op::CONTINUATION };
            b.extend(client_frame(i + 1 == text.len(), opcode, &[*byte]));
        }
        c.send_raw(&b);
        c.expect_frame(op::TEXT, &text);
    }
}

#[test]
fn s6_2_valid_text_frame_cut_into_two_writes_at_every_offset_echoed() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    for text in valid_texts() {
        let frame = client_frame(true, op::TEXT, &text);
        for k in 1..frame.len() {
            c.send_raw(&frame[..k]);
            std::thread::sleep(Duration::from_millis(1));
            c.send_raw(&frame[k..]);
            c.expect_frame(op::TEXT, &text);
        }
    }
}

#[test]
fn s6_2_valid_text_frame_sent_one_byte_per_write_echoed() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    for text in valid_texts() {
        let frame = client_frame(true, op::TEXT, &text);
        c.send_in_chunks_paced(&frame, 1, Duration::from_millis(1));
        c.expect_frame(op::TEXT, &text);
    }
}

#[test]
fn s6_2_code_point_split_around_a_ping_between_fragments_echoed() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let mut b = client_frame(false, op::TEXT, b"a\xf0\xa4");
    b.extend(client_frame(true, op::PING, b"p"));
    b.extend(client_frame(false, op::CONTINUATION, b"\xad"));
    b.extend(client_frame(true, op::PONG, b"ignored"));
    b.extend(client_frame(true, op::CONTINUATION, b"\xa2z"));
    c.send_raw(&b);
    c.expect_pong(b"p");
    c.expect_frame(op::TEXT, b"a\xf0\xa4\xad\xa2z");
}

#[test]
fn s6_2_validator_state_resets_between_messages() {
    // A message ending cleanly must not leak state into the next one, and a
    // binary message between them must not be validated at all.
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let mut b = client_frame(true, op::TEXT, b"\xe2\x82\xac");
    b.extend(client_frame(false, op::BINARY, b"\xe2"));
    b.extend(client_frame(true, op::CONTINUATION, b"\x82"));
    b.extend(client_frame(true, op::TEXT, b"\xac"));
    c.send_raw(&b);
    c.expect_frame(op::TEXT, b"\xe2\x82\xac");
    c.expect_binary(b"\xe2\x82");
    c.expect_close(1007);
}

// ---------------------------------------------------------------------------
// 6.4: fail fast
// ---------------------------------------------------------------------------

/// Autobahn 6.4.1 / 6.4.2: three fragments; the close 1007 must come after
/// the second one, before the third is sent.
fn fail_fast_in_fragments(part1: &[u8], part2: &[u8], part3: &[u8]) {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_frame(false, 0, op::TEXT, part1, true);
    c.expect_no_frame_within(QUIET);
    c.send_frame(false, 0, op::CONTINUATION, part2, true);
    // The third fragment is not sent yet: only a fail-fast server answers.
    c.expect_close(1007);
    let _ = c.try_send_raw(&client_frame(true, op::CONTINUATION, part3));
}

/// Autobahn 6.4.3 / 6.4.4: the same message as one frame written in three
/// chops; the close 1007 must come before the third chop is written.
fn fail_fast_in_chops(part1: &[u8], part2: &[u8], part3: &[u8]) {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let payload = [part1, part2, part3].concat();
    let frame = client_frame(true, op::TEXT, &payload);
    let header_len = frame.len() - payload.len();
    let cut1 = header_len + part1.len();
    let cut2 = cut1 + part2.len();
    c.send_raw(&frame[..cut1]);
    c.expect_no_frame_within(QUIET);
    c.send_raw(&frame[cut1..cut2]);
    c.expect_close(1007);
    let _ = c.try_send_raw(&frame[cut2..]);
}

fn case_6_4_parts(split_at_invalid_byte: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let payload = [KOSME, b"\xf4\x90\x80\x80", b"edited"].concat();
    if split_at_invalid_byte {
        // Part 1 ends with 0xf4 (still a valid prefix), part 2 is 0x90.
        (
            payload[..12].to_vec(),
            payload[12..13].to_vec(),
            payload[13..].to_vec(),
        )
    } else {
        (
            KOSME.to_vec(),
            b"\xf4\x90\x80\x80".to_vec(),
            b"edited".to_vec(),
        )
    }
}

#[test]
fn s6_4_1_invalid_codepoint_in_second_fragment_fails_fast_1007() {
    let (a, b, c) = case_6_4_parts(false);
    fail_fast_in_fragments(&a, &b, &c);
}

#[test]
fn s6_4_2_invalid_byte_alone_in_second_fragment_fails_fast_1007() {
    let (a, b, c) = case_6_4_parts(true);
    fail_fast_in_fragments(&a, &b, &c);
}

#[test]
fn s6_4_3_invalid_codepoint_in_second_chop_of_one_frame_fails_fast_1007() {
    let (a, b, c) = case_6_4_parts(false);
    fail_fast_in_chops(&a, &b, &c);
}

#[test]
fn s6_4_4_invalid_byte_alone_in_second_chop_of_one_frame_fails_fast_1007() {
    let (a, b, c) = case_6_4_parts(true);
    fail_fast_in_chops(&a, &b, &c);
}

#[test]
fn s6_4_surrogate_in_middle_of_large_frame_fails_before_frame_ends() {
    // A 64 KiB text frame whose header and first 1000 payload bytes (ending
    // in a surrogate) are sent; the rest never is.
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let key = random_mask();
    let mut bytes = encode_header(true, 0, op::TEXT, 65536, Some(key));
    let mut payload = vec![b'a'; 997];
    payload.extend_from_slice(b"\xed\xa0\x80");
    support::apply_mask(&mut payload, key, 0);
    bytes.extend(payload);
    c.send_raw(&bytes);
    c.expect_close(1007);
}

#[test]
fn s6_invalid_utf8_with_fin_clear_fails_fast_1007() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_frame(false, 0, op::TEXT, b"ok so far \xff", true);
    c.expect_close(1007);
}

// ---------------------------------------------------------------------------
// 6.3, 6.5-6.23: single-frame sequences
// ---------------------------------------------------------------------------

#[test]
fn s6_3_1_surrogate_inside_text_closes_1007() {
    expect_all_invalid(&[[KOSME, b"\xed\xa0\x80", b"edited"].concat()]);
}

#[test]
fn s6_3_2_surrogate_inside_text_sent_in_one_byte_fragments_closes_1007() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let text = [KOSME, b"\xed\xa0\x80", b"edited"].concat();
    let mut b = Vec::new();
    for (i, byte) in text.iter().enumerate() {
        let opcode = if i == 0 { op::TEXT } else { op::CONTINUATION };
        b.extend(client_frame(i + 1 == text.len(), opcode, &[*byte]));
    }
    // The server closes after the 13th fragment; later writes may fail.
    let _ = c.try_send_raw(&b);
    c.expect_close(1007);
}

#[test]
fn s6_5_valid_sequences_echoed() {
    expect_all_valid(&bytes(&[
        b"hello\x24world",
        b"hello\xc2\xa2world",
        b"hello\xe2\x82\xacworld",
        b"hello\xf0\xa4\xad\xa2world",
        KOSME,
    ]));
}

#[test]
fn s6_6_every_prefix_of_valid_text_echoed_iff_complete() {
    let server = start_server(test_config());
    let prefixes: Vec<Vec<u8>> = (1..=KOSME.len()).map(|i| KOSME[..i].to_vec()).collect();
    let addr = server.addr();
    check_all(&prefixes, |p| {
        text_in_one_frame(addr, p, std::str::from_utf8(p).is_ok())
    });
}

#[test]
fn s6_7_and_6_9_first_and_last_sequences_of_each_length_echoed() {
    expect_all_valid(&bytes(&[
        b"\x00",
        b"\xc2\x80",
        b"\xe0\xa0\x80",
        b"\xf0\x90\x80\x80",
        b"\x7f",
        b"\xdf\xbf",
        b"\xef\xbf\xbf",
        b"\xf4\x8f\xbf\xbf",
    ]));
}

#[test]
fn s6_8_and_6_10_five_and_six_byte_forms_close_1007() {
    expect_all_invalid(&bytes(&[
        b"\xf8\x88\x80\x80\x80",
        b"\xfc\x84\x80\x80\x80\x80",
        b"\xf7\xbf\xbf\xbf",
        b"\xfb\xbf\xbf\xbf\xbf",
        b"\xfd\xbf\xbf\xbf\xbf\xbf",
    ]));
}

#[test]
fn s6_11_boundary_codepoints_echoed() {
    expect_all_valid(&bytes(&[
        b"\xed\x9f\xbf",
        b"\xee\x80\x80",
        b"\xef\xbf\xbd",
        b"\xf4\x8f\xbf\xbf",
    ]));
}

#[test]
fn s6_11_5_codepoint_above_u10ffff_closes_1007() {
    expect_all_invalid(&bytes(&[b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80"]));
}

#[test]
fn s6_12_unexpected_continuation_bytes_close_1007() {
    let all: Vec<u8> = (0x80..0xbf).collect();
    let mut cases = bytes(&[
        b"\x80",
        b"\xbf",
        b"\x80\xbf",
        b"\x80\xbf\x80",
        b"\x80\xbf\x80\xbf",
        b"\x80\xbf\x80\xbf\x80",
        b"\x80\xbf\x80\xbf\x80\xbf",
    ]);
    cases.push(all);
    expect_all_invalid(&cases);
}

#[test]
fn s6_13_lonely_start_bytes_followed_by_space_close_1007() {
    let cases: Vec<Vec<u8>> = [
        (0xc0u8, 0xdfu8),
        (0xe0, 0xef),
        (0xf0, 0xf7),
        (0xf8, 0xfb),
        (0xfc, 0xfd),
    ]
    .iter()
    .map(|&(lo, hi)| (lo..hi).flat_map(|b| [b, 0x20]).collect())
    .collect();
    expect_all_invalid(&cases);
}

fn last_continuation_missing() -> Vec<Vec<u8>> {
    bytes(&[
        b"\xc0",
        b"\xe0\x80",
        b"\xf0\x80\x80",
        b"\xf8\x80\x80\x80",
        b"\xfc\x80\x80\x80\x80",
        b"\xdf",
        b"\xef\xbf",
        b"\xf7\xbf\xbf",
        b"\xfb\xbf\xbf\xbf",
        b"\xfd\xbf\xbf\xbf\xbf",
    ])
}

#[test]
fn s6_14_sequences_missing_last_continuation_byte_close_1007() {
    expect_all_invalid(&last_continuation_missing());
}

#[test]
fn s6_15_concatenated_incomplete_sequences_close_1007() {
    expect_all_invalid(&[last_continuation_missing().concat()]);
}

#[test]
fn s6_truncated_valid_prefix_at_message_end_closes_1007() {
    // Each is a valid prefix that only fails because the message ends.
    expect_all_invalid(&bytes(&[
        b"abc\xdf",
        b"abc\xef\xbf",
        b"abc\xf4\x8f\xbf",
        b"\xce\xba\xe1\xbd",
    ]));
}

#[test]
fn s6_truncated_sequence_at_end_of_fragmented_message_closes_1007() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let mut b = client_frame(false, op::TEXT, b"abc\xe2\x82");
    b.extend(client_frame(true, op::CONTINUATION, b""));
    c.send_raw(&b);
    c.expect_close(1007);
}

#[test]
fn s6_16_impossible_bytes_close_1007() {
    expect_all_invalid(&bytes(&[b"\xfe", b"\xff", b"\xfe\xfe\xff\xff"]));
}

#[test]
fn s6_17_overlong_ascii_close_1007() {
    expect_all_invalid(&bytes(&[
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xf0\x80\x80\xaf",
        b"\xf8\x80\x80\x80\xaf",
        b"\xfc\x80\x80\x80\x80\xaf",
    ]));
}

#[test]
fn s6_18_maximum_overlong_sequences_close_1007() {
    expect_all_invalid(&bytes(&[
        b"\xc1\xbf",
        b"\xe0\x9f\xbf",
        b"\xf0\x8f\xbf\xbf",
        b"\xf8\x87\xbf\xbf\xbf",
        b"\xfc\x83\xbf\xbf\xbf\xbf",
    ]));
}

#[test]
fn s6_19_overlong_nul_close_1007() {
    expect_all_invalid(&bytes(&[
        b"\xc0\x80",
        b"\xe0\x80\x80",
        b"\xf0\x80\x80\x80",
        b"\xf8\x80\x80\x80\x80",
        b"\xfc\x80\x80\x80\x80\x80",
    ]));
}

#[test]
fn s6_20_single_surrogates_close_1007() {
    expect_all_invalid(&bytes(&[
        b"\xed\xa0\x80",
        b"\xed\xad\xbf",
        b"\xed\xae\x80",
        b"\xed\xaf\xbf",
        b"\xed\xb0\x80",
        b"\xed\xbe\x80",
        b"\xed\xbf\xbf",
    ]));
}

#[test]
fn s6_21_paired_surrogates_close_1007() {
    expect_all_invalid(&bytes(&[
        b"\xed\xa0\x80\xed\xb0\x80",
        b"\xed\xa0\x80\xed\xbf\xbf",
        b"\xed\xad\xbf\xed\xb0\x80",
        b"\xed\xad\xbf\xed\xbf\xbf",
        b"\xed\xae\x80\xed\xb0\x80",
        b"\xed\xae\x80\xed\xbf\xbf",
        b"\xed\xaf\xbf\xed\xb0\x80",
        b"\xed\xaf\xbf\xed\xbf\xbf",
    ]));
}

#[test]
fn s6_22_noncharacters_are_valid_and_echoed() {
    let mut cases = bytes(&[b"\xef\xbf\xbe", b"\xef\xbf\xbf"]);
    for lead in [0xf0u8, 0xf1, 0xf2, 0xf3, 0xf4] {
        for second in [0x8fu8, 0x9f, 0xaf, 0xbf] {
            if lead == 0xf4 && second != 0x8f {
                continue; // above U+10FFFF
            }
            if lead == 0xf0 && second == 0x8f {
                continue; // overlong
            }
            for last in [0xbeu8, 0xbf] {
                cases.push(vec![lead, second, 0xbf, last]);
            }
        }
    }
    expect_all_valid(&cases);
}

#[test]
fn s6_23_unicode_specials_echoed() {
    expect_all_valid(&bytes(&[
        b"\xef\xbf\xb9",
        b"\xef\xbf\xba",
        b"\xef\xbf\xbb",
        b"\xef\xbf\xbc",
        b"\xef\xbf\xbd",
        b"\xef\xbf\xbe",
        b"\xef\xbf\xbf",
    ]));
}

#[test]
fn s6_every_bmp_and_astral_sample_codepoint_echoed() {
    // One message holding a code point every 97 steps over the whole range
    // (surrogates excluded): exercises every encoded length and lead byte.
    let text: String = (0..=0x10FFFFu32)
        .step_by(97)
        .filter_map(char::from_u32)
        .collect();
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_text(&text);
    c.expect_text(&text);
}

#[test]
fn s6_binary_message_with_invalid_utf8_is_echoed_unchanged() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let data = b"\xed\xa0\x80\xff\xfe\xc0\xaf";
    c.send_binary(data);
    c.expect_binary(data);
}

#[test]
fn s6_invalid_text_after_valid_messages_closes_1007_after_their_echoes() {
    let server = start_server(test_config());
    let mut c = RawClient::connect(server.addr(), "/echo");
    let mut b = client_frame(true, op::TEXT, KOSME);
    b.extend(client_frame(true, op::BINARY, b"\xff"));
    b.extend(client_frame(true, op::TEXT, b"bad \xc0\xaf"));
    b.extend(client_frame(true, op::TEXT, b"never echoed"));
    c.send_raw(&b);
    c.expect_frame(op::TEXT, KOSME);
    c.expect_binary(b"\xff");
    c.expect_close(1007);
}
