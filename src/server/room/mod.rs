//! Rooms and broadcast: who hears what, and what a room remembers.
//!
//! A room is a list of members, each known by its key (a connection's
//! token), and its [`History`]. [`Rooms`] owns the membership both ways:
//! the member lists and, for each member, where it sits, so a member leaves
//! in O(1) without anyone else patching a moved member's slot. A broadcast
//! encodes its frame once per form (classic or JSON, plain or compressed)
//! into an `Rc<[u8]>` and pushes a clone of that pointer to every member's
//! queue: no copy and no allocation per receiver. A member whose queue
//! would pass its bound is reported back as a slow consumer, and the
//! reactor closes it; the others keep receiving.
//!
//! A member that joins with history to catch up on is *replaying*: it sits
//! apart from the live members, with a cursor into the room's history, and
//! live messages reach it through the history (every message is kept
//! before it is broadcast), in offset order, as its queue drains
//! ([`crate::server::hub::Hub::pump`]). Once the cursor passes the newest
//! message it becomes live. So a replay larger than a queue's bound is
//! paced, not refused, and no message is sent twice or skipped between the
//! replay and the live stream.
//!
//! Members are known by key: a connection's token, or (for a poller,
//! which is a member between its requests, without a connection of its
//! own) [`POLLER_KEY`] set on its session's key. A [`Roster`] finds the
//! member behind a key, whatever it is.
//!
//! A room lives while it has members or history; the history's bounds
//! (messages per room, age, and one byte budget for every room together,
//! oldest first) are applied here, since only here are all rooms seen.

use std::collections::{HashMap, VecDeque};

use slab::Slab;

mod roster;

pub use self::roster::{admits, is_poller_key, Fanout, Member, Roster, FORMATS, POLLER_KEY};
use super::history::{Entry, History, HistoryLimits};
use super::outgoing::{Format, Notice, Outgoing};
use super::timer::Time;

/// The room of `/`.
pub const LOBBY: &str = "lobby";

/// Where a member sits: its room's key, its index in the member list (or
/// the replay list), and which list. `u32`s keep the table small per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seat {
    room: u32,
    index: u32,
    replaying: bool,
    /// The newest offset the member was sent (under the room's epoch).
    /// In cluster mode a message can reach the room twice (read back from
    /// Redis for a member that joined, then live): no member takes an
    /// offset it already has.
    seen: u64,
}

impl Seat {
    const EMPTY: Seat = Seat {
        room: u32::MAX,
        index: u32::MAX,
        replaying: false,
        seen: 0,
    };
}

/// A replaying member and the next offset it is to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    key: usize,
    next: u64,
    /// Waiting for its history from Redis: nothing is sent to it yet.
    held: bool,
}

#[derive(Debug)]
struct Room {
    name: Box<str>,
    /// Tells this room from a later one in the same slab slot.
    serial: u64,
    /// Members that receive each message as it is broadcast.
    members: Vec<usize>,
    /// Members catching up through the history.
    replaying: Vec<Cursor>,
    history: History,
}

impl Room {
    /// Whether nothing keeps the room alive: no member and no history.
    fn is_unused(&self) -> bool {
        self.members.is_empty() && self.replaying.is_empty() && self.history.is_empty()
    }

    fn size(&self) -> usize {
        self.members.len() + self.replaying.len()
    }
}

/// One kept message in the order all rooms' messages were kept: what the
/// byte budget and the age limit evict, oldest first.
#[derive(Debug, Clone, Copy)]
struct Aged {
    room: u32,
    serial: u64,
    offset: u64,
}

/// Whether `name` may name a room: 1-64 letters, digits, `-`, `_` or `.`.
pub fn is_valid_room_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Every room of the process, created on first join and dropped when
/// nothing keeps it.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: Slab<Room>,
    by_name: HashMap<Box<str>, usize>,
    /// Indexed by member key: where each member sits.
    seats: Vec<Seat>,
    /// The same for pollers, indexed by their key without [`POLLER_KEY`].
    poller_seats: Vec<Seat>,
    limits: HistoryLimits,
    /// Every kept message, oldest first (with stale records of messages a
    /// room evicted by its own size limit, skipped when met).
    order: VecDeque<Aged>,
    /// Messages kept in all rooms.
    kept: usize,
    /// Bytes they hold.
    bytes: usize,
    serials: u64,
}

