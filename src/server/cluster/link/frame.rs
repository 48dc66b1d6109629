//! One frame from Redis, read into owned values and positions in the read
//! buffer, so that the link can act on it without a borrow of its buffer.

use std::ops::Range;

use redis_protocol::resp2::types::RangeFrame;

use super::command::{Command, Reply};
use super::{LinkConfig, Role};
use crate::protocol::frame::OpCode;
use crate::server::cluster::error::Dropped;
use crate::server::cluster::message::{self, MAX_HEADER};
use crate::server::cluster::resp::{self, Answer, Push};
use crate::server::cluster::{history, CHANNEL_PREFIX};
use crate::server::room::is_valid_room_name;

/// Where a message lies in the read buffer.
#[derive(Debug, Clone)]
pub(super) struct Span {
    /// The room's name, valid UTF-8.
    pub room: Range<usize>,
    /// The sender's connection id.
    pub sender: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// The payload, within `--max-message-size` (and UTF-8 when text).
    pub payload: Range<usize>,
    /// The room's epoch, valid ASCII.
    pub epoch: Range<usize>,
    /// The message's offset in the epoch.
    pub offset: u64,
    /// When it was published, ms since the Unix epoch.
    pub time_ms: u64,
}

/// What one frame is.
#[derive(Debug)]
pub(super) enum Incoming {
    Message(Span),
    Dropped(Dropped),
    Reply(Reply),
}

/// Reads the frame decoded from `buf[at..]` as the link's role does;
/// `awaited` is the command the publisher's next reply answers.
pub(super) fn classify(
    config: &LinkConfig,
    awaited: Option<Command>,
    frame: &RangeFrame,
    buf: &[u8],
    at: usize,
) -> Incoming {
    let bytes = &buf[at..];
    let text = |e: &[u8]| String::from_utf8_lossy(e).into();
    let reply = match config.role {
        Role::Publisher => match resp::answer(frame, bytes) {
            Answer::Error(e) => Reply::Error(text(e)),
            // A history of the wrong shape is the fetch's error; the
            // stream is still in step, so the link goes on.
            _ if matches!(awaited, Some(Command::Fetch { .. })) => {
                Reply::History(history::parse(frame, bytes, config.max_message_size))
            }
            Answer::Integer(n) => Reply::Integer(n),
            Answer::Status(_) => Reply::Status,
            Answer::Bulk(b) if b.len() <= 64 => Reply::Text(text(b)),
            Answer::Bulk(_) | Answer::Unexpected => Reply::Other,
        },
        Role::Subscriber => match resp::push(frame, bytes) {
            Push::Message { channel, payload } => {
                return locate_message(buf, channel, payload, config.max_message_size)
            }
            Push::Subscribed => Reply::Subscribed,
            Push::Pong => Reply::Pong,
            Push::Error(e) => Reply::Error(text(e)),
            Push::Unexpected => return Incoming::Dropped(Dropped::UnexpectedFrame),
        },
    };
    Incoming::Reply(reply)
}

/// Checks a message published on `channel` and finds where its room and
/// payload lie in `buf`.
fn locate_message(buf: &[u8], channel: &[u8], payload: &[u8], max: usize) -> Incoming {
    let room = channel
        .strip_prefix(CHANNEL_PREFIX.as_bytes())
        .filter(|name| std::str::from_utf8(name).is_ok_and(is_valid_room_name));
    let Some(room) = room else {
        return Incoming::Dropped(Dropped::NoRoom);
    };
    // No need to decode (or check the UTF-8 of) what is too large anyway.
    if payload.len() > max + MAX_HEADER {
        return Incoming::Dropped(Dropped::Oversize);
    }
    match message::decode(payload) {
        Err(e) => Incoming::Dropped(Dropped::Malformed(e)),
        Ok(m) if m.payload.len() > max => Incoming::Dropped(Dropped::Oversize),
        Ok(m) => match (
            within(buf, room),
            within(buf, m.payload),
            within(buf, m.epoch.as_bytes()),
        ) {
            (Some(room), Some(payload), Some(epoch)) => Incoming::Message(Span {
                room,
                sender: m.sender,
                opcode: m.opcode,
                payload,
                epoch,
                offset: m.offset,
                time_ms: m.time_ms,
            }),
            _ => Incoming::Dropped(Dropped::UnexpectedFrame),
        },
    }
}

/// Where `part`, a slice of `buf`, lies in it (`None` if it is not one).
fn within(buf: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= buf.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_finds_subslices_only() {
        let buf = b"0123456789";
        assert_eq!(within(buf, &buf[3..7]), Some(3..7));
        assert_eq!(within(buf, &buf[10..]), Some(10..10));
        assert_eq!(within(&buf[4..], &buf[..2]), None, "before it");
        assert_eq!(within(&buf[..4], &buf[2..6]), None, "past its end");
    }
}
