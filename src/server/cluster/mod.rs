//! Cluster mode (`--redis`): several wschat processes, one room space.
//!
//! Two plain TCP connections to Redis live in the reactor's own `Poll`,
//! non-blocking, on fixed tokens ([`PUBLISHER`], [`SUBSCRIBER`]): no
//! thread, no async runtime, RESP2 through the `redis-protocol` crate.
//!
//! * The **publisher** sends `PUBLISH wschat:room:{name} {message}` for
//!   every message a local client sends to a room, and `INCRBY wschat:ids`
//!   to reserve blocks of connection ids ([`ids`]). Its outgoing bytes sit
//!   in a [`WriteQueue`] bounded like a client's (`--max-backpressure`).
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
//! `--max-message-size`, are dropped and counted.

pub mod backoff;
pub mod error;
pub mod ids;
pub mod link;
pub mod message;
pub mod resp;
pub mod url;

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io::{self, Read};
use std::net::SocketAddr;

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use self::backoff::Backoff;
use self::ids::IdBlocks;
use self::resp::{Answer, Push};
use super::room::is_valid_room_name;
use super::timer::Millis;
use super::write_queue::{Flush, WriteQueue};
use crate::protocol::frame::OpCode;

pub use self::url::RedisUrl;

/// Token of the publishing connection in the reactor's `Poll`.
pub const PUBLISHER: Token = Token(usize::MAX - 3);

/// Token of the subscribed connection in the reactor's `Poll`.
pub const SUBSCRIBER: Token = Token(usize::MAX - 4);

/// Channel of room `name`: this prefix, then the name.
pub const CHANNEL_PREFIX: &str = "wschat:room:";

/// The one pattern the subscriber listens to.
pub const PATTERN: &str = "wschat:room:*";

/// The counter connection ids are reserved from.
pub const IDS_KEY: &str = "wschat:ids";

/// A TCP connect to Redis taking longer than this is given up.
const CONNECT_TIMEOUT_MS: Millis = 3_000;

/// An idle link sends `PING` this often.
const HEARTBEAT_MS: Millis = 5_000;

/// A link that awaits a reply and receives nothing this long is given up.
const REPLY_TIMEOUT_MS: Millis = 5_000;

/// After `INCRBY` fails (say, the key holds a string), wait this long
/// before asking again.
const RESERVE_RETRY_MS: Millis = 10_000;

/// Reads of one link per turn before clients are served again.
const READS_PER_TURN: usize = 16;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// RESP framing, `pmessage`, the pattern and the channel name, on top of a
/// message of `--max-message-size`: a partial frame longer than that is
/// oversize for sure.
const FRAME_OVERHEAD: usize = 1024;

/// Warnings about dropped messages are logged at most this often.
const QUIET_MS: Millis = 10_000;

/// A room message received from Redis, for the local members of `room`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound<'a> {
    /// The room's name (valid by [`is_valid_room_name`]).
    pub room: &'a str,
    /// The sender's connection id, on whichever instance it is.
    pub sender: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// The payload; never over `--max-message-size`, UTF-8 when text.
    pub payload: &'a [u8],
}

/// What the cluster counts, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStats {
    /// Messages queued for `PUBLISH`.
    pub published: u64,
    /// Messages received from the subscription and passed on.
    pub received: u64,
    /// Messages delivered locally only because the publish queue was full.
    pub publish_dropped: u64,
    /// Messages published but unconfirmed when the publishing link failed
    /// (they may or may not have reached the other instances).
    pub publish_lost: u64,
    /// Frames or messages from Redis that made no sense, dropped.
    pub malformed: u64,
    /// Messages from Redis over `--max-message-size`, dropped.
    pub oversize: u64,
    /// Times the cluster became degraded.
    pub outages: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Subscriber,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket; the next attempt is at `retry_at`.
    Down { retry_at: Millis },
    /// TCP connect under way, given up at `deadline`.
    Connecting { deadline: Millis },
    /// Connected; the first commands' replies are awaited.
    Handshaking,
    /// Usable.
    Ready,
}

