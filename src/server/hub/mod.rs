//! Chat semantics: the rooms, the classic `from{id}:` form of a room
//! message, joining (welcome, replay, presence for `wschat.v1` members),
//! and what a broadcast needs besides its receivers (the loop's shared
//! deflater and the scratch buffer frames are built in).

use std::io::Write as _;
use std::rc::Rc;

use log::info;

use super::history::{Entry, History, HistoryLimits, Position, MAX_EPOCH};
use super::json::{self, Presence, Stamp, Welcome};
use super::outgoing::{Format, Notice, Outgoing};
use super::room::{Fanout, Member, Next, Rooms, Roster, FORMATS};
use super::sse::EventId;
use super::timer::Time;
use crate::protocol::deflate::Deflater;
use crate::protocol::OpCode;

mod poll;

pub use self::poll::Polled;

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
    /// Cluster mode: rooms take Redis's numbering, and a message numbered
    /// here (Redis unreachable) starts a numbering of the instance's own.
    clustered: bool,
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
    /// Its history comes from Redis: hold it until [`Hub::recalled`].
    pub recall: bool,
}

/// A room's numbering and messages, as Redis keeps them.
#[derive(Debug, Clone)]
pub struct Recalled<'a> {
    /// The room's epoch.
    pub epoch: &'a str,
    /// The room's newest offset.
    pub head: u64,
    /// Messages, oldest first.
    pub entries: Vec<RecalledEntry<'a>>,
}

