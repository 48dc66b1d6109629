//! A room's recent messages, numbered, for members that join late or come
//! back after a drop.
//!
//! Each message of a room gets an offset (1, 2, 3, ...) within the room's
//! epoch; the epoch is a random string that changes whenever the numbering
//! starts again (the room was forgotten, the process restarted, or in
//! cluster mode Redis lost the room). A client that knows `(epoch, offset)`
//! can ask for exactly what followed, and can tell when that is no longer
//! possible.
//!
//! An [`Entry`] keeps the frames the broadcast already built (shared
//! `Rc<[u8]>`s, see [`crate::server::outgoing`]): keeping a message copies
//! nothing, and replaying it to the next receiver that speaks the same form
//! builds nothing. The classic plain frame is always kept, since the
//! message's bytes are read back from it to build the other forms.
//!
//! The bounds (size, age and the byte budget shared by all rooms) are
//! applied by [`crate::server::room::Rooms`], which sees every room.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use super::hub::{classic_prefix, PREFIX_BYTES};
use super::outgoing::{Form, Forms};
use super::timer::Time;
use crate::protocol::frame::decode_header;
use crate::protocol::OpCode;

/// The history settings (`--history-size`, `--history-ttl`,
/// `--history-memory`, `--history-on-join`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per room; 0 keeps none.
    pub size: usize,
    /// How long a message is kept.
    pub ttl: Duration,
    /// Bytes all rooms' history may hold together; the oldest messages go
    /// first past it.
    pub memory: usize,
    /// Messages a `wschat.v1` client that gives no position is sent on
    /// joining.
    pub on_join: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            size: 100,
            ttl: Duration::from_secs(600),
            memory: 64 * 1024 * 1024,
            on_join: 50,
        }
    }
}

/// What an entry costs besides its frames: the entry itself, its slot in
/// the room's ring and in the age order.
pub const ENTRY_OVERHEAD: usize = 160;

/// The longest epoch accepted from a client or from Redis.
pub const MAX_EPOCH: usize = 32;

/// A position in a room: the epoch and the last offset a client holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The room's epoch as the client last saw it.
    pub epoch: String,
    /// The last offset the client received.
    pub offset: u64,
}

/// Why a `since` value is not a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPosition;

impl fmt::Display for BadPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("since must be EPOCH:OFFSET (letters and digits, then a number)")
    }
}

impl Position {
    /// Parses `EPOCH:OFFSET` (the `since` query parameter, and an SSE
    /// `Last-Event-ID`): the epoch 1-32 ASCII letters or digits, the
    /// offset a decimal number.
    pub fn parse(text: &str) -> Result<Position, BadPosition> {
        let (epoch, offset) = text.split_once(':').ok_or(BadPosition)?;
        if !is_valid_epoch(epoch)
            || offset.is_empty()
            || !offset.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(BadPosition);
        }
        let offset = offset.parse().map_err(|_| BadPosition)?;
        Ok(Position {
            epoch: epoch.to_string(),
            offset,
        })
    }
}