/// A command whose reply is awaited, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Select,
    Reserve { delta: u64 },
    Publish,
    Ping,
    Subscribe,
}

/// One connection to Redis and its state machine.
#[derive(Debug)]
struct Link {
    role: Role,
    token: Token,
    state: State,
    stream: Option<TcpStream>,
    queue: WriteQueue,
    inbuf: Vec<u8>,
    expected: VecDeque<Expect>,
    /// Since when a reply has been awaited with nothing received.
    waiting_since: Option<Millis>,
    last_rx: Millis,
    write_blocked: bool,
    /// The read budget ran out with bytes maybe left in the socket.
    unread: bool,
    backoff: Backoff,
    /// Connection attempts so far: picks the address, round robin.
    attempts: usize,
    last_error: String,
}

impl Link {
    fn new(role: Role, token: Token, seed: u64, now: Millis) -> Link {
        Link {
            role,
            token,
            state: State::Down { retry_at: now },
            stream: None,
            queue: WriteQueue::new(),
            inbuf: Vec::new(),
            expected: VecDeque::new(),
            waiting_since: None,
            last_rx: now,
            write_blocked: false,
            unread: false,
            backoff: Backoff::new(seed),
            attempts: 0,
            last_error: String::new(),
        }
    }

    fn is_connected(&self) -> bool {
        matches!(self.state, State::Handshaking | State::Ready)
    }

    fn send<const N: usize>(&mut self, args: [&[u8]; N], expect: Expect) {
        let mut bytes = Vec::new();
        resp::command(args, &mut bytes);
        self.queue.push_owned(bytes);
        self.expected.push_back(expect);
    }

    fn deadline(&self) -> Option<Millis> {
        match self.state {
            State::Down { retry_at } => Some(retry_at),
            State::Connecting { deadline } => Some(deadline),
            State::Handshaking | State::Ready => match self.waiting_since {
                Some(since) => Some(since + REPLY_TIMEOUT_MS),
                None if self.expected.is_empty() => Some(self.last_rx + HEARTBEAT_MS),
                None => None,
            },
        }
    }
}

/// The two links to Redis, the id blocks and the counters.
#[derive(Debug)]
pub struct Cluster {
    url: RedisUrl,
    addrs: Vec<SocketAddr>,
    registry: Registry,
    publisher: Link,
    subscriber: Link,
    ids: IdBlocks,
    stats: ClusterStats,
    up: bool,
    /// The current outage was logged.
    announced: bool,
    max_message_size: usize,
    queue_limit: usize,
    reserve_paused_until: Millis,
    last_drop_warning: Option<Millis>,
    last_overflow_warning: Option<Millis>,
    /// Reused to encode each published message.
    scratch: Vec<u8>,
    /// Reused to build each channel name.
    channel: String,
}

impl Cluster {
    /// Resolves `url` (once: the loop never waits for a name lookup) and
    /// starts connecting both links on `registry`. Returns at once; Redis
    /// being down is not an error here, only an unresolvable host is.
    pub fn start(
        url: RedisUrl,
        registry: &Registry,
        max_message_size: usize,
        queue_limit: usize,
        now: Millis,
    ) -> io::Result<Cluster> {
        let addrs = url
            .resolve()
            .map_err(|e| io::Error::new(e.kind(), format!("--redis {url}: {e}")))?;
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        info!("cluster mode: redis at {url}, rooms on {PATTERN}");
        let mut cluster = Cluster {
            url,
            addrs,
            registry: registry.try_clone()?,
            publisher: Link::new(Role::Publisher, PUBLISHER, seed, now),
            subscriber: Link::new(Role::Subscriber, SUBSCRIBER, seed.rotate_left(17), now),
            ids: IdBlocks::new(std::process::id()),
            stats: ClusterStats::default(),
            up: false,
            announced: false,
            max_message_size,
            queue_limit,
            reserve_paused_until: 0,
            last_drop_warning: None,
            last_overflow_warning: None,
            scratch: Vec::new(),
            channel: String::new(),
        };
        cluster.connect(Role::Subscriber, now);
        cluster.connect(Role::Publisher, now);
        Ok(cluster)
    }