impl Rooms {
    /// No rooms yet; history kept within `limits`.
    pub fn new(limits: HistoryLimits) -> Rooms {
        Rooms {
            limits,
            ..Rooms::default()
        }
    }

    /// The history settings.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Number of rooms (with members, or history).
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether there are no rooms.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The key of the room called `name`, created (under a new epoch) if
    /// there is none.
    pub fn open(&mut self, name: &str) -> usize {
        if let Some(&key) = self.by_name.get(name) {
            return key;
        }
        self.serials += 1;
        let key = self.rooms.insert(Room {
            name: name.into(),
            serial: self.serials,
            members: Vec::new(),
            replaying: Vec::new(),
            history: History::new(),
        });
        self.by_name.insert(name.into(), key);
        key
    }

    /// Adds member `key` (which must not be in a room) to the live members
    /// of the room called `name`, and returns the room's key.
    pub fn join(&mut self, name: &str, key: usize) -> usize {
        let room = self.open(name);
        let members = &mut self.rooms[room].members;
        members.push(key);
        let index = (members.len() - 1) as u32;
        self.seat(key, room, index, false);
        room
    }

    fn seat(&mut self, key: usize, room: usize, index: u32, replaying: bool) {
        let (seats, at) = if is_poller_key(key) {
            (&mut self.poller_seats, key & !POLLER_KEY)
        } else {
            (&mut self.seats, key)
        };
        if seats.len() <= at {
            seats.resize(at + 1, Seat::EMPTY);
        }
        // Moving between the live and replay lists keeps what it has seen.
        let seen = seats[at].seen;
        seats[at] = Seat {
            room: room as u32,
            index,
            replaying,
            seen,
        };
    }

    /// Where member `key` sits (or [`Seat::EMPTY`]), if it ever did.
    fn slot(&self, key: usize) -> Option<&Seat> {
        if is_poller_key(key) {
            self.poller_seats.get(key & !POLLER_KEY)
        } else {
            self.seats.get(key)
        }
    }

    fn slot_mut(&mut self, key: usize) -> Option<&mut Seat> {
        if is_poller_key(key) {
            self.poller_seats.get_mut(key & !POLLER_KEY)
        } else {
            self.seats.get_mut(key)
        }
    }

    /// Notes that member `moved` now sits at `index` of its list.
    fn moved_to(&mut self, moved: usize, index: u32) {
        if let Some(seat) = self.slot_mut(moved) {
            seat.index = index;
        }
    }

    /// The key of the room member `key` is in.
    pub fn room_of(&self, key: usize) -> Option<usize> {
        match self.slot(key) {
            Some(seat) if *seat != Seat::EMPTY => Some(seat.room as usize),
            _ => None,
        }
    }

    /// Removes member `key` from its room, if it is in one; returns the
    /// room's key. The last member takes the freed index. A room left with
    /// neither members nor history is dropped.
    pub fn leave(&mut self, key: usize) -> Option<usize> {
        let seat = std::mem::replace(self.slot_mut(key)?, Seat::EMPTY);
        if seat == Seat::EMPTY {
            return None;
        }
        let room_key = seat.room as usize;
        let index = seat.index as usize;
        let room = &mut self.rooms[room_key];
        let moved = if seat.replaying {
            room.replaying.swap_remove(index);
            room.replaying.get(index).map(|c| c.key)
        } else {
            room.members.swap_remove(index);
            room.members.get(index).copied()
        };
        if let Some(moved) = moved {
            self.moved_to(moved, seat.index);
        }
        self.drop_if_unused(room_key);
        Some(room_key)
    }

    fn drop_if_unused(&mut self, room: usize) {
        if self.rooms.get(room).is_some_and(Room::is_unused) {
            let room = self.rooms.remove(room);
            self.by_name.remove(&room.name);
        }
    }

    /// The key of the room called `name`, if there is one.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The name of room `room`.
    pub fn name(&self, room: usize) -> Option<&str> {
        self.rooms.get(room).map(|r| &*r.name)
    }

