//! Cluster mode (`--redis`): several wschat processes, one room space.
//!
//! Two plain TCP connections to Redis live in the reactor's own `Poll`,
//! non-blocking, on two tokens the reactor chooses: no thread, no async
//! runtime, RESP2 through the `redis-protocol` crate.
//!
//! * The **publisher** runs the publish script ([`scripts`]) for every
//!   message a local client sends to a room: Redis numbers it in the room's
//!   history ([`history`]), keeps it, and `PUBLISH`es it on
//!   `wschat:room:{name}` with its epoch and offset. It also runs the read
//!   script for fetches of a room's history, and sends `INCRBY wschat:ids`
//!   to reserve blocks of connection ids ([`ids`]). Its outgoing bytes sit
//!   in a queue bounded like a client's (`--max-backpressure`).
//! * The **subscriber** is `PSUBSCRIBE`d to `wschat:room:*`: it hears every
//!   room's messages, and the reactor hands each one to the local members
//!   of its room (if any) through the usual broadcast.
//!
//! A local client's room message is *not* delivered locally when it is
//! published: it comes back through the subscription like everyone else's.
//! Redis runs commands one at a time and sends each subscriber the
//! messages in that order, so every client of a room, on every instance,
//! sees the room's messages in one order.
//!
//! # Layers
//!
//! * [`message`]: the bytes of a room message on a channel; [`scripts`]:
//!   the Lua scripts that number, keep and read room history, and the keys
//!   they use; [`history`]: what a fetch asks and answers.
//! * [`link`]: each connection's protocol as a sans-I/O state machine
//!   (RESP bytes in, commands and [`link::LinkEvent`]s out, time passed in),
//!   with its errors in [`error`].
//! * [`driver`]: the sockets, reconnects and read budgets; the only I/O.
//! * [`Cluster`] (here): the two links together, the id blocks, the fetches
//!   awaited ([`fetches`]), and the policy (`reactions.rs`): when to
//!   publish, what a failure costs, what is counted ([`metrics`]) and
//!   logged ([`health`]).
//!
//! The reactor talks to it in the quinn-proto way, through
//! [`crate::server::relay::Relay`]: [`Cluster::handle_event`] for readiness,
//! [`Cluster::handle_timeout`] once per turn, [`Cluster::poll_timeout`] for
//! its `poll` timeout, and [`Cluster::poll_message`] and
//! [`Cluster::poll_fetched`] until `None` after each of the first two, to
//! deliver the room messages received and the history fetched.
//!
//! # Why one pattern subscription, not one channel per room
//!
//! With `SUBSCRIBE` per room, the first member of a room on an instance
//! would have to wait for the subscription to be confirmed before its own
//! first message could be published (else it would miss its own message),
//! and joins and leaves would race subscribe and unsubscribe commands. One
//! `PSUBSCRIBE` confirmed at connect time has no such window. What it costs
//! is that every instance receives every room's messages, also those of
//! rooms it has no member of (dropped after one hash lookup). With the
//! one-instance-per-core recipe, connections spread evenly over the
//! instances, so a room with a few members is already on most of them.
//!
//! # Faults
//!
//! While either link is not ready the cluster is *degraded*: room messages
//! go straight to the local room, `/healthz` says `degraded`, and each link
//! reconnects with capped, jittered backoff ([`backoff`]). The outage is
//! logged once when it starts and once when it ends. A link is also given
//! up when Redis stops answering (no reply within 5 s while one is awaited;
//! idle links send `PING` every 5 s) or when its TCP connect takes over 3 s.
//! Messages from Redis that are malformed, or larger than
//! `--max-message-size`, are dropped and counted. While degraded nothing
//! is numbered here: fetches are refused (`None`) and the reactor numbers
//! messages under an epoch of its own until [`Cluster::take_reconnected`]
//! says Redis is back.

pub mod backoff;
pub mod driver;
pub mod error;
pub mod fetches;
pub mod health;
pub mod history;
pub mod ids;
pub mod link;
pub mod message;
pub mod metrics;
mod reactions;
pub mod resp;
pub mod scripts;
pub mod url;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, info, warn};
use mio::event::Event;
use mio::{Registry, Token};

use self::driver::{Connect, LinkDriver};
use self::fetches::Fetches;
use self::health::{log_allowed, Health};
use self::history::{Fetch, FetchId, Fetched};
use self::ids::IdBlocks;
use self::link::{Link, LinkConfig, LinkEvent, NotQueued, Role};
use super::timer::Time;
use crate::protocol::frame::OpCode;

pub use self::link::Inbound;
pub use self::metrics::ClusterStats;
pub use self::url::RedisUrl;

/// Channel of room `name`: this prefix, then the name.
pub const CHANNEL_PREFIX: &str = "wschat:room:";

/// The one pattern the subscriber listens to.
pub const PATTERN: &str = "wschat:room:*";

/// The counter connection ids are reserved from.
pub const IDS_KEY: &str = "wschat:ids";

/// Queued publishes are written at once, not at the end of the turn, from
/// this many bytes on.
const FLUSH_AT: usize = 64 * 1024;