    /// Whether room messages go through Redis (both links ready). When not,
    /// the instance is degraded and delivers room messages locally.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The counters.
    pub fn stats(&self) -> ClusterStats {
        self.stats
    }

    /// A connection id: from the reserved blocks, else the local range.
    pub fn next_id(&mut self) -> u64 {
        self.ids.next_id()
    }

    /// Queues a local client's room message for `PUBLISH`. Returns `false`
    /// when the message was not queued (degraded, or the publish queue is
    /// full): the caller then delivers it to the local room itself.
    pub fn publish(
        &mut self,
        room: &str,
        sender: u64,
        opcode: OpCode,
        payload: &[u8],
        now: Millis,
    ) -> bool {
        if !self.up {
            return false;
        }
        self.channel.clear();
        self.channel.push_str(CHANNEL_PREFIX);
        self.channel.push_str(room);
        self.scratch.clear();
        message::encode(sender, opcode, payload, &mut self.scratch);
        let mut command = Vec::new();
        resp::command(
            [b"PUBLISH", self.channel.as_bytes(), &self.scratch],
            &mut command,
        );
        if self.scratch.capacity() > READ_CHUNK {
            self.scratch = Vec::new();
        }
        let link = &mut self.publisher;
        let queued = link.queue.queued_bytes();
        // As for clients, the bound is on the backlog: one large message
        // still goes into an empty queue.
        if queued > 0 && queued + command.len() > self.queue_limit {
            self.stats.publish_dropped += 1;
            if quiet(&mut self.last_overflow_warning, now) {
                warn!(
                    "redis publish queue over {} bytes: room messages go to local members only until it drains",
                    self.queue_limit
                );
            }
            return false;
        }
        link.queue.push_owned(command);
        link.expected.push_back(Expect::Publish);
        self.stats.published += 1;
        true
    }