    /// Members of room `room`, replaying ones included.
    pub fn members(&self, room: usize) -> usize {
        self.rooms.get(room).map_or(0, Room::size)
    }

    /// Every room's name and number of members, in no order.
    pub fn sizes(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.rooms.iter().map(|(_, r)| (&*r.name, r.size()))
    }

    /// The history of room `room`.
    pub fn history(&self, room: usize) -> Option<&History> {
        self.rooms.get(room).map(|r| &r.history)
    }

    /// The history of room `room`, to number a message or take Redis's
    /// numbering. Entries must go through [`Rooms::remember`] and
    /// [`Rooms::remember_recalled`], which count them.
    pub fn history_mut(&mut self, room: usize) -> Option<&mut History> {
        self.rooms.get_mut(room).map(|r| &mut r.history)
    }

    /// Messages kept in all rooms, and the bytes they hold.
    pub fn kept(&self) -> (usize, usize) {
        (self.kept, self.bytes)
    }

    /// Sends `message` to every live member of `room`; `fanout` collects
    /// who needs a flush and who refused. Returns `false` if there is no
    /// such room.
    pub fn broadcast<R: Roster + ?Sized>(
        &mut self,
        room: usize,
        message: &mut Outgoing<'_>,
        conns: &mut R,
        fanout: &mut Fanout,
    ) -> bool {
        let Some(room) = self.rooms.get(room) else {
            return false;
        };
        let offset = message.offset();
        fanout.delivered = 0;
        fanout.delivered_to = [0; FORMATS];
        for &token in &room.members {
            let Some(member) = conns.member_mut(token) else {
                continue;
            };
            let seat = if is_poller_key(token) {
                self.poller_seats.get_mut(token & !POLLER_KEY)
            } else {
                self.seats.get_mut(token)
            };
            if let (Some(offset), Some(seat)) = (offset, seat) {
                if seat.seen >= offset {
                    continue;
                }
                seat.seen = offset;
            }
            // The member may be failing already on bytes later in the
            // same read: until its last bytes are queued, it still takes
            // what was sent before.
            let Some(backlog) = member.backlog() else {
                continue;
            };
            if !admits(backlog, message.len(), fanout.limit) {
                fanout.refused.push(token);
                continue;
            }
            fanout.delivered += 1;
            fanout.delivered_to[member.format() as usize] += 1;
            if member.queue(message) {
                fanout.woken.push(token);
            }
        }
        true
    }

    /// Queues `notice` to every member of `room` that speaks JSON (in
    /// the form of its format), except `except`; the members that need a
    /// flush go to `woken`. Presence is small and best effort: a member
    /// over its bound is skipped, not cut.
    pub fn announce<R: Roster + ?Sized>(
        &self,
        room: usize,
        notice: &mut Notice<'_>,
        except: usize,
        conns: &mut R,
        woken: &mut Vec<usize>,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        let head = room.history.head();
        let keys = room
            .members
            .iter()
            .chain(room.replaying.iter().map(|c| &c.key));
        for &key in keys.filter(|&&k| k != except) {
            let Some(member) = conns.member_mut(key) else {
                continue;
            };
            if member.backlog().is_none() {
                continue;
            }
            let Some(frame) = notice.for_format(member.format()) else {
                continue;
            };
            if member.queue_presence(frame, head) {
                woken.push(key);
            }
        }
    }

    /// Moves live member `key` to the replay list, to be sent the history
    /// of its room from offset `from` on; returns whether it is replaying
    /// (with nothing kept from `from` on, it stays live).
    pub fn start_replay(&mut self, key: usize, from: u64) -> bool {
        let next = self
            .slot(key)
            .filter(|s| **s != Seat::EMPTY && !s.replaying)
            .and_then(|s| self.rooms[s.room as usize].history.next_kept(from));
        match next {
            Some(next) => self.move_to_replay(Cursor {
                key,
                next,
                held: false,
            }),
            None => false,
        }
    }

    /// Moves live member `key` to the replay list, held: it is sent nothing
    /// (live messages wait in the history for it) until
    /// [`Rooms::release`] says where its replay starts.
    pub fn hold(&mut self, key: usize) -> bool {
        self.move_to_replay(Cursor {
            key,
            next: u64::MAX,
            held: true,
        })
    }