/// Whether `epoch` is 1-32 ASCII letters or digits.
pub fn is_valid_epoch(epoch: &str) -> bool {
    (1..=MAX_EPOCH).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A new epoch: 16 random letters and digits.
pub fn new_epoch() -> Box<str> {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No system randomness: the clock still tells restarts apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// One kept message.
#[derive(Debug)]
pub struct Entry {
    /// Its offset in the room.
    pub offset: u64,
    /// When it was accepted, in ms since the Unix epoch.
    pub time_ms: u64,
    /// The sender's connection id.
    pub sender: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// When it is forgotten.
    pub expires: Time,
    /// The frames built for it; [`Form::Frame`] is always there.
    forms: Forms,
}

impl Entry {
    /// An entry of the forms built for a broadcast; `None` unless the
    /// classic plain frame (which holds the message's bytes) is one of them.
    pub fn new(
        offset: u64,
        time_ms: u64,
        sender: u64,
        opcode: OpCode,
        expires: Time,
        forms: Forms,
    ) -> Option<Entry> {
        forms[Form::Frame as usize].as_ref()?;
        Some(Entry {
            offset,
            time_ms,
            sender,
            opcode,
            expires,
            forms,
        })
    }

    /// The forms built so far, to hand to a replay.
    pub fn forms(&self) -> Forms {
        self.forms.clone()
    }

    /// Keeps forms a replay built; returns the bytes this added.
    pub fn keep(&mut self, forms: Forms) -> usize {
        let before = self.bytes();
        for (slot, form) in self.forms.iter_mut().zip(forms) {
            if slot.is_none() {
                *slot = form;
            }
        }
        self.bytes() - before
    }

    /// The classic plain frame, `from{sender}:` and the message.
    pub fn frame(&self) -> std::rc::Rc<[u8]> {
        // Entry::new checked it is there, and forms are only ever added.
        self.forms[Form::Frame as usize]
            .clone()
            .unwrap_or_else(|| [].into())
    }

    /// The message's bytes, within `frame` (the entry's [`Entry::frame`]).
    pub fn payload<'f>(&self, frame: &'f [u8]) -> &'f [u8] {
        let mut buf = [0; PREFIX_BYTES];
        let prefix = classic_prefix(self.sender, &mut buf).len();
        match decode_header(frame) {
            Ok(Some((_, header))) => frame.get(header + prefix..).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Bytes the entry holds, as the budget counts them.
    pub fn bytes(&self) -> usize {
        ENTRY_OVERHEAD + self.forms.iter().flatten().map(|f| f.len()).sum::<usize>()
    }
}

/// What a joining member is replayed, and whether that is everything it
/// asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The first offset to replay; past the head when there is nothing.
    pub from: u64,
    /// The member gave a position and gets every message after it.
    pub recovered: bool,
}

/// A room's numbering and its recent messages, oldest first.
#[derive(Debug)]
pub struct History {
    epoch: Box<str>,
    /// The last offset given out.
    head: u64,
    entries: VecDeque<Entry>,
    /// The numbering is Redis's (cluster mode), not this instance's own.
    shared: bool,
    /// Some client was told this epoch: changing it must be announced.
    announced: bool,
}

impl History {
    /// An empty history under a new epoch.
    pub fn new() -> History {
        History::with_epoch(new_epoch(), 0)
    }

    /// An empty history under `epoch`, with `head` given out already.
    pub fn with_epoch(epoch: Box<str>, head: u64) -> History {
        History {
            epoch,
            head,
            entries: VecDeque::new(),
            shared: false,
            announced: false,
        }
    }

    /// Whether the numbering is Redis's (adopted from a cluster message).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether a client was told the current epoch.
    pub fn is_announced(&self) -> bool {
        self.announced
    }

    /// Notes that a client was told the current epoch.
    pub fn announce(&mut self) {
        self.announced = true;
    }

    /// Starts a numbering of this instance's own under a new epoch (cluster
    /// mode while Redis is unreachable: offsets given here must not pass
    /// for Redis's); returns the entries dropped.
    pub fn renumber_locally(&mut self) -> Vec<Entry> {
        self.epoch = new_epoch();
        self.head = 0;
        self.shared = false;
        self.announced = false;
        self.entries.drain(..).collect()
    }

    /// The room's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The last offset given out.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Messages kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Gives out the next offset (alone: the instance numbers messages).
    pub fn next_offset(&mut self) -> u64 {
        self.head += 1;
        self.head
    }

    /// Takes a numbering from elsewhere (Redis): a new epoch forgets every
    /// message kept; returns the entries dropped.
    pub fn adopt(&mut self, epoch: &str, head: u64) -> Vec<Entry> {
        self.shared = true;
        if *self.epoch == *epoch {
            self.head = self.head.max(head);
            return Vec::new();
        }
        self.epoch = epoch.into();
        self.head = head;
        self.announced = false;
        self.entries.drain(..).collect()
    }

    /// Keeps `entry`, the newest message (its offset past every kept one).
    pub fn push(&mut self, entry: Entry) {
        self.head = self.head.max(entry.offset);
        self.entries.push_back(entry);
    }

    /// Keeps the entries read back from Redis that are not kept yet, each
    /// in its place by offset: older than the oldest kept, in a hole, or
    /// newer than the newest (heard live later, they are then known and
    /// kept once). Returns the bytes added.
    pub fn merge(&mut self, entries: Vec<Entry>) -> usize {
        let mut added = 0;
        for entry in entries {
            let at = self.entries.partition_point(|e| e.offset < entry.offset);
            if self
                .entries
                .get(at)
                .is_some_and(|e| e.offset == entry.offset)
            {
                continue;
            }
            added += entry.bytes();
            self.head = self.head.max(entry.offset);
            self.entries.insert(at, entry);
        }
        added
    }

    /// The offset of the newest entry kept.
    pub fn last_kept(&self) -> Option<u64> {
        self.entries.back().map(|e| e.offset)
    }

    /// The oldest entry.
    pub fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    /// The offset of the newest entry kept.
    pub fn newest(&self) -> Option<u64> {
        self.entries.back().map(|e| e.offset)
    }

    /// Forgets the oldest entry.
    pub fn pop_front(&mut self) -> Option<Entry> {
        self.entries.pop_front()
    }

    /// The entry at `offset`, if kept.
    pub fn get_mut(&mut self, offset: u64) -> Option<&mut Entry> {
        let i = self.index_of(offset)?;
        self.entries.get_mut(i)
    }

    /// The first kept offset at or after `offset`.
    pub fn next_kept(&self, offset: u64) -> Option<u64> {
        let i = self.entries.partition_point(|e| e.offset < offset);
        self.entries.get(i).map(|e| e.offset)
    }

    fn index_of(&self, offset: u64) -> Option<usize> {
        let i = self.entries.partition_point(|e| e.offset < offset);
        (self.entries.get(i)?.offset == offset).then_some(i)
    }

    /// What a member joining with `since` (or none: the last `on_join`
    /// messages) is replayed.
    pub fn plan(&self, since: Option<&Position>, on_join: usize) -> Plan {
        let after_head = self.head + 1;
        let Some(since) = since else {
            let skip = self.entries.len().saturating_sub(on_join);
            let from = self.entries.get(skip).map_or(after_head, |e| e.offset);
            return Plan {
                from,
                recovered: false,
            };
        };
        if *since.epoch != *self.epoch {
            // Another numbering: everything kept is new to the client.
            let from = self.entries.front().map_or(after_head, |e| e.offset);
            return Plan {
                from,
                recovered: false,
            };
        }
        if since.offset > self.head {
            // A position this room never gave out.
            return Plan {
                from: after_head,
                recovered: false,
            };
        }
        let first = since.offset + 1;
        let kept_after =
            self.entries.len() - self.entries.partition_point(|e| e.offset <= since.offset);
        Plan {
            from: first,
            recovered: kept_after as u64 == self.head - since.offset,
        }
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::frame::encode_frame;

    pub(crate) fn entry(offset: u64, text: &str) -> Entry {
        let mut frame = Vec::new();
        let prefix = "from7:";
        encode_frame(
            true,
            OpCode::Text,
            false,
            &[prefix.as_bytes(), text.as_bytes()],
            &mut frame,
        );
        let mut forms: Forms = Default::default();
        forms[Form::Frame as usize] = Some(frame.into());
        Entry::new(
            offset,
            1000 + offset,
            7,
            OpCode::Text,
            Time::from_millis(1),
            forms,
        )
        .unwrap()
    }

    fn plan(from: u64, recovered: bool) -> Plan {
        Plan { from, recovered }
    }

    fn filled(n: u64) -> History {
        let mut h = History::with_epoch("e1".into(), 0);
        for _ in 0..n {
            let offset = h.next_offset();
            h.push(entry(offset, "hi"));
        }
        h
    }

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn positions_parse_strictly() {
        assert_eq!(Position::parse("abc9:41"), Ok(at("abc9", 41)));
        assert_eq!(Position::parse("abc9:0"), Ok(at("abc9", 0)));
        for bad in [
            "",
            "abc",
            ":1",
            "abc:",
            "a-b:1",
            "abc:-1",
            "abc:+1",
            "abc:1x",
            "abc:99999999999999999999",
        ] {
            assert_eq!(Position::parse(bad), Err(BadPosition), "{bad:?}");
        }
        assert!(Position::parse(&format!("{}:1", "a".repeat(33))).is_err());
    }

    #[test]
    fn epochs_are_letters_and_digits_and_differ() {
        let (a, b) = (new_epoch(), new_epoch());
        assert!(is_valid_epoch(&a) && is_valid_epoch(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn the_payload_is_read_back_from_the_classic_frame() {
        let e = entry(1, "hello");
        assert_eq!(e.payload(&e.frame()), b"hello");
        let long = "x".repeat(70_000);
        let e = entry(2, &long);
        assert_eq!(e.payload(&e.frame()), long.as_bytes());
    }

    #[test]
    fn a_member_without_position_gets_the_last_few() {
        let h = filled(10);
        assert_eq!(h.plan(None, 3), plan(8, false));
        assert_eq!(h.plan(None, 50), plan(1, false));
        assert_eq!(h.plan(None, 0), plan(11, false));
        assert_eq!(History::new().plan(None, 5).from, 1);
    }

    #[test]
    fn a_position_within_history_recovers_exactly_what_followed() {
        let h = filled(10);
        assert_eq!(h.plan(Some(&at("e1", 4)), 0), plan(5, true));
        assert_eq!(h.plan(Some(&at("e1", 10)), 0), plan(11, true));
        assert_eq!(h.plan(Some(&at("e1", 0)), 0), plan(1, true));
    }

    #[test]
    fn trimmed_history_another_epoch_or_a_future_offset_do_not_recover() {
        let mut h = filled(10);
        h.pop_front();
        h.pop_front();
        assert_eq!(h.plan(Some(&at("e1", 1)), 0), plan(2, false));
        assert_eq!(h.plan(Some(&at("e1", 2)), 0), plan(3, true));
        assert_eq!(h.plan(Some(&at("e0", 5)), 0), plan(3, false));
        assert_eq!(h.plan(Some(&at("e1", 11)), 0), plan(11, false));
    }

    #[test]
    fn a_new_epoch_forgets_and_older_entries_go_in_front() {
        let mut h = History::with_epoch("e1".into(), 0);
        h.push(entry(5, "five"));
        h.push(entry(6, "six"));
        let added = h.merge(vec![
            entry(3, "three"),
            entry(4, "four"),
            entry(5, "dup"),
            entry(7, "seven"),
        ]);
        let new = ["three", "four", "seven"];
        assert_eq!(
            added,
            new.iter().map(|t| entry(3, t).bytes()).sum::<usize>()
        );
        let offsets: Vec<u64> = h.entries.iter().map(|e| e.offset).collect();
        assert_eq!(
            offsets,
            [3, 4, 5, 6, 7],
            "older, and newer than the newest kept"
        );
        assert_eq!(h.head(), 7);
        h.entries.pop_back();
        h.head = 6;
        assert_eq!(h.next_kept(0), Some(3));
        assert_eq!(h.plan(Some(&at("e1", 2)), 0), plan(3, true));
        assert_eq!(h.plan(Some(&at("e1", 1)), 0), plan(2, false));
        assert_eq!(h.adopt("e1", 9).len(), 0);
        assert_eq!(h.head(), 9);
        assert_eq!(h.adopt("e2", 1).len(), 4);
        assert_eq!((h.epoch(), h.head(), h.len()), ("e2", 1, 0));
    }
}
