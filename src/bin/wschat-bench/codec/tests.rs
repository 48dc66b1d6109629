//! The client codec on byte slices: frames split at every offset, the
//! upgrade request and the server's answers to it.

use super::*;
use wschat::protocol::frame::encode_frame;

/// An upgrade of `/echo` without a subprotocol.
const ECHO: Upgrade<'static> = Upgrade {
    path: "/echo",
    protocol: None,
};

/// An upgrade of `/` without a subprotocol.
const ROOT: Upgrade<'static> = Upgrade {
    path: "/",
    protocol: None,
};

/// An owned copy of a [`Frame`], to compare decodes across splits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Message(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
}

fn own(frame: Frame<'_>) -> Owned {
    match frame {
        Frame::Message { binary, data } => Owned::Message(binary, data.to_vec()),
        Frame::Ping(p) => Owned::Ping(p.to_vec()),
        Frame::Pong => Owned::Pong,
        Frame::Close(code) => Owned::Close(code),
    }
}

/// Feeds `chunks` one after another into a growing buffer, decoding
/// after each, the way `conn` does after each read.
fn decode_chunks(chunks: &[&[u8]]) -> Result<Vec<Owned>, Violation> {
    let mut reader = FrameReader::new(1 << 20);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match reader.decode(&buf)? {
                Decoded::Incomplete { needed } => {
                    assert!(needed > buf.len());
                    break;
                }
                Decoded::Frame { consumed, frame } => {
                    if let Some(frame) = frame {
                        out.push(own(frame));
                    }
                    buf.drain(..consumed);
                }
            }
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    Ok(out)
}

/// A server stream with every kind of frame the client must handle:
/// short and 16/64-bit lengths, a fragmented message with a ping in the
/// middle, multi-byte UTF-8 split across fragments, and a close.
fn server_stream() -> (Vec<u8>, Vec<Owned>) {
    let mut s = Vec::new();
    encode_frame(true, OpCode::Text, false, &[b"from1:", b"hello"], &mut s);
    let medium = vec![7u8; 300];
    encode_frame(true, OpCode::Binary, false, &[&medium], &mut s);
    let large = vec![9u8; 70_000];
    encode_frame(true, OpCode::Binary, false, &[&large], &mut s);
    let text = "κόσμε".as_bytes();
    encode_frame(false, OpCode::Text, false, &[&text[..3]], &mut s);
    encode_frame(true, OpCode::Ping, false, &[b"are you there"], &mut s);
    encode_frame(false, OpCode::Continuation, false, &[&text[3..7]], &mut s);
    encode_frame(true, OpCode::Continuation, false, &[&text[7..]], &mut s);
    encode_frame(true, OpCode::Pong, false, &[], &mut s);
    encode_frame(true, OpCode::Text, false, &[b""], &mut s);
    encode_frame(
        true,
        OpCode::Close,
        false,
        &[&1001u16.to_be_bytes(), b"bye"],
        &mut s,
    );
    let expected = vec![
        Owned::Message(false, b"from1:hello".to_vec()),
        Owned::Message(true, medium),
        Owned::Message(true, large),
        Owned::Ping(b"are you there".to_vec()),
        Owned::Message(false, text.to_vec()),
        Owned::Pong,
        Owned::Message(false, Vec::new()),
        Owned::Close(Some(1001)),
    ];
    (s, expected)
}

#[test]
fn whole_stream_decodes() {
    let (stream, expected) = server_stream();
    assert_eq!(decode_chunks(&[&stream]).unwrap(), expected);
}

#[test]
fn stream_split_at_every_offset_decodes_the_same() {
    let (stream, expected) = server_stream();
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(decode_chunks(&[a, b]).unwrap(), expected, "cut {cut}");
    }
}

#[test]
fn small_frames_byte_by_byte() {
    let mut s = Vec::new();
    encode_frame(false, OpCode::Binary, false, &[b"ab"], &mut s);
    encode_frame(true, OpCode::Continuation, false, &[b"cd"], &mut s);
    encode_frame(true, OpCode::Close, false, &[], &mut s);
    let bytes: Vec<&[u8]> = s.chunks(1).collect();
    assert_eq!(
        decode_chunks(&bytes).unwrap(),
        vec![Owned::Message(true, b"abcd".to_vec()), Owned::Close(None)]
    );
}