    /// Moves live member `cursor.key` to its room's replay list.
    fn move_to_replay(&mut self, cursor: Cursor) -> bool {
        let key = cursor.key;
        let Some(seat) = self.slot(key).copied() else {
            return false;
        };
        if seat == Seat::EMPTY || seat.replaying {
            return false;
        }
        let room_key = seat.room as usize;
        let room = &mut self.rooms[room_key];
        let index = seat.index as usize;
        room.members.swap_remove(index);
        let moved = room.members.get(index).copied();
        room.replaying.push(cursor);
        let at = (room.replaying.len() - 1) as u32;
        if let Some(moved) = moved {
            self.moved_to(moved, seat.index);
        }
        self.seat(key, room_key, at, true);
        true
    }

    /// Whether member `key` is held (see [`Rooms::hold`]).
    pub fn is_held(&self, key: usize) -> bool {
        self.cursor_of(key).is_some_and(|c| c.held)
    }

    /// Lets held member `key` be replayed from offset `from` on (or go
    /// live, with nothing kept from there).
    pub fn release(&mut self, key: usize, from: u64) {
        let next = self
            .room_of(key)
            .and_then(|room| self.rooms[room].history.next_kept(from));
        let Some(seat) = self.slot(key).copied().filter(|s| s.replaying) else {
            return;
        };
        let room = &mut self.rooms[seat.room as usize];
        if let Some(cursor) = room.replaying.get_mut(seat.index as usize) {
            cursor.held = false;
            cursor.next = next.unwrap_or(u64::MAX);
        }
    }

    fn cursor_of(&self, key: usize) -> Option<Cursor> {
        let seat = self.slot(key).filter(|s| s.replaying)?;
        self.rooms
            .get(seat.room as usize)?
            .replaying
            .get(seat.index as usize)
            .copied()
    }

    /// Every member of `room` (live or replaying, not held) that speaks
    /// `format`.
    pub fn members_speaking<R: Roster + ?Sized>(
        &self,
        room: usize,
        format: Format,
        conns: &R,
    ) -> Vec<usize> {
        let Some(room) = self.rooms.get(room) else {
            return Vec::new();
        };
        let replaying = room.replaying.iter().filter(|c| !c.held).map(|c| c.key);
        room.members
            .iter()
            .copied()
            .chain(replaying)
            .filter(|&k| conns.member(k).is_some_and(|m| m.format() == format))
            .collect()
    }

    /// Where replaying member `key` is: its room and the next offset to
    /// send it.
    pub fn cursor(&self, key: usize) -> Option<(usize, u64)> {
        let cursor = self.cursor_of(key)?;
        Some((self.room_of(key)?, cursor.next))
    }