/// One message read back from Redis.
#[derive(Debug, Clone, Copy)]
pub struct RecalledEntry<'a> {
    /// Its offset.
    pub offset: u64,
    /// When it was accepted, in ms since the Unix epoch.
    pub time_ms: u64,
    /// The sender's connection id.
    pub sender: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// What the sender sent.
    pub payload: &'a [u8],
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
            clustered: false,
        }
    }

    /// The same hub in cluster mode (see [`Hub::broadcast`]).
    pub fn clustered(self) -> Hub {
        Hub {
            clustered: true,
            ..self
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
    pub fn broadcast<R: Roster + ?Sized>(
        &mut self,
        room: usize,
        message: RoomMessage<'_>,
        members: &mut R,
        limit: usize,
        now: Time,
    ) -> &mut Fanout {
        let mut fanout = std::mem::take(&mut self.fanout);
        fanout.limit = limit;
        fanout.delivered = 0;
        fanout.delivered_to = [0; FORMATS];
        let announced = self.rooms.history(room).is_some_and(History::is_announced);
        let renumbered = match message.numbered {
            // The message itself moves the head once it is delivered: a
            // welcome sent first says what came before it.
            Some(n) => self.rooms.adopt(room, n.epoch, n.offset.saturating_sub(1)),
            None if self.clustered => self.rooms.renumber_locally(room),
            None => false,
        };
        if renumbered && announced {
            // Clients hold positions under the old epoch: they are told.
            let name = self.rooms.name(room).unwrap_or_default();
            let epoch = self.rooms.history(room).map_or("", History::epoch);
            info!("room {name}: numbered under epoch {epoch} from now on");
            self.rewelcome(room, members, &mut fanout.woken);
        }
        let numbered = match message.numbered {
            Some(n) => Some((EpochCopy::of(n.epoch), n.offset)),
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
            if let Some(n) = message.numbered {
                self.rooms.adopt(room, n.epoch, n.offset);
            }
            let known = self
                .rooms
                .history(room)
                .and_then(History::last_kept)
                .is_some_and(|last| last >= offset);
            // (A message read back from Redis for a member that joined
            // can come live afterwards: it is kept once.)
            if self.rooms.limits().size > 0 && !known {
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
    /// there are told. A classic member is live at once. A `wschat.v1`
    /// member is sent its welcome, then what it missed (or the last
    /// messages, without a position) through [`Hub::pump`]; with
    /// `joining.recall` it is held instead until [`Hub::recalled`] brings
    /// the room's history from Redis. Returns the room's key; the members
    /// that need a flush go to `woken`.
    pub fn join<R: Roster + ?Sized>(
        &mut self,
        name: &str,
        joining: Joining<'_>,
        members: &mut R,
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
        // Pollers read the history when they poll: nothing to send now.
        if matches!(joining.format, Format::Classic | Format::Poll) {
            return room;
        }
        if joining.recall {
            self.rooms.hold(joining.key);
            return room;
        }
        self.welcome(room, joining, None, members, woken);
        room
    }

    /// Merges history read back from Redis into `room` (the numbering,
    /// and messages older than what the room keeps), then welcomes held
    /// member `joining` and lets its replay start; `recalled` is `None`
    /// when Redis could not answer, and the member is told
    /// `recovered:false` if it asked for a position.
    pub fn recalled<'e, R: Roster + ?Sized>(
        &mut self,
        room: usize,
        joining: Joining<'_>,
        recalled: Option<Recalled<'e>>,
        members: &mut R,
        woken: &mut Vec<usize>,
        now: Time,
    ) {
        let complete = match recalled {
            Some(recalled) => {
                self.merge(room, recalled, members, woken, now);
                None
            }
            None => Some(false),
        };
        self.welcome(room, joining, complete, members, woken);
    }

    /// Merges history read back from Redis into `room` (the numbering, and
    /// messages older than what the room keeps), for a poller, which is
    /// answered from the history afterwards.
    pub fn merge_recalled<R: Roster + ?Sized>(
        &mut self,
        room: usize,
        recalled: Recalled<'_>,
        members: &mut R,
        woken: &mut Vec<usize>,
        now: Time,
    ) {
        self.merge(room, recalled, members, woken, now);
    }

    fn merge<R: Roster + ?Sized>(
        &mut self,
        room: usize,
        recalled: Recalled<'_>,
        members: &mut R,
        woken: &mut Vec<usize>,
        now: Time,
    ) {
        let announced = self.rooms.history(room).is_some_and(History::is_announced);
        // Messages newer than the newest one kept here, under the same
        // epoch, were published before the read and are on their way on
        // the subscription (Redis may answer the read first): they arrive
        // as live messages, so the head is not moved past them now.
        let head = match self.rooms.history(room) {
            Some(h) if h.epoch() == recalled.epoch => h.newest().map_or(recalled.head, |newest| {
                recalled.head.min(newest.max(h.head()))
            }),
            _ => recalled.head,
        };
        if self.rooms.adopt(room, recalled.epoch, head) && announced {
            self.rewelcome(room, members, woken);
        }
        let ttl = self.rooms.limits().ttl;
        let mut older = Vec::new();
        for e in recalled.entries {
            let mut buf = [0; PREFIX_BYTES];
            let prefix = classic_prefix(e.sender, &mut buf);
            let mut out = self.framing.outgoing(e.opcode, prefix, e.payload);
            out.plain();
            let forms = out.into_forms();
            older.extend(Entry::new(
                e.offset,
                e.time_ms,
                e.sender,
                e.opcode,
                now + ttl,
                forms,
            ));
        }
        self.framing.release();
        self.rooms.remember_recalled(room, older, now);
    }

    /// Welcomes `joining` in `room` and starts its replay; `recovered`
    /// overrides what the history says (a recall that failed).
    fn welcome<R: Roster + ?Sized>(
        &mut self,
        room: usize,
        joining: Joining<'_>,
        recovered: Option<bool>,
        members: &mut R,
        woken: &mut Vec<usize>,
    ) {
        let on_join = self.rooms.limits().on_join;
        let Some(history) = self.rooms.history(room) else {
            return;
        };
        let plan = history.plan(joining.since, on_join);
        let recovered = recovered.unwrap_or(plan.recovered);
        if let (Some(since), false) = (joining.since, recovered) {
            info!(
                "client-{}: comes back to {} at {}:{} (now {}:{}, {} kept from {:?}): some messages may be missing",
                joining.id,
                self.rooms.name(room).unwrap_or_default(),
                since.epoch,
                since.offset,
                history.epoch(),
                history.head(),
                history.len(),
                history.front().map(|e| e.offset),
            );
        }
        if let Some(member) = members.member_mut(joining.key) {
            let seen = plan.from.saturating_sub(1);
            let frame = self.welcome_frame(room, &*member, recovered, seen);
            if frame.is_some_and(|frame| member.queue_frame(frame)) {
                woken.push(joining.key);
            }
        }
        if self.rooms.is_held(joining.key) {
            self.rooms.release(joining.key, plan.from);
        } else {
            self.rooms.start_replay(joining.key, plan.from);
        }
    }

    /// The welcome of `member` in `room`, as it stands now, in the form
    /// of its format. As a server-sent event it carries the member's
    /// session token, and the id `EPOCH:{seen}`: what the client is to
    /// be considered as having, so that a reconnect (`Last-Event-ID`)
    /// before any message resumes from there.
    fn welcome_frame(
        &mut self,
        room: usize,
        member: &dyn Member,
        recovered: bool,
        seen: u64,
    ) -> Option<Rc<[u8]>> {
        let mut object = Vec::new();
        let name = self.rooms.name(room).unwrap_or_default();
        let history = self.rooms.history(room)?;
        let welcome = Welcome {
            id: member.id(),
            room: name,
            epoch: history.epoch(),
            offset: history.head(),
            members: self.rooms.members(room),
            recovered,
        };
        let session = member.session().filter(|_| member.format() == Format::Sse);
        json::welcome_with_session(&welcome, session, &mut object);
        let id = EventId {
            epoch: history.epoch(),
            offset: seen.min(history.head()),
        };
        let frame = Notice::new(&object, Some(id)).for_format(member.format());
        if let Some(history) = self.rooms.history_mut(room) {
            history.announce();
        }
        frame
    }

    /// Tells every JSON member of `room` that its numbering changed (a new
    /// epoch): a fresh welcome, with `recovered:false`, since what they
    /// hold cannot be resumed under the new one.
    fn rewelcome<R: Roster + ?Sized>(
        &mut self,
        room: usize,
        members: &mut R,
        woken: &mut Vec<usize>,
    ) {
        let head = self.rooms.history(room).map_or(0, History::head);
        let mut keys = self.rooms.members_speaking(room, Format::Json, members);
        keys.extend(self.rooms.members_speaking(room, Format::Sse, members));
        for key in keys {
            let Some(member) = members.member_mut(key) else {
                continue;
            };
            let Some(frame) = self.welcome_frame(room, &*member, false, head) else {
                continue;
            };
            if member.backlog().is_some() && member.queue_frame(frame) {
                woken.push(key);
            }
        }
    }

    /// Removes member `key` (connection `id`) from its room; the JSON
    /// members left are told.
    pub fn leave<R: Roster + ?Sized>(
        &mut self,
        key: usize,
        id: u64,
        members: &mut R,
        woken: &mut Vec<usize>,
    ) {
        let Some(room) = self.rooms.leave(key) else {
            return;
        };
        self.announce(room, Presence::Leave, id, key, members, woken);
    }

    fn announce<R: Roster + ?Sized>(
        &mut self,
        room: usize,
        kind: Presence,
        id: u64,
        except: usize,
        members: &mut R,
        woken: &mut Vec<usize>,
    ) {
        let count = self.rooms.members(room);
        if count == 0 {
            return;
        }
        let mut object = Vec::new();
        json::presence(kind, id, count, &mut object);
        let mut notice = Notice::new(&object, None);
        self.rooms
            .announce(room, &mut notice, except, members, woken);
    }

    /// Queues history to replaying member `key` until its queue holds half
    /// of `limit`, it has caught up, or what it needs is gone; `woken` gets
    /// it if it needs a flush.
    pub fn pump<R: Roster + ?Sized>(
        &mut self,
        key: usize,
        members: &mut R,
        limit: usize,
        woken: &mut Vec<usize>,
    ) -> Pump {
        let mut woke = false;
        let outcome = loop {
            let Some(member) = members.member_mut(key) else {
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
                Next::Held => break Pump::Waiting,
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
    use slab::Slab;

    use super::*;
    use crate::protocol::frame::decode_header;

    /// A member whose queue holds frames until the test drains them.
    #[derive(Default)]
    struct Queue {
        frames: VecDeque<Rc<[u8]>>,
        format: Format,
    }

    impl Queue {
        fn json() -> Queue {
            Queue {
                format: Format::Json,
                ..Queue::default()
            }
        }
    }

    impl Member for Queue {
        fn backlog(&self) -> Option<usize> {
            Some(self.frames.iter().map(|f| f.len()).sum())
        }

        fn format(&self) -> Format {
            self.format
        }

        fn id(&self) -> u64 {
            7
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
            let joining = Joining { key, id: 2, format: Format::Json, since: Some(&position), recall: false };
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

    fn numbered<'a>(epoch: &'a str, offset: u64, payload: &'a [u8]) -> RoomMessage<'a> {
        RoomMessage {
            sender: 3,
            opcode: OpCode::Text,
            payload,
            time_ms: 9,
            numbered: Some(Numbered { epoch, offset }),
        }
    }

    fn types(frames: &VecDeque<Rc<[u8]>>) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_slice(&f[2..]).unwrap();
                match v["type"].as_str().unwrap() {
                    "message" => format!("m{}", v["offset"]),
                    "welcome" => format!(
                        "w{}:{}:{}",
                        v["epoch"].as_str().unwrap(),
                        v["offset"],
                        v["recovered"]
                    ),
                    other => other.to_string(),
                }
            })
            .collect()
    }

    /// What Redis answers for room "E" at `head`: text `payload` at each
    /// of `offsets`, from sender 3.
    fn recalled_of(
        head: u64,
        offsets: std::ops::RangeInclusive<u64>,
        payload: &'static [u8],
    ) -> Recalled<'static> {
        Recalled {
            epoch: "E",
            head,
            entries: offsets
                .map(|offset| RecalledEntry {
                    offset,
                    time_ms: 1,
                    sender: 3,
                    opcode: OpCode::Text,
                    payload,
                })
                .collect(),
        }
    }

    /// A `wschat.v1` member `key` (connection `id`) joining.
    fn json_joining(key: usize, id: u64, since: Option<&Position>, recall: bool) -> Joining<'_> {
        Joining {
            key,
            id,
            format: Format::Json,
            since,
            recall,
        }
    }

    /// A clustered hub at time 0, its members' queues, and who woke.
    struct Clustered {
        hub: Hub,
        members: Slab<Queue>,
        woken: Vec<usize>,
        now: Time,
    }

    impl Clustered {
        fn new() -> Clustered {
            Clustered {
                hub: Hub::new(64, HistoryLimits::default()).clustered(),
                members: Slab::new(),
                woken: Vec::new(),
                now: Time::from_millis(0),
            }
        }

        /// A JSON member (connection 5) joining room "r" from `offset` of
        /// epoch "E", held while Redis is read: its key, the room, and the
        /// position it asked for.
        fn recalling(&mut self, offset: u64) -> (usize, usize, Position) {
            let key = self.members.insert(Queue::json());
            let since = Position {
                epoch: "E".into(),
                offset,
            };
            let joining = json_joining(key, 5, Some(&since), true);
            let room = self
                .hub
                .join("r", joining, &mut self.members, &mut self.woken);
            (key, room, since)
        }

        /// Redis's answer (`None`: it could not answer) for the member
        /// `key` that joined from `since`.
        fn recalled(
            &mut self,
            room: usize,
            key: usize,
            since: &Position,
            answer: Option<Recalled<'_>>,
        ) {
            let joining = json_joining(key, 5, Some(since), true);
            let (members, woken) = (&mut self.members, &mut self.woken);
            self.hub
                .recalled(room, joining, answer, members, woken, self.now);
        }

        /// Message `offset` of epoch "E" in `room`.
        fn send(&mut self, room: usize, offset: u64, payload: &[u8]) -> &mut Fanout {
            let message = numbered("E", offset, payload);
            self.hub
                .broadcast(room, message, &mut self.members, 1 << 20, self.now)
        }

        fn pump(&mut self, key: usize) -> Pump {
            self.hub
                .pump(key, &mut self.members, 1 << 20, &mut self.woken)
        }
    }

    #[test]
    fn a_member_held_for_redis_gets_the_recalled_history_then_what_came_meanwhile() {
        let mut c = Clustered::new();
        let (key, room, since) = c.recalling(2);
        // A live message arrives before Redis answers: it waits.
        c.send(room, 5, b"five");
        assert!(c.members[key].frames.is_empty(), "held: nothing yet");
        c.recalled(room, key, &since, Some(recalled_of(4, 3..=4, b"old")));
        assert_eq!(c.pump(key), Pump::Live);
        assert_eq!(
            types(&c.members[key].frames),
            ["wE:5:true", "m3", "m4", "m5"]
        );
        c.members[key].frames.clear();
        // Read back from Redis and then heard live: sent and kept once.
        let kept = c.hub.rooms.kept();
        c.send(room, 5, b"five");
        assert!(c.members[key].frames.is_empty(), "offset 5 again");
        assert_eq!(c.hub.rooms.kept(), kept);
        c.send(room, 6, b"six");
        assert_eq!(types(&c.members[key].frames), ["m6"], "live now");
    }

    #[test]
    fn messages_redis_read_before_their_live_copy_arrived_are_not_missing() {
        let mut c = Clustered::new();
        let live = c.members.insert(Queue::json());
        let joining = json_joining(live, 4, None, false);
        let room = c.hub.join("r", joining, &mut c.members, &mut c.woken);
        for offset in 1..=3 {
            c.send(room, offset, b"x");
        }
        let (key, _, since) = c.recalling(2);
        // Redis's read answers before the subscription brings 4.
        c.recalled(room, key, &since, Some(recalled_of(4, 3..=4, b"x")));
        assert_eq!(c.pump(key), Pump::Live);
        c.send(room, 4, b"x");
        // The welcome says 4, the newest offset Redis knows; 4 is sent once.
        assert_eq!(types(&c.members[key].frames), ["wE:4:true", "m3", "m4"]);
    }

    #[test]
    fn a_message_kept_from_a_read_before_its_live_copy_is_sent_once() {
        let mut c = Clustered::new();
        let (key, room, since) = c.recalling(1);
        c.recalled(room, key, &since, Some(recalled_of(3, 2..=3, b"x")));
        assert_eq!(c.pump(key), Pump::Live);
        // The subscription brings 3 after the read did: not again.
        assert_eq!(c.send(room, 3, b"x").delivered, 0);
        c.send(room, 4, b"x");
        assert_eq!(
            types(&c.members[key].frames),
            ["wE:3:true", "m2", "m3", "m4"]
        );
    }

    #[test]
    fn messages_redis_returned_before_they_were_heard_live_count_and_go_out_once() {
        let mut c = Clustered::new();
        let (key, room, since) = c.recalling(4);
        c.send(room, 5, b"five");
        // Redis read 6 and 7 before the subscription brought them here.
        c.recalled(room, key, &since, Some(recalled_of(7, 5..=7, b"x")));
        assert_eq!(c.pump(key), Pump::Live);
        assert_eq!(
            types(&c.members[key].frames),
            ["wE:7:true", "m5", "m6", "m7"]
        );
        c.members[key].frames.clear();
        for offset in [6, 7, 8] {
            c.send(room, offset, b"x");
        }
        assert_eq!(types(&c.members[key].frames), ["m8"]);
        assert_eq!(c.hub.rooms.kept().0, 4, "5 to 8, each once");
    }

    #[test]
    fn a_failed_recall_says_recovered_false() {
        let mut c = Clustered::new();
        let (key, room, since) = c.recalling(0);
        c.recalled(room, key, &since, None);
        let welcome = types(&c.members[key].frames);
        assert!(welcome[0].ends_with(":false"), "{welcome:?}");
    }

    #[test]
    fn a_changed_numbering_is_announced_with_a_fresh_welcome() {
        let mut hub = Hub::new(64, HistoryLimits::default()).clustered();
        let mut members: Slab<Queue> = Slab::new();
        let key = members.insert(Queue::json());
        let joining = json_joining(key, 5, None, false);
        let mut woken = Vec::new();
        let room = hub.join("r", joining, &mut members, &mut woken);
        let now = Time::from_millis(0);
        hub.broadcast(room, numbered("E", 1, b"a"), &mut members, 1 << 20, now);
        // Redis unreachable: the instance numbers on its own, under an
        // epoch of its own, and says so.
        let local = RoomMessage {
            numbered: None,
            ..numbered("E", 0, b"b")
        };
        hub.broadcast(room, local, &mut members, 1 << 20, now);
        let seen = types(&members[key].frames);
        assert_eq!(seen.len(), 5, "{seen:?}");
        // The first welcome was under the room's own epoch: Redis's
        // numbering replaces it, announced before its first message.
        assert_eq!(&seen[1..3], ["wE:0:false", "m1"]);
        assert!(
            seen[3].starts_with('w') && seen[3].ends_with(":0:false"),
            "{seen:?}"
        );
        assert!(!seen[3].starts_with("wE:"), "a new epoch: {seen:?}");
        assert_eq!(seen[4], "m1", "numbered from 1 under it");
        // Redis is back: its numbering again, announced again.
        hub.broadcast(room, numbered("E", 2, b"c"), &mut members, 1 << 20, now);
        let seen = types(&members[key].frames);
        assert_eq!(&seen[5..], ["wE:1:false", "m2"]);
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
            recall: false,
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
        let json = members.insert(Queue::json());
        let joining = json_joining(json, 2, None, false);
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

    /// An SSE member: a queue with a session token.
    #[derive(Default)]
    struct Stream(Queue);

    impl Member for Stream {
        fn backlog(&self) -> Option<usize> {
            self.0.backlog()
        }

        fn format(&self) -> Format {
            Format::Sse
        }

        fn id(&self) -> u64 {
            9
        }

        fn queue(&mut self, message: &mut Outgoing<'_>) -> bool {
            self.0
                .frames
                .push_back(message.frame_for(Format::Sse, None, None));
            true
        }

        fn queue_frame(&mut self, frame: Rc<[u8]>) -> bool {
            self.0.queue_frame(frame)
        }

        fn session(&self) -> Option<&str> {
            Some("tok")
        }
    }

    fn text(message: &[u8]) -> RoomMessage<'_> {
        RoomMessage {
            sender: 1,
            opcode: OpCode::Text,
            payload: message,
            time_ms: 7,
            numbered: None,
        }
    }

    #[test]
    fn an_sse_member_is_welcomed_with_its_session_then_sent_events() {
        let mut hub = Hub::new(64, HistoryLimits::default());
        let mut members: Slab<Stream> = Slab::new();
        let key = members.insert(Stream::default());
        let room = hub.rooms.open("r");
        let now = Time::from_millis(0);
        for m in [&b"a"[..], b"b", b"c"] {
            hub.broadcast(room, text(m), &mut members, 1 << 20, now);
        }
        let epoch = hub.rooms.history(room).unwrap().epoch().to_string();
        let since = Position {
            epoch: epoch.clone(),
            offset: 1,
        };
        let joining = Joining {
            key,
            id: 9,
            format: Format::Sse,
            since: Some(&since),
            recall: false,
        };
        let mut woken = Vec::new();
        hub.join("r", joining, &mut members, &mut woken);
        assert_eq!(hub.pump(key, &mut members, 1 << 20, &mut woken), Pump::Live);
        let events: Vec<String> = members[key]
            .0
            .frames
            .iter()
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect();
        let welcome = format!(
            "id: {epoch}:1\ndata: {{\"type\":\"welcome\",\"id\":9,\"room\":\"r\",\"epoch\":\"{epoch}\",\"offset\":3,\"members\":1,\"recovered\":true,\"session\":\"tok\"}}\n\n"
        );
        assert_eq!(events[0], welcome);
        assert!(events[1].starts_with(&format!(
            "id: {epoch}:2\ndata: {{\"type\":\"message\",\"offset\":2,"
        )));
        assert!(events[2].starts_with(&format!("id: {epoch}:3\n")));
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn a_poll_reads_the_history_and_builds_each_object_once() {
        let mut hub = Hub::new(64, HistoryLimits::default());
        let mut members: Slab<Queue> = Slab::new();
        let room = hub.rooms.open("r");
        let now = Time::from_millis(0);
        for m in [&b"a"[..], b"b", b"c"] {
            hub.broadcast(room, text(m), &mut members, 1 << 20, now);
        }
        let epoch = hub.rooms.history(room).unwrap().epoch().to_string();
        let at = |offset| Position {
            epoch: epoch.clone(),
            offset,
        };
        let polled = hub.poll(room, Some(&at(1)), 1 << 20);
        assert_eq!((polled.recovered, polled.head, polled.next), (true, 3, 3));
        let offsets: Vec<u64> = polled.messages.iter().map(|m| m.0).collect();
        assert_eq!(offsets, [2, 3]);
        let object: serde_json::Value = serde_json::from_slice(&polled.messages[0].1).unwrap();
        assert_eq!(
            (object["offset"].as_u64(), object["text"].as_str()),
            (Some(2), Some("b"))
        );
        let again = hub.poll(room, Some(&at(1)), 1 << 20);
        assert!(
            Rc::ptr_eq(&polled.messages[0].1, &again.messages[0].1),
            "kept"
        );
        let cut = hub.poll(room, Some(&at(0)), 1);
        assert_eq!(
            (cut.messages.len(), cut.next),
            (1, 1),
            "one at least, then cut"
        );
        let nothing = hub.poll(room, Some(&at(3)), 1 << 20);
        assert!(nothing.messages.is_empty() && nothing.recovered);
        let elsewhere = Position {
            epoch: "other".into(),
            offset: 3,
        };
        let lost = hub.poll(room, Some(&elsewhere), 1 << 20);
        assert_eq!((lost.recovered, lost.messages.len()), (false, 3));
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
