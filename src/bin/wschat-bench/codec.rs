//! The client side of RFC 6455 as pure code on byte slices.
//!
//! Nothing here touches a socket or a clock, so every rule can be tested by
//! feeding bytes split at every offset. `conn` owns the sockets and calls in
//! here; the frame header layout itself comes from the library
//! (`wschat::protocol::frame`), so client and server agree on it by
//! construction while the client-side rules (server frames are unmasked, the
//! accept key must match, a ping gets a pong) live here.

use std::fmt;

use base64::Engine as _;
use wschat::protocol::close::parse_close_payload;
use wschat::protocol::frame::{decode_header, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD};
use wschat::protocol::handshake::accept_key;
use wschat::protocol::mask::apply_mask;
use wschat::protocol::utf8;

use crate::rng::Rng;

/// A response head longer than this is refused: a real 101 is ~130 bytes.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Header lines we are prepared to parse in a response head.
const MAX_RESPONSE_HEADERS: usize = 32;

/// Why the server's answer to our upgrade request was not a valid 101.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The status line was not 101 (the server refused, e.g. 503 when full).
    Status(u16),
    /// Not parseable as an HTTP/1.1 response head.
    Malformed,
    /// No end of head within [`MAX_RESPONSE_HEAD`] bytes.
    HeadTooLarge,
    /// `Upgrade: websocket` missing (section 4.1, client check 2).
    MissingUpgrade,
    /// `Connection: Upgrade` missing (section 4.1, client check 3).
    MissingConnection,
    /// `Sec-WebSocket-Accept` missing or not derived from our key (check 4).
    BadAccept,
    /// An extension or subprotocol we never offered (checks 5 and 6).
    UnrequestedExtension,
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeFailure::Status(code) => write!(f, "handshake: status {code}"),
            HandshakeFailure::Malformed => f.write_str("handshake: malformed response"),
            HandshakeFailure::HeadTooLarge => f.write_str("handshake: response head too large"),
            HandshakeFailure::MissingUpgrade => f.write_str("handshake: no Upgrade: websocket"),
            HandshakeFailure::MissingConnection => f.write_str("handshake: no Connection: upgrade"),
            HandshakeFailure::BadAccept => f.write_str("handshake: wrong Sec-WebSocket-Accept"),
            HandshakeFailure::UnrequestedExtension => {
                f.write_str("handshake: unrequested extension or protocol")
            }
        }
    }
}

/// One upgrade request in flight: remembers the accept value it expects.
#[derive(Debug)]
pub struct ClientHandshake {
    expected_accept: String,
}

impl ClientHandshake {
    /// Appends a GET upgrade request with a fresh random 16-byte key to `out`.
    ///
    /// `host` is sent verbatim as the Host header (`name:port`), `path`
    /// includes any query string.
    pub fn start(rng: &mut Rng, host: &str, path: &str, out: &mut Vec<u8>) -> ClientHandshake {
        let mut nonce = [0u8; 16];
        rng.fill(&mut nonce);
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(
            b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
        );
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        ClientHandshake {
            expected_accept: accept_key(key.as_bytes()),
        }
    }

    /// Checks the response head at the start of `buf`.
    ///
    /// `Ok(None)`: the head is not complete yet. `Ok(Some(n))`: a valid 101
    /// whose head is `n` bytes long; whatever follows is already frames.
    pub fn parse_response(&self, buf: &[u8]) -> Result<Option<usize>, HandshakeFailure> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(HandshakeFailure::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HandshakeFailure::Malformed),
        };
        let code = response.code.ok_or(HandshakeFailure::Malformed)?;
        if code != 101 {
            return Err(HandshakeFailure::Status(code));
        }
        let (mut upgrade, mut connection, mut accept) = (false, false, false);
        for header in response.headers.iter() {
            let name = header.name;
            if name.eq_ignore_ascii_case("upgrade") {
                upgrade |= has_token(header.value, "websocket");
            } else if name.eq_ignore_ascii_case("connection") {
                connection |= has_token(header.value, "upgrade");
            } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
                accept = header.value == self.expected_accept.as_bytes();
            } else if name.eq_ignore_ascii_case("sec-websocket-extensions")
                || name.eq_ignore_ascii_case("sec-websocket-protocol")
            {
                return Err(HandshakeFailure::UnrequestedExtension);
            }
        }
        if !upgrade {
            return Err(HandshakeFailure::MissingUpgrade);
        }
        if !connection {
            return Err(HandshakeFailure::MissingConnection);
        }
        if !accept {
            return Err(HandshakeFailure::BadAccept);
        }
        Ok(Some(head_len))
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A server frame or message that breaks RFC 6455: the connection is failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation(pub &'static str);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol: {}", self.0)
    }
}

/// What one decoded server frame means to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete text or binary message, reassembled if it was fragmented.
    Message {
        /// Binary (opcode 0x2) rather than text (0x1).
        binary: bool,
        /// The payload, unmasked (server frames carry no mask).
        data: &'a [u8],
    },
    /// A ping: the caller answers with a pong carrying the same bytes.
    Ping(&'a [u8]),
    /// A pong (we never ping, so it is only counted).
    Pong,
    /// A close frame with its status code, if it had one.
    Close(Option<u16>),
}

/// What [`FrameReader::decode`] made of the bytes at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// The next frame is not complete: at least `needed` bytes must be
    /// buffered (header plus payload) before it can be decoded.
    Incomplete {
        /// Total bytes the buffer must hold, counted from its start.
        needed: usize,
    },
    /// One whole frame of `consumed` bytes; `frame` is `None` for a
    /// fragment that does not finish its message.
    Frame {
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
        /// The finished message or control frame, if any.
        frame: Option<Frame<'a>>,
    },
}

