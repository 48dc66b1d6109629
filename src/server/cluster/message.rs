//! The bytes of one chat message on a Redis channel.
//!
//! ```text
//! byte 0      0x20 | opcode   (0x21 text, 0x22 binary; the high nibble is
//!                              the format version, 2)
//! LEB128      sender id
//! LEB128      time, ms since the Unix epoch (the publishing instance's clock)
//! LEB128      offset in the room's history (1, 2, 3, … within the epoch)
//! byte        epoch length n, 1 to 32
//! n bytes     the room's epoch, ASCII letters and digits
//! the rest    the payload, as the client sent it
//! ```
//!
//! Varints are unsigned LEB128 (1 to 10 bytes, shortest form). Binary-safe
//! (Redis bulk strings are), no escaping. The room is the channel name, so
//! it is not repeated here.
//!
//! Who writes what: the publishing instance encodes the start, up to the
//! time ([`encode_head`]); the publish script (`scripts/publish.lua`)
//! appends the offset and the epoch it assigned, then the payload, since
//! only Redis knows them at that moment.
//!
//! Version 1 (no time, offset or epoch) is refused: it carried no stamp a
//! client could resume from, and the instances of a cluster are upgraded
//! together (a mixed cluster drops the other version's messages as
//! malformed and counts them).

use std::fmt;

use crate::protocol::frame::OpCode;

/// First byte of a text message: version 2, WebSocket opcode 0x1.
const TEXT: u8 = 0x21;

/// First byte of a binary message: version 2, WebSocket opcode 0x2.
const BINARY: u8 = 0x22;

/// Most bytes an encoded `u64` takes in LEB128.
const MAX_VARINT: usize = 10;

/// The longest epoch.
pub const MAX_EPOCH: usize = 32;

/// The most bytes before the payload: kind, three varints, the epoch.
pub const MAX_HEADER: usize = 1 + 3 * MAX_VARINT + 1 + MAX_EPOCH;

/// Why bytes from a channel are not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Nothing at all.
    Empty,
    /// A first byte that is neither text nor binary of version 2.
    Kind(u8),
    /// The sender id is cut short, too long or not in its shortest form.
    Sender,
    /// The time is cut short, too long or not in its shortest form.
    Time,
    /// The offset is cut short, too long, not in its shortest form, or 0.
    Offset,
    /// The epoch is cut short, empty, over 32 bytes, or not letters and
    /// digits.
    Epoch,
    /// A text message whose payload is not UTF-8.
    Utf8,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Empty => write!(f, "empty message"),
            Malformed::Kind(b) => write!(f, "unknown message kind 0x{b:02x}"),
            Malformed::Sender => write!(f, "bad sender id"),
            Malformed::Time => write!(f, "bad time"),
            Malformed::Offset => write!(f, "bad offset"),
            Malformed::Epoch => write!(f, "bad epoch"),
            Malformed::Utf8 => write!(f, "text message not UTF-8"),
        }
    }
}

/// A message decoded from a channel; `epoch` and `payload` borrow the
/// received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The connection id of the sender (`from{sender}:`).
    pub sender: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// When the publishing instance took it, in ms since the Unix epoch.
    pub time_ms: u64,
    /// Its place in the room's history, from 1.
    pub offset: u64,
    /// The room's epoch ([`is_valid_epoch`]).
    pub epoch: &'a str,
    /// What the sender sent.
    pub payload: &'a [u8],
}

/// Whether `epoch` is one an instance would accept: 1 to 32 ASCII letters
/// and digits. Checked wherever one comes from outside (a channel, a
/// history reply), so that it can be put in JSON or a log unescaped.
pub fn is_valid_epoch(epoch: &str) -> bool {
    (1..=MAX_EPOCH).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Appends the part of a message the publishing instance knows: the kind,
/// the sender and the time. `opcode` must be text or binary (the only
/// opcodes a message has).
pub fn encode_head(sender: u64, opcode: OpCode, time_ms: u64, out: &mut Vec<u8>) {
    debug_assert!(matches!(opcode, OpCode::Text | OpCode::Binary));
    out.push(if opcode == OpCode::Binary {
        BINARY
    } else {
        TEXT
    });
    put_varint(sender, out);
    put_varint(time_ms, out);
}

/// Appends a whole message, as the publish script makes it (for tests, and
/// for a reader of this format: the script is the one writer in service).
pub fn encode(message: &Message<'_>, out: &mut Vec<u8>) {
    debug_assert!(is_valid_epoch(message.epoch));
    out.reserve(MAX_HEADER + message.payload.len());
    encode_head(message.sender, message.opcode, message.time_ms, out);
    put_varint(message.offset, out);
    out.push(message.epoch.len() as u8);
    out.extend_from_slice(message.epoch.as_bytes());
    out.extend_from_slice(message.payload);
}

fn put_varint(mut rest: u64, out: &mut Vec<u8>) {
    loop {
        let low = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
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
    let (sender, rest) = varint(rest).ok_or(Malformed::Sender)?;
    let (time_ms, rest) = varint(rest).ok_or(Malformed::Time)?;
    let (offset, rest) = varint(rest)
        .filter(|&(offset, _)| offset > 0)
        .ok_or(Malformed::Offset)?;
    let (&len, rest) = rest.split_first().ok_or(Malformed::Epoch)?;
    let (epoch, payload) = rest
        .split_at_checked(usize::from(len))
        .ok_or(Malformed::Epoch)?;
    let epoch = std::str::from_utf8(epoch)
        .ok()
        .filter(|e| is_valid_epoch(e))
        .ok_or(Malformed::Epoch)?;
    if opcode == OpCode::Text && std::str::from_utf8(payload).is_err() {
        return Err(Malformed::Utf8);
    }
    Ok(Message {
        sender,
        opcode,
        time_ms,
        offset,
        epoch,
        payload,
    })
}

/// Reads an unsigned LEB128 number at the front of `bytes`: `None` when
/// cut short, past 64 bits, or not in its shortest form.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (used, &byte) in bytes.iter().enumerate().take(MAX_VARINT) {
        if used == MAX_VARINT - 1 && byte > 1 {
            return None; // past 64 bits
        }
        value |= u64::from(byte & 0x7f) << (7 * used);
        if byte & 0x80 == 0 {
            if byte == 0 && used > 0 {
                return None; // not the shortest form
            }
            return Some((value, &bytes[used + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests;
