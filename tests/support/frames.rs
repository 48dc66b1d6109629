//! WebSocket frames encoded and decoded here, from RFC 6455 section 5, and
//! not with the crate's codec: checking the server with its own reading of
//! the RFC would agree with any mistake in that reading.
//!
//! [`decode_frame`] and [`Decoder`] share one header parser, which rejects
//! what a server must never send (a mask, a length not in its shortest
//! form, a 64-bit length with the top bit set).

use std::fmt;
use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Duration;

use super::ReadError;

/// Opcodes (RFC 6455 section 5.2), as the low nibble of the first byte.
pub mod op {
    /// 0x0: continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// 0x1: text message (or its first fragment).
    pub const TEXT: u8 = 0x1;
    /// 0x2: binary message (or its first fragment).
    pub const BINARY: u8 = 0x2;
    /// 0x8: close.
    pub const CLOSE: u8 = 0x8;
    /// 0x9: ping.
    pub const PING: u8 = 0x9;
    /// 0xA: pong.
    pub const PONG: u8 = 0xA;
}

/// RSV bits as a 3-bit value, Autobahn style: bit 2 is RSV1, bit 1 RSV2,
/// bit 0 RSV3 (so `0b100` is RSV1 and `7` sets all three).
pub mod rsv {
    /// RSV1 (the permessage-deflate bit).
    pub const RSV1: u8 = 0b100;
    /// RSV2.
    pub const RSV2: u8 = 0b010;
    /// RSV3.
    pub const RSV3: u8 = 0b001;
}

/// One frame as received from the server.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1-3 as a 3-bit value (see [`rsv`]).
    pub rsv: u8,
    /// Opcode nibble (see [`op`]).
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
    /// The exact header bytes as received (to check the length encoding).
    pub header: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame (its first two payload bytes).
    pub fn close_code(&self) -> Option<u16> {
        match self.payload.as_slice() {
            [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }

    /// The reason bytes of a close frame (after the code).
    pub fn close_reason(&self) -> &[u8] {
        self.payload.get(2..).unwrap_or(&[])
    }

    /// Header followed by payload: the frame exactly as it was on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        out.extend_from_slice(&self.payload);
        out
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.opcode {
            op::CONTINUATION => "CONT",
            op::TEXT => "TEXT",
            op::BINARY => "BINARY",
            op::CLOSE => "CLOSE",
            op::PING => "PING",
            op::PONG => "PONG",
            _ => "RESERVED",
        };
        write!(
            f,
            "Frame {{ {name} fin={} rsv={} len={} header=[{}] payload=[{}]",
            self.fin,
            self.rsv,
            self.payload.len(),
            hex(&self.header),
            hex(&self.payload)
        )?;
        if self.opcode == op::CLOSE {
            write!(
                f,
                " code={:?} reason={:?}",
                self.close_code(),
                String::from_utf8_lossy(self.close_reason())
            )?;
        }
        write!(f, " }}")
    }
}

/// Lowercase hex of `bytes`, space separated, cut after 64 bytes.
pub fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut s: Vec<String> = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > SHOWN {
        s.push(format!("... ({} bytes)", bytes.len()));
    }
    s.join(" ")
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Encodes a frame header: FIN, RSV (3-bit, see [`rsv`]), opcode (any nibble,
/// reserved ones included), the declared payload length with the shortest
/// encoding (any `u64`, so a length with the top bit set can be sent), and the
/// masking key if any.
pub fn encode_header(fin: bool, rsv: u8, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.push(u8::from(fin) << 7 | (rsv & 7) << 4 | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// XORs `data` with `key`, `data[0]` being payload byte number `offset`.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

/// Encodes a whole frame; the payload is masked with `mask` if given.
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = encode_header(fin, rsv, opcode, payload.len() as u64, mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// A masked client frame (FIN as given, RSV clear) with a fresh masking key.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, payload, Some(super::random_mask()))
}

/// The frame the server is expected to send: unmasked, RSV clear, shortest
/// length encoding.
pub fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, payload, None)
}

/// A close payload: the code (if any) big-endian, then the reason bytes.
pub fn close_payload(code: Option<u16>, reason: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(code) = code {
        out.extend_from_slice(&code.to_be_bytes());
    }
    out.extend_from_slice(reason);
    out
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// A server frame header as read by [`parse_header`].
struct Header {
    fin: bool,
    rsv: u8,
    opcode: u8,
    /// Bytes of the header itself.
    len: usize,
    /// Bytes of payload it announces.
    payload_len: usize,
}

/// Reads the server frame header at the start of `buf`: `Ok(None)` until it
/// is complete, `Err` if it breaks a rule for server frames.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        return Err(format!(
            "server frame has the MASK bit set: header starts [{}]",
            hex(&buf[..2])
        ));
    }
    let (payload_len, len) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let n = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
            if n < 126 {
                return Err(format!(
                    "server frame length {n} not in shortest encoding: [{}]",
                    hex(&buf[..4])
                ));
            }
            (n, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let n = u64::from_be_bytes(buf[2..10].try_into().unwrap());
            if n >> 63 != 0 || n <= 0xFFFF {
                return Err(format!(
                    "server frame 64-bit length {n} invalid or not shortest: [{}]",
                    hex(&buf[..10])
                ));
            }
            (n, 10)
        }
        small => (u64::from(small), 2),
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 7,
        opcode: b0 & 0x0F,
        len,
        payload_len: usize::try_from(payload_len).map_err(|e| e.to_string())?,
    }))
}

