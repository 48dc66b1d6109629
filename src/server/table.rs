//! The reactor's connections and its lists of work for the end of a turn.
//!
//! Connections live in a slab, keyed by their mio token. Work found during
//! a batch of events is listed, each connection at most once (a flag on
//! the connection says it is listed, so no list is scanned): connections
//! to flush, to read again (their read budget ran out), and to remove.
//! Removal happens only at the end of the turn, so a slab key is never
//! reused within one batch of events. Armed timers are kept in a heap
//! beside the slab (see [`Timers`]).

use slab::Slab;

use super::connection::Connection;
use super::timer::{Time, Timer, Timers};

/// Every connection, and what the end of the turn must do with them.
#[derive(Debug, Default)]
pub struct Table {
    conns: Slab<Connection>,
    /// Connections with bytes queued since their last flush.
    dirty: Vec<usize>,
    /// Connections to remove at the end of the turn.
    dead: Vec<usize>,
    /// Connections whose read budget ran out, to read again next turn.
    read_again: Vec<usize>,
    timers: Timers,
}

impl Table {
    /// No connections.
    pub fn new() -> Table {
        Table::default()
    }

    /// The connections themselves.
    pub fn conns(&self) -> &Slab<Connection> {
        &self.conns
    }

    /// The connections themselves.
    pub fn conns_mut(&mut self) -> &mut Slab<Connection> {
        &mut self.conns
    }

    /// Connection `key`, if it is still there.
    pub fn get(&self, key: usize) -> Option<&Connection> {
        self.conns.get(key)
    }

    /// Connection `key`, if it is still there.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut Connection> {
        self.conns.get_mut(key)
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The key the next inserted connection gets.
    pub fn next_key(&self) -> usize {
        self.conns.vacant_key()
    }

    /// Adds a connection and the timer it was created with; returns its key.
    pub fn insert(&mut self, conn: Connection) -> usize {
        let at = conn.poll_timeout();
        let key = self.conns.insert(conn);
        if let Some(at) = at {
            self.timers.push(at, key);
        }
        key
    }

    /// Arms a timer of connection `key`.
    pub fn arm(&mut self, key: usize, timer: Timer, at: Time) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.arm(timer, at);
            self.timers.push(at, key);
        }
    }

    /// Lists the timer connection `key` armed by itself (it re-arms its
    /// ping and idle timers, and arms the close timer as it closes).
    pub fn track_timer(&mut self, key: usize) {
        if let Some(at) = self.conns.get(key).and_then(Connection::poll_timeout) {
            self.timers.push(at, key);
        }
    }

    /// The earliest armed timer (or a stale entry before it).
    pub fn next_timeout(&self) -> Option<Time> {
        self.timers.next()
    }

    /// The next connection whose timer is due at `now`; stale heap entries
    /// (the timer moved, or the connection is gone) are skipped.
    pub fn pop_due(&mut self, now: Time) -> Option<usize> {
        while let Some((at, key)) = self.timers.pop_due(now) {
            match self.conns.get(key) {
                Some(conn) if conn.poll_timeout() == Some(at) && !conn.is_dead() => {
                    return Some(key)
                }
                _ => {}
            }
        }
        None
    }

    /// Lists connection `key` for a flush at the end of the turn.
    pub fn mark_dirty(&mut self, key: usize) {
        if self.conns.get_mut(key).is_some_and(Connection::mark_dirty) {
            self.dirty.push(key);
        }
    }

    /// Lists connections already marked dirty (by a broadcast).
    pub fn extend_dirty(&mut self, keys: &mut Vec<usize>) {
        self.dirty.append(keys);
    }

    /// Takes the connections listed for a flush.
    pub fn take_dirty(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.dirty)
    }

    /// Gives back the (emptied) list, to keep its memory.
    pub fn restore_dirty(&mut self, list: Vec<usize>) {
        debug_assert!(list.is_empty());
        if self.dirty.is_empty() {
            self.dirty = list;
        }
    }

    /// Lists connection `key` to be read again next turn.
    pub fn read_again(&mut self, key: usize) {
        if self
            .conns
            .get_mut(key)
            .is_some_and(Connection::mark_read_again)
        {
            self.read_again.push(key);
        }
    }

    /// Takes the connections listed to be read again.
    pub fn take_read_again(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.read_again)
    }

    /// Whether work is listed that must not wait for events.
    pub fn has_pending_work(&self) -> bool {
        !self.read_again.is_empty() || !self.dirty.is_empty()
    }

    /// Lists connection `key` for removal at the end of the turn.
    pub fn remove_at_turn_end(&mut self, key: usize) {
        if self.conns.get_mut(key).is_some_and(Connection::mark_dead) {
            self.dead.push(key);
        }
    }

    /// Removes the connections listed for removal, handing each to `gone`.
    pub fn reap(&mut self, mut gone: impl FnMut(usize, Connection)) {
        // Each connection leaves stale deadlines behind; once they
        // outnumber the live ones, drop them rather than wait for them.
        if self.timers.len() > 2 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.timers
                .retain(|at, key| conns.get(key).is_some_and(|c| c.poll_timeout() == Some(at)));
        }
        for key in std::mem::take(&mut self.dead) {
            gone(key, self.conns.remove(key));
        }
    }

    /// Every connection's key.
    pub fn keys(&self) -> Vec<usize> {
        self.conns.iter().map(|(key, _)| key).collect()
    }
}
