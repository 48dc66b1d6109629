//! Rooms and broadcast: who hears what.
//!
//! A room is a list of members, each known by its key (a connection's
//! token). [`Rooms`] owns the membership both ways: the member lists and,
//! for each member, where it sits, so a member leaves in O(1) without
//! anyone else patching a moved member's slot. A broadcast encodes its frame
//! once (once per form: plain, compressed) into an `Rc<[u8]>` and pushes a
//! clone of that pointer to every member's queue: no copy and no
//! allocation per receiver. A member whose
//! queue would pass its bound is reported back as a slow consumer, and the
//! reactor closes it; the others keep receiving.

use std::collections::HashMap;

use slab::Slab;

use super::outgoing::Outgoing;

/// The room of `/`.
pub const LOBBY: &str = "lobby";

/// Where a member sits: its room's key and its index in the member list.
/// `u32`s keep the table at 8 bytes per member key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seat {
    room: u32,
    index: u32,
}

impl Seat {
    const EMPTY: Seat = Seat {
        room: u32::MAX,
        index: u32::MAX,
    };
}

#[derive(Debug)]
struct Room {
    name: Box<str>,
    members: Vec<usize>,
}

impl Room {
    /// Whether nothing keeps the room alive. (Rooms with history will
    /// outlive their members; today a room is its members.)
    fn is_unused(&self) -> bool {
        self.members.is_empty()
    }
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
}

/// What a broadcast needs of each member, whatever carries its bytes: how
/// much it has yet to send, and a way to queue a message in the form it
/// takes. Whether a member may take one more message is decided by
/// [`Rooms::broadcast`], the same way for every kind of member.
pub trait Member {
    /// Bytes queued and not yet sent; `None` when the member takes no more
    /// messages (its last bytes are queued).
    fn backlog(&self) -> Option<usize>;

    /// Queues `message` in this member's form. Returns `true` when the
    /// member was idle and now needs a flush.
    #[must_use]
    fn queue(&mut self, message: &mut Outgoing<'_>) -> bool;
}

/// Whether a member with `backlog` bytes queued may take a message of
/// `len` more under the bound `limit`. A message larger than the bound
/// still goes to an idle member: the bound is on the backlog, not on one
/// message.
fn admits(backlog: usize, len: usize, limit: usize) -> bool {
    backlog == 0 || backlog + len <= limit
}

/// Where a broadcast reports the receivers that need attention.
#[derive(Debug, Default)]
pub struct Fanout {
    /// Bound of each receiver's queue, in bytes.
    pub limit: usize,
    /// Receivers that need a flush.
    pub woken: Vec<usize>,
    /// Receivers that refused the frame: slow consumers, to be closed.
    pub refused: Vec<usize>,
    /// Frames queued by the last broadcast.
    pub delivered: usize,
}

impl Rooms {
    /// No rooms yet.
    pub fn new() -> Rooms {
        Rooms::default()
    }

    /// Number of rooms with at least one member.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether there are no rooms.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Adds member `key` (which must not be in a room) to the room called
    /// `name`, and returns the room's key.
    pub fn join(&mut self, name: &str, key: usize) -> usize {
        let room = match self.by_name.get(name) {
            Some(&key) => key,
            None => {
                let key = self.rooms.insert(Room {
                    name: name.into(),
                    members: Vec::new(),
                });
                self.by_name.insert(name.into(), key);
                key
            }
        };
        let members = &mut self.rooms[room].members;
        members.push(key);
        if self.seats.len() <= key {
            self.seats.resize(key + 1, Seat::EMPTY);
        }
        self.seats[key] = Seat {
            room: room as u32,
            index: (members.len() - 1) as u32,
        };
        room
    }

    /// The key of the room member `key` is in.
    pub fn room_of(&self, key: usize) -> Option<usize> {
        match self.seats.get(key) {
            Some(seat) if *seat != Seat::EMPTY => Some(seat.room as usize),
            _ => None,
        }
    }

    /// Removes member `key` from its room, if it is in one; returns the
    /// room's key. The last member takes the freed index.
    pub fn leave(&mut self, key: usize) -> Option<usize> {
        let seat = std::mem::replace(self.seats.get_mut(key)?, Seat::EMPTY);
        if seat == Seat::EMPTY {
            return None;
        }
        let room_key = seat.room as usize;
        let room = &mut self.rooms[room_key];
        room.members.swap_remove(seat.index as usize);
        if let Some(&moved) = room.members.get(seat.index as usize) {
            self.seats[moved].index = seat.index;
        }
        if room.is_unused() {
            let room = self.rooms.remove(room_key);
            self.by_name.remove(&room.name);
        }
        Some(room_key)
    }

    /// The key of the room called `name`, if it has members.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The name of room `room`.
    pub fn name(&self, room: usize) -> Option<&str> {
        self.rooms.get(room).map(|r| &*r.name)
    }

    /// Every room's name and number of members, in no order.
    pub fn sizes(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.rooms.iter().map(|(_, r)| (&*r.name, r.members.len()))
    }

    /// Sends `message` to every member of `room`; `fanout` collects who
    /// needs a flush and who refused. Returns `false` if there is no such room.
    pub fn broadcast<M: Member>(
        &mut self,
        room: usize,
        message: &mut Outgoing<'_>,
        conns: &mut Slab<M>,
        fanout: &mut Fanout,
    ) -> bool {
        let Some(room) = self.rooms.get(room) else {
            return false;
        };
        fanout.delivered = 0;
        for &token in &room.members {
            let Some(member) = conns.get_mut(token) else {
                continue;
            };
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
            if member.queue(message) {
                fanout.woken.push(token);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::protocol::deflate::Deflater;
    use crate::protocol::frame::OpCode;

    #[derive(Default)]
    struct Inbox {
        frames: Vec<Rc<[u8]>>,
        full: bool,
    }

    impl Member for Inbox {
        fn backlog(&self) -> Option<usize> {
            Some(usize::from(self.full))
        }

        fn queue(&mut self, message: &mut Outgoing<'_>) -> bool {
            self.frames.push(message.frame_for(None, None));
            true
        }
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
        let mut rooms = Rooms::new();
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
        let mut rooms = Rooms::new();
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
        let mut rooms = Rooms::new();
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

    #[test]
    fn the_backlog_bound_admits_one_large_message_when_idle() {
        assert!(admits(0, 10_000, 100), "idle: any size");
        assert!(admits(50, 50, 100));
        assert!(!admits(51, 50, 100));
    }
}
