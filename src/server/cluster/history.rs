//! Room history kept in Redis: what a fetch asks for and what it answers.
//!
//! Every room message published in cluster mode is numbered by Redis (the
//! publish script, `scripts/publish.lua`): an *epoch*, which names one
//! unbroken run of the room's history, and an *offset*, 1, 2, 3, … within
//! it, never reused. The same script keeps the message in the room's
//! stream (up to `--history-size` of them, for `--history-ttl`) and
//! publishes it with its [`Stamp`], so every instance delivers the same
//! numbering in the same order. A client that kept the stamp of the last
//! message it saw asks for what followed it with [`Fetch::Since`]; the read
//! script (`scripts/read.lua`) answers the room's current epoch, its head
//! (the last offset assigned) and the entries, all read at one instant.
//! Whether that is everything the client missed is
//! [`FetchedHistory::is_complete_since`]'s to say.
//!
//! Replies are checked here ([`parse`]): a reply of the wrong shape is a
//! [`FetchError::Malformed`] answer; an entry that cannot be delivered
//! (oversize, text that is not UTF-8, fields missing) is left out and
//! reported as [`Dropped`], which leaves a gap that the completeness check
//! sees.

use std::fmt;

use redis_protocol::resp2::types::RangeFrame;

use super::error::Dropped;
use super::message::is_valid_epoch;
use crate::protocol::frame::OpCode;

/// Where a room message sits in its room's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp<'a> {
    /// The room's epoch: 1 to 32 ASCII letters and digits; a new one means
    /// the history before it is gone.
    pub epoch: &'a str,
    /// The message's place in the epoch, from 1.
    pub offset: u64,
    /// When the publishing instance took the message, in ms since the Unix
    /// epoch.
    pub time_ms: u64,
}

/// What part of a room's history to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// What followed `offset` of `epoch`: at most `--history-size` entries,
    /// the newest if more followed. With another epoch (the room's history
    /// was lost since), the newest entries of the current one.
    Since {
        /// The epoch of the last message the client saw.
        epoch: String,
        /// The offset of that message (0: none of that epoch).
        offset: u64,
    },
    /// The newest `n` entries (at most `--history-size`).
    Last(usize),
}

/// Names one fetch; its answer carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId(pub u64);

/// The answer to one fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The id [`crate::server::relay::Relay::fetch`] returned.
    pub id: FetchId,
    /// The room asked about.
    pub room: String,
    /// The history, or why there is none.
    pub result: Result<FetchedHistory, FetchError>,
}

/// A room's history as Redis had it at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedHistory {
    /// The room's current epoch (created by the fetch if the room had
    /// none, so that it is the epoch the room's next messages carry).
    pub epoch: String,
    /// The last offset assigned in that epoch (0: none yet).
    pub head: u64,
    /// Entries of that epoch, oldest first, offsets rising.
    pub entries: Vec<FetchedEntry>,
}

/// One message of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedEntry {
    /// Its offset in the epoch.
    pub offset: u64,
    /// When it was published, in ms since the Unix epoch.
    pub time_ms: u64,
    /// Its sender's connection id.
    pub sender: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// What the sender sent (UTF-8 when text, within `--max-message-size`).
    pub payload: Vec<u8>,
}

/// Why a fetch has no history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The link to Redis failed before the answer came: the cluster is
    /// degraded until it is back.
    LinkDown,
    /// Redis answered an error (say, a key of the wrong type).
    Refused(Box<str>),
    /// The answer was not shaped as the read script makes it.
    Malformed(&'static str),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::LinkDown => f.write_str("the link to Redis failed first"),
            FetchError::Refused(message) => write!(f, "refused by Redis: {message}"),
            FetchError::Malformed(why) => write!(f, "a malformed history reply ({why})"),
        }
    }
}

impl FetchedHistory {
    /// Whether the entries are everything that followed `offset` of
    /// `epoch`, so that a client that saw up to there misses nothing: the
    /// epoch is the same, the offset is not past the head, and every
    /// offset after it up to the head is there, in order. False when the
    /// history was lost (new epoch), trimmed (`MAXLEN`, expiry), cut at
    /// `--history-size`, or an entry was dropped on the way.
    pub fn is_complete_since(&self, epoch: &str, offset: u64) -> bool {
        if self.epoch != epoch || offset > self.head {
            return false;
        }
        let missed = self.head - offset;
        self.entries.len() as u64 == missed
            && self
                .entries
                .iter()
                .zip(offset + 1..)
                .all(|(entry, want)| entry.offset == want)
    }
}

/// A read script's reply, checked: the history, and the entries left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// What can be delivered.
    pub history: FetchedHistory,
    /// Why each entry left out was.
    pub dropped: Vec<Dropped>,
}

