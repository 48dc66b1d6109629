//! The socket under each [`Link`]: the only cluster code that does I/O.
//!
//! A [`LinkDriver`] owns one non-blocking mio `TcpStream` in the reactor's
//! `Poll`, on a token the reactor chose. It opens the connection (the link
//! times the connect), reads into the link's buffer, writes what the link
//! has queued, and after a failure waits a capped, jittered backoff
//! ([`Backoff`]) before the next attempt, round robin over the addresses
//! the URL resolved to. It decides nothing about RESP, replies or health:
//! it reports to the link ([`Link::connected`], [`Link::closed`]) and the
//! link reports to the owner through its events.

use std::io;
use std::net::SocketAddr;

use log::debug;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::backoff::Backoff;
use super::error::{IoFailure, IoOp, LinkError};
use super::link::{Link, Role};
use crate::server::timer::Time;
use crate::server::write_queue::Flush;

/// Reads of one link per turn before clients are served again.
pub const READS_PER_TURN: usize = 16;

/// What a readiness event meant for a connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// No socket: an event of one already given up. Nothing to do.
    NoSocket,
    /// Still connecting (a spurious event). Nothing to do.
    Pending,
    /// The connection was made by this event: the owner starts the
    /// handshake with [`Link::connected`].
    Made,
    /// The connect failed; the link has the error as an event.
    Failed,
    /// Connected before this event.
    Open,
}

/// One link to Redis and its socket.
#[derive(Debug)]
pub struct LinkDriver {
    /// The state machine the socket feeds; the owner polls its events.
    pub link: Link,
    token: Token,
    stream: Option<TcpStream>,
    /// Down since a failure: the next attempt is due then.
    retry_at: Option<Time>,
    backoff: Backoff,
    /// Connection attempts so far: picks the address, round robin.
    attempts: usize,
    /// The last write stopped at `WouldBlock`: wait for a writable event.
    write_blocked: bool,
    /// Reads still allowed in this turn.
    reads_left: usize,
    /// The read budget ran out with bytes maybe left in the socket.
    unread: bool,
    last_error: Option<LinkError>,
}

impl LinkDriver {
    /// A driver for `link` on `token`, not connected yet; `seed` varies the
    /// backoff's jitter.
    pub fn new(link: Link, token: Token, seed: u64) -> LinkDriver {
        LinkDriver {
            link,
            token,
            stream: None,
            retry_at: None,
            backoff: Backoff::new(seed),
            attempts: 0,
            write_blocked: false,
            reads_left: 0,
            unread: false,
            last_error: None,
        }
    }

    /// Publisher or subscriber.
    pub fn role(&self) -> Role {
        self.link.role()
    }

    /// The token of this driver's socket.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Whether the link failed and waits for its next attempt.
    pub fn is_down(&self) -> bool {
        self.retry_at.is_some()
    }

    /// Why the link last failed.
    pub fn last_error(&self) -> Option<&LinkError> {
        self.last_error.as_ref()
    }

    /// Whether work is left that must not wait for an event: a read budget
    /// ran out, or bytes are queued on a socket that can take them.
    pub fn is_busy(&self) -> bool {
        self.unread || (self.link.is_connected() && !self.write_blocked && self.link.wants_write())
    }