    /// What replaying member `key` is to be sent next.
    pub fn next_for(&mut self, key: usize) -> Next<'_> {
        let (Some(cursor), Some(room)) = (self.cursor_of(key), self.room_of(key)) else {
            return Next::Live;
        };
        if cursor.held {
            return Next::Held;
        }
        let next = cursor.next;
        let history = &self.rooms[room].history;
        if next <= history.head() && history.front().is_none_or(|e| e.offset > next) {
            // Evicted before it was sent.
            return Next::Lost;
        }
        let kept = history.next_kept(next);
        let Some(offset) = kept.filter(|_| next <= history.head()) else {
            // Past the newest message (or a hole up to it): caught up.
            self.go_live(key);
            return Next::Live;
        };
        match self.rooms[room].history.get_mut(offset) {
            Some(entry) => Next::Entry(entry),
            None => Next::Lost,
        }
    }

    /// Counts `grown` bytes that forms built for a kept message (a poll's
    /// JSON objects) added to the history.
    pub fn count_grown(&mut self, grown: usize) {
        self.bytes += grown;
    }

    /// Moves replaying member `key`'s cursor past `offset`, and counts
    /// `grown` bytes the replay added to that entry (forms it built).
    pub fn sent(&mut self, key: usize, offset: u64, grown: usize) {
        self.bytes += grown;
        if let Some(seat) = self.slot_mut(key) {
            seat.seen = seat.seen.max(offset);
        }
        if let Some(seat) = self.slot(key).copied().filter(|s| s.replaying) {
            if let Some(cursor) = self
                .rooms
                .get_mut(seat.room as usize)
                .and_then(|r| r.replaying.get_mut(seat.index as usize))
            {
                cursor.next = offset + 1;
            }
        }
    }

    /// Moves replaying member `key` to the live members.
    fn go_live(&mut self, key: usize) {
        let Some(seat) = self.slot(key).copied().filter(|s| s.replaying) else {
            return;
        };
        let room_key = seat.room as usize;
        let room = &mut self.rooms[room_key];
        let index = seat.index as usize;
        room.replaying.swap_remove(index);
        let moved = room.replaying.get(index).map(|c| c.key);
        room.members.push(key);
        let at = (room.members.len() - 1) as u32;
        if let Some(moved) = moved {
            self.moved_to(moved, seat.index);
        }
        self.seat(key, room_key, at, false);
    }

    /// Keeps `entry`, the newest message of `room`, within the bounds.
    pub fn remember(&mut self, room: usize, entry: Entry, now: Time) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if self.limits.size == 0 {
            return;
        }
        self.kept += 1;
        self.bytes += entry.bytes();
        self.order.push_back(Aged {
            room: room as u32,
            serial: r.serial,
            offset: entry.offset,
        });
        r.history.push(entry);
        self.trim(room);
        self.enforce(now);
    }

    /// Keeps the entries of `room` read back from Redis that it does not
    /// keep yet, within the bounds.
    pub fn remember_recalled(&mut self, room: usize, entries: Vec<Entry>, now: Time) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if self.limits.size == 0 {
            return;
        }
        let before = r.history.len();
        for e in &entries {
            self.order.push_back(Aged {
                room: room as u32,
                serial: r.serial,
                offset: e.offset,
            });
        }
        self.bytes += r.history.merge(entries);
        self.kept += r.history.len() - before;
        self.trim(room);
        self.enforce(now);
    }

    /// Takes a numbering from elsewhere (Redis) for `room`: under a new
    /// epoch every kept message is forgotten. Returns whether the epoch
    /// changed.
    pub fn adopt(&mut self, room: usize, epoch: &str, head: u64) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        let changed = r.history.epoch() != epoch;
        for e in r.history.adopt(epoch, head) {
            self.kept -= 1;
            self.bytes -= e.bytes();
        }
        if changed {
            self.forget_seen(room);
        }
        changed
    }

    /// A new numbering: what members have seen counts for nothing in it.
    fn forget_seen(&mut self, room: usize) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let keys = r
            .members
            .iter()
            .copied()
            .chain(r.replaying.iter().map(|c| c.key));
        for key in keys.collect::<Vec<_>>() {
            if let Some(seat) = self.slot_mut(key) {
                seat.seen = 0;
            }
        }
    }

    /// Gives `room` a numbering of this instance's own, if its numbering
    /// was Redis's (cluster mode, Redis unreachable). Returns whether the
    /// epoch changed.
    pub fn renumber_locally(&mut self, room: usize) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        if !r.history.is_shared() {
            return false;
        }
        for e in r.history.renumber_locally() {
            self.kept -= 1;
            self.bytes -= e.bytes();
        }
        self.forget_seen(room);
        true
    }

    /// Applies a room's own size limit.
    fn trim(&mut self, room: usize) {
        while self.rooms[room].history.len() > self.limits.size {
            self.evict_front(room);
        }
    }

    fn evict_front(&mut self, room: usize) {
        if let Some(e) = self.rooms[room].history.pop_front() {
            self.kept -= 1;
            self.bytes -= e.bytes();
        }
    }

    /// Applies the age limit and the byte budget, oldest first, and drops
    /// rooms left with nothing.
    pub fn enforce(&mut self, now: Time) {
        while let Some(aged) = self.order.front().copied() {
            let Some(front) = self.front_of(aged) else {
                self.order.pop_front();
                continue;
            };
            let (offset, expires) = front;
            if expires > now && self.bytes <= self.limits.memory {
                break;
            }
            let room = aged.room as usize;
            self.evict_front(room);
            if offset >= aged.offset {
                self.order.pop_front();
            }
            self.drop_if_unused(room);
        }
        if self.order.len() > 2 * self.kept + 64 {
            let order = std::mem::take(&mut self.order);
            self.order = order
                .into_iter()
                .filter(|a| self.front_of(*a).is_some())
                .collect();
        }
    }

    /// The offset and expiry of the oldest message of `aged`'s room, if the
    /// message `aged` records is still kept.
    fn front_of(&self, aged: Aged) -> Option<(u64, Time)> {
        let room = self.rooms.get(aged.room as usize)?;
        if room.serial != aged.serial {
            return None;
        }
        let front = room.history.front()?;
        (front.offset <= aged.offset).then_some((front.offset, front.expires))
    }

    /// When [`Rooms::enforce`] next has a message to forget.
    pub fn next_expiry(&self) -> Option<Time> {
        let aged = *self.order.front()?;
        Some(
            self.front_of(aged)
                .map_or(Time::from_millis(1), |(_, expires)| expires),
        )
    }
}