/// Incremental decoder of server frames with message reassembly.
///
/// The caller keeps the received bytes in its own buffer and calls
/// [`decode`](FrameReader::decode) on them; only the fragments of an
/// unfinished message are copied here. An unfragmented message (nearly all
/// of them) is handed out as a slice of the caller's buffer, without a copy.
#[derive(Debug)]
pub struct FrameReader {
    /// Opcode of the fragmented message in progress, if any.
    fragment_opcode: Option<OpCode>,
    /// Payload of the fragmented message so far.
    fragments: Vec<u8>,
    /// `fragments` was handed out by the previous call and must be cleared.
    fragments_delivered: bool,
    /// Largest message accepted, so a broken server cannot exhaust memory.
    max_message: usize,
}

impl FrameReader {
    /// A reader that fails messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> FrameReader {
        FrameReader {
            fragment_opcode: None,
            fragments: Vec::new(),
            fragments_delivered: false,
            max_message,
        }
    }

    /// Decodes at most one frame from the start of `buf`.
    pub fn decode<'a>(&'a mut self, buf: &'a [u8]) -> Result<Decoded<'a>, Violation> {
        if self.fragments_delivered {
            self.fragments.clear();
            self.fragments_delivered = false;
        }
        let (header, header_len) = match decode_header(buf) {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Ok(Decoded::Incomplete {
                    needed: buf.len() + 1,
                })
            }
            Err(_) => return Err(Violation("reserved opcode or invalid length")),
        };
        if header.mask.is_some() {
            // Section 5.1: "A client MUST close a connection if it detects a
            // masked frame."
            return Err(Violation("masked server frame"));
        }
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation("reserved bits set without an extension"));
        }
        if header.payload_len > self.max_message as u64 {
            return Err(Violation("message too large"));
        }
        let total = header_len + header.payload_len as usize;
        if buf.len() < total {
            return Ok(Decoded::Incomplete { needed: total });
        }
        let payload = &buf[header_len..total];
        let frame = self.classify(&header, payload)?;
        Ok(Decoded::Frame {
            consumed: total,
            frame,
        })
    }

    /// Applies the fragmentation and control-frame rules to one frame.
    fn classify<'a>(
        &'a mut self,
        header: &FrameHeader,
        payload: &'a [u8],
    ) -> Result<Option<Frame<'a>>, Violation> {
        match header.opcode {
            OpCode::Ping | OpCode::Pong | OpCode::Close => {
                if !header.fin {
                    return Err(Violation("fragmented control frame"));
                }
                if payload.len() > MAX_CONTROL_PAYLOAD {
                    return Err(Violation("control frame too long"));
                }
                Ok(Some(match header.opcode {
                    OpCode::Ping => Frame::Ping(payload),
                    OpCode::Pong => Frame::Pong,
                    _ => Frame::Close(
                        parse_close_payload(payload)
                            .map_err(|_| Violation("invalid close payload"))?
                            .map(|code| code.0),
                    ),
                }))
            }
            OpCode::Text | OpCode::Binary => {
                if self.fragment_opcode.is_some() {
                    return Err(Violation("new message inside a fragmented one"));
                }
                let binary = header.opcode == OpCode::Binary;
                if header.fin {
                    return finished(binary, payload).map(Some);
                }
                self.fragment_opcode = Some(header.opcode);
                self.fragments.extend_from_slice(payload);
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(opcode) = self.fragment_opcode else {
                    return Err(Violation("continuation without a message"));
                };
                if self.fragments.len() + payload.len() > self.max_message {
                    return Err(Violation("message too large"));
                }
                self.fragments.extend_from_slice(payload);
                if !header.fin {
                    return Ok(None);
                }
                self.fragment_opcode = None;
                self.fragments_delivered = true;
                finished(opcode == OpCode::Binary, &self.fragments).map(Some)
            }
        }
    }
}

/// A complete data message, after the UTF-8 check text messages need.
fn finished(binary: bool, data: &[u8]) -> Result<Frame<'_>, Violation> {
    if !binary && !utf8::is_valid(data) {
        return Err(Violation("invalid UTF-8 in a text message"));
    }
    Ok(Frame::Message { binary, data })
}

/// Appends one masked client frame whose payload is `parts` joined.
///
/// The parts are copied straight into `out` (no intermediate buffer, no
/// zero-fill first) and masked in place with a fresh key from `rng`.
pub fn write_frame(out: &mut Vec<u8>, rng: &mut Rng, opcode: OpCode, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mask = rng.mask();
    let mut header = FrameHeader::new(true, opcode, len as u64);
    header.mask = Some(mask);
    out.reserve(header.encoded_len() + len);
    header.encode(out);
    let start = out.len();
    for part in parts {
        out.extend_from_slice(part);
    }
    apply_mask(&mut out[start..], mask, 0);
}

/// Appends a masked close frame with `code` (no reason).
pub fn write_close(out: &mut Vec<u8>, rng: &mut Rng, code: Option<u16>) {
    match code {
        Some(code) => write_frame(out, rng, OpCode::Close, &[&code.to_be_bytes()]),
        None => write_frame(out, rng, OpCode::Close, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wschat::protocol::frame::encode_frame;

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
        ClientHandshake::start(&mut rng, "127.0.0.1:9000", "/echo", &mut a);
        ClientHandshake::start(&mut rng, "127.0.0.1:9000", "/echo", &mut b);
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
        let hs = ClientHandshake::start(&mut rng, "h", "/", &mut req);
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
        let hs = ClientHandshake::start(&mut rng, "h", "/", &mut req);
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
}