    /// When the driver next needs [`LinkDriver::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Time> {
        self.retry_at.or_else(|| self.link.poll_timeout())
    }

    /// Starts a TCP connect to the next address. A failure to even start
    /// is the link's failure, reported through its events.
    pub fn connect(&mut self, addrs: &[SocketAddr], registry: &Registry, now: Time) {
        self.retry_at = None;
        self.attempts += 1;
        let addr = addrs[self.attempts % addrs.len()];
        self.link.connecting(now);
        let mut stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => return self.link.closed(io_error(IoOp::Connect, &e)),
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = registry.register(&mut stream, self.token, interest) {
            return self.link.closed(io_error(IoOp::Register, &e));
        }
        self.stream = Some(stream);
        debug!("redis {}: connecting to {addr}", self.role());
    }

    /// Checks whether a connect under way completed with this event.
    pub fn finish_connect(&mut self, event: &Event) -> Connect {
        let Some(stream) = self.stream.as_ref() else {
            return Connect::NoSocket;
        };
        if !self.link.is_connecting() {
            return Connect::Open;
        }
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                self.link.closed(io_error(IoOp::Connect, &e));
                return Connect::Failed;
            }
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                if event.is_error() || event.is_read_closed() || event.is_write_closed() {
                    self.link.closed(LinkError::Io(IoFailure {
                        op: IoOp::Connect,
                        kind: io::ErrorKind::ConnectionRefused,
                        os_code: None,
                    }));
                    return Connect::Failed;
                }
                return Connect::Pending;
            }
            Err(e) => {
                self.link.closed(io_error(IoOp::Connect, &e));
                return Connect::Failed;
            }
        }
        let _ = stream.set_nodelay(true);
        Connect::Made
    }

    /// Readiness of a connected socket: a writable socket is flushed, a
    /// readable one gets a fresh read budget (the reads happen as the owner
    /// polls for events, see [`LinkDriver::read_once`]).
    pub fn on_readiness(&mut self, event: &Event, now: Time) {
        if event.is_writable() {
            self.write_blocked = false;
            self.flush(now);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.unread = false;
            self.reads_left = READS_PER_TURN;
        }
    }

    /// End-of-turn work: a new read budget if the last one ran out, a new
    /// connection attempt if one is due, and the link's own timers.
    pub fn handle_timeout(&mut self, addrs: &[SocketAddr], registry: &Registry, now: Time) {
        if self.unread {
            self.unread = false;
            self.reads_left = READS_PER_TURN;
        }
        if self.retry_at.is_some_and(|at| now >= at) {
            self.connect(addrs, registry, now);
        }
        self.link.handle_timeout(now);
    }

    /// Writes what the link has queued, unless the socket said it is full.
    pub fn flush_queued(&mut self, now: Time) {
        if self.link.is_connected() && self.link.wants_write() && !self.write_blocked {
            self.flush(now);
        }
    }

    /// Reads once into the link if the turn's budget allows. Returns
    /// whether the link may have new events (bytes came, or it failed).
    pub fn read_once(&mut self, now: Time) -> bool {
        if self.reads_left == 0 {
            return false;
        }
        let Some(stream) = self.stream.as_mut().filter(|_| self.link.is_connected()) else {
            self.reads_left = 0;
            return false;
        };
        self.reads_left -= 1;
        match self.link.read_from(stream, now) {
            Ok(0) => self.link.closed(LinkError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.reads_left = 0;
                return false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.link.closed(io_error(IoOp::Read, &e)),
        }
        if !self.link.is_connected() {
            self.reads_left = 0;
        } else if self.reads_left == 0 {
            self.unread = true;
        }
        true
    }

    /// The link failed: its socket goes, and the next attempt is scheduled
    /// after a backoff delay.
    pub fn on_failed(&mut self, error: LinkError, registry: &Registry, now: Time) {
        if let Some(mut stream) = self.stream.take() {
            let _ = registry.deregister(&mut stream);
        }
        self.write_blocked = false;
        self.reads_left = 0;
        self.unread = false;
        let delay = self.backoff.next_delay();
        self.retry_at = Some(now + delay);
        debug!(
            "redis {}: {error}; next attempt in {} ms",
            self.role(),
            delay.as_millis()
        );
        self.last_error = Some(error);
    }

    /// The link became ready: the next failure starts from the first delay.
    pub fn on_ready(&mut self) {
        self.backoff.reset();
        debug!("redis {}: ready", self.role());
    }

    fn flush(&mut self, now: Time) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        match self.link.poll_transmit(stream, now) {
            Ok(Flush::Done) => {}
            Ok(Flush::Blocked) => self.write_blocked = true,
            Err(e) => self.link.closed(io_error(IoOp::Write, &e)),
        }
    }
}

fn io_error(op: IoOp, error: &io::Error) -> LinkError {
    LinkError::Io(IoFailure::new(op, error))
}
