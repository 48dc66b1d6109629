//! A poll's answer from a room's history: the messages after a position,
//! as the bare JSON objects a `wschat.v1` client receives, each built once
//! and kept with its message.

use std::rc::Rc;

use super::{classic_prefix, EpochCopy, Hub, PREFIX_BYTES};
use crate::server::history::Position;
use crate::server::json::Stamp;
use crate::server::outgoing::Form;

impl Hub {
    /// What a poll of `room` from `since` is answered with: the messages
    /// history keeps after it (the last `--history-on-join` without a
    /// position), as bare JSON objects, until they pass `max_bytes` (one
    /// at least), and whether that is everything since `since`. Each
    /// object is built once and kept with its message.
    pub fn poll(&mut self, room: usize, since: Option<&Position>, max_bytes: usize) -> Polled {
        let on_join = self.rooms.limits().on_join;
        let Some(history) = self.rooms.history(room) else {
            return Polled::default();
        };
        let plan = history.plan(since, on_join);
        let epoch = EpochCopy::of(history.epoch());
        let head = history.head();
        let mut polled = Polled {
            epoch: epoch.as_str().to_string(),
            head,
            recovered: plan.recovered,
            next: head,
            messages: Vec::new(),
        };
        let mut bytes = 0;
        let mut at = plan.from;
        while let Some(offset) = self.rooms.history(room).and_then(|h| h.next_kept(at)) {
            if bytes >= max_bytes {
                polled.next = at - 1;
                break;
            }
            let object = self.object_of(room, offset, epoch.as_str());
            bytes += object.len();
            polled.messages.push((offset, object));
            at = offset + 1;
        }
        self.framing.release();
        polled
    }

    /// The bare JSON object of the message at `offset` (which history
    /// keeps), built on first use and kept with it.
    fn object_of(&mut self, room: usize, offset: u64, epoch: &str) -> Rc<[u8]> {
        let Some(entry) = self.rooms.history_mut(room).and_then(|h| h.get_mut(offset)) else {
            return Rc::from(&b"{}"[..]);
        };
        let frame = entry.frame();
        let stamp = Stamp {
            epoch,
            offset,
            time_ms: entry.time_ms,
        };
        let mut buf = [0; PREFIX_BYTES];
        let prefix = classic_prefix(entry.sender, &mut buf);
        let mut out = self
            .framing
            .outgoing(entry.opcode, prefix, entry.payload(&frame))
            .stamped(entry.sender, stamp)
            .replay(entry.forms());
        let object = out.form(Form::JsonObject);
        let grown = entry.keep(out.into_forms());
        self.rooms.count_grown(grown);
        object
    }
}

/// What a poll is answered with (see [`Hub::poll`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Polled {
    /// The room's epoch.
    pub epoch: String,
    /// The room's newest offset.
    pub head: u64,
    /// The poll gave a position and gets every message after it.
    pub recovered: bool,
    /// The position after these messages: the last one's offset when the
    /// answer was cut short, else the head.
    pub next: u64,
    /// The messages (offset, bare JSON object), oldest first.
    pub messages: Vec<(u64, Rc<[u8]>)>,
}