#[test]
fn protocol_violations_fail_the_connection() {
    let masked = [0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1];
    let rsv = [0xC1, 0x00];
    let long_ping = {
        let mut f = Vec::new();
        encode_frame(true, OpCode::Ping, false, &[&[0u8; 126]], &mut f);
        f
    };
    let fragmented_ping = [0x09, 0x00];
    let lone_continuation = [0x80, 0x00];
    let bad_utf8 = [0x81, 0x02, 0xC0, 0xAF];
    let bad_close_code = [0x88, 0x02, 0x03, 0xED];
    let interleaved = [0x01, 0x01, b'a', 0x81, 0x01, b'b'];
    for (name, bytes) in [
        ("masked", &masked[..]),
        ("rsv", &rsv[..]),
        ("long ping", &long_ping[..]),
        ("fragmented ping", &fragmented_ping[..]),
        ("lone continuation", &lone_continuation[..]),
        ("bad utf8", &bad_utf8[..]),
        ("close 1005", &bad_close_code[..]),
        ("interleaved", &interleaved[..]),
    ] {
        assert!(decode_chunks(&[bytes]).is_err(), "{name}");
    }
}

#[test]
fn oversized_message_is_refused_before_buffering() {
    let mut reader = FrameReader::new(100);
    let header = [0x82, 0x7E, 0x01, 0x00];
    assert_eq!(reader.decode(&header), Err(Violation("message too large")));
}

#[test]
fn incomplete_frame_asks_for_the_whole_frame() {
    let mut f = Vec::new();
    encode_frame(true, OpCode::Binary, false, &[&[0u8; 1000]], &mut f);
    let mut reader = FrameReader::new(1 << 20);
    assert_eq!(
        reader.decode(&f[..10]),
        Ok(Decoded::Incomplete { needed: 1004 })
    );
}

#[test]
fn client_frames_are_masked_and_round_trip() {
    let mut rng = Rng::with_seed(1);
    let mut out = Vec::new();
    write_frame(&mut out, &mut rng, OpCode::Text, &[b"Hello"]);
    write_frame(&mut out, &mut rng, OpCode::Text, &[b"He", b"", b"llo"]);
    let (h1, n1) = decode_header(&out).unwrap().unwrap();
    let first_len = n1 + h1.payload_len as usize;
    let (h2, n2) = decode_header(&out[first_len..]).unwrap().unwrap();
    assert!(h1.fin && h1.opcode == OpCode::Text && h1.payload_len == 5);
    assert_ne!(h1.mask, h2.mask, "each frame gets a fresh mask");
    let mut payload = out[n1..first_len].to_vec();
    assert_ne!(payload, b"Hello");
    apply_mask(&mut payload, h1.mask.unwrap(), 0);
    assert_eq!(payload, b"Hello");
    let mut second = out[first_len + n2..].to_vec();
    apply_mask(&mut second, h2.mask.unwrap(), 0);
    assert_eq!(second, b"Hello");
}

#[test]
fn close_frame_carries_the_code() {
    let mut rng = Rng::with_seed(2);
    let mut out = Vec::new();
    write_close(&mut out, &mut rng, Some(1000));
    let (h, n) = decode_header(&out).unwrap().unwrap();
    assert_eq!(h.opcode, OpCode::Close);
    let mut payload = out[n..].to_vec();
    apply_mask(&mut payload, h.mask.unwrap(), 0);
    assert_eq!(payload, 1000u16.to_be_bytes());
}

/// The server's answer for the request written to `req`.
fn response_for(req: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(req).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key.as_bytes())
    )
    .into_bytes()
}

