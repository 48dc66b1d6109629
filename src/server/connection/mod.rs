//! One client connection: a [`Transport`] under one state machine that
//! owns both directions and its timer.
//!
//! A connection starts by reading a request head; it then either becomes a
//! WebSocket session (after a 101) or an HTTP exchange (a response queued).
//! It keeps only what is unfinished between reads (part of a head, part of
//! a frame header). What the bytes mean is decided by `protocol`; what a
//! message does (echo, broadcast) is decided by the reactor and the rooms,
//! which see a connection only through the methods here: every field is
//! private, every byte to the peer goes through its write queue (or, for a
//! last word before dropping it, [`Connection::write_once`]), and every
//! byte from it through its transport.

mod compression;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::{Registry, Token};

pub use self::compression::{deliver, Compression, OwnDeflate};
use super::admission::RateBucket;
use super::outgoing::Outgoing;
use super::room::{Delivery, Member};
use super::timer::{Time, Timer};
use super::transport::{ReadResult, Transport};
use super::write_queue::{BufferPool, ByteGauge, Flush, WriteQueue};
use crate::protocol::deflate::Inflater;
use crate::protocol::handshake::{HeadReader, HeadStatus};
use crate::protocol::session::{CloseState, Event, Input, Limits};
use crate::protocol::{HandshakeError, OpCode, Session};

/// What a WebSocket connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/echo`: every message comes back unchanged.
    Echo,
    /// A chat room (which one, the rooms know): every message goes to
    /// every member.
    Room,
}

/// An open WebSocket: what the connection is after its 101.
#[derive(Debug)]
pub struct WebSocket {
    /// The id in `from{id}:`, unique for the life of the process.
    pub id: u64,
    /// The protocol state machine.
    pub session: Session,
    /// Echo or room.
    pub endpoint: Endpoint,
    /// permessage-deflate state.
    pub compression: Compression,
}

/// What happens once an HTTP response is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterResponse {
    /// The connection ends (`Connection: close`).
    Close,
    /// The connection reads the next request (HTTP keep-alive).
    NextRequest,
}

/// Where a connection is in its life.
#[derive(Debug)]
enum State {
    /// Reading a request head.
    Head(HeadReader),
    /// Upgraded: frames flow.
    WebSocket(WebSocket),
    /// A plain HTTP response is queued, after which the connection ends.
    Responded,
}

/// What [`Connection::handle_timeout`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The request head is late: answer 408 and drop the connection.
    Handshake,
    /// The last bytes had their time: drop the connection.
    Close,
    /// A silent client was sent a Ping.
    Pinged,
    /// A client stayed silent for this long: close it.
    Idle(Duration),
    /// Nothing is due yet (the peer spoke since): the timer was re-armed.
    Rearmed,
}

/// The timeouts a connection's timers are armed with.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--ping-interval`.
    pub ping: Duration,
    /// `--idle-timeout`.
    pub idle: Duration,
}

/// State bits. Bools keep the code plain; the struct stays small.
#[derive(Debug, Default, Clone, Copy)]
struct Flags {
    /// Listed in the reactor's dirty list: needs a flush this turn.
    dirty: bool,
    /// Reading stopped until the queue drains (echo backpressure).
    paused: bool,
    /// We sent FIN after our last bytes.
    write_shut: bool,
    /// The peer sent FIN.
    read_eof: bool,
    /// Listed for removal at the end of the turn.
    dead: bool,
    /// A Ping was sent and nothing has arrived since.
    pinged: bool,
    /// Listed in the reactor's list of connections to read again.
    unread: bool,
}

/// A client connection and everything the server keeps for it.
#[derive(Debug)]
pub struct Connection {
    transport: Transport,
    peer: SocketAddr,
    state: State,
    /// Bytes received but not yet used: part of a head or a frame header.
    inbuf: Vec<u8>,
    queue: WriteQueue,
    /// When the armed timer fires (kept apart from its name, which packs
    /// beside the flags: eight bytes per connection).
    deadline: Option<Time>,
    /// What the armed timer is for.
    timer: Timer,
    /// When the peer last sent anything.
    last_rx: Time,
    /// Message rate of this client, when a limit is set.
    rate: RateBucket,
    flags: Flags,
}

/// What every connection's input is read with, owned by the loop.
#[derive(Debug)]
pub struct Shared<'a> {
    /// Longest request head accepted.
    pub max_head_bytes: usize,
    /// Limits of every session.
    pub limits: Limits,
    /// Inflates messages of connections without a context of their own.
    pub inflater: &'a mut Inflater,
    /// Empty buffers to start new messages in.
    pub spare: &'a mut Vec<Vec<u8>>,
}

