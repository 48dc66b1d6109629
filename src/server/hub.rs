//! Chat semantics: the rooms, the classic `from{id}:` form of a room
//! message, joining (welcome, replay, presence for `wschat.v1` members),
//! and what a broadcast needs besides its receivers (the loop's shared
//! deflater and the scratch buffer frames are built in).

use std::io::Write as _;
use std::rc::Rc;

use slab::Slab;

use super::history::{Entry, HistoryLimits, Position, MAX_EPOCH};
use super::json::{self, Presence, Stamp, Welcome};
use super::outgoing::{Format, Outgoing};
use super::room::{Fanout, Member, Next, Rooms};
use super::timer::Time;
use crate::protocol::deflate::Deflater;
use crate::protocol::frame::encode_frame;
use crate::protocol::OpCode;

/// Scratch buffers larger than this are freed after a broadcast, so one
/// large message does not keep its size for the life of the process.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

/// The longest `from{id}:` prefix: `from` + 20 digits + `:`.
pub const PREFIX_BYTES: usize = 25;

/// Writes the classic prefix of a room message, `from{id}:` (the
/// Swoole-style form every client of the classic protocol parses), into
/// `buf`; returns it. The one place this form is written.
pub fn classic_prefix(sender: u64, buf: &mut [u8; PREFIX_BYTES]) -> &[u8] {
    let mut cursor = &mut buf[..];
    // 25 bytes hold any u64: the write cannot fail.
    let _ = write!(cursor, "from{sender}:");
    let left = cursor.len();
    &buf[..PREFIX_BYTES - left]
}

/// What building a message's frames takes: the loop's shared deflater and
/// the scratch buffer frames are built in.
#[derive(Debug)]
struct Framing {
    /// The deflater of every message compressed without context takeover.
    deflater: Deflater,
    /// Reused to build each frame before it is shared.
    scratch: Vec<u8>,
    /// Messages shorter than this are never compressed.
    min_compress: usize,
}

impl Framing {
    /// A text frame carrying `object`, shared.
    fn text_frame(&mut self, object: &[u8]) -> Rc<[u8]> {
        self.scratch.clear();
        encode_frame(true, OpCode::Text, false, &[object], &mut self.scratch);
        Rc::from(&self.scratch[..])
    }

    /// Frees a scratch buffer one large message left large.
    fn release(&mut self) {
        if self.scratch.capacity() > SCRATCH_KEEP_BYTES {
            self.scratch = Vec::new();
        }
    }

    fn outgoing<'a>(
        &'a mut self,
        opcode: OpCode,
        prefix: &'a [u8],
        payload: &'a [u8],
    ) -> Outgoing<'a> {
        Outgoing::new(
            opcode,
            prefix,
            payload,
            self.min_compress,
            &mut self.deflater,
            &mut self.scratch,
        )
    }
}

/// Rooms and the means to broadcast into them.
#[derive(Debug)]
pub struct Hub {
    /// Every room and its members.
    pub rooms: Rooms,
    framing: Framing,
    fanout: Fanout,
}

/// Where a room message sits, when it is numbered elsewhere (Redis).
#[derive(Debug, Clone, Copy)]
pub struct Numbered<'a> {
    /// The room's epoch.
    pub epoch: &'a str,
    /// The message's offset.
    pub offset: u64,
}

/// A room message to deliver.
#[derive(Debug, Clone, Copy)]
pub struct RoomMessage<'a> {
    /// The sender's connection id.
    pub sender: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// What the sender sent.
    pub payload: &'a [u8],
    /// When it was accepted, in ms since the Unix epoch.
    pub time_ms: u64,
    /// Its number from Redis; `None`: the room numbers it here.
    pub numbered: Option<Numbered<'a>>,
}

/// What became of a replaying member after [`Hub::pump`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pump {
    /// It has caught up: it receives live messages from now on.
    Live,
    /// Its queue is full enough: pump again once it drained.
    Waiting,
    /// A message it still needed was forgotten first: it cannot be
    /// brought up to date, and should be closed (it recovers on reconnect,
    /// told that something is missing).
    Lost,
}

/// How a member joins a room.
#[derive(Debug, Clone, Copy)]
pub struct Joining<'a> {
    /// The member's key.
    pub key: usize,
    /// Its connection id.
    pub id: u64,
    /// The protocol it speaks.
    pub format: Format,
    /// The position it comes back from, if it gave one.
    pub since: Option<&'a Position>,
}

/// A copy of a room's epoch, so that a message can carry it while the
/// rooms are borrowed to deliver it.
#[derive(Debug, Clone, Copy)]
struct EpochCopy {
    bytes: [u8; MAX_EPOCH],
    len: usize,
}

