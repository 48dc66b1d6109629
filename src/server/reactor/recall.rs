//! Cluster mode: a `wschat.v1` member's history comes from Redis.
//!
//! The member (a JSON WebSocket or an SSE stream) joins held (live
//! messages wait for it in the room's history), the relay reads the
//! room's numbering and messages from Redis without blocking the loop,
//! and the answer is merged into the room's history before the member is
//! welcomed and replayed to. Whatever arrived meanwhile follows, in
//! offset order, once: see [`crate::server::hub::Hub::recalled`]. A new
//! poller's first poll is held the same way, then answered from the
//! merged history.

use std::collections::HashMap;

use log::info;

use super::{members, wake, Server};
use crate::server::history::Position;
use crate::server::hub::{Joining, Recalled, RecalledEntry};
use crate::server::outgoing::Format;
use crate::server::relay::{Fetch, FetchedHistory};
use crate::server::sessions::poller_key;
use crate::server::timer::Timer;

/// A member waiting for its history from Redis.
#[derive(Debug)]
pub(super) struct Waiting {
    /// The member's connection (for a poller, the one holding its poll).
    key: usize,
    id: u64,
    since: Option<Position>,
    format: Format,
    /// For a poller: its session.
    poll: Option<usize>,
}

/// Members waiting for Redis, by the id of the read asked for them.
#[derive(Debug, Default)]
pub(super) struct Recalls {
    waiting: HashMap<u64, Waiting>,
}

impl Server {
    /// Asks Redis for the history of `room` for member `key` (connection
    /// `id`); `false` when it cannot be asked (alone, or Redis
    /// unreachable).
    pub(super) fn recall(
        &mut self,
        room: &str,
        key: usize,
        id: u64,
        since: Option<&Position>,
        format: Format,
    ) -> bool {
        self.ask_redis(room, key, id, since, format, None)
    }

    /// Asks Redis for the history of `room` for the first poll of poller
    /// session `session`, held by connection `key`; `false` when it
    /// cannot be asked.
    pub(super) fn recall_for_poll(
        &mut self,
        room: &str,
        key: usize,
        session: usize,
        since: Option<&Position>,
    ) -> bool {
        let id = self.sessions.get(session).map_or(0, |s| s.id);
        self.ask_redis(room, key, id, since, Format::Poll, Some(session))
    }

    fn ask_redis(
        &mut self,
        room: &str,
        key: usize,
        id: u64,
        since: Option<&Position>,
        format: Format,
        poll: Option<usize>,
    ) -> bool {
        let want = match since {
            Some(p) => Fetch::Since {
                epoch: p.epoch.clone(),
                offset: p.offset,
            },
            None => Fetch::Last(self.hub.rooms.limits().on_join),
        };
        let Some(fetch) = self.relay.fetch(room, want, self.clock.now()) else {
            return false;
        };
        let waiting = Waiting {
            key,
            id,
            since: since.cloned(),
            format,
            poll,
        };
        self.recalls.waiting.insert(fetch.0, waiting);
        true
    }

    /// Welcomes the members whose history Redis answered with (or failed
    /// to), and starts their replay.
    pub(super) fn deliver_recalled(&mut self) {
        while let Some(fetched) = self.relay.poll_fetched() {
            let Some(waiting) = self.recalls.waiting.remove(&fetched.id.0) else {
                continue;
            };
            if let Some(session) = waiting.poll {
                self.recalled_for_poll(&waiting, session, fetched.result.as_ref().ok());
                continue;
            }
            // The member may have gone (and its key be someone else's).
            let still_there = self.table.get(waiting.key).and_then(|c| c.id()) == Some(waiting.id);
            let Some(room) = self.hub.rooms.room_of(waiting.key).filter(|_| still_there) else {
                continue;
            };
            if !self.hub.rooms.is_held(waiting.key) {
                continue;
            }
            let history = match fetched.result {
                Ok(history) => Some(history),
                Err(e) => {
                    info!(
                        "client-{}: history of {} not read from Redis: {e}",
                        waiting.id, fetched.room
                    );
                    None
                }
            };
            let joining = Joining {
                key: waiting.key,
                id: waiting.id,
                format: waiting.format,
                since: waiting.since.as_ref(),
                recall: true,
            };
            let mut woken = Vec::new();
            let now = self.clock.now();
            let members = &mut members(&mut self.table, &mut self.sessions);
            self.hub.recalled(
                room,
                joining,
                history.as_ref().map(recalled),
                members,
                &mut woken,
                now,
            );
            wake(&mut self.table, &mut self.sessions, &mut woken);
            self.pump(waiting.key);
        }
    }

    /// Merges what Redis answered (`None`: it could not) for a poller's
    /// first poll, then answers that poll or holds it on to its deadline.
    fn recalled_for_poll(
        &mut self,
        waiting: &Waiting,
        session: usize,
        history: Option<&FetchedHistory>,
    ) {
        let key = waiting.key;
        let Some(poll) = self.table.get_mut(key).and_then(|c| c.held_poll_mut()) else {
            return;
        };
        if poll.session != session || !poll.recalling {
            return;
        }
        poll.recalling = false;
        poll.recall_failed = history.is_none();
        let deadline = poll.deadline;
        let room = self.hub.rooms.room_of(poller_key(session));
        if let (Some(room), Some(history)) = (room, history) {
            let mut woken = Vec::new();
            let now = self.clock.now();
            let members = &mut members(&mut self.table, &mut self.sessions);
            self.hub
                .merge_recalled(room, recalled(history), members, &mut woken, now);
            wake(&mut self.table, &mut self.sessions, &mut woken);
        }
        let due = self.clock.now() >= deadline;
        self.answer_poll(key, due);
        if self.table.get(key).is_some_and(|c| c.held_poll().is_some()) {
            self.table.arm(key, Timer::Hold, deadline);
        }
    }
}

/// The hub's view of a history read from Redis.
fn recalled(history: &FetchedHistory) -> Recalled<'_> {
    Recalled {
        epoch: &history.epoch,
        head: history.head,
        entries: history
            .entries
            .iter()
            .map(|e| RecalledEntry {
                offset: e.offset,
                time_ms: e.time_ms,
                sender: e.sender,
                opcode: e.opcode,
                payload: &e.payload,
            })
            .collect(),
    }
}
