//! The event loop: one `mio::Poll`, one thread, every socket.
//!
//! The reactor moves bytes and time in and events out; it decides nothing
//! a connection, a session or a room can decide for itself. Each of its
//! files takes one step of the way data flows:
//!
//! * `accept`: the listener, drained to `WouldBlock`, and
//!   admission (limits on connections, per address);
//! * `io`: reading sockets into the one read buffer of the
//!   loop, feeding each connection, flushing write queues;
//! * `handshake`: a complete request head, routed to a
//!   response, a body to read, or an upgrade;
//! * `exchange`: plain HTTP on a connection that may carry several
//!   requests: answers in order, bodies, keep-alive or close;
//! * `messages`: what a session's events do (echo,
//!   broadcast through the relay), and policy closes;
//! * `streams`, `polls` and `posts`: the members that speak plain HTTP
//!   (SSE streams, pollers) and the messages they post;
//! * `lifecycle`: timers, shutdown and removal.
//!
//! Room messages leave and come back through the [`Relay`] (here alone, or
//! through Redis), which the loop drives like a connection: readiness and
//! time in, messages out.
//!
//! mio's contract is followed literally: readiness is edge-triggered, so
//! the listener is accepted until `WouldBlock`, writes are tried at once
//! (the writable event only resumes a write that blocked), and spurious
//! events or events for tokens already gone are ignored. A socket is read
//! until `WouldBlock`, or until a read leaves the buffer unfilled where
//! the transport says that drains it (true of TCP on epoll and kqueue; not
//! of a transport that holds decoded bytes), or until its fairness budget
//! is spent, after which it is read again next turn. Connections are
//! removed only at the end of a turn, so a slab key is never reused within
//! one batch of events.

mod accept;
mod exchange;
mod handshake;
mod io;
mod lifecycle;
mod messages;
mod polls;
mod posts;
mod recall;
mod streams;

