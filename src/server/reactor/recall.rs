//! Cluster mode: a `wschat.v1` member's history comes from Redis.
//!
//! The member joins held (live messages wait for it in the room's
//! history), the relay reads the room's numbering and messages from Redis
//! without blocking the loop, and the answer is merged into the room's
//! history before the member is welcomed and replayed to. Whatever
//! arrived meanwhile follows, in offset order, once: see
//! [`crate::server::hub::Hub::recalled`].

use std::collections::HashMap;

use log::info;

use super::Server;
use crate::server::history::Position;
use crate::server::hub::{Joining, Recalled, RecalledEntry};
use crate::server::outgoing::Format;
use crate::server::relay::{Fetch, FetchedHistory};

/// A member waiting for its history from Redis.
#[derive(Debug)]
pub(super) struct Waiting {
    key: usize,
    id: u64,
    since: Option<Position>,
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
                format: Format::Json,
                since: waiting.since.as_ref(),
                recall: true,
            };
            let mut woken = Vec::new();
            let now = self.clock.now();
            let members = self.table.conns_mut();
            self.hub.recalled(
                room,
                joining,
                history.as_ref().map(recalled),
                members,
                &mut woken,
                now,
            );
            self.table.extend_dirty(&mut woken);
            self.pump(waiting.key);
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
