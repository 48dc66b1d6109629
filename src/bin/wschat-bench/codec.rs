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
    /// We offered a subprotocol and the server chose none: it would speak
    /// another protocol than the one the scenario reads.
    ProtocolNotChosen,
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
            HandshakeFailure::ProtocolNotChosen => {
                f.write_str("handshake: offered subprotocol not chosen")
            }
        }
    }
}

/// What an upgrade request asks for besides the host: the request target
/// and the subprotocol to offer.
#[derive(Debug, Clone, Copy)]
pub struct Upgrade<'a> {
    /// Path and query string (`/room/a?since=e:4`).
    pub path: &'a str,
    /// The one subprotocol offered (`wschat.v1`), or none.
    pub protocol: Option<&'a str>,
}

/// One upgrade request in flight: remembers the accept value it expects
/// and the subprotocol it offered.
#[derive(Debug)]
pub struct ClientHandshake {
    expected_accept: String,
    protocol: Option<String>,
}

impl ClientHandshake {
    /// Appends a GET upgrade request with a fresh random 16-byte key to `out`.
    ///
    /// `host` is sent verbatim as the Host header (`name:port`); the path
    /// (with any query string) and the subprotocol come from `upgrade`.
    pub fn start(
        rng: &mut Rng,
        host: &str,
        upgrade: Upgrade<'_>,
        out: &mut Vec<u8>,
    ) -> ClientHandshake {
        let mut nonce = [0u8; 16];
        rng.fill(&mut nonce);
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(upgrade.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(
            b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
        );
        out.extend_from_slice(key.as_bytes());
        if let Some(protocol) = upgrade.protocol {
            out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
            out.extend_from_slice(protocol.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        ClientHandshake {
            expected_accept: accept_key(key.as_bytes()),
            protocol: upgrade.protocol.map(str::to_string),
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
        let mut chosen = false;
        for header in response.headers.iter() {
            let name = header.name;
            if name.eq_ignore_ascii_case("upgrade") {
                upgrade |= has_token(header.value, "websocket");
            } else if name.eq_ignore_ascii_case("connection") {
                connection |= has_token(header.value, "upgrade");
            } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
                accept = header.value == self.expected_accept.as_bytes();
            } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                // Section 4.1, check 6: only the one we offered, once.
                let offered = self.protocol.as_deref().map(str::as_bytes);
                if chosen || offered != Some(header.value.trim_ascii()) {
                    return Err(HandshakeFailure::UnrequestedExtension);
                }
                chosen = true;
            } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
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
        if self.protocol.is_some() && !chosen {
            return Err(HandshakeFailure::ProtocolNotChosen);
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
    // A whole message: std's check, with its fast path for ASCII, rather
    // than the server's incremental one (every delivery goes through here,
    // and the tool is CPU-bound).
    if !binary && std::str::from_utf8(data).is_err() {
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
mod tests;