impl EpochCopy {
    fn of(epoch: &str) -> EpochCopy {
        let mut bytes = [0; MAX_EPOCH];
        let len = epoch.len().min(MAX_EPOCH);
        bytes[..len].copy_from_slice(&epoch.as_bytes()[..len]);
        EpochCopy { bytes, len }
    }

    fn as_str(&self) -> &str {
        // Epochs are ASCII letters and digits, so any prefix is UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl Hub {
    /// No rooms; messages from `min_compress` bytes on may be compressed;
    /// history kept within `limits`.
    pub fn new(min_compress: usize, limits: HistoryLimits) -> Hub {
        Hub {
            rooms: Rooms::new(limits),
            framing: Framing {
                deflater: Deflater::new(15),
                scratch: Vec::new(),
                min_compress,
            },
            fanout: Fanout::default(),
        }
    }

    /// Messages compressed by the shared deflater so far.
    pub fn deflate_calls(&self) -> u64 {
        self.framing.deflater.calls()
    }

    /// A message to frame (at most once per form) for any receiver.
    pub fn outgoing<'a>(
        &'a mut self,
        opcode: OpCode,
        prefix: &'a [u8],
        payload: &'a [u8],
    ) -> Outgoing<'a> {
        self.framing.outgoing(opcode, prefix, payload)
    }

    /// Numbers `message` in `room` (or takes its number from Redis), keeps
    /// it in the room's history and delivers it to the room's live members
    /// among `members`, each queue bounded by `limit`: classic members get
    /// `from{sender}:{payload}`, `wschat.v1` members its JSON object.
    /// Returns who needs a flush and who refused (slow consumers).
    pub fn broadcast<M: Member>(
        &mut self,
        room: usize,
        message: RoomMessage<'_>,
        members: &mut Slab<M>,
        limit: usize,
        now: Time,
    ) -> &mut Fanout {
        let mut fanout = std::mem::take(&mut self.fanout);
        fanout.limit = limit;
        fanout.delivered = 0;
        let numbered = match message.numbered {
            Some(n) => {
                self.rooms.adopt(room, n.epoch, n.offset);
                Some((EpochCopy::of(n.epoch), n.offset))
            }
            None => self
                .rooms
                .history_mut(room)
                .map(|h| (EpochCopy::of(h.epoch()), h.next_offset())),
        };
        if let Some((epoch, offset)) = numbered {
            let mut buf = [0; PREFIX_BYTES];
            let prefix = classic_prefix(message.sender, &mut buf);
            let stamp = Stamp {
                epoch: epoch.as_str(),
                offset,
                time_ms: message.time_ms,
            };
            let mut out = self
                .framing
                .outgoing(message.opcode, prefix, message.payload)
                .stamped(message.sender, stamp);
            self.rooms.broadcast(room, &mut out, members, &mut fanout);
            if self.rooms.limits().size > 0 {
                // The classic frame holds the bytes every other form is
                // built from: the history keeps it whoever took it.
                out.plain();
                let expires = now + self.rooms.limits().ttl;
                let forms = out.into_forms();
                let (sender, opcode, time_ms) = (message.sender, message.opcode, message.time_ms);
                if let Some(entry) = Entry::new(offset, time_ms, sender, opcode, expires, forms) {
                    self.rooms.remember(room, entry, now);
                }
            }
        }
        self.framing.release();
        self.fanout = fanout;
        &mut self.fanout
    }

    /// Adds a member to the room called `name`; the JSON members already
    /// there are told. A classic member is live at once; a `wschat.v1`
    /// member is sent its welcome, then what it missed (or the last
    /// messages, without a position) through [`Hub::pump`]. Returns the room's
    /// key and the members that need a flush (in `woken`).
    pub fn join<M: Member>(
        &mut self,
        name: &str,
        joining: Joining<'_>,
        members: &mut Slab<M>,
        woken: &mut Vec<usize>,
    ) -> usize {
        let room = self.rooms.join(name, joining.key);
        self.announce(
            room,
            Presence::Join,
            joining.id,
            joining.key,
            members,
            woken,
        );
        if joining.format == Format::Classic {
            return room;
        }
        let on_join = self.rooms.limits().on_join;
        let (plan, welcome) = {
            let Some(history) = self.rooms.history(room) else {
                return room;
            };
            let plan = history.plan(joining.since, on_join);
            let mut object = Vec::new();
            json::welcome(
                &Welcome {
                    id: joining.id,
                    room: name,
                    epoch: history.epoch(),
                    offset: history.head(),
                    members: self.rooms.members(room),
                    recovered: plan.recovered,
                },
                &mut object,
            );
            (plan, self.framing.text_frame(&object))
        };
        if let Some(member) = members.get_mut(joining.key) {
            if member.queue_frame(welcome) {
                woken.push(joining.key);
            }
        }
        self.rooms.start_replay(joining.key, plan.from);
        room
    }

    /// Removes member `key` (connection `id`) from its room; the JSON
    /// members left are told.
    pub fn leave<M: Member>(
        &mut self,
        key: usize,
        id: u64,
        members: &mut Slab<M>,
        woken: &mut Vec<usize>,
    ) {
        let Some(room) = self.rooms.leave(key) else {
            return;
        };
        self.announce(room, Presence::Leave, id, key, members, woken);
    }

    fn announce<M: Member>(
        &mut self,
        room: usize,
        kind: Presence,
        id: u64,
        except: usize,
        members: &mut Slab<M>,
        woken: &mut Vec<usize>,
    ) {
        let count = self.rooms.members(room);
        if count == 0 {
            return;
        }
        let mut object = Vec::new();
        json::presence(kind, id, count, &mut object);
        let frame = self.framing.text_frame(&object);
        self.rooms
            .announce(room, Format::Json, &frame, except, members, woken);
    }

    /// Queues history to replaying member `key` until its queue holds half
    /// of `limit`, it has caught up, or what it needs is gone; `woken` gets
    /// it if it needs a flush.
    pub fn pump<M: Member>(
        &mut self,
        key: usize,
        members: &mut Slab<M>,
        limit: usize,
        woken: &mut Vec<usize>,
    ) -> Pump {
        let mut woke = false;
        let outcome = loop {
            let Some(member) = members.get_mut(key) else {
                break Pump::Live;
            };
            let Some(backlog) = member.backlog() else {
                break Pump::Waiting;
            };
            if backlog > 0 && backlog >= limit / 2 {
                break Pump::Waiting;
            }
            let Some(epoch) = self
                .rooms
                .cursor(key)
                .and_then(|(room, _)| self.rooms.history(room))
                .map(|h| EpochCopy::of(h.epoch()))
            else {
                break Pump::Live;
            };
            let entry = match self.rooms.next_for(key) {
                Next::Entry(entry) => entry,
                Next::Live => break Pump::Live,
                Next::Lost => break Pump::Lost,
            };
            let frame = entry.frame();
            let stamp = Stamp {
                epoch: epoch.as_str(),
                offset: entry.offset,
                time_ms: entry.time_ms,
            };
            let mut buf = [0; PREFIX_BYTES];
            let prefix = classic_prefix(entry.sender, &mut buf);
            let mut out = self
                .framing
                .outgoing(entry.opcode, prefix, entry.payload(&frame))
                .stamped(entry.sender, stamp)
                .replay(entry.forms());
            woke |= member.queue(&mut out);
            let grown = entry.keep(out.into_forms());
            let offset = entry.offset;
            self.rooms.sent(key, offset, grown);
        };
        self.framing.release();
        if woke {
            woken.push(key);
        }
        outcome
    }

    /// Applies the history's age limit and byte budget.
    pub fn expire(&mut self, now: Time) {
        self.rooms.enforce(now);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::protocol::frame::decode_header;

    /// A member whose queue holds frames until the test drains them.
    #[derive(Default)]
    struct Queue {
        frames: VecDeque<Rc<[u8]>>,
        format: Format,
    }

    impl Member for Queue {
        fn backlog(&self) -> Option<usize> {
            Some(self.frames.iter().map(|f| f.len()).sum())
        }

        fn format(&self) -> Format {
            self.format
        }

        fn queue(&mut self, message: &mut Outgoing<'_>) -> bool {
            self.frames
                .push_back(message.frame_for(self.format, None, None));
            true
        }

        fn queue_frame(&mut self, frame: Rc<[u8]>) -> bool {
            self.frames.push_back(frame);
            true
        }
    }

    /// The offsets of the JSON messages among `frames`.
    fn offsets(frames: impl Iterator<Item = Rc<[u8]>>) -> Vec<u64> {
        frames
            .filter_map(|f| {
                let (_, n) = decode_header(&f).unwrap().unwrap();
                let v: serde_json::Value = serde_json::from_slice(&f[n..]).unwrap();
                (v["type"] == "message").then(|| v["offset"].as_u64().unwrap())
            })
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A message to the room.
        Send(usize),
        /// The replaying member's socket takes this many frames.
        Drain(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1usize..300).prop_map(Step::Send),
            (0usize..6).prop_map(Step::Drain),
        ]
    }

    proptest! {
        /// Whatever the interleaving of live messages and the replay's
        /// pacing, a member that comes back gets each offset once, in
        /// order, from its position to the newest.
        #[test]
        fn live_messages_and_a_replay_interleave_without_loss_or_duplicates(
            before in 0u64..40,
            since in 0u64..40,
            steps in proptest::collection::vec(step(), 0..80),
        ) {
            let since = since.min(before);
            let limit = 600;
            let mut hub = Hub::new(64, HistoryLimits { size: 1000, ..HistoryLimits::default() });
            let mut members: Slab<Queue> = Slab::new();
            let sender = members.insert(Queue::default());
            hub.rooms.join("r", sender);
            let room = hub.rooms.find("r").unwrap();
            let now = Time::from_millis(0);
            let send = |hub: &mut Hub, members: &mut Slab<Queue>, len: usize| {
                let payload = vec![b'a'; len];
                let message = RoomMessage {
                    sender: 1,
                    opcode: OpCode::Text,
                    payload: &payload,
                    time_ms: 5,
                    numbered: None,
                };
                hub.broadcast(room, message, members, usize::MAX, now);
                members[sender].frames.clear();
            };
            for _ in 0..before {
                send(&mut hub, &mut members, 10);
            }
            let epoch = hub.rooms.history(room).unwrap().epoch().to_string();
            let key = members.insert(Queue { format: Format::Json, ..Queue::default() });
            let position = Position { epoch, offset: since };
            let joining = Joining { key, id: 2, format: Format::Json, since: Some(&position) };
            let mut woken = Vec::new();
            hub.join("r", joining, &mut members, &mut woken);
            hub.pump(key, &mut members, limit, &mut woken);
            let mut received = Vec::new();
            for step in steps {
                match step {
                    Step::Send(len) => send(&mut hub, &mut members, len),
                    Step::Drain(n) => {
                        let q = &mut members[key].frames;
                        let n = n.min(q.len());
                        received.extend(q.drain(..n));
                        hub.pump(key, &mut members, limit, &mut woken);
                    }
                }
            }
            // The socket drains the rest.
            loop {
                received.extend(members[key].frames.drain(..));
                hub.pump(key, &mut members, limit, &mut woken);
                if members[key].frames.is_empty() {
                    break;
                }
            }
            let head = hub.rooms.history(room).unwrap().head();
            let expected: Vec<u64> = (since + 1..=head).collect();
            prop_assert_eq!(offsets(received.into_iter()), expected);
            prop_assert_eq!(hub.rooms.cursor(key), None, "live at the end");
        }
    }

    #[test]
    fn a_json_member_is_welcomed_and_replayed_the_recent_messages() {
        let limits = HistoryLimits {
            on_join: 2,
            ttl: Duration::from_secs(60),
            ..HistoryLimits::default()
        };
        let mut hub = Hub::new(64, limits);
        let mut members: Slab<Queue> = Slab::new();
        let classic = members.insert(Queue::default());
        let mut woken = Vec::new();
        let joining = Joining {
            key: classic,
            id: 1,
            format: Format::Classic,
            since: None,
        };
        let room = hub.join("r", joining, &mut members, &mut woken);
        assert!(
            members[classic].frames.is_empty(),
            "no welcome in the classic protocol"
        );
        for text in [&b"a"[..], b"b", b"c"] {
            let message = RoomMessage {
                sender: 1,
                opcode: OpCode::Text,
                payload: text,
                time_ms: 7,
                numbered: None,
            };
            hub.broadcast(room, message, &mut members, 1 << 20, Time::from_millis(0));
        }
        assert_eq!(
            &members[classic].frames[2][2..],
            b"from1:c",
            "classic unchanged"
        );
        let json = members.insert(Queue {
            format: Format::Json,
            ..Queue::default()
        });
        let joining = Joining {
            key: json,
            id: 2,
            format: Format::Json,
            since: None,
        };
        hub.join("r", joining, &mut members, &mut woken);
        assert_eq!(
            hub.pump(json, &mut members, 1 << 20, &mut woken),
            Pump::Live
        );
        let frames: Vec<_> = members[json].frames.drain(..).collect();
        let welcome = std::str::from_utf8(&frames[0][2..]).unwrap();
        assert!(
            welcome.contains(r#""offset":3,"members":2,"recovered":false"#),
            "{welcome}"
        );
        assert_eq!(offsets(frames.into_iter()), [2, 3]);
        let presence = members[classic].frames.len();
        assert_eq!(presence, 3, "classic members are not told of joins");
    }

    #[test]
    fn classic_prefixes() {
        let mut buf = [0; PREFIX_BYTES];
        assert_eq!(classic_prefix(7, &mut buf), b"from7:");
        assert_eq!(
            classic_prefix(u64::MAX, &mut buf),
            b"from18446744073709551615:"
        );
    }
}
