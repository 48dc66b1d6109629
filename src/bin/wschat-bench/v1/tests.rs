//! The reader against the server's own writer (`wschat::server::json`),
//! against hand-written objects, and behind the frame reader with the
//! bytes split every way a socket can split them.

use super::*;
use proptest::prelude::*;
use wschat::protocol::frame::{encode_frame, OpCode};
use wschat::server::json::{self, Stamp, Welcome as ServerWelcome};

use crate::codec::{Decoded, Frame, FrameReader};

const STAMP: Stamp<'static> = Stamp {
    epoch: "k3x9",
    offset: 42,
    time_ms: 1_764_489_600_123,
};

/// What the server sends a `wschat.v1` member for a message `payload`.
fn server_message(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    json::message(&STAMP, 7, opcode, payload, &mut out);
    out
}

/// The text of a parsed message, decoded.
fn text_of(object: Object<'_>) -> String {
    match object {
        Object::Message(Message {
            body: Body::Text(s),
            ..
        }) => s.value().expect("a valid string").into_owned(),
        other => panic!("not a text message: {other:?}"),
    }
}

#[test]
fn a_message_as_the_server_writes_it() {
    let data = server_message(OpCode::Text, b"b1f:0:17:123456");
    let object = parse(&data).unwrap();
    let Object::Message(m) = object else {
        panic!("{object:?}")
    };
    assert_eq!(m.offset, 42);
    let Body::Text(text) = m.body else {
        panic!("{m:?}")
    };
    assert!(!text.escaped, "the tool's own texts need no escape");
    assert_eq!(text.value().unwrap(), "b1f:0:17:123456");
}

#[test]
fn escaped_text_is_decoded_and_cannot_pose_as_a_field() {
    let tricky = "\"offset\":99,\"text\":\"x\" \\ \n\r\t \u{7} \0 é 😀 </script> \\\"";
    let data = server_message(OpCode::Text, tricky.as_bytes());
    let object = parse(&data).unwrap();
    let Object::Message(m) = object else {
        panic!("{object:?}")
    };
    assert_eq!(m.offset, 42, "the real field, not the one in the text");
    assert_eq!(text_of(object), tricky);
    // Escapes the server does not write but JSON allows.
    let data = br#"{"type":"message","offset":1,"text":"\ud83d\ude00\/\b\f\u00e9"}"#;
    assert_eq!(text_of(parse(data).unwrap()), "😀/\u{8}\u{c}é");
}

#[test]
fn binary_is_recognised_without_decoding() {
    let data = server_message(OpCode::Binary, &[0, 1, 2, 255, b'"']);
    assert_eq!(
        parse(&data),
        Ok(Object::Message(Message {
            offset: 42,
            body: Body::Binary
        }))
    );
}

#[test]
fn welcome_presence_and_unknown_types() {
    let mut data = Vec::new();
    json::welcome(
        &ServerWelcome {
            id: 7,
            room: "lobby",
            epoch: "abc123",
            offset: 41,
            members: 3,
            recovered: true,
        },
        &mut data,
    );
    assert_eq!(
        parse(&data),
        Ok(Object::Welcome(Welcome {
            epoch: "abc123",
            offset: 41,
            recovered: true
        }))
    );
    let mut data = Vec::new();
    json::presence(json::Presence::Leave, 8, 3, &mut data);
    assert_eq!(parse(&data), Ok(Object::Presence));
    assert_eq!(
        parse(br#"{"type":"typing","id":3}"#),
        Ok(Object::Other),
        "types may be added"
    );
}

#[test]
fn broken_objects_are_refused() {
    for (data, why) in [
        (&b"from7:hello"[..], "not an object"),
        (br#"{"id":3}"#, "no type"),
        (
            br#"{"type":"message","text":"a"}"#,
            "message without offset",
        ),
        (
            br#"{"type":"message","offset":-1,"text":"a"}"#,
            "message without offset",
        ),
        (
            br#"{"type":"message","offset":99999999999999999999,"text":"a"}"#,
            "message without offset",
        ),
        (
            br#"{"type":"message","offset":3}"#,
            "message without text or binary",
        ),
        (
            br#"{"type":"message","offset":3,"text":"abc"#,
            "text is not a string",
        ),
        (
            br#"{"type":"message","offset":3,"text":7}"#,
            "text is not a string",
        ),
        (
            br#"{"type":"welcome","offset":3,"recovered":true}"#,
            "welcome without epoch",
        ),
        (
            br#"{"type":"welcome","epoch":"e","offset":3}"#,
            "welcome without recovered",
        ),
    ] {
        assert_eq!(
            parse(data),
            Err(Malformed(why)),
            "{}",
            String::from_utf8_lossy(data)
        );
    }
    for raw in [&br#"\x"#[..], br#"\u12"#, br#"\ud83d"#, br#"\ud83d\u0041"#] {
        assert_eq!(unescape(raw), None, "{}", String::from_utf8_lossy(raw));
    }
}

/// Every message decoded from `chunks` fed one after another, the way a
/// connection reads them, each parsed as an object.
fn parse_stream(chunks: &[&[u8]]) -> Vec<String> {
    let mut reader = FrameReader::new(1 << 20);
    let mut buf = Vec::new();
    let mut texts = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Decoded::Frame { consumed, frame } = reader.decode(&buf).unwrap() {
            if let Some(Frame::Message { data, .. }) = frame {
                texts.push(text_of(parse(data).unwrap()));
            }
            buf.drain(..consumed);
        }
    }
    assert!(buf.is_empty());
    texts
}

#[test]
fn split_and_fragmented_objects_read_the_same() {
    let text = "split \"here\" é 😀";
    let object = server_message(OpCode::Text, text.as_bytes());
    let mut stream = Vec::new();
    encode_frame(true, OpCode::Text, false, &[&object], &mut stream);
    // The same object in three fragments, cut inside `"offset":` and
    // inside the multi-byte é.
    let cut_a = object.windows(7).position(|w| w == b"\"offset").unwrap() + 3;
    let cut_b = object.iter().position(|&b| b == 0xC3).unwrap() + 1;
    encode_frame(false, OpCode::Text, false, &[&object[..cut_a]], &mut stream);
    let middle = &object[cut_a..cut_b];
    encode_frame(false, OpCode::Continuation, false, &[middle], &mut stream);
    encode_frame(
        true,
        OpCode::Continuation,
        false,
        &[&object[cut_b..]],
        &mut stream,
    );
    let expected = vec![text.to_string(), text.to_string()];
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(parse_stream(&[a, b]), expected, "cut {cut}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(parse_stream(&bytes), expected);
}

proptest! {
    /// Whatever a client sends, the reader gets back exactly that text
    /// from what the server writes.
    #[test]
    fn any_text_round_trips_through_the_server_writer(text in "\\PC*|[\"\\\\\\x00-\\x1f:{},]*") {
        let data = server_message(OpCode::Text, text.as_bytes());
        let object = parse(&data).unwrap();
        let offset = match object {
            Object::Message(m) => m.offset,
            _ => 0,
        };
        prop_assert_eq!(offset, 42);
        prop_assert_eq!(text_of(object), text);
    }
}
