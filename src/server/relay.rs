//! Where a room message goes: to the local room now, or through Redis.
//!
//! A [`Relay`] is the reactor's one seam to cluster mode. Alone (no
//! `--redis`) it numbers connections 1, 2, 3, … and every room message is
//! delivered here at once. In cluster mode a message is published and comes
//! back, to every instance alike, through the subscription; when the
//! cluster is degraded or its publish queue is full, it is delivered here
//! after all. [`Relay::publish`] makes that decision and says which it took
//! as a [`Route`], so the reactor never asks how.
//!
//! The reactor drives it like the other state machines:
//!
//! ```text
//! relay.handle_event(&event, now)      // for the tokens it handed to start()
//! relay.handle_timeout(now)            // once per turn, before flushing clients
//! while let Some(m) = relay.poll_message() { /* broadcast m to m.room */ }
//! relay.poll_timeout()                 // with the other deadlines, for poll()
//! ```
//!
//! A message `m` borrows the relay's read buffer, so the rooms it is
//! delivered to must be borrowed apart from the relay.
//!
//! # History
//!
//! In cluster mode Redis numbers every room message (an epoch and an
//! offset, see [`crate::server::cluster::history`]) and keeps the last
//! `--history-size` of them: a relayed message carries its [`Stamp`], and
//! [`Relay::fetch`] asks for part of a room's history, answered through
//! [`Relay::poll_fetched`]. Alone, and while the cluster is degraded,
//! there is no such numbering here: the reactor keeps its own history and
//! numbers messages under a local epoch, and [`Relay::take_reconnected`]
//! tells it when Redis numbers them again.
//!
//! ```text
//! relay.fetch(room, Fetch::Since { epoch, offset }, now)  // Some(id), or None: do without
//! while let Some(f) = relay.poll_fetched() { /* answer whoever asked f.id */ }
//! if relay.take_reconnected() { /* rooms take Redis's epochs again */ }
//! ```

use std::io;

use mio::event::Event;
use mio::{Registry, Token};

use super::cluster::{Cluster, ClusterConfig};
use super::timer::Time;
use crate::config::Config;
use crate::protocol::OpCode;

pub use super::cluster::history::{
    Fetch, FetchError, FetchId, Fetched, FetchedEntry, FetchedHistory, Stamp,
};
pub use super::cluster::Inbound;

/// A room message relayed back, with its [`Stamp`]: the name this seam
/// gives [`Inbound`].
pub type RoomMessage<'a> = Inbound<'a>;

/// What [`Relay::publish`] decided for a room message.
#[must_use = "a message routed DeliverHere is delivered by no one else"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Deliver it to the local members of the room now: the instance is
    /// alone, or the cluster is degraded.
    DeliverHere,
    /// Published: it comes back through [`Relay::poll_message`], to this
    /// instance as to every other; do not deliver it now.
    Relayed,
}

/// How room messages reach the members of a room.
#[derive(Debug)]
pub enum Relay {
    /// One instance alone: every message is delivered here.
    Local {
        /// The id the next connection gets.
        next_id: u64,
    },
    /// Cluster mode: messages go through Redis. Boxed: a `Relay` stays two
    /// words, cheap to move, and the cluster's state lives in one place.
    Redis(Box<Cluster>),
}

impl Relay {
    /// A relay for one instance alone; connection ids start at 1.
    pub fn local() -> Relay {
        Relay::Local { next_id: 1 }
    }

    /// The relay `config` asks for: [`Relay::Redis`] with `--redis`, on
    /// `registry` with the publishing link on `tokens[0]` and the subscribed
    /// one on `tokens[1]`; else [`Relay::Local`]. Fails only when the Redis
    /// host cannot be resolved.
    pub fn start(
        config: &Config,
        registry: &Registry,
        tokens: [Token; 2],
        now: Time,
    ) -> io::Result<Relay> {
        let Some(url) = config.redis.clone() else {
            return Ok(Relay::local());
        };
        let config = ClusterConfig {
            url,
            max_message_size: config.max_message_size,
            queue_limit: config.max_backpressure,
            history_size: config.history_size,
            history_ttl: config.history_ttl,
        };
        let cluster = Cluster::start(config, registry, tokens, now)?;
        Ok(Relay::Redis(Box::new(cluster)))
    }