/// Decodes one server frame from the start of `buf`.
///
/// `Ok(None)`: not complete yet. `Ok(Some((frame, used)))`: a frame and how
/// many bytes it took. `Err(text)`: the bytes break a rule for server frames
/// (mask bit set, a length not in its shortest encoding, a 64-bit length with
/// its top bit set).
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    let Some(h) = parse_header(buf)? else {
        return Ok(None);
    };
    let total = h.len + h.payload_len;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = Frame {
        fin: h.fin,
        rsv: h.rsv,
        opcode: h.opcode,
        payload: buf[h.len..total].to_vec(),
        header: buf[..h.len].to_vec(),
    };
    Ok(Some((frame, total)))
}

/// Decodes a complete byte stream of server frames; panics on leftovers or
/// an invalid frame.
pub fn decode_all(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        match decode_frame(bytes) {
            Ok(Some((frame, used))) => {
                frames.push(frame);
                bytes = &bytes[used..];
            }
            Ok(None) => panic!("truncated frame at end of stream: [{}]", hex(bytes)),
            Err(e) => panic!("{e}"),
        }
    }
    frames
}

/// Server frames from a growing buffer. Decoded bytes are dropped when new
/// ones are added, never per frame, so millions of small frames decode in
/// linear time.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not decoded yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// How many bytes are received and not decoded yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Removes and returns the first `n` undecoded bytes (an HTTP head, or
    /// everything for a test that reads to the end).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let taken = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        taken
    }

    /// The next complete frame, any kind (fragments and RSV bits included);
    /// panics on a frame no server may send.
    pub fn next_any(&mut self) -> Option<Frame> {
        let (frame, used) = decode_frame(self.buffered()).unwrap_or_else(|e| panic!("{e}"))?;
        self.start += used;
        Some(frame)
    }

    /// The next complete frame as `(opcode, payload)`, without a copy.
    /// Panics on a fragment or RSV bits too: the load and cluster tests
    /// that read this way run without compression, where every message
    /// is one plain frame.
    pub fn next_frame(&mut self) -> Option<(u8, &[u8])> {
        let buf = self.buffered();
        let h = parse_header(buf).unwrap_or_else(|e| panic!("{e}"))?;
        assert!(
            h.fin && h.rsv == 0,
            "server frame: FIN clear or RSV set: [{}]",
            hex(&buf[..h.len])
        );
        if buf.len() < h.len + h.payload_len {
            return None;
        }
        let begin = self.start + h.len;
        self.start = begin + h.payload_len;
        Some((h.opcode, &self.buf[begin..self.start]))
    }

    /// One read from `stream` into the buffer, waiting at most `limit`.
    pub fn read_from(
        &mut self,
        stream: &mut TcpStream,
        limit: Duration,
    ) -> Result<usize, ReadError> {
        stream
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .map_err(ReadError::Io)?;
        let mut tmp = [0u8; 64 * 1024];
        loop {
            return match stream.read(&mut tmp) {
                Ok(0) => Err(ReadError::Eof),
                Ok(n) => {
                    self.push(&tmp[..n]);
                    Ok(n)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    Err(ReadError::Timeout)
                }
                Err(e) => Err(ReadError::Io(e)),
            };
        }
    }
}