/// After `INCRBY` fails (say, the key holds a string), wait this long
/// before asking again.
const RESERVE_RETRY: Duration = Duration::from_secs(10);

/// What a cluster is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where Redis is.
    pub url: RedisUrl,
    /// `--max-message-size`: larger messages from Redis are dropped.
    pub max_message_size: usize,
    /// `--max-backpressure`: the bound of the publish queue.
    pub queue_limit: usize,
    /// `--history-size`: messages kept per room in Redis (0: numbered but
    /// not kept), and the most a fetch returns.
    pub history_size: usize,
    /// `--history-ttl`: how long a room's kept messages outlive its last one.
    pub history_ttl: Duration,
}

/// The two links to Redis, the id blocks, the health and the counters.
#[derive(Debug)]
pub struct Cluster {
    url: RedisUrl,
    addrs: Vec<SocketAddr>,
    registry: Registry,
    publisher: LinkDriver,
    subscriber: LinkDriver,
    ids: IdBlocks,
    stats: ClusterStats,
    health: Health,
    queue_limit: usize,
    reserve_paused_until: Option<Time>,
    /// The time of the last input, for work done while polling.
    now: Time,
    /// A message is ready on the subscriber and not handed out yet.
    held: bool,
    fetches: Fetches,
    /// The cluster came up since the owner last asked.
    reconnected: bool,
    last_fetch_warning: Option<Time>,
}

impl Cluster {
    /// Resolves the URL (once: the loop never waits for a name lookup) and
    /// starts connecting both links on `registry`, with the publisher on
    /// `tokens[0]` and the subscriber on `tokens[1]`. Returns at once;
    /// Redis being down is not an error here, only an unresolvable host is.
    pub fn start(
        config: ClusterConfig,
        registry: &Registry,
        tokens: [Token; 2],
        now: Time,
    ) -> io::Result<Cluster> {
        let ClusterConfig {
            url,
            max_message_size,
            queue_limit,
            history_size,
            history_ttl,
        } = config;
        let addrs = url
            .resolve()
            .map_err(|e| io::Error::new(e.kind(), format!("--redis {url}: {e}")))?;
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        info!("cluster mode: redis at {url}, rooms on {PATTERN}");
        let link = |role| {
            let config = LinkConfig {
                role,
                db: url.db,
                max_message_size,
                queue_limit,
                history_size,
                history_ttl,
            };
            Link::new(config, now)
        };
        let publisher = LinkDriver::new(link(Role::Publisher), tokens[0], seed);
        let subscriber = LinkDriver::new(link(Role::Subscriber), tokens[1], seed.rotate_left(17));
        let mut cluster = Cluster {
            url,
            addrs,
            registry: registry.try_clone()?,
            publisher,
            subscriber,
            ids: IdBlocks::new(std::process::id()),
            stats: ClusterStats::default(),
            health: Health::new(),
            queue_limit,
            reserve_paused_until: None,
            now,
            held: false,
            fetches: Fetches::new(),
            reconnected: false,
            last_fetch_warning: None,
        };
        cluster
            .subscriber
            .connect(&cluster.addrs, &cluster.registry, now);
        cluster
            .publisher
            .connect(&cluster.addrs, &cluster.registry, now);
        cluster.pump(Role::Subscriber);
        cluster.pump(Role::Publisher);
        Ok(cluster)
    }

    /// Whether room messages go through Redis (both links ready). When not,
    /// the instance is degraded and delivers room messages locally.
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    /// The counters.
    pub fn stats(&self) -> ClusterStats {
        self.stats
    }

    /// A connection id: from the reserved blocks, else the local range.
    pub fn next_id(&mut self) -> u64 {
        self.ids.next_id()
    }

    /// Queues a local client's room message for the publish script, with
    /// `time_ms` (ms since the Unix epoch) as its time. Returns `false`
    /// when the message was not queued (degraded, or the publish queue is
    /// full): the caller then delivers it to the local room itself.
    pub fn publish(
        &mut self,
        room: &str,
        sender: u64,
        opcode: OpCode,
        payload: &[u8],
        time_ms: u64,
        now: Time,
    ) -> bool {
        if !self.health.is_up() {
            return false;
        }
        let link = &mut self.publisher.link;
        match link.publish(room, sender, opcode, payload, time_ms) {
            Ok(()) => {
                self.stats.published += 1;
                // A burst (a read of many clients in one turn) leaves in
                // writes of this size rather than piling up until the end
                // of the turn: each message is a few hundred bytes of
                // script call, and the queue's bound is on what is unsent.
                if self.publisher.link.queued_bytes() >= FLUSH_AT {
                    self.publisher.flush_queued(now);
                }
                true
            }
            Err(NotQueued::QueueFull) => {
                self.stats.publish_dropped += 1;
                self.health.warn_overflow(now, self.queue_limit);
                false
            }
            Err(NotQueued::NotReady) => false,
        }
    }