/// What [`Connection::receive`] made of a piece of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// The bytes are part of an unfinished head; keep them all.
    Partial,
    /// A complete request head is the first `end` bytes: route it.
    Head(usize),
    /// The head breaks a rule of HTTP or of the upgrade.
    Refused(HandshakeError),
    /// WebSocket frames: this many bytes were used; the session's events
    /// are in the events list, in order.
    Frames(usize),
    /// Input after the last response: ignored.
    Ignored,
}

impl Connection {
    /// A connection just accepted; its handshake must end by `deadline`.
    pub fn new(
        transport: Transport,
        peer: SocketAddr,
        gauge: ByteGauge,
        now: Time,
        deadline: Time,
    ) -> Connection {
        Connection {
            transport,
            peer,
            state: State::Head(HeadReader::new()),
            inbuf: Vec::new(),
            queue: WriteQueue::with_gauge(gauge),
            deadline: Some(deadline),
            timer: Timer::Handshake,
            last_rx: now,
            rate: RateBucket::default(),
            flags: Flags::default(),
        }
    }

    /// The peer's address, for logs and per-address limits.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The WebSocket id, once upgraded.
    pub fn id(&self) -> Option<u64> {
        self.websocket().map(|ws| ws.id)
    }

    /// The open WebSocket, once upgraded.
    pub fn websocket(&self) -> Option<&WebSocket> {
        match &self.state {
            State::WebSocket(ws) => Some(ws),
            _ => None,
        }
    }

    /// The open WebSocket, once upgraded.
    pub fn websocket_mut(&mut self) -> Option<&mut WebSocket> {
        match &mut self.state {
            State::WebSocket(ws) => Some(ws),
            _ => None,
        }
    }