    /// The id of a new connection, never repeated in this process: 1, 2,
    /// 3, … alone, or from Redis's blocks in cluster mode.
    pub fn next_id(&mut self) -> u64 {
        match self {
            Relay::Local { next_id } => {
                let id = *next_id;
                *next_id += 1;
                id
            }
            Relay::Redis(cluster) => cluster.next_id(),
        }
    }

    /// Routes a local client's message to `room`; see [`Route`]. `time_ms`
    /// (ms since the Unix epoch) is the time its stamp carries when Redis
    /// numbers it.
    pub fn publish(
        &mut self,
        room: &str,
        sender: u64,
        opcode: OpCode,
        payload: &[u8],
        time_ms: u64,
        now: Time,
    ) -> Route {
        let relayed = match self {
            Relay::Local { .. } => false,
            // `false`: degraded, or the publish queue is full.
            Relay::Redis(cluster) => cluster.publish(room, sender, opcode, payload, time_ms, now),
        };
        if relayed {
            Route::Relayed
        } else {
            Route::DeliverHere
        }
    }

    /// Asks Redis for part of `room`'s history; the answer comes out of
    /// [`Relay::poll_fetched`] with the id returned. `None` alone, when
    /// degraded, or when too many fetches are awaited already: the caller
    /// falls back on its local history and says the recovery is not
    /// complete.
    pub fn fetch(&mut self, room: &str, want: Fetch, now: Time) -> Option<FetchId> {
        match self {
            Relay::Local { .. } => None,
            Relay::Redis(cluster) => cluster.fetch(room, &want, now),
        }
    }

    /// Answers to fetches, in the order asked; every [`FetchId`] gets
    /// exactly one (`Err` when the link dropped or Redis answered an
    /// error), so nobody waits forever. Call until `None` after each
    /// `handle_*` call.
    pub fn poll_fetched(&mut self) -> Option<Fetched> {
        match self {
            Relay::Local { .. } => None,
            Relay::Redis(cluster) => cluster.poll_fetched(),
        }
    }

    /// Whether the cluster came up since the last call (at start, or after
    /// an outage): from now on room messages are numbered by Redis again,
    /// so rooms numbered locally meanwhile should take Redis's epochs
    /// (with a fetch). Always `false` alone.
    pub fn take_reconnected(&mut self) -> bool {
        match self {
            Relay::Local { .. } => false,
            Relay::Redis(cluster) => cluster.take_reconnected(),
        }
    }

    /// Whether room messages go through Redis (cluster mode).
    pub fn is_clustered(&self) -> bool {
        matches!(self, Relay::Redis(_))
    }

    /// The body of `/healthz`: `degraded` while Redis is unreachable.
    pub fn health(&self) -> &'static str {
        match self {
            Relay::Redis(cluster) if !cluster.is_up() => "degraded",
            _ => "ok",
        }
    }

    /// Appends the cluster's gauges and counters to a `/metrics` page
    /// (nothing alone).
    pub fn render_metrics(&self, page: &mut String) {
        if let Relay::Redis(cluster) = self {
            cluster.render_metrics(page);
        }
    }

    /// Readiness of one of the tokens given to [`Relay::start`].
    pub fn handle_event(&mut self, event: &Event, now: Time) {
        if let Relay::Redis(cluster) = self {
            cluster.handle_event(event, now);
        }
    }

    /// The relay's work at the end of every turn (it has no timers alone).
    pub fn handle_timeout(&mut self, now: Time) {
        if let Relay::Redis(cluster) = self {
            cluster.handle_timeout(now);
        }
    }

    /// When the relay next needs [`Relay::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Time> {
        match self {
            Relay::Local { .. } => None,
            Relay::Redis(cluster) => cluster.poll_timeout(),
        }
    }

    /// The next room message relayed back, for the local members of its
    /// room; call until `None` after each `handle_*` call.
    pub fn poll_message(&mut self) -> Option<Inbound<'_>> {
        match self {
            Relay::Local { .. } => None,
            Relay::Redis(cluster) => cluster.poll_message(),
        }
    }
}

#[cfg(test)]
mod tests;