#[test]
fn request_has_a_fresh_sixteen_byte_key() {
    let mut rng = Rng::with_seed(3);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    ClientHandshake::start(&mut rng, "127.0.0.1:9000", ECHO, &mut a);
    ClientHandshake::start(&mut rng, "127.0.0.1:9000", ECHO, &mut b);
    assert_ne!(a, b);
    let text = String::from_utf8(a).unwrap();
    assert!(text.starts_with("GET /echo HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    assert_eq!(raw.len(), 16);
}

#[test]
fn valid_101_split_at_every_offset() {
    let mut rng = Rng::with_seed(4);
    let mut req = Vec::new();
    let hs = ClientHandshake::start(&mut rng, "h", ROOT, &mut req);
    let mut resp = response_for(&req);
    let head_len = resp.len();
    resp.extend_from_slice(&[0x81, 0x00]);
    for cut in 0..head_len {
        assert_eq!(hs.parse_response(&resp[..cut]), Ok(None), "cut {cut}");
    }
    assert_eq!(hs.parse_response(&resp), Ok(Some(head_len)));
}

#[test]
fn bad_responses_are_refused() {
    let mut rng = Rng::with_seed(5);
    let mut req = Vec::new();
    let hs = ClientHandshake::start(&mut rng, "h", ROOT, &mut req);
    let good = String::from_utf8(response_for(&req)).unwrap();
    let cases = [
        (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_string(),
            HandshakeFailure::Status(503),
        ),
        (
            good.replace("Upgrade: websocket\r\n", ""),
            HandshakeFailure::MissingUpgrade,
        ),
        (
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            HandshakeFailure::MissingConnection,
        ),
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_string(),
            HandshakeFailure::BadAccept,
        ),
        (
            good.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
            HandshakeFailure::UnrequestedExtension,
        ),
        ("HTTP/1.1 abc\r\n\r\n".to_string(), HandshakeFailure::Malformed),
    ];
    for (response, expected) in cases {
        assert_eq!(hs.parse_response(response.as_bytes()), Err(expected));
    }
    let endless = format!("HTTP/1.1 101 OK\r\nX: {}", "a".repeat(9000));
    assert_eq!(
        hs.parse_response(endless.as_bytes()),
        Err(HandshakeFailure::HeadTooLarge)
    );
}

#[test]
fn tokens_are_matched_in_lists() {
    assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
    assert!(has_token(b"WebSocket", "websocket"));
    assert!(!has_token(b"upgrades", "upgrade"));
}

#[test]
fn an_offered_subprotocol_must_be_the_one_chosen() {
    let mut rng = Rng::with_seed(6);
    let mut req = Vec::new();
    let v1 = Upgrade {
        path: "/room/a?since=e1:4",
        protocol: Some("wschat.v1"),
    };
    let hs = ClientHandshake::start(&mut rng, "h", v1, &mut req);
    let text = String::from_utf8(req.clone()).unwrap();
    assert!(text.starts_with("GET /room/a?since=e1:4 HTTP/1.1\r\n"));
    assert!(text.contains("\r\nSec-WebSocket-Protocol: wschat.v1\r\n"));
    let good = String::from_utf8(response_for(&req)).unwrap();
    let with = |header: &str| good.replace("\r\n\r\n", &format!("\r\n{header}\r\n\r\n"));
    let chosen = with("Sec-WebSocket-Protocol: wschat.v1");
    assert_eq!(hs.parse_response(chosen.as_bytes()), Ok(Some(chosen.len())));
    let cases = [
        (good.clone(), HandshakeFailure::ProtocolNotChosen),
        (
            with("Sec-WebSocket-Protocol: chat"),
            HandshakeFailure::UnrequestedExtension,
        ),
        (
            with("Sec-WebSocket-Protocol: wschat.v1\r\nSec-WebSocket-Protocol: wschat.v1"),
            HandshakeFailure::UnrequestedExtension,
        ),
    ];
    for (response, expected) in cases {
        assert_eq!(hs.parse_response(response.as_bytes()), Err(expected));
    }
    // Without an offer, any subprotocol in the answer is refused.
    let mut req = Vec::new();
    let plain = ClientHandshake::start(&mut rng, "h", ROOT, &mut req);
    let answer = String::from_utf8(response_for(&req))
        .unwrap()
        .replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: wschat.v1\r\n\r\n");
    assert_eq!(
        plain.parse_response(answer.as_bytes()),
        Err(HandshakeFailure::UnrequestedExtension)
    );
}