    /// Whether the request head is still being read.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Head(_))
    }

    /// Registers the transport with the reactor's poller.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.transport.register(registry, token)
    }

    /// Removes the transport from the poller, before the connection is dropped.
    pub fn deregister(&mut self, registry: &Registry) {
        self.transport.deregister(registry);
    }

    // ---- reading ----

    /// Whether reading should go on: not dropped, not paused for
    /// backpressure, and the peer has not finished.
    pub fn wants_read(&self) -> bool {
        !self.flags.dead && !self.flags.paused && !self.flags.read_eof
    }

    /// Reads once into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<ReadResult> {
        self.transport.read(buf)
    }

    /// Whether a read of `n` bytes into a buffer of `capacity` emptied the
    /// transport (see [`Transport::drained_by`]).
    pub fn drained_by(&self, n: usize, capacity: usize) -> bool {
        self.transport.drained_by(n, capacity)
    }

    /// The peer sent FIN. Returns whether the connection is over: final
    /// bytes still queued (a response or a Close) are worth sending to a
    /// half-closed peer; anything else ends here.
    pub fn on_eof(&mut self) -> bool {
        self.flags.read_eof = true;
        !self.is_closing() || self.flags.write_shut
    }

    /// Notes that the peer spoke at `now` (any bytes count as a sign of life).
    pub fn on_activity(&mut self, now: Time) {
        self.last_rx = now;
        self.flags.pinged = false;
    }

    /// The bytes kept from earlier reads, taken out so that new bytes can
    /// be appended to them; give back what stays unused with
    /// [`Connection::keep_unused`].
    pub fn take_unused(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inbuf)
    }

    /// Whether unused input is worth keeping: more will be read and used.
    pub fn keeps_input(&self) -> bool {
        !self.flags.dead && !matches!(self.state, State::Responded)
    }

    /// Keeps `bytes` (unused input) for the next read.
    pub fn keep_unused(&mut self, bytes: Vec<u8>) {
        self.inbuf = bytes;
    }

    /// Feeds input to the state machine: a head is looked for while
    /// handshaking (`max_head_bytes` at most), frames go to the session.
    pub fn receive(
        &mut self,
        data: &mut [u8],
        shared: &mut Shared<'_>,
        events: &mut Vec<Event>,
    ) -> Received {
        match &mut self.state {
            State::Head(reader) => match reader.read(data, shared.max_head_bytes) {
                Ok(HeadStatus::Complete(end)) => Received::Head(end),
                Ok(HeadStatus::Partial) => {
                    self.transport.ack_now();
                    Received::Partial
                }
                Err(err) => Received::Refused(err),
            },
            State::WebSocket(ws) => {
                let mut input = Input {
                    limits: shared.limits,
                    inflater: match ws.compression.own_inflater() {
                        Some(own) => own,
                        None => shared.inflater,
                    },
                    spare: shared.spare,
                };
                Received::Frames(ws.session.receive(data, &mut input, events))
            }
            State::Responded => Received::Ignored,
        }
    }

    /// Bytes the session holds for a message being received.
    pub fn buffered_bytes(&self) -> usize {
        self.websocket().map_or(0, |ws| ws.session.buffered_bytes())
    }

    /// Takes one token of the message rate at `now`: `false` when the
    /// client is over `rate` messages per second.
    pub fn take_rate_token(&mut self, now: Time, rate: f64) -> bool {
        self.rate.take(now, rate)
    }

    /// Stops reading until the queue drains (a client that sends but does
    /// not read what it is sent).
    pub fn pause_reading(&mut self) {
        self.flags.paused = true;
    }

    // ---- the state machine ----

    /// Completes the upgrade: queues the 101 and opens the session, whose
    /// first ping is due at `ping_at`.
    pub fn upgrade(&mut self, response: Vec<u8>, ws: WebSocket, ping_at: Time) {
        self.state = State::WebSocket(ws);
        // The head's bytes need not stay resident for the connection's life.
        self.inbuf = Vec::new();
        self.queue.push_owned(response);
        self.arm(Timer::Ping, ping_at);
    }

    /// Queues a plain HTTP response. After it, the connection ends
    /// (`close_by` is then the time the client has to take it) or reads
    /// the next request.
    pub fn respond(&mut self, response: Vec<u8>, after: AfterResponse, close_by: Time) {
        self.queue.push_owned(response);
        match after {
            AfterResponse::Close => {
                self.state = State::Responded;
                self.inbuf = Vec::new();
                self.queue.seal();
                self.arm(Timer::Close, close_by);
            }
            AfterResponse::NextRequest => self.state = State::Head(HeadReader::new()),
        }
    }

    /// Queues a frame the protocol itself sends (a Pong).
    pub fn send_control(&mut self, frame: Vec<u8>) {
        self.queue.push_owned(frame);
    }

    /// Queues a Close frame; nothing may follow it, nothing more is read
    /// into the connection's buffer, and the peer has until `close_by`.
    pub fn send_close(&mut self, frame: Vec<u8>, close_by: Time) {
        self.queue.push_owned(frame);
        self.queue.seal();
        self.inbuf = Vec::new();
        self.arm(Timer::Close, close_by);
    }

    /// Drops what has not started on the wire (a slow reader's backlog,
    /// before its Close), so the memory is freed at once.
    pub fn discard_unsent(&mut self) {
        self.queue.discard_unsent();
    }

    /// Whether the last bytes (a Close or a final response) are queued.
    pub fn is_closing(&self) -> bool {
        self.queue.is_sealed()
    }

    /// Whether a close timer should run: the last bytes are queued and
    /// the peer's part is awaited.
    pub fn close_expected(&self) -> bool {
        self.is_closing() && !self.flags.dead
    }

    // ---- writing ----

    /// Queues an echoed message: a payload of its own is moved, one read
    /// in place is copied. Returns the bytes now queued.
    pub fn echo(&mut self, opcode: OpCode, payload: Echo<'_>, pool: &mut BufferPool) -> usize {
        match payload {
            Echo::Owned(buf) => self.queue.push_frame_vec(opcode, buf, pool),
            Echo::Borrowed(bytes) => self.queue.push_frame(opcode, bytes),
        };
        self.queue.queued_bytes()
    }

    /// Queues a frame shared with other receivers; returns the bytes now queued.
    pub fn push_shared(&mut self, frame: std::rc::Rc<[u8]>) -> usize {
        self.queue.push_shared(frame);
        self.queue.queued_bytes()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queue.queued_bytes()
    }

    /// Writes the queue until it is empty or the transport would block.
    /// Once the final bytes are out, sends FIN so the peer sees the end.
    ///
    /// Once both Close frames have been exchanged there is no FIN to send
    /// here: the reactor drops the connection at once (see
    /// [`Connection::is_done`]) and closing the socket sends the FIN.
    pub fn flush(&mut self, pool: &mut BufferPool) -> io::Result<Flush> {
        let last_bytes = self.queue.is_sealed() && !self.flags.write_shut;
        if last_bytes {
            self.transport.hold_for_fin();
        }
        let result = self.transport.write_queue(&mut self.queue, pool)?;
        if result == Flush::Done && last_bytes {
            self.flags.write_shut = true;
            if !self.is_done() {
                self.transport.shutdown_write();
            }
        }
        Ok(result)
    }

    /// Whether a flush could write anything.
    pub fn can_write(&self) -> bool {
        !self.flags.dead && !self.flags.write_shut
    }

    /// Resumes reading a connection paused for backpressure once its queue
    /// is down to `resume_at` bytes; returns whether it did.
    pub fn resume_reading(&mut self, resume_at: usize) -> bool {
        if self.flags.paused && self.queue.queued_bytes() <= resume_at {
            self.flags.paused = false;
            return true;
        }
        false
    }

    /// Writes what fits of `bytes` outside the queue, for a connection
    /// dropped right after (see [`Transport::write_once`]).
    pub fn write_once(&mut self, bytes: &[u8]) {
        self.transport.write_once(bytes);
    }

    /// Nothing is left to do but close the socket: everything queued is
    /// written and either the peer sent FIN or the closing handshake is
    /// complete. In the latter case the server closes TCP first without
    /// waiting for the client's FIN (RFC 6455 section 7.1.1), so the
    /// client's FIN later meets a socket nobody waits on.
    pub fn is_done(&self) -> bool {
        // Flags first: this is asked after every read.
        self.flags.write_shut
            && self.queue.is_empty()
            && (self.flags.read_eof
                || matches!(
                    &self.state,
                    State::WebSocket(ws) if ws.session.state() == CloseState::Closed
                ))
    }

    // ---- timers ----

    /// The armed timer, if any.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deadline
    }

    /// Arms `timer` to fire at `at`, replacing the armed one.
    pub fn arm(&mut self, timer: Timer, at: Time) {
        self.deadline = Some(at);
        self.timer = timer;
    }

    /// Handles the armed timer, due at `now`. A ping or idle timer whose
    /// time has not come (the peer spoke since) is re-armed.
    pub fn handle_timeout(&mut self, now: Time, timeouts: Timeouts) -> Expiry {
        if self.deadline.take().is_none() {
            return Expiry::Rearmed;
        }
        match self.timer {
            Timer::Handshake => Expiry::Handshake,
            Timer::Close => Expiry::Close,
            Timer::Ping | Timer::Idle => self.check_silence(now, timeouts),
        }
    }

    /// Pings a client silent for a ping interval, and gives up on one
    /// silent for the idle timeout; otherwise waits for the next interval.
    fn check_silence(&mut self, now: Time, timeouts: Timeouts) -> Expiry {
        let silent = now.since(self.last_rx);
        if silent >= timeouts.idle {
            return Expiry::Idle(silent);
        }
        if silent < timeouts.ping {
            self.arm(Timer::Ping, self.last_rx + timeouts.ping);
            return Expiry::Rearmed;
        }
        self.arm(Timer::Idle, self.last_rx + timeouts.idle);
        if self.flags.pinged {
            return Expiry::Rearmed;
        }
        let State::WebSocket(ws) = &self.state else {
            return Expiry::Rearmed;
        };
        match ws.session.ping() {
            Some(frame) => {
                self.flags.pinged = true;
                self.queue.push_owned(frame);
                Expiry::Pinged
            }
            None => Expiry::Rearmed,
        }
    }

    // ---- the reactor's bookkeeping ----

    /// Marks the connection as needing a flush; `false` if it already was.
    pub fn mark_dirty(&mut self) -> bool {
        !std::mem::replace(&mut self.flags.dirty, true)
    }

    /// Clears the flush mark, as the flush happens.
    pub fn clear_dirty(&mut self) {
        self.flags.dirty = false;
    }

    /// Whether the connection waits for a flush, with `bytes` or more queued.
    pub fn needs_flush_of(&self, bytes: usize) -> bool {
        self.flags.dirty && self.queue.queued_bytes() >= bytes
    }

    /// Marks the connection to be read again next turn; `false` if it already was.
    pub fn mark_unread(&mut self) -> bool {
        !std::mem::replace(&mut self.flags.unread, true)
    }

    /// Clears the read-again mark.
    pub fn clear_unread(&mut self) {
        self.flags.unread = false;
    }

    /// Marks the connection for removal; `false` if it already was.
    pub fn mark_dead(&mut self) -> bool {
        !std::mem::replace(&mut self.flags.dead, true)
    }

    /// Whether the connection is marked for removal.
    pub fn is_dead(&self) -> bool {
        self.flags.dead
    }
}

/// The payload of a message to echo.
#[derive(Debug)]
pub enum Echo<'a> {
    /// A buffer of its own, moved into the queue.
    Owned(Vec<u8>),
    /// Bytes read in place, copied into the queue.
    Borrowed(&'a [u8]),
}

impl Member for Connection {
    fn push_broadcast(&mut self, message: &mut Outgoing<'_>, limit: usize) -> Delivery {
        // The session may already have failed on bytes later in the same
        // read; until its Close is queued, earlier messages still go out.
        let State::WebSocket(ws) = &mut self.state else {
            return Delivery::Skipped;
        };
        if self.queue.is_sealed() || self.flags.dead {
            return Delivery::Skipped;
        }
        deliver(
            &mut self.queue,
            &mut ws.compression,
            &mut self.flags.dirty,
            message,
            limit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connection_struct_stays_small() {
        // The idle footprint target is 0.5 KiB of RSS per connection; the
        // struct is most of it (buffers are empty while idle).
        let size = std::mem::size_of::<Connection>();
        eprintln!("Connection is {size} bytes");
        assert!(size <= 256, "Connection is {size} bytes");
    }
}
