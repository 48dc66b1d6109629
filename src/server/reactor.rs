//! The event loop: one `mio::Poll`, one thread, every socket.
//!
//! Follows mio's contract literally: readiness is edge-triggered, so the
//! listener is accepted until `WouldBlock`, sockets are read until
//! `WouldBlock` (or a fairness budget, after which the connection is
//! revisited next turn), and writes are tried at once, the writable event
//! only resuming a write that blocked. Spurious events and events for
//! tokens already gone are ignored. Connections are removed only at the end
//! of a turn, so a slab key is never reused within one batch of events.
//!
//! Timers: each connection has at most one deadline (handshake, ping/idle
//! or close), kept in a heap. A stale heap entry is recognised because it
//! no longer equals the connection's deadline, so moving a deadline costs
//! one push and nothing is scanned per tick.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::admission::PerAddress;
use super::connection::{route, Compression, Connection, Endpoint, Phase, ReadResult, Request};
use super::metrics::{Gauges, Metrics};
use super::outgoing::Outgoing;
use super::room::{Fanout, Rooms};
use super::timer::{to_millis, Clock, Millis, Timers};
use super::write_queue::{BufferPool, Flush};
use crate::config::Config;
use crate::http;
use crate::protocol::deflate::{Deflater, Inflater};
use crate::protocol::handshake::{check_request_line, find_head_end, parse_head, Upgrade};
use crate::protocol::session::{self, Event, Inflate, Input, Payload};
use crate::protocol::{CloseCode, HandshakeError, OpCode, ProtocolError, Session};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
// Cluster mode (`--redis`): the two links to Redis, handed to the relay.
const REDIS_PUBLISHER: Token = Token(usize::MAX - 3);
const REDIS_SUBSCRIBER: Token = Token(usize::MAX - 4);
use super::relay::{Relay, Route};
mod cluster_glue;
mod handshake;
mod lifecycle;
mod messages;

/// The one read buffer of the loop; every socket is read into it.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Message buffers the loop keeps for reuse (at most 256 KiB each).
const POOLED_BUFFERS: usize = 64;

/// Reads one connection gets per turn before others are served.
const READS_PER_TURN: usize = 16;

/// Queued bytes from which a connection's own replies are written as soon
/// as its reads end, not at the end of the turn (see `Server::read_turn`).
const WRITE_NOW_BYTES: usize = 16 * 1024;

/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Descriptors kept free for the listener, the poller, logs and Redis.
const RESERVED_DESCRIPTORS: u64 = 32;

/// Stops a running [`Server`] from another thread, like SIGTERM does.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ServerHandle {
    /// Starts a graceful shutdown: Close 1001 to every client, then exit.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // If the wake fails the loop is already gone.
        let _ = self.waker.wake();
    }
}