    /// Asks Redis for part of `room`'s history; the answer comes out of
    /// [`Cluster::poll_fetched`] with the id returned. `None` when degraded
    /// or when [`fetches::MAX_PENDING`] fetches are awaited already: the
    /// caller then does without.
    pub fn fetch(&mut self, room: &str, want: &Fetch, now: Time) -> Option<FetchId> {
        if !self.health.is_up() {
            return None;
        }
        let Some(id) = self.fetches.ask(room) else {
            self.stats.fetch_errors += 1;
            if log_allowed(&mut self.last_fetch_warning, now) {
                warn!("redis: {} history fetches awaited already; more are refused until some are answered", self.fetches.len());
            }
            return None;
        };
        if self.publisher.link.fetch(id.0, room, want).is_err() {
            self.fetches.cancel_last(id);
            return None;
        }
        Some(id)
    }

    /// The next answer to a fetch, in the order they were asked; call until
    /// `None` after each `handle_*` call.
    pub fn poll_fetched(&mut self) -> Option<Fetched> {
        self.fetches.poll()
    }

    /// Whether the cluster came up (both links ready) since the last call,
    /// at start or after an outage: room messages go through Redis again,
    /// numbered by Redis, so rooms numbered locally meanwhile switch back
    /// to the epochs Redis gives.
    pub fn take_reconnected(&mut self) -> bool {
        std::mem::take(&mut self.reconnected)
    }

    /// Handles readiness of one of the two tokens (others are ignored).
    /// Call [`Cluster::poll_message`] until `None` afterwards.
    pub fn handle_event(&mut self, event: &Event, now: Time) {
        self.now = now;
        let role = match event.token() {
            t if t == self.publisher.token() => Role::Publisher,
            t if t == self.subscriber.token() => Role::Subscriber,
            _ => return,
        };
        match self.driver(role).finish_connect(event) {
            Connect::NoSocket | Connect::Pending => return,
            Connect::Made => self.start_handshake(role, now),
            Connect::Failed | Connect::Open => {}
        }
        self.driver(role).on_readiness(event, now);
        self.pump(role);
    }

    /// Work after every batch of events: reconnects, timeouts and
    /// heartbeats, id block requests, one flush of what the turn queued (so
    /// a burst of messages leaves in few writes), and the reads left over.
    /// Call [`Cluster::poll_message`] until `None` afterwards.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        self.subscriber
            .handle_timeout(&self.addrs, &self.registry, now);
        self.publisher
            .handle_timeout(&self.addrs, &self.registry, now);
        self.pump(Role::Publisher);
        if self.publisher.link.is_ready()
            && self.ids.wants_block()
            && self.reserve_paused_until.is_none_or(|until| now >= until)
        {
            let delta = self.ids.request();
            self.publisher.link.reserve_ids(delta);
        }
        self.publisher.flush_queued(now);
        self.subscriber.flush_queued(now);
        // Last, as it may stop at a message for `poll_message`.
        self.pump(Role::Subscriber);
    }

    /// The earliest time the cluster needs [`Cluster::handle_timeout`]; the
    /// time of the last call when it has work left that must not wait for
    /// an event.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.held || self.publisher.is_busy() || self.subscriber.is_busy() {
            return Some(self.now);
        }
        [
            self.publisher.poll_timeout(),
            self.subscriber.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next room message received from Redis, in order, borrowed from
    /// the subscriber's read buffer until the next call. Reads more from
    /// the socket while the turn's read budget lasts.
    pub fn poll_message(&mut self) -> Option<Inbound<'_>> {
        if !self.pump(Role::Subscriber) {
            return None;
        }
        self.held = false;
        let message = self.subscriber.link.message();
        if message.is_some() {
            self.stats.received += 1;
        }
        message
    }

    /// Appends the cluster's gauges and counters in the Prometheus format.
    pub fn render_metrics(&self, out: &mut String) {
        let queued = self.publisher.link.queued_bytes();
        self.stats.render(out, self.health.is_up(), queued);
    }

    fn driver(&mut self, role: Role) -> &mut LinkDriver {
        match role {
            Role::Publisher => &mut self.publisher,
            Role::Subscriber => &mut self.subscriber,
        }
    }

    /// Queues the handshake of a link just connected; the publisher's asks
    /// for an id block if one is wanted.
    fn start_handshake(&mut self, role: Role, now: Time) {
        let reserve = match role {
            Role::Publisher if self.ids.wants_block() => Some(self.ids.request()),
            _ => None,
        };
        self.driver(role).link.connected(now, reserve);
        debug!("redis {role}: connected");
    }

    /// Acts on the link's events, reading more while the budget lasts,
    /// until a message is ready (`true`) or nothing is left (`false`).
    fn pump(&mut self, role: Role) -> bool {
        if self.held && role == Role::Subscriber {
            return true;
        }
        loop {
            while let Some(event) = self.driver(role).link.poll_event() {
                if event == LinkEvent::Message {
                    // Only the subscriber reads frames as messages.
                    debug_assert_eq!(role, Role::Subscriber);
                    self.held = true;
                    return true;
                }
                self.on_link_event(role, event);
            }
            let now = self.now;
            if !self.driver(role).read_once(now) {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_match_the_pattern() {
        assert_eq!(PATTERN.strip_suffix('*'), Some(CHANNEL_PREFIX));
    }
}
