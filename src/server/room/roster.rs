//! Who the rooms' members are, as the rooms see them: the [`Member`]
//! trait every kind of member implements (WebSocket and SSE connections,
//! pollers), the [`Roster`] that finds a member by key, the keys of
//! pollers, and what a broadcast reports back ([`Fanout`]).

use std::rc::Rc;

use slab::Slab;

use crate::server::outgoing::{Format, Outgoing};

/// Set on the keys of pollers, which live apart from the connections:
/// connection keys (slab keys, mio tokens) never come near it.
pub const POLLER_KEY: usize = 1 << (usize::BITS - 1);

/// Whether member key `key` names a poller.
pub fn is_poller_key(key: usize) -> bool {
    key & POLLER_KEY != 0
}

/// How many [`Format`]s there are (the slots of [`Fanout::delivered_to`]).
pub const FORMATS: usize = 4;

/// What a broadcast needs of each member, whatever carries its bytes: how
/// much it has yet to send, which protocol it speaks, and a way to queue a
/// message in the form it takes. Whether a member may take one more message
/// is decided by [`super::Rooms::broadcast`], the same way for every kind of member.
pub trait Member {
    /// Bytes queued and not yet sent; `None` when the member takes no more
    /// messages (its last bytes are queued).
    fn backlog(&self) -> Option<usize>;

    /// The protocol the member speaks.
    fn format(&self) -> Format;

    /// Queues `message` in this member's form. Returns `true` when the
    /// member was idle and now needs a flush.
    #[must_use]
    fn queue(&mut self, message: &mut Outgoing<'_>) -> bool;

    /// The member's connection id.
    fn id(&self) -> u64;

    /// Queues a frame built for this member's format (a welcome, a
    /// presence change). Returns `true` when the member now needs a flush.
    #[must_use]
    fn queue_frame(&mut self, frame: Rc<[u8]>) -> bool;

    /// Queues a presence change built for this member's format, when the
    /// room's newest offset is `head`: a member that merges presence with
    /// the history later (a poller) places it after that offset.
    #[must_use]
    fn queue_presence(&mut self, frame: Rc<[u8]>, head: u64) -> bool {
        let _ = head;
        self.queue_frame(frame)
    }

    /// The session token of an SSE member, which its welcome carries.
    fn session(&self) -> Option<&str> {
        None
    }
}

/// The members behind keys, whatever they are (connections, pollers):
/// what broadcasts, presence and replays reach them through.
pub trait Roster {
    /// Member `key`, if it is there.
    fn member(&self, key: usize) -> Option<&dyn Member>;

    /// Member `key`, if it is there.
    fn member_mut(&mut self, key: usize) -> Option<&mut dyn Member>;
}

impl<M: Member> Roster for Slab<M> {
    fn member(&self, key: usize) -> Option<&dyn Member> {
        self.get(key).map(|m| m as &dyn Member)
    }

    fn member_mut(&mut self, key: usize) -> Option<&mut dyn Member> {
        self.get_mut(key).map(|m| m as &mut dyn Member)
    }
}

/// Whether a member with `backlog` bytes queued may take a message of
/// `len` more under the bound `limit`. A message larger than the bound
/// still goes to an idle member: the bound is on the backlog, not on one
/// message.
pub fn admits(backlog: usize, len: usize, limit: usize) -> bool {
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
    /// The same, by the receivers' [`Format`] (indexed by `Format as usize`).
    pub delivered_to: [usize; FORMATS],
}