    /// Handles readiness of one of the two tokens; room messages received
    /// are handed to `deliver`, in order.
    pub fn on_event(&mut self, event: &Event, now: Millis, deliver: &mut impl FnMut(Inbound<'_>)) {
        let role = match event.token() {
            PUBLISHER => Role::Publisher,
            SUBSCRIBER => Role::Subscriber,
            _ => return,
        };
        let link = self.link(role);
        if link.stream.is_none() {
            return; // an event of a socket already given up
        }
        if matches!(link.state, State::Connecting { .. }) && !self.finish_connect(role, event, now)
        {
            return;
        }
        if event.is_writable() {
            self.link_mut(role).write_blocked = false;
            self.flush(role, now);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(role, now, deliver);
        }
    }

    /// Work after every batch of events: reads left over, reconnects,
    /// timeouts and heartbeats, id block requests, then one flush of what
    /// the turn queued (so a burst of messages leaves in few writes).
    pub fn end_of_turn(&mut self, now: Millis, deliver: &mut impl FnMut(Inbound<'_>)) {
        for role in [Role::Subscriber, Role::Publisher] {
            if self.link(role).unread {
                self.read(role, now, deliver);
            }
            let link = self.link_mut(role);
            match link.state {
                State::Down { retry_at } if now >= retry_at => self.connect(role, now),
                State::Connecting { deadline } if now >= deadline => {
                    self.fail(role, now, "connect timed out".to_string());
                }
                State::Handshaking | State::Ready => match link.waiting_since {
                    Some(since) if now >= since + REPLY_TIMEOUT_MS => {
                        let reason = format!("no reply for {} s", REPLY_TIMEOUT_MS / 1000);
                        self.fail(role, now, reason);
                    }
                    None if link.expected.is_empty() && now >= link.last_rx + HEARTBEAT_MS => {
                        link.send([b"PING"], Expect::Ping);
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        if self.publisher.state == State::Ready
            && self.ids.wants_block()
            && now >= self.reserve_paused_until
        {
            self.reserve();
        }
        for role in [Role::Publisher, Role::Subscriber] {
            let link = self.link(role);
            if link.is_connected() && !link.queue.is_empty() && !link.write_blocked {
                self.flush(role, now);
            }
        }
    }

    /// The earliest time the cluster needs [`Cluster::end_of_turn`].
    pub fn next_deadline(&self) -> Option<Millis> {
        [self.publisher.deadline(), self.subscriber.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether work is left that must not wait for an event (a read budget
    /// ran out, or bytes are queued on a writable socket).
    pub fn busy(&self) -> bool {
        [&self.publisher, &self.subscriber]
            .into_iter()
            .any(|l| l.unread || (l.is_connected() && !l.write_blocked && !l.queue.is_empty()))
    }

    /// Appends the cluster's gauges and counters in the Prometheus format.
    pub fn render_metrics(&self, out: &mut String) {
        let s = &self.stats;
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "wschat_redis_up",
            "gauge",
            "1 when room messages go through Redis, 0 when degraded (local delivery only).",
            u64::from(self.up),
        );
        metric(
            "wschat_cluster_published_total",
            "counter",
            "Room messages queued for PUBLISH.",
            s.published,
        );
        metric(
            "wschat_cluster_received_total",
            "counter",
            "Room messages received from Redis.",
            s.received,
        );
        metric(
            "wschat_cluster_publish_dropped_total",
            "counter",
            "Room messages not published (publish queue full), delivered locally only.",
            s.publish_dropped,
        );
        metric(
            "wschat_cluster_publish_lost_total",
            "counter",
            "Published room messages unconfirmed when the link to Redis failed.",
            s.publish_lost,
        );
        metric(
            "wschat_redis_malformed_total",
            "counter",
            "Frames or messages from Redis that were malformed, dropped.",
            s.malformed,
        );
        metric(
            "wschat_redis_oversize_total",
            "counter",
            "Messages from Redis over --max-message-size, dropped.",
            s.oversize,
        );
        metric(
            "wschat_redis_outages_total",
            "counter",
            "Times the link to Redis was lost (or not made at start).",
            s.outages,
        );
        metric(
            "wschat_cluster_publish_queue_bytes",
            "gauge",
            "Bytes waiting to be sent to Redis.",
            self.publisher.queue.queued_bytes() as u64,
        );
    }

    fn link(&self, role: Role) -> &Link {
        match role {
            Role::Publisher => &self.publisher,
            Role::Subscriber => &self.subscriber,
        }
    }

    fn link_mut(&mut self, role: Role) -> &mut Link {
        match role {
            Role::Publisher => &mut self.publisher,
            Role::Subscriber => &mut self.subscriber,
        }
    }

    fn connect(&mut self, role: Role, now: Millis) {
        let attempt = {
            let link = self.link_mut(role);
            link.attempts += 1;
            link.attempts
        };
        let addr = self.addrs[attempt % self.addrs.len()];
        let mut stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => return self.fail(role, now, format!("connect {addr}: {e}")),
        };
        let token = self.link(role).token;
        if let Err(e) =
            self.registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            return self.fail(role, now, format!("register: {e}"));
        }
        let link = self.link_mut(role);
        link.stream = Some(stream);
        link.state = State::Connecting {
            deadline: now + CONNECT_TIMEOUT_MS,
        };
        debug!("redis {role}: connecting to {addr}");
    }

    /// Returns `true` once the TCP connection is made (the handshake's
    /// commands are then queued).
    fn finish_connect(&mut self, role: Role, event: &Event, now: Millis) -> bool {
        let Some(stream) = self.link(role).stream.as_ref() else {
            return false;
        };
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                self.fail(role, now, format!("connect: {e}"));
                return false;
            }
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                if event.is_error() || event.is_read_closed() || event.is_write_closed() {
                    self.fail(role, now, "connect: refused".to_string());
                }
                return false; // still connecting: a spurious event
            }
            Err(e) => {
                self.fail(role, now, format!("connect: {e}"));
                return false;
            }
        }
        let _ = stream.set_nodelay(true);
        match role {
            Role::Publisher => {
                let db = self.url.db;
                if db != 0 {
                    let db = db.to_string();
                    self.publisher
                        .send([b"SELECT", db.as_bytes()], Expect::Select);
                }
                // The handshake ends with a command whose answer shows that
                // Redis serves: an id block if one is wanted, else PING.
                if self.ids.wants_block() {
                    self.reserve();
                } else {
                    self.publisher.send([b"PING"], Expect::Ping);
                }
            }
            Role::Subscriber => {
                self.subscriber
                    .send([b"PSUBSCRIBE", PATTERN.as_bytes()], Expect::Subscribe);
            }
        }
        let link = self.link_mut(role);
        link.state = State::Handshaking;
        link.last_rx = now;
        debug!("redis {role}: connected");
        true
    }

    fn reserve(&mut self) {
        let delta = self.ids.request();
        self.publisher.send(
            [b"INCRBY", IDS_KEY.as_bytes(), delta.to_string().as_bytes()],
            Expect::Reserve { delta },
        );
    }

    /// Gives a link up: its socket, queue and awaited replies go; it
    /// reconnects after a backoff delay.
    fn fail(&mut self, role: Role, now: Millis, reason: String) {
        let link = self.link_mut(role);
        let mut stream = link.stream.take();
        let lost = link
            .expected
            .iter()
            .filter(|e| **e == Expect::Publish)
            .count();
        let reserving = link
            .expected
            .iter()
            .any(|e| matches!(e, Expect::Reserve { .. }));
        link.queue = WriteQueue::new();
        link.inbuf = Vec::new();
        link.expected.clear();
        link.waiting_since = None;
        link.write_blocked = false;
        link.unread = false;
        let delay = link.backoff.next_delay();
        link.state = State::Down {
            retry_at: now + delay,
        };
        debug!("redis {role}: {reason}; next attempt in {delay} ms");
        link.last_error = reason;
        if let Some(stream) = stream.as_mut() {
            let _ = self.registry.deregister(stream);
        }
        self.stats.publish_lost += lost as u64;
        if reserving {
            self.ids.cancel();
        }
        self.update_health();
    }

    /// Logs the start of an outage once, and its end once.
    fn update_health(&mut self) {
        let up = self.publisher.state == State::Ready && self.subscriber.state == State::Ready;
        if up && !self.up {
            info!(
                "redis at {}: connected; room messages go through Redis",
                self.url
            );
            self.announced = false;
        }
        let down = [&self.publisher, &self.subscriber]
            .into_iter()
            .find(|l| matches!(l.state, State::Down { .. }));
        if let (false, false, Some(link)) = (up, self.announced, down) {
            warn!(
                "redis at {} unreachable ({}: {}): degraded, room messages reach this instance's clients only; reconnecting in the background",
                self.url, link.role, link.last_error
            );
            self.announced = true;
            self.stats.outages += 1;
        }
        self.up = up;
    }

    fn flush(&mut self, role: Role, now: Millis) {
        let link = self.link_mut(role);
        if !link.is_connected() {
            return;
        }
        let Some(stream) = link.stream.as_mut() else {
            return;
        };
        match link.queue.write_to(stream) {
            Ok(Flush::Done) => {}
            Ok(Flush::Blocked) => link.write_blocked = true,
            Err(e) => return self.fail(role, now, format!("write: {e}")),
        }
        if !link.expected.is_empty() && link.waiting_since.is_none() {
            link.waiting_since = Some(now);
        }
    }

    fn read(&mut self, role: Role, now: Millis, deliver: &mut impl FnMut(Inbound<'_>)) {
        self.link_mut(role).unread = false;
        for _ in 0..READS_PER_TURN {
            let link = self.link_mut(role);
            if !link.is_connected() {
                return;
            }
            let Some(stream) = link.stream.as_mut() else {
                return;
            };
            let start = link.inbuf.len();
            link.inbuf.resize(start + READ_CHUNK, 0);
            let result = stream.read(&mut link.inbuf[start..]);
            let n = match result {
                Ok(n) => n,
                Err(_) => 0,
            };
            link.inbuf.truncate(start + n);
            match result {
                Ok(0) => return self.fail(role, now, "closed by Redis".to_string()),
                Ok(_) => {
                    link.last_rx = now;
                    self.take_frames(role, now, deliver);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(role, now, format!("read: {e}")),
            }
        }
        if self.link(role).stream.is_some() {
            self.link_mut(role).unread = true;
        }
    }

    /// Acts on every complete frame in the link's buffer.
    fn take_frames(&mut self, role: Role, now: Millis, deliver: &mut impl FnMut(Inbound<'_>)) {
        let mut buf = std::mem::take(&mut self.link_mut(role).inbuf);
        let mut at = 0;
        let mut broken = None;
        while at < buf.len() {
            let decoded = match resp::decode(&buf[at..]) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(bad) => {
                    self.stats.malformed += 1;
                    let error = error::LinkError::NotResp {
                        first_byte: bad.first_byte,
                    };
                    broken = Some(error.to_string());
                    break;
                }
            };
            let frame_bytes = &buf[at..at + decoded.used];
            at += decoded.used;
            let result = match role {
                Role::Publisher => self.on_answer(resp::answer(&decoded.frame, frame_bytes), now),
                Role::Subscriber => {
                    self.on_push(resp::push(&decoded.frame, frame_bytes), now, deliver)
                }
            };
            if let Err(reason) = result {
                broken = Some(reason);
                break;
            }
        }
        if let Some(reason) = broken {
            return self.fail(role, now, reason);
        }
        buf.drain(..at);
        if buf.len() > self.max_message_size + FRAME_OVERHEAD {
            // A frame this large cannot be a message we would deliver, and
            // the only way past it is to read it whole: start over instead.
            self.stats.oversize += 1;
            self.warn_drop(now, "a frame over --max-message-size");
            return self.fail(role, now, "a frame over --max-message-size".to_string());
        }
        if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
            buf = Vec::new();
        }
        self.link_mut(role).inbuf = buf;
    }

    fn on_answer(&mut self, answer: Answer<'_>, now: Millis) -> Result<(), String> {
        let link = &mut self.publisher;
        let Some(expect) = link.expected.pop_front() else {
            self.stats.malformed += 1;
            return Err("a reply to no command".to_string());
        };
        link.waiting_since = if link.expected.is_empty() {
            None
        } else {
            Some(now)
        };
        let handshaking = link.state == State::Handshaking;
        match (expect, answer) {
            (Expect::Publish, Answer::Integer(_)) => {}
            (Expect::Publish, Answer::Error(e)) => {
                self.stats.publish_lost += 1;
                debug!("redis: PUBLISH: {}", String::from_utf8_lossy(e));
            }
            (Expect::Reserve { delta }, Answer::Integer(end)) => {
                let block = self.ids.on_reserved(end.max(0) as u64, delta);
                if block.is_empty() {
                    warn!("redis: the counter {IDS_KEY} went back to {end} (Redis lost its data?): moving it past this instance's ids");
                } else {
                    debug!("redis: ids {}..={} reserved", block.start, block.end - 1);
                }
            }
            (Expect::Reserve { .. }, Answer::Error(e)) => {
                let e = String::from_utf8_lossy(e);
                self.ids.cancel();
                self.reserve_paused_until = now + RESERVE_RETRY_MS;
                if handshaking {
                    return Err(format!("INCRBY {IDS_KEY}: {e}"));
                }
                warn!(
                    "redis: INCRBY {IDS_KEY}: {e}; new connections take ids from the local range"
                );
            }
            (Expect::Select | Expect::Ping, Answer::Status(_)) => {}
            (_, Answer::Error(e)) => return Err(String::from_utf8_lossy(e).into_owned()),
            _ => {
                self.stats.malformed += 1;
                return Err(format!("unexpected reply to {expect:?}"));
            }
        }
        if handshaking && self.publisher.expected.is_empty() {
            self.publisher.state = State::Ready;
            self.publisher.backoff.reset();
            debug!("redis publisher: ready");
            self.update_health();
        }
        Ok(())
    }

    fn on_push(
        &mut self,
        push: Push<'_>,
        now: Millis,
        deliver: &mut impl FnMut(Inbound<'_>),
    ) -> Result<(), String> {
        match push {
            Push::Message { channel, payload } => self.on_message(channel, payload, now, deliver),
            Push::Subscribed | Push::Pong => {
                let link = &mut self.subscriber;
                link.expected.pop_front();
                if push == Push::Subscribed && link.state == State::Handshaking {
                    link.state = State::Ready;
                    link.backoff.reset();
                    debug!("redis subscriber: ready");
                    self.update_health();
                }
            }
            Push::Error(e) => return Err(String::from_utf8_lossy(e).into_owned()),
            Push::Unexpected => {
                self.stats.malformed += 1;
                self.warn_drop(now, "an unexpected frame");
            }
        }
        let link = &mut self.subscriber;
        // Any frame shows Redis is alive; replies may queue behind messages.
        link.waiting_since = if link.expected.is_empty() {
            None
        } else {
            Some(now)
        };
        Ok(())
    }

    fn on_message(
        &mut self,
        channel: &[u8],
        payload: &[u8],
        now: Millis,
        deliver: &mut impl FnMut(Inbound<'_>),
    ) {
        let room = channel
            .strip_prefix(CHANNEL_PREFIX.as_bytes())
            .and_then(|name| std::str::from_utf8(name).ok())
            .filter(|name| is_valid_room_name(name));
        let Some(room) = room else {
            self.stats.malformed += 1;
            return self.warn_drop(now, "a message on a channel that names no room");
        };
        // The header is at most 11 bytes: no need to decode (or check the
        // UTF-8 of) what is too large anyway.
        if payload.len() > self.max_message_size + 11 {
            self.stats.oversize += 1;
            return self.warn_drop(now, "a message over --max-message-size");
        }
        match message::decode(payload) {
            Err(e) => {
                self.stats.malformed += 1;
                self.warn_drop(now, &format!("a malformed message ({e})"));
            }
            Ok(m) if m.payload.len() > self.max_message_size => {
                self.stats.oversize += 1;
                self.warn_drop(now, "a message over --max-message-size");
            }
            Ok(m) => {
                self.stats.received += 1;
                deliver(Inbound {
                    room,
                    sender: m.sender,
                    opcode: m.opcode,
                    payload: m.payload,
                });
            }
        }
    }

    fn warn_drop(&mut self, now: Millis, what: &str) {
        if quiet(&mut self.last_drop_warning, now) {
            warn!("redis: dropped {what} (counted in /metrics; this warning is shown at most every {} s)", QUIET_MS / 1000);
        } else {
            debug!("redis: dropped {what}");
        }
    }
}

/// Whether a warning last shown at `last` may be shown again at `now`.
fn quiet(last: &mut Option<Millis>, now: Millis) -> bool {
    if last.is_some_and(|t| now < t + QUIET_MS) {
        return false;
    }
    *last = Some(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_spaced() {
        let mut last = None;
        assert!(quiet(&mut last, 1));
        assert!(!quiet(&mut last, 2));
        assert!(!quiet(&mut last, QUIET_MS));
        assert!(quiet(&mut last, QUIET_MS + 1));
    }

    #[test]
    fn tokens_do_not_meet_the_reactors() {
        let reactor = [usize::MAX, usize::MAX - 1, usize::MAX - 2];
        assert!(!reactor.contains(&PUBLISHER.0));
        assert!(!reactor.contains(&SUBSCRIBER.0));
        assert_ne!(PUBLISHER, SUBSCRIBER);
    }

    #[test]
    fn channel_names_match_the_pattern() {
        assert_eq!(PATTERN.strip_suffix('*'), Some(CHANNEL_PREFIX));
    }
}
