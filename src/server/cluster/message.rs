//! The bytes of one chat message on a Redis channel.
//!
//! ```text
//! byte 0      0x10 | opcode   (0x11 text, 0x12 binary; the high nibble is
//!                              the format version, 1)
//! bytes 1..   sender id, unsigned LEB128 (1 to 10 bytes, shortest form)
//! the rest    the payload, as the client sent it
//! ```
//!
//! Binary-safe (Redis bulk strings are), 2 to 11 bytes of overhead, no
//! escaping and no parsing beyond the varint. The room is the channel name,
//! so it is not repeated here.

use std::fmt;

use crate::protocol::frame::OpCode;

/// First byte of a text message: version 1, WebSocket opcode 0x1.
const TEXT: u8 = 0x11;

/// First byte of a binary message: version 1, WebSocket opcode 0x2.
const BINARY: u8 = 0x12;

/// Most bytes an encoded `u64` takes in LEB128.
const MAX_VARINT: usize = 10;

/// Why bytes from a channel are not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Nothing at all.
    Empty,
    /// A first byte that is neither text nor binary of version 1.
    Kind(u8),
    /// The sender id is cut short, too long or not in its shortest form.
    Sender,
    /// A text message whose payload is not UTF-8.
    Utf8,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Empty => write!(f, "empty message"),
            Malformed::Kind(b) => write!(f, "unknown message kind 0x{b:02x}"),
            Malformed::Sender => write!(f, "bad sender id"),
            Malformed::Utf8 => write!(f, "text message not UTF-8"),
        }
    }
}

/// A message decoded from a channel; `payload` borrows the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The connection id of the sender (`from{sender}:`).
    pub sender: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// What the sender sent.
    pub payload: &'a [u8],
}

/// Appends the encoding of a message to `out`. `opcode` must be text or
/// binary (the only opcodes a message has).
pub fn encode(sender: u64, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(matches!(opcode, OpCode::Text | OpCode::Binary));
    out.reserve(1 + MAX_VARINT + payload.len());
    out.push(if opcode == OpCode::Binary {
        BINARY
    } else {
        TEXT
    });
    let mut rest = sender;
    loop {
        let low = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    out.extend_from_slice(payload);
}

/// Decodes a message. A text payload must be valid UTF-8: clients would
/// fail a text frame that is not, so it is refused here, once, instead.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, Malformed> {
    let (&kind, rest) = bytes.split_first().ok_or(Malformed::Empty)?;
    let opcode = match kind {
        TEXT => OpCode::Text,
        BINARY => OpCode::Binary,
        other => return Err(Malformed::Kind(other)),
    };
    let mut sender: u64 = 0;
    let mut used = 0;
    loop {
        let &byte = rest.get(used).ok_or(Malformed::Sender)?;
        if used == MAX_VARINT - 1 && byte > 1 {
            return Err(Malformed::Sender); // past 64 bits
        }
        sender |= u64::from(byte & 0x7f) << (7 * used);
        used += 1;
        if byte & 0x80 == 0 {
            if byte == 0 && used > 1 {
                return Err(Malformed::Sender); // not the shortest form
            }
            break;
        }
    }
    let payload = &rest[used..];
    if opcode == OpCode::Text && std::str::from_utf8(payload).is_err() {
        return Err(Malformed::Utf8);
    }
    Ok(Message {
        sender,
        opcode,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(sender: u64, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(sender, opcode, payload, &mut out);
        let m = decode(&out).unwrap();
        assert_eq!(
            m,
            Message {
                sender,
                opcode,
                payload
            }
        );
        out
    }

    #[test]
    fn round_trips_every_sender_width() {
        assert_eq!(round_trip(0, OpCode::Text, b""), [0x11, 0x00]);
        assert_eq!(round_trip(7, OpCode::Text, b"hi"), [0x11, 0x07, b'h', b'i']);
        assert_eq!(round_trip(300, OpCode::Binary, &[0]), [0x12, 0xac, 0x02, 0]);
        for shift in 0..64 {
            round_trip(1 << shift, OpCode::Binary, &[0xff, 0x00, b'\r', b'\n']);
            round_trip((1 << shift) - 1, OpCode::Text, "é\r\n".as_bytes());
        }
        assert_eq!(round_trip(u64::MAX, OpCode::Text, b"x").len(), 1 + 10 + 1);
    }

    #[test]
    fn payload_bytes_are_kept_as_they_are() {
        let payload: Vec<u8> = (0..=255).collect();
        round_trip(1 << 52, OpCode::Binary, &payload);
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        assert_eq!(decode(b""), Err(Malformed::Empty));
        assert_eq!(decode(&[0x11]), Err(Malformed::Sender));
        assert_eq!(decode(&[0x11, 0x80]), Err(Malformed::Sender));
        assert_eq!(decode(&[0x11, 0x80, 0x00]), Err(Malformed::Sender));
        assert_eq!(decode(&[0x01, 0x07]), Err(Malformed::Kind(0x01)));
        assert_eq!(decode(&[0x19, 0x07]), Err(Malformed::Kind(0x19)));
        assert_eq!(decode(&[0x21, 0x07]), Err(Malformed::Kind(0x21)));
        assert_eq!(decode(b"hello"), Err(Malformed::Kind(b'h')));
        assert_eq!(decode(&[0x11, 0x07, 0xff]), Err(Malformed::Utf8));
        assert!(decode(&[0x12, 0x07, 0xff]).is_ok(), "binary is not checked");
        let mut eleven = vec![0x11];
        eleven.extend([0xff; 10]);
        eleven.push(0x01);
        assert_eq!(decode(&eleven), Err(Malformed::Sender));
        let mut overflow = vec![0x11];
        overflow.extend([0xff; 9]);
        overflow.push(0x02);
        assert_eq!(decode(&overflow), Err(Malformed::Sender));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 24)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }
}