use std::io as stdio;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::info;
use mio::net::TcpListener;
use mio::{Events, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use self::recall::Recalls;
use super::admission::PerAddress;
use super::connection::Timeouts;
use super::hub::Hub;
use super::listener::{descriptor_bound, listeners, Acceptor};
use super::metrics::Metrics;
use super::relay::Relay;
use super::router::Routes;
use super::sessions::{Members, Sessions};
use super::systemd::{Notifier, Systemd};
use super::table::Table;
use super::timer::{Clock, Time};
use super::tls::Certificates;
use super::write_queue::{BufferPool, ByteGauge};
use crate::config::Config;
use crate::protocol::deflate::Inflater;
use crate::protocol::session::{self, Event};

/// Tokens of the loop's own sources; connections use their slab keys.
const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const REDIS_PUBLISHER: Token = Token(usize::MAX - 3);
const REDIS_SUBSCRIBER: Token = Token(usize::MAX - 4);
const TLS_LISTENER: Token = Token(usize::MAX - 5);

/// Bytes of the one read buffer of the loop; every socket is read into
/// it. A burst of 64 KiB of messages is one read, and under TLS (which
/// reads records into half of it and writes their plaintext to the other)
/// five full records and a cut one are.
pub const READ_BUFFER_BYTES: usize = 192 * 1024;

/// Message buffers the loop keeps for reuse (at most 256 KiB each).
const POOLED_BUFFERS: usize = 64;

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

/// What the loop reuses for every read: the read buffer, the session
/// events of the connection being read, and the buffers of messages.
#[derive(Debug)]
struct ReadBuffers {
    scratch: Box<[u8]>,
    events: Vec<Event>,
    /// The inflater of every message received without context takeover.
    inflater: Inflater,
    /// Message buffers written out, for the next messages to reuse.
    pool: BufferPool,
    /// Members that left this turn (key and id), to tell their rooms.
    left: Vec<(usize, u64)>,
}

/// Settings derived from the configuration once, in the form each step
/// uses them.
#[derive(Debug)]
struct Settings {
    config: Config,
    limits: session::Limits,
    routes: Routes,
    timeouts: Timeouts,
    /// `--max-connections`, lowered to what the open-files limit allows.
    max_connections: usize,
}

impl Settings {
    fn new(config: Config) -> Settings {
        Settings {
            limits: session::Limits {
                max_message_size: config.max_message_size,
                // Any frame one read brings whole stays in place.
                in_place_max: READ_BUFFER_BYTES,
            },
            routes: Routes::from_config(&config),
            timeouts: Timeouts {
                ping: config.ping_interval,
                idle: config.idle_timeout,
            },
            max_connections: descriptor_bound(config.max_connections),
            config,
        }
    }
}

/// The TLS listener (`--tls-listen`) and the certificate it serves.
#[derive(Debug)]
struct TlsPort {
    acceptor: Acceptor,
    certs: Certificates,
}

/// The memory every connection shares.
#[derive(Debug, Default)]
struct Budgets {
    /// Bytes queued in all connections' write queues together.
    outbound: ByteGauge,
    /// Bytes of messages being received, all connections together.
    inbound: usize,
}

/// The daemon: a listener, its connections and rooms, on one `Poll`.
///
/// A `Server` is not `Send`: broadcast frames are shared with `Rc`, since
/// everything runs on one thread. Bind it on the thread that runs it and
/// send the address and [`ServerHandle`] out (as the tests do).
pub struct Server {
    poll: Poll,
    acceptor: Acceptor,
    /// The TLS listener, with `--tls-listen`.
    tls: Option<TlsPort>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    signals: Option<Signals>,
    settings: Settings,
    table: Table,
    hub: Hub,
    buffers: ReadBuffers,
    budgets: Budgets,
    metrics: Metrics,
    per_address: PerAddress,
    clock: Clock,
    shutdown_deadline: Option<Time>,
    /// Where room messages go: here alone, or through Redis (`--redis`).
    relay: Relay,
    /// Members waiting for their history from Redis.
    recalls: Recalls,
    /// The sessions of SSE streams and pollers.
    sessions: Sessions,
    /// What systemd is told: ready, stopping, alive (inert outside it).
    notifier: Notifier,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.acceptor.local_addr())
            .field("connections", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks `config` and binds the listener; nothing is accepted until
    /// [`Server::run`]. The environment is not looked at: this is a server
    /// outside systemd whatever the process runs under.
    pub fn bind(config: Config) -> stdio::Result<Server> {
        Server::bind_with(config, Systemd::default())
    }

    /// Like [`Server::bind`], with what systemd handed the process: its
    /// plain listener is used instead of binding `config.listen`, and its
    /// notifier is told when the server is ready, alive and stopping.
    pub fn bind_with(config: Config, systemd: Systemd) -> stdio::Result<Server> {
        let config = config
            .validate()
            .map_err(|e| stdio::Error::new(stdio::ErrorKind::InvalidInput, e))?;
        let poll = Poll::new()?;
        let tls_addr = config.tls_listen;
        let (plain, tls) = listeners(
            config.listen,
            tls_addr,
            config.reuse_port,
            systemd.activation,
        )?;
        let acceptor = Acceptor::new(plain, poll.registry(), LISTENER)?;
        let tls = Server::start_tls(&config, &poll, tls)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let tokens = [REDIS_PUBLISHER, REDIS_SUBSCRIBER];
        let relay = Relay::start(&config, poll.registry(), tokens, Time::START)?;
        Ok(Server {
            poll,
            acceptor,
            tls,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            signals: None,
            per_address: PerAddress::new(
                config.max_connections_per_ip,
                config.max_handshakes_per_ip_per_second,
            ),
            table: Table::new(),
            hub: if config.redis.is_some() {
                Hub::new(config.compression_min_size, config.history_limits()).clustered()
            } else {
                Hub::new(config.compression_min_size, config.history_limits())
            },
            recalls: Recalls::default(),
            sessions: Sessions::new(config.poll_grace),
            buffers: ReadBuffers {
                scratch: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
                events: Vec::new(),
                inflater: Inflater::new(),
                pool: BufferPool::new(POOLED_BUFFERS),
                left: Vec::new(),
            },
            budgets: Budgets::default(),
            metrics: Metrics::default(),
            clock: Clock::new(),
            shutdown_deadline: None,
            relay,
            notifier: systemd.notifier,
            settings: Settings::new(config),
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.acceptor.local_addr()
    }

    /// The address of the TLS listener, with `--tls-listen`.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|t| t.acceptor.local_addr())
    }

    /// The TLS listener and its certificate, if `--tls-listen` asks for
    /// one; a certificate or key that cannot be loaded stops the start.
    fn start_tls(
        config: &Config,
        poll: &Poll,
        listener: Option<TcpListener>,
    ) -> stdio::Result<Option<TlsPort>> {
        let (Some(listener), Some(cert), Some(key)) = (listener, &config.tls_cert, &config.tls_key)
        else {
            return Ok(None);
        };
        let certs = Certificates::load(cert, key)
            .map_err(|e| stdio::Error::new(stdio::ErrorKind::InvalidInput, e))?;
        let info = certs.info();
        info!(
            "TLS certificate: {} (expires at {} s since the epoch)",
            info.subject, info.not_after
        );
        let acceptor = Acceptor::new(listener, poll.registry(), TLS_LISTENER)?;
        Ok(Some(TlsPort { acceptor, certs }))
    }

    /// A handle that stops this server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            stop: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown (a second one
    /// exits at once), and SIGHUP reload the TLS certificate.
    pub fn handle_signals(&mut self) -> stdio::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, mio::Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs the loop until a shutdown completes.
    pub fn run(mut self) -> stdio::Result<()> {
        let listening = format!("listening on {}", self.local_addr());
        info!("{listening}");
        if let Some(addr) = self.tls_local_addr() {
            info!("listening for TLS on {addr}");
        }
        // The listeners are registered and the loop is about to wait.
        self.notifier.ready(self.clock.now(), &listening);
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == stdio::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.clock.tick();
            for event in events.iter() {
                if self.on_event(event) {
                    info!("second signal: exiting now");
                    return Ok(());
                }
            }
            self.end_of_turn();
            if self.shutdown_complete() {
                return Ok(());
            }
        }
    }

    /// Acts on one readiness event; returns `true` when the process
    /// should exit at once.
    fn on_event(&mut self, event: &mio::event::Event) -> bool {
        match event.token() {
            LISTENER => self.accept(),
            TLS_LISTENER => self.accept_tls(),
            WAKER => {
                if self.stop.load(Ordering::SeqCst) {
                    self.begin_shutdown();
                }
            }
            SIGNALS => return self.on_signal(),
            REDIS_PUBLISHER | REDIS_SUBSCRIBER => {
                self.relay.handle_event(event, self.clock.now());
                self.deliver_relayed();
                self.deliver_recalled();
            }
            Token(key) => {
                if event.is_writable() {
                    self.flush(key);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    // With the peer's FIN already in, a short read does
                    // not mean the socket is drained.
                    let to_the_end = event.is_read_closed() || event.is_error();
                    self.read_turn(key, to_the_end);
                }
            }
        }
        false
    }

    /// Work that follows every batch of events, in order.
    fn end_of_turn(&mut self) {
        for key in self.table.take_read_again() {
            if let Some(conn) = self.table.get_mut(key) {
                conn.clear_read_again();
                self.read_turn(key, true);
            }
        }
        if self.acceptor.resume(self.clock.now()) {
            self.accept();
        }
        if self
            .tls
            .as_mut()
            .is_some_and(|t| t.acceptor.resume(self.clock.now()))
        {
            self.accept_tls();
        }
        self.fire_timers();
        // Before the flushes, so that what the relay delivers leaves now.
        self.relay.handle_timeout(self.clock.now());
        self.deliver_relayed();
        self.deliver_recalled();
        self.notifier.handle_timeout(self.clock.now());
        self.per_address.sweep(self.clock.now());
        self.hub.expire(self.clock.now());
        self.expire_pollers();
        self.answer_woken_polls();
        let mut dirty = self.table.take_dirty();
        for key in dirty.drain(..) {
            if let Some(conn) = self.table.get_mut(key) {
                conn.clear_dirty();
                self.flush(key);
            }
        }
        self.table.restore_dirty(dirty);
        self.reap();
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.table.has_pending_work() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.table.next_timeout(),
            self.acceptor.paused_until(),
            self.tls.as_ref().and_then(|t| t.acceptor.paused_until()),
            self.shutdown_deadline,
            self.relay.poll_timeout(),
            self.notifier.poll_timeout(),
            self.hub.rooms.next_expiry(),
            self.sessions.next_expiry(),
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
        let received: Vec<i32> = signals.pending().collect();
        let mut stop = false;
        for signal in received {
            if signal == signal_hook::consts::SIGHUP {
                self.reload_certificate();
                continue;
            }
            if self.shutdown_deadline.is_some() {
                stop = true;
            }
            self.begin_shutdown();
        }
        stop
    }

    /// Re-reads the TLS certificate and key (SIGHUP): new handshakes use
    /// the new pair, open connections keep theirs; a pair that fails to
    /// load leaves the old one in service.
    fn reload_certificate(&mut self) {
        let Some(tls) = self.tls.as_mut() else {
            info!("SIGHUP: no TLS certificate to reload");
            return;
        };
        match tls.certs.reload() {
            Ok(info) => info!(
                "SIGHUP: TLS certificate reloaded: {} (expires at {} s since the epoch)",
                info.subject, info.not_after
            ),
            Err(e) => log::error!("SIGHUP: TLS certificate not reloaded, the old one stays: {e}"),
        }
    }

    /// Whether a shutdown is over: every connection closed, or its time up.
    fn shutdown_complete(&self) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        if self.table.is_empty() {
            info!("shutdown complete");
            return true;
        }
        if self.clock.now() >= deadline {
            info!(
                "shutdown timeout: dropping {} connections",
                self.table.len()
            );
            return true;
        }
        false
    }
}

/// The members of every room, as the rooms see them: the connections and
/// the pollers.
fn members<'a>(table: &'a mut Table, sessions: &'a mut Sessions) -> Members<'a> {
    Members {
        conns: table.conns_mut(),
        sessions,
    }
}

/// Lists what the members in `woken` (woken by a broadcast, a presence
/// change or a replay) need: a flush for connections, the answer of its
/// held poll for a poller.
fn wake(table: &mut Table, sessions: &mut Sessions, woken: &mut Vec<usize>) {
    sessions.take_woken(woken);
    table.extend_dirty(woken);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_tokens_are_distinct() {
        let tokens = [
            LISTENER,
            WAKER,
            SIGNALS,
            REDIS_PUBLISHER,
            REDIS_SUBSCRIBER,
            TLS_LISTENER,
        ];
        for (i, a) in tokens.iter().enumerate() {
            assert!(!tokens[i + 1..].contains(a), "{a:?} twice");
        }
    }
}