/// Reads `{epoch, head, entries}` from a read script's reply; ranges in
/// `frame` are into `buf`. Payloads over `max_message_size` are left out.
pub fn parse(
    frame: &RangeFrame,
    buf: &[u8],
    max_message_size: usize,
) -> Result<Parsed, &'static str> {
    let RangeFrame::Array(parts) = frame else {
        return Err("not an array");
    };
    let [epoch, head, entries] = &parts[..] else {
        return Err("not three parts");
    };
    let epoch = bulk(epoch, buf)
        .and_then(|e| std::str::from_utf8(e).ok())
        .filter(|e| is_valid_epoch(e))
        .ok_or("bad epoch")?;
    let head = match head {
        RangeFrame::Integer(n) => u64::try_from(*n).map_err(|_| "negative head")?,
        _ => return Err("bad head"),
    };
    let RangeFrame::Array(entries) = entries else {
        return Err("entries not an array");
    };
    let mut history = FetchedHistory {
        epoch: epoch.to_string(),
        head,
        entries: Vec::with_capacity(entries.len()),
    };
    let mut dropped = Vec::new();
    let mut last = 0;
    for entry in entries {
        let RangeFrame::Array(pair) = entry else {
            return Err("an entry not an array");
        };
        let [id, fields] = &pair[..] else {
            return Err("an entry not an id and fields");
        };
        let offset = bulk(id, buf).and_then(offset_of).ok_or("bad entry id")?;
        if offset <= last || offset > head {
            return Err("entry ids out of order or past the head");
        }
        last = offset;
        match entry_of(offset, fields, buf, max_message_size) {
            Ok(entry) => history.entries.push(entry),
            Err(why) => dropped.push(why),
        }
    }
    Ok(Parsed { history, dropped })
}

/// The offset in a stream entry id `{offset}-0`.
fn offset_of(id: &[u8]) -> Option<u64> {
    let digits = id.strip_suffix(b"-0")?;
    let offset = decimal(digits)?;
    (offset > 0).then_some(offset)
}

/// An entry's fields: `sender`, `opcode` (`text` or `binary`), `time` and
/// `payload`, in any order, each once.
fn entry_of(
    offset: u64,
    fields: &RangeFrame,
    buf: &[u8],
    max_message_size: usize,
) -> Result<FetchedEntry, Dropped> {
    let bad = Dropped::BadEntry;
    let RangeFrame::Array(fields) = fields else {
        return Err(bad("fields not an array"));
    };
    let (mut sender, mut opcode, mut time, mut payload) = (None, None, None, None);
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return Err(bad("a field without a value"));
        };
        let (Some(name), Some(value)) = (bulk(name, buf), bulk(value, buf)) else {
            return Err(bad("a field not a string"));
        };
        let slot = match name {
            b"sender" => &mut sender,
            b"opcode" => &mut opcode,
            b"time" => &mut time,
            b"payload" => &mut payload,
            _ => return Err(bad("an unknown field")),
        };
        if slot.replace(value).is_some() {
            return Err(bad("a field twice"));
        }
    }
    let sender = sender.and_then(decimal).ok_or(bad("bad sender"))?;
    let time_ms = time.and_then(decimal).ok_or(bad("bad time"))?;
    let opcode = match opcode {
        Some(b"text") => OpCode::Text,
        Some(b"binary") => OpCode::Binary,
        _ => return Err(bad("bad opcode")),
    };
    let payload = payload.ok_or(bad("no payload"))?;
    if payload.len() > max_message_size {
        return Err(Dropped::Oversize);
    }
    if opcode == OpCode::Text && std::str::from_utf8(payload).is_err() {
        return Err(bad("text not UTF-8"));
    }
    Ok(FetchedEntry {
        offset,
        time_ms,
        sender,
        opcode,
        payload: payload.to_vec(),
    })
}

/// The name of an opcode in a history entry.
pub fn opcode_name(opcode: OpCode) -> &'static [u8] {
    if opcode == OpCode::Binary {
        b"binary"
    } else {
        b"text"
    }
}

fn bulk<'a>(frame: &RangeFrame, buf: &'a [u8]) -> Option<&'a [u8]> {
    match frame {
        RangeFrame::BulkString((start, end)) => buf.get(*start..*end),
        _ => None,
    }
}

/// A decimal `u64` as Redis writes one: digits only, no sign, no leading
/// zero (except `0` itself).
fn decimal(text: &[u8]) -> Option<u64> {
    let plain = !text.is_empty()
        && text.iter().all(u8::is_ascii_digit)
        && (text.len() == 1 || text[0] != b'0');
    plain.then(|| std::str::from_utf8(text).ok()?.parse().ok())?
}

#[cfg(test)]
mod tests;
