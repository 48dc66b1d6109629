//! The channel format: round trips, and the strict decoder.

use super::*;

fn message<'a>(sender: u64, opcode: OpCode, payload: &'a [u8]) -> Message<'a> {
    Message {
        sender,
        opcode,
        time_ms: 1_700_000_000_123,
        offset: 1,
        epoch: "0hon59y07ji1",
        payload,
    }
}

fn round_trip(m: Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&m, &mut out);
    assert_eq!(decode(&out), Ok(m));
    out
}

#[test]
fn the_layout_is_as_documented() {
    let m = Message {
        time_ms: 300,
        offset: 5,
        epoch: "e1",
        ..message(7, OpCode::Text, b"hi")
    };
    assert_eq!(
        round_trip(m),
        [0x21, 0x07, 0xac, 0x02, 0x05, 2, b'e', b'1', b'h', b'i']
    );
    let m = Message {
        time_ms: 0,
        ..message(0, OpCode::Binary, b"")
    };
    assert_eq!(round_trip(m)[..3], [0x22, 0x00, 0x00]);
}

#[test]
fn round_trips_every_varint_width() {
    for shift in 0..64 {
        for n in [1u64 << shift, (1u64 << shift) - 1, (1 << shift) + 1] {
            let offset = n.max(1);
            let m = Message {
                time_ms: n,
                offset,
                ..message(n, OpCode::Binary, &[0xff, 0x00, b'\r', b'\n'])
            };
            round_trip(m);
            let m = Message {
                time_ms: n.rotate_left(7),
                offset,
                ..message(n, OpCode::Text, "é\r\n".as_bytes())
            };
            round_trip(m);
        }
    }
    let max = Message {
        time_ms: u64::MAX,
        offset: u64::MAX,
        epoch: &"Z".repeat(32),
        ..message(u64::MAX, OpCode::Text, b"x")
    };
    assert_eq!(round_trip(max).len(), MAX_HEADER + 1);
}

#[test]
fn payload_bytes_are_kept_as_they_are() {
    let payload: Vec<u8> = (0..=255).collect();
    round_trip(message(1 << 52, OpCode::Binary, &payload));
}

#[test]
fn the_head_is_what_the_script_completes() {
    let m = message(300, OpCode::Text, b"hello");
    let mut head = Vec::new();
    encode_head(m.sender, m.opcode, m.time_ms, &mut head);
    let mut whole = Vec::new();
    encode(&m, &mut whole);
    assert!(whole.starts_with(&head));
}

#[test]
fn every_truncation_is_refused() {
    let mut whole = Vec::new();
    let m = Message {
        time_ms: 1 << 40,
        offset: 1 << 20,
        ..message(1 << 30, OpCode::Text, b"")
    };
    encode(&m, &mut whole);
    assert!(decode(&whole).is_ok());
    let expected = |cut: usize| match cut {
        0 => Malformed::Empty,
        1..=5 => Malformed::Sender,
        6..=11 => Malformed::Time,
        12..=14 => Malformed::Offset,
        _ => Malformed::Epoch,
    };
    for cut in 0..whole.len() {
        assert_eq!(decode(&whole[..cut]), Err(expected(cut)), "cut at {cut}");
    }
}

#[test]
fn refuses_what_it_did_not_write() {
    let ok = |rest: &[u8]| [&[0x21, 0x07, 0x01, 0x01, 0x01, b'e'][..], rest].concat();
    assert!(decode(&ok(b"fine")).is_ok());
    // Version 1, the format before offsets, and other versions and kinds.
    for kind in [0x11, 0x12, 0x01, 0x20, 0x23, 0x29, 0x31, b'h'] {
        let mut bytes = ok(b"");
        bytes[0] = kind;
        assert_eq!(decode(&bytes), Err(Malformed::Kind(kind)), "{kind:#x}");
    }
    // Varints: not the shortest form, past 64 bits.
    assert_eq!(decode(&[0x21, 0x80, 0x00]), Err(Malformed::Sender));
    assert_eq!(decode(&[0x21, 0x07, 0x80, 0x00]), Err(Malformed::Time));
    let mut eleven = vec![0x21];
    eleven.extend([0xff; 10]);
    eleven.push(0x01);
    assert_eq!(decode(&eleven), Err(Malformed::Sender));
    let mut overflow = vec![0x21, 0x07];
    overflow.extend([0xff; 9]);
    overflow.push(0x02);
    assert_eq!(decode(&overflow), Err(Malformed::Time));
    // Offsets start at 1.
    assert_eq!(
        decode(&[0x21, 0x07, 0x01, 0x00, 0x01, b'e']),
        Err(Malformed::Offset)
    );
    // Epochs: empty, too long, other characters, cut short.
    assert_eq!(
        decode(&[0x21, 0x07, 0x01, 0x01, 0x00, b'x']),
        Err(Malformed::Epoch)
    );
    let mut long = vec![0x21, 0x07, 0x01, 0x01, 33];
    long.extend([b'a'; 40]);
    assert_eq!(decode(&long), Err(Malformed::Epoch));
    for bad in [b'-', b':', b' ', 0x00, 0xc3, b'{'] {
        let bytes = [0x21, 0x07, 0x01, 0x01, 0x02, b'a', bad, b'x'];
        assert_eq!(decode(&bytes), Err(Malformed::Epoch), "{bad:#x}");
    }
    assert_eq!(
        decode(&[0x21, 0x07, 0x01, 0x01, 0x05, b'a']),
        Err(Malformed::Epoch)
    );
    // Text must be UTF-8; binary is not checked.
    assert_eq!(decode(&ok(b"\xff")), Err(Malformed::Utf8));
    let mut binary = ok(b"\xff");
    binary[0] = 0x22;
    assert!(decode(&binary).is_ok());
}

#[test]
fn epochs_are_letters_and_digits_up_to_32() {
    assert!(is_valid_epoch("0hon59y07ji1"));
    assert!(is_valid_epoch("Z"));
    assert!(is_valid_epoch(&"a".repeat(32)));
    assert!(!is_valid_epoch(""));
    assert!(!is_valid_epoch(&"a".repeat(33)));
    assert!(!is_valid_epoch("a-b"));
    assert!(!is_valid_epoch("é"));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..4000 {
        let bytes: Vec<u8> = (0..len % 48)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly plausible starts, so the decoder gets deep.
                if i == 0 {
                    0x21 + (seed as u8 & 1)
                } else {
                    seed as u8
                }
            })
            .collect();
        let _ = decode(&bytes);
    }
}