/// The daemon: a listener, its connections and rooms, on one `Poll`.
///
/// A `Server` is not `Send`: broadcast frames are shared with `Rc`, since
/// everything runs on one thread. Bind it on the thread that runs it and
/// send the address and [`ServerHandle`] out (as `tests/common` does).
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    signals: Option<Signals>,
    config: Config,
    limits: session::Limits,
    conns: Slab<Connection>,
    rooms: Rooms,
    metrics: Metrics,
    scratch: Box<[u8]>,
    /// Session events of the connection being processed, reused.
    events: Vec<Event>,
    /// The deflater of every message compressed without context takeover.
    deflater: Deflater,
    /// The inflater of every message received without context takeover.
    inflater: Inflater,
    /// Reused to build each broadcast frame before it is shared.
    frame_scratch: Vec<u8>,
    /// Message buffers written out, for the next messages to reuse.
    pool: BufferPool,
    fanout: Fanout,
    /// Connections with bytes queued since their last flush.
    dirty: Vec<usize>,
    /// Connections to remove at the end of the turn.
    dead: Vec<usize>,
    /// Connections whose read budget ran out, to read again next turn.
    unread: Vec<usize>,
    timers: Timers,
    clock: Clock,
    per_address: PerAddress,
    /// Bytes queued in all connections' write queues together.
    outbound: usize,
    /// Bytes of messages being received, all connections together.
    inbound: usize,
    /// `--max-connections`, lowered to what the open-files limit allows.
    max_connections: usize,
    accept_paused_until: Option<Millis>,
    last_accept_warning: Option<Millis>,
    shutdown_deadline: Option<Millis>,
    /// Where room messages go: here alone, or through Redis (`--redis`).
    relay: Relay,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the listener; nothing is accepted until [`Server::run`].
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = super::listener::bind_listener(config.listen, config.reuse_port)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let local_addr = listener.local_addr()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let max_connections = descriptor_bound(config.max_connections);
        let relay = Server::start_relay(&config, &poll)?;
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            signals: None,
            limits: session::Limits {
                max_message_size: config.max_message_size.min(crate::config::MAX_MESSAGE_SIZE),
            },
            per_address: PerAddress::new(
                config.max_connections_per_ip,
                config.max_handshakes_per_ip_per_second,
            ),
            outbound: 0,
            inbound: 0,
            max_connections,
            config,
            conns: Slab::new(),
            rooms: Rooms::new(),
            metrics: Metrics::default(),
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            events: Vec::new(),
            deflater: Deflater::new(15),
            inflater: Inflater::new(),
            frame_scratch: Vec::new(),
            pool: BufferPool::new(POOLED_BUFFERS),
            fanout: Fanout::default(),
            dirty: Vec::new(),
            dead: Vec::new(),
            unread: Vec::new(),
            timers: Timers::new(),
            clock: Clock::new(),
            accept_paused_until: None,
            last_accept_warning: None,
            shutdown_deadline: None,
            relay,
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops this server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            stop: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown (a second one
    /// exits at once).
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals =
            Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs the loop until a shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        info!("listening on {}", self.local_addr);
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.clock.tick();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {
                        if self.stop.load(Ordering::SeqCst) {
                            self.begin_shutdown();
                        }
                    }
                    SIGNALS => {
                        if self.on_signal() {
                            info!("second signal: exiting now");
                            return Ok(());
                        }
                    }
                    REDIS_PUBLISHER | REDIS_SUBSCRIBER => self.on_cluster_event(event),
                    Token(key) => {
                        if event.is_writable() {
                            self.flush(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            // With the peer's FIN already in, a short read
                            // does not mean the socket is drained.
                            let to_the_end = event.is_read_closed() || event.is_error();
                            self.read_turn(key, to_the_end);
                        }
                    }
                }
            }
            self.end_of_turn();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if self.clock.now() >= deadline {
                    info!(
                        "shutdown timeout: dropping {} connections",
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Lists a connection to be read next turn, once.
    fn read_again(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !std::mem::replace(&mut conn.flags.unread, true) {
            self.unread.push(key);
        }
    }

    /// Work that follows every batch of events, in order.
    fn end_of_turn(&mut self) {
        for key in std::mem::take(&mut self.unread) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.flags.unread = false;
                self.read_turn(key, true);
            }
        }
        if self
            .accept_paused_until
            .is_some_and(|until| self.clock.now() >= until)
        {
            self.accept_paused_until = None;
            self.accept();
        }
        self.fire_timers();
        self.cluster_turn();
        self.per_address.sweep(self.clock.now());
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.flags.dirty = false;
                self.flush(key);
            }
        }
        self.dirty = dirty;
        self.reap();
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.unread.is_empty() || !self.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next(),
            self.accept_paused_until,
            self.shutdown_deadline,
            self.cluster_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        // Round up so a timer is never polled a hair too early, in a loop.
        Some(self.clock.until(next) + Duration::from_millis(1))
    }

    /// Returns `true` when the process should exit at once.
    fn on_signal(&mut self) -> bool {
        let Some(signals) = self.signals.as_mut() else {
            return false;
        };
        let received = signals.pending().count();
        if received == 0 {
            return false;
        }
        if self.shutdown_deadline.is_some() {
            return true;
        }
        self.begin_shutdown();
        false
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_out_of_descriptors(&e) => {
                    // The pending connections stay in the backlog; retry
                    // after a pause instead of spinning on the error.
                    let now = self.clock.now();
                    self.accept_paused_until = Some(self.clock.after(ACCEPT_BACKOFF));
                    let quiet = self.last_accept_warning.is_some_and(|t| now - t < 1000);
                    if !quiet {
                        warn!("accept: {e}; pausing accepts");
                        self.last_accept_warning = Some(now);
                    }
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and the like concern one connection only.
                    debug!("accept: {e}");
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        self.metrics.accepted += 1;
        let admitted = if self.conns.len() >= self.max_connections {
            Err(HandshakeError::ServerFull)
        } else {
            self.per_address.admit(peer.ip(), self.clock.now())
        };
        if let Err(err) = admitted {
            self.count_refusal(err, peer);
            // Best effort: the socket is new, so a small write fits.
            let _ = stream.write(&http::error(err));
            return;
        }
        let _ = stream.set_nodelay(true);
        // Every request (the head, a Close) gets an answer at once: its ACK
        // rides on the answer instead of going out as a packet of its own.
        // (A head that arrives in pieces is acknowledged piece by piece:
        // see `Connection::ack_now`.)
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&stream).set_tcp_quickack(false);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("{peer}: register: {e}");
            self.per_address.release(peer.ip());
            return;
        }
        entry.insert(Connection::new(stream, peer, self.clock.now()));
        self.set_deadline(key, self.clock.after(self.config.handshake_timeout));
    }

    /// Reads a connection until it would block (or, unless `to_the_end`,
    /// until a read leaves the buffer unfilled), or its budget runs out.
    ///
    /// What that queued for the connection itself (echoes, pongs) waits for
    /// the end of the turn to share one write with what other connections
    /// send it, unless it is already a large write on its own: then it goes
    /// now, while its bytes are still in the CPU cache rather than after
    /// every other connection's reads have pushed them out.
    fn read_turn(&mut self, key: usize, to_the_end: bool) {
        self.read_socket(key, to_the_end);
        if self
            .conns
            .get(key)
            .is_some_and(|c| c.flags.dirty && c.queue.queued_bytes() >= WRITE_NOW_BYTES)
        {
            self.flush(key);
        }
    }

    fn read_socket(&mut self, key: usize, to_the_end: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            if conn.flags.dead || conn.flags.paused || conn.flags.read_eof {
                break;
            }
            match conn.read_into(&mut scratch) {
                Ok(ReadResult::Data(n)) => {
                    self.on_data(key, &mut scratch[..n]);
                    // A read that did not fill the buffer emptied the
                    // socket: bytes (or a FIN) arriving later raise a new
                    // edge (epoll and kqueue alike), so the WouldBlock read
                    // that would follow is a system call saved per wakeup.
                    if n < scratch.len() && !to_the_end {
                        self.scratch = scratch;
                        return;
                    }
                }
                Ok(ReadResult::WouldBlock) => {
                    self.scratch = scratch;
                    return;
                }
                Ok(ReadResult::Eof) => {
                    self.on_eof(key);
                    break;
                }
                Err(e) => {
                    debug!("{key}: read: {e}");
                    self.kill(key);
                    break;
                }
            }
        }
        // Budget spent (or stopped): come back next turn if still readable.
        if let Some(conn) = self.conns.get(key) {
            let f = conn.flags;
            if !f.dead && !f.paused && !f.read_eof {
                self.read_again(key);
            }
        }
        self.scratch = scratch;
    }

    fn on_eof(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.flags.read_eof = true;
        // Final bytes still queued (a response or a Close) are worth sending
        // to a half-closed peer; anything else ends here.
        if !conn.queue.is_sealed() || conn.flags.write_shut {
            self.kill(key);
        }
    }

    /// Feeds freshly read bytes to the connection's phase and keeps only
    /// the unused tail.
    fn on_data(&mut self, key: usize, fresh: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_rx = self.clock.now();
        conn.flags.pinged = false;
        let mut carried = std::mem::take(&mut conn.inbuf);
        let from_carried = !carried.is_empty();
        let (used, len) = if from_carried {
            carried.extend_from_slice(fresh);
            let used = self.consume(key, &mut carried);
            (used, carried.len())
        } else {
            (self.consume(key, fresh), fresh.len())
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if used == len || conn.flags.dead || matches!(conn.phase, Phase::Responded) {
            return;
        }
        if from_carried {
            carried.drain(..used);
            conn.inbuf = carried;
        } else {
            conn.inbuf = fresh[used..].to_vec();
        }
    }

    /// Uses what it can of `data`; returns how many bytes it used.
    fn consume(&mut self, key: usize, data: &mut [u8]) -> usize {
        let conn = &mut self.conns[key];
        match &mut conn.phase {
            Phase::Handshake {
                scanned,
                line_checked,
            } => {
                let (scanned, line_checked) = (*scanned, *line_checked);
                self.consume_head(key, data, scanned, line_checked)
            }
            Phase::Open {
                session,
                compression,
                ..
            } => {
                let inflater = match compression {
                    Compression::Dedicated(own) => &mut own.inflater,
                    _ => &mut self.inflater,
                };
                let before = session.buffered_bytes();
                let mut input = Input {
                    limits: self.limits,
                    inflater,
                    spare: self.pool.buffers(),
                };
                let used = session.receive(data, &mut input, &mut self.events);
                let after = session.buffered_bytes();
                self.inbound = self.inbound + after - before;
                // All messages being received together have one budget: the
                // connection that takes it past the budget is refused.
                if after > 0 && self.inbound > self.config.max_inbound_memory {
                    if let Some(close) = session.fail(ProtocolError::MessageTooLarge) {
                        self.events.push(close);
                    }
                    self.inbound -= after;
                }
                self.dispatch(key, data);
                // The reply to our Close arrived after our FIN went out.
                if self.conns[key].is_done() {
                    self.kill(key);
                }
                used
            }
            Phase::Responded => data.len(),
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.flags.dirty {
            conn.flags.dirty = true;
            self.dirty.push(key);
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.flags.dead || conn.flags.write_shut {
            return;
        }
        let before = conn.queue.queued_bytes();
        let result = conn.flush(&mut self.pool);
        let written = before - conn.queue.queued_bytes();
        self.outbound -= written;
        self.metrics.bytes_sent += written as u64;
        match result {
            Ok(Flush::Done) if conn.is_done() => self.kill(key),
            Ok(_) => {
                if conn.flags.paused
                    && conn.queue.queued_bytes() <= self.config.max_backpressure / 2
                {
                    conn.flags.paused = false;
                    self.read_again(key);
                }
            }
            Err(e) => {
                debug!("{}: write: {e}", conn.peer);
                self.kill(key);
            }
        }
    }
}

/// `wanted`, lowered so that every connection can have a descriptor.
fn descriptor_bound(wanted: usize) -> usize {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, _)) => {
            let fit = soft.saturating_sub(RESERVED_DESCRIPTORS) as usize;
            if fit < wanted {
                warn!("open-files limit {soft}: serving at most {fit} connections");
            }
            wanted.min(fit)
        }
        Err(_) => wanted,
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux and macOS alike.
    matches!(e.raw_os_error(), Some(23) | Some(24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_fit_the_open_files_limit() {
        let (soft, _) = rlimit::Resource::NOFILE.get().unwrap();
        let bound = descriptor_bound(usize::MAX);
        assert_eq!(bound as u64, soft.saturating_sub(RESERVED_DESCRIPTORS));
        assert_eq!(descriptor_bound(10), 10.min(bound));
    }
}