/// What a replaying member is to be sent next.
#[derive(Debug)]
pub enum Next<'a> {
    /// This kept message.
    Entry(&'a mut Entry),
    /// Nothing: it has caught up and is now live.
    Live,
    /// Nothing yet: its history is on its way from Redis.
    Held,
    /// The next message it needs was forgotten before it could be sent.
    Lost,
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::protocol::deflate::Deflater;
    use crate::protocol::frame::OpCode;
    use crate::server::history::HistoryLimits;

    #[derive(Default)]
    struct Inbox {
        frames: Vec<Rc<[u8]>>,
        full: bool,
        format: Format,
    }

    impl Member for Inbox {
        fn backlog(&self) -> Option<usize> {
            Some(usize::from(self.full))
        }

        fn format(&self) -> Format {
            self.format
        }

        fn id(&self) -> u64 {
            0
        }

        fn queue(&mut self, message: &mut Outgoing<'_>) -> bool {
            self.frames.push(message.frame_for(self.format, None, None));
            true
        }

        fn queue_frame(&mut self, frame: Rc<[u8]>) -> bool {
            self.frames.push(frame);
            true
        }
    }

    #[test]
    fn pollers_sit_beside_connections_with_keys_of_their_own() {
        let mut rooms = Rooms::new(HistoryLimits::default());
        let poller = POLLER_KEY | 2;
        let a = rooms.join("r", 2);
        assert_eq!(rooms.join("r", poller), a);
        rooms.join("r", 5);
        assert_eq!(rooms.members(a), 3);
        assert_eq!(rooms.room_of(poller), Some(a));
        assert_eq!(rooms.leave(2), Some(a), "connection 2, not poller 2");
        assert_eq!(rooms.room_of(poller), Some(a), "moved, still seated");
        assert_eq!(rooms.leave(poller), Some(a));
        assert_eq!((rooms.room_of(poller), rooms.room_of(5)), (None, Some(a)));
        assert_eq!(rooms.leave(poller), None, "once");
        assert!(
            rooms.seats.len() <= 6 && rooms.poller_seats.len() <= 3,
            "dense"
        );
    }

    fn send<M: Member>(
        rooms: &mut Rooms,
        room: usize,
        opcode: OpCode,
        text: &[u8],
        conns: &mut Slab<M>,
        fanout: &mut Fanout,
    ) {
        let mut deflater = Deflater::new(15);
        let mut scratch = Vec::new();
        let mut message = Outgoing::new(opcode, b"from7:", text, 64, &mut deflater, &mut scratch);
        assert!(rooms.broadcast(room, &mut message, conns, fanout));
    }

    #[test]
    fn room_names() {
        assert!(is_valid_room_name("rust-lang_2.0"));
        assert!(is_valid_room_name(&"a".repeat(64)));
        assert!(!is_valid_room_name(""));
        assert!(!is_valid_room_name(&"a".repeat(65)));
        assert!(!is_valid_room_name("a/b"));
        assert!(!is_valid_room_name("é"));
    }

    #[test]
    fn broadcast_shares_one_frame_with_every_member() {
        let mut conns = Slab::new();
        let mut rooms = Rooms::new(HistoryLimits::default());
        let a = conns.insert(Inbox::default());
        let b = conns.insert(Inbox::default());
        let c = conns.insert(Inbox::default());
        let lobby = rooms.join(LOBBY, a);
        rooms.join(LOBBY, b);
        rooms.join("other", c);
        let mut fanout = Fanout::default();
        send(
            &mut rooms,
            lobby,
            OpCode::Text,
            b"hello",
            &mut conns,
            &mut fanout,
        );
        assert_eq!(&conns[a].frames[0][..], b"\x81\x0bfrom7:hello");
        assert!(Rc::ptr_eq(&conns[a].frames[0], &conns[b].frames[0]));
        assert!(conns[c].frames.is_empty());
        assert!(fanout.refused.is_empty());
        assert_eq!(fanout.woken, [a, b]);
        assert_eq!(fanout.delivered, 2);
    }

    #[test]
    fn refusing_members_are_reported() {
        let mut conns = Slab::new();
        let mut rooms = Rooms::new(HistoryLimits::default());
        let a = conns.insert(Inbox::default());
        let b = conns.insert(Inbox {
            full: true,
            ..Inbox::default()
        });
        let lobby = rooms.join(LOBBY, a);
        rooms.join(LOBBY, b);
        let mut fanout = Fanout::default();
        send(
            &mut rooms,
            lobby,
            OpCode::Binary,
            &[1, 2],
            &mut conns,
            &mut fanout,
        );
        assert_eq!(fanout.refused, [b]);
        assert_eq!(conns[a].frames.len(), 1);
    }

    #[test]
    fn leaving_moves_the_last_member_and_drops_empty_rooms() {
        let mut rooms = Rooms::new(HistoryLimits::default());
        let lobby = rooms.join(LOBBY, 10);
        rooms.join(LOBBY, 11);
        rooms.join(LOBBY, 12);
        assert_eq!(rooms.leave(10), Some(lobby));
        assert_eq!(rooms.sizes().collect::<Vec<_>>(), [(LOBBY, 2)]);
        assert_eq!(rooms.room_of(12), Some(lobby), "12 moved into 10's index");
        assert_eq!(rooms.leave(10), None, "already gone");
        assert_eq!(rooms.leave(12), Some(lobby));
        assert_eq!(rooms.leave(11), Some(lobby));
        assert_eq!(rooms.room_of(11), None);
        assert!(rooms.is_empty());
        assert_eq!(rooms.find(LOBBY), None);
    }

    fn limits(size: usize, memory: usize) -> HistoryLimits {
        HistoryLimits {
            size,
            ttl: std::time::Duration::from_secs(10),
            memory,
            on_join: 50,
        }
    }

    fn keep(rooms: &mut Rooms, room: usize, text: &str, now: Time) -> u64 {
        let offset = rooms.history_mut(room).unwrap().next_offset();
        let mut entry = crate::server::history::tests::entry(offset, text);
        entry.expires = now + std::time::Duration::from_secs(10);
        rooms.remember(room, entry, now);
        offset
    }

    fn offsets(rooms: &Rooms, room: usize) -> Vec<u64> {
        let h = rooms.history(room).unwrap();
        (1..=h.head())
            .filter(|&o| h.next_kept(o) == Some(o))
            .collect()
    }

    #[test]
    fn a_room_keeps_its_last_messages_and_outlives_its_members() {
        let mut rooms = Rooms::new(limits(3, 1 << 20));
        let room = rooms.join("r", 1);
        let t = Time::from_millis(0);
        for text in ["a", "b", "c", "d"] {
            keep(&mut rooms, room, text, t);
        }
        assert_eq!(
            offsets(&rooms, room),
            [2, 3, 4],
            "the size bound drops the oldest"
        );
        assert_eq!(rooms.kept().0, 3);
        rooms.leave(1);
        assert_eq!(rooms.find("r"), Some(room), "history keeps the room");
        assert_eq!(rooms.members(room), 0);
        let epoch = rooms.history(room).unwrap().epoch().to_string();
        // Past the age limit the messages, then the room, are forgotten.
        rooms.enforce(Time::from_millis(10_001));
        assert_eq!(rooms.kept(), (0, 0));
        assert_eq!(rooms.find("r"), None);
        let again = rooms.join("r", 1);
        assert_ne!(
            rooms.history(again).unwrap().epoch(),
            epoch,
            "a new numbering"
        );
        assert_eq!(rooms.history(again).unwrap().head(), 0);
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest_messages_of_any_room() {
        let one = crate::server::history::tests::entry(1, "x").bytes();
        let mut rooms = Rooms::new(limits(100, 3 * one));
        let a = rooms.join("a", 1);
        let b = rooms.join("b", 2);
        let t = Time::from_millis(0);
        keep(&mut rooms, a, "x", t);
        keep(&mut rooms, b, "x", t);
        keep(&mut rooms, a, "x", t);
        assert_eq!(rooms.kept(), (3, 3 * one));
        keep(&mut rooms, b, "x", t);
        assert_eq!(rooms.kept(), (3, 3 * one));
        assert_eq!(offsets(&rooms, a), [2], "a's first was the oldest of all");
        assert_eq!(offsets(&rooms, b), [1, 2]);
        keep(&mut rooms, a, "x", t);
        assert_eq!(offsets(&rooms, b), [2]);
        assert_eq!(offsets(&rooms, a), [2, 3]);
    }

    #[test]
    fn with_history_off_nothing_is_kept_but_messages_are_numbered() {
        let mut rooms = Rooms::new(limits(0, 1 << 20));
        let room = rooms.join("r", 1);
        assert_eq!(keep(&mut rooms, room, "a", Time::from_millis(0)), 1);
        assert_eq!(keep(&mut rooms, room, "b", Time::from_millis(0)), 2);
        assert_eq!(rooms.kept(), (0, 0));
        assert!(!rooms.start_replay(1, 1), "nothing to replay");
        rooms.leave(1);
        assert!(rooms.is_empty());
    }

    #[test]
    fn a_replaying_member_misses_live_broadcasts_and_catches_up_through_history() {
        let mut conns = Slab::new();
        let mut rooms = Rooms::new(limits(10, 1 << 20));
        let live = conns.insert(Inbox::default());
        let late = conns.insert(Inbox::default());
        let room = rooms.join("r", live);
        let t = Time::from_millis(0);
        keep(&mut rooms, room, "a", t);
        keep(&mut rooms, room, "b", t);
        rooms.join("r", late);
        assert!(rooms.start_replay(late, 1));
        assert_eq!(rooms.cursor(late), Some((room, 1)));
        assert_eq!(rooms.members(room), 2);
        let mut fanout = Fanout::default();
        send(
            &mut rooms,
            room,
            OpCode::Text,
            b"c",
            &mut conns,
            &mut fanout,
        );
        assert_eq!(fanout.delivered, 1, "only the live member");
        assert!(conns[late].frames.is_empty());
        for expected in [1, 2] {
            let Next::Entry(entry) = rooms.next_for(late) else {
                panic!("entry {expected} expected");
            };
            assert_eq!(entry.offset, expected);
            rooms.sent(late, expected, 0);
        }
        assert!(matches!(rooms.next_for(late), Next::Live));
        assert_eq!(rooms.cursor(late), None);
        assert_eq!(rooms.room_of(late), Some(room));
        // Live now: the next broadcast reaches it directly.
        send(
            &mut rooms,
            room,
            OpCode::Text,
            b"d",
            &mut conns,
            &mut fanout,
        );
        assert_eq!(fanout.delivered, 2);
        // Leaving from either list keeps the other member's seat right.
        assert_eq!(rooms.leave(live), Some(room));
        assert_eq!(rooms.leave(late), Some(room));
        assert_eq!(rooms.members(room), 0);
    }

    #[test]
    fn a_replay_whose_next_message_was_evicted_is_lost() {
        let mut rooms = Rooms::new(limits(2, 1 << 20));
        let room = rooms.join("r", 1);
        let t = Time::from_millis(0);
        keep(&mut rooms, room, "a", t);
        keep(&mut rooms, room, "b", t);
        assert!(rooms.start_replay(1, 1));
        keep(&mut rooms, room, "c", t);
        assert!(matches!(rooms.next_for(1), Next::Lost));
    }

    #[test]
    fn the_backlog_bound_admits_one_large_message_when_idle() {
        assert!(admits(0, 10_000, 100), "idle: any size");
        assert!(admits(50, 50, 100));
        assert!(!admits(51, 50, 100));
    }
}
