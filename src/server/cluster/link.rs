//! One connection to Redis as a sans-I/O state machine.
//!
//! A [`Link`] never touches a socket, a clock or a log of outages. Its
//! driver ([`super::driver`]) tells it when a TCP connect starts
//! ([`Link::connecting`]), completes ([`Link::connected`]) or ends
//! ([`Link::closed`]); hands it what was read ([`Link::receive`], or
//! [`Link::read_from`] to read straight into its buffer); writes out what it
//! has to send ([`Link::poll_transmit`]); and gives it time when it asks
//! for it ([`Link::poll_timeout`], [`Link::handle_timeout`]). What happened
//! comes out of [`Link::poll_event`], one event at a time, in the order of
//! the bytes. This is the shape of quinn-proto's `Connection` and
//! python-websockets' `Protocol`: the tests beside it drive a link with byte
//! strings on virtual time.
//!
//! # Replies
//!
//! Redis answers one connection's commands in the order it received them,
//! so each command sent is pushed on an expectation queue ([`Command`]) and
//! each reply is matched with the front of it (`command.rs`). A command
//! that needs context for its reply carries it in its variant
//! (`IncrBy { delta }`, `Fetch { id }`); one whose outcome the owner must
//! hear of turns it into an event. The queue, the reply timer and the
//! reporting of commands lost with a connection
//! ([`LinkEvent::Unanswered`]) serve every command alike.
//!
//! The publisher loads the history scripts (`SCRIPT LOAD`) in its
//! handshake, and runs them by `EVALSHA` for each publish
//! ([`Link::publish`]) and fetch ([`Link::fetch`]); it keeps their bytes
//! until they are answered, to send them again if Redis lost its scripts
//! (`NOSCRIPT`): see `command.rs`.
//!
//! # Messages
//!
//! On the subscriber, pushes (`pmessage`) come between replies. Frames are
//! decoded lazily, one per [`Link::poll_event`], so a message is found in
//! the read buffer and stays there, uncopied, until the next call:
//! [`LinkEvent::Message`] says one is ready and [`Link::message`] borrows it.

mod command;
mod config;
mod event;
mod frame;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use self::command::{Held, HistoryArgs, Reply, Retained};
use self::frame::{Incoming, Span};
use super::error::{Dropped, LinkError};
use super::history::Stamp;
use super::resp;
use super::scripts::Script;
use super::PATTERN;
use crate::server::timer::Time;
use crate::server::write_queue::{Flush, WriteQueue};

pub use self::command::{Command, MAX_TRIES, RETAINED_FACTOR};
pub use self::config::{LinkConfig, Role};
pub use self::event::{Inbound, LinkEvent, NotQueued};

/// A TCP connect to Redis taking longer than this is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An idle link sends `PING` this often.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A link that awaits a reply and receives nothing this long is given up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes asked of the socket per read, and room made for them.
pub const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection: never connected, or failed.
    Idle,
    /// TCP connect under way, given up at `deadline`.
    Connecting { deadline: Time },
    /// Connected; the handshake's replies are awaited.
    Handshaking,
    /// Usable.
    Ready,
}

/// One connection to Redis, without the connection: see the module docs.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    state: State,
    /// Commands to send, in order.
    out: WriteQueue,
    /// Commands sent (or queued), their replies awaited, in order.
    expected: VecDeque<Command>,
    /// Bytes received; `decoded` of them are done with.
    inbuf: Vec<u8>,
    decoded: usize,
    /// The message of the last [`LinkEvent::Message`].
    current: Option<Span>,
    events: VecDeque<LinkEvent>,
    /// Commands lost with the connection, still to report.
    unanswered: VecDeque<Command>,
    /// The failure to report once `unanswered` is empty.
    failure: Option<LinkError>,
    /// Since when a reply has been awaited with nothing received.
    waiting_since: Option<Time>,
    /// When bytes last came: the heartbeat counts from it.
    last_rx: Time,
    /// When the bytes being decoded came.
    rx_at: Time,
    /// Reused to encode the head of each published message.
    scratch: Vec<u8>,
    /// `EVALSHA`s queued or sent, their replies awaited, in order: the
    /// `Publish` and `Fetch` commands of `expected`.
    retained: VecDeque<Retained>,
    /// New `EVALSHA`s held until the commands sent before a reload are
    /// answered: `barrier` replies still to come.
    held: VecDeque<Held>,
    barrier: usize,
    /// The bytes of `retained` and `held`, for the bound on them.
    retained_bytes: usize,
    /// A script's reload is under way (by [`Script::index`]).
    reloading: [bool; 2],
    /// The SHA-1 of each script (by [`Script::index`]).
    shas: [String; 2],
    history: HistoryArgs,
}

impl Link {
    /// An idle link, at `now`.
    pub fn new(config: LinkConfig, now: Time) -> Link {
        Link {
            config,
            state: State::Idle,
            out: WriteQueue::new(),
            expected: VecDeque::new(),
            inbuf: Vec::new(),
            decoded: 0,
            current: None,
            events: VecDeque::new(),
            unanswered: VecDeque::new(),
            failure: None,
            waiting_since: None,
            last_rx: now,
            rx_at: now,
            scratch: Vec::new(),
            retained: VecDeque::new(),
            held: VecDeque::new(),
            barrier: 0,
            retained_bytes: 0,
            reloading: [false; 2],
            shas: Script::ALL.map(Script::sha1),
            history: HistoryArgs::new(config.history_size, config.history_ttl),
        }
    }

    /// Publisher or subscriber.
    pub fn role(&self) -> Role {
        self.config.role
    }

    /// Whether a TCP connect is under way.
    pub fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting { .. })
    }

    /// Whether the TCP connection is made (handshaking or ready).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Handshaking | State::Ready)
    }

    /// Whether the handshake is done and the link not failed since.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.out.queued_bytes()
    }

    /// Whether there are bytes to write.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// The driver starts a TCP connect at `now`; the link fails with
    /// [`LinkError::ConnectTimeout`] if it is not made in time.
    pub fn connecting(&mut self, now: Time) {
        debug_assert_eq!(self.state, State::Idle);
        self.state = State::Connecting {
            deadline: now + CONNECT_TIMEOUT,
        };
    }

    /// The TCP connection is made: the handshake's commands are queued. A
    /// publisher's loads the scripts and ends with `INCRBY` of `reserve` ids
    /// when given, else with `PING`, so that its last reply shows that
    /// Redis serves; a subscriber ignores `reserve`.
    pub fn connected(&mut self, now: Time, reserve: Option<u64>) {
        match self.config.role {
            Role::Publisher => {
                if self.config.db != 0 {
                    let db = self.config.db.to_string();
                    self.send([b"SELECT", db.as_bytes()], Command::Select);
                }
                for script in Script::ALL {
                    self.load_script(script);
                }
                match reserve {
                    Some(delta) => self.reserve_ids(delta),
                    None => self.send([b"PING"], Command::Ping),
                }
            }
            Role::Subscriber => self.send([b"PSUBSCRIBE", PATTERN.as_bytes()], Command::PSubscribe),
        }
        self.state = State::Handshaking;
        self.last_rx = now;
    }

    /// The connection is gone, or could not be made: the link fails with
    /// `error`. Ignored when the link is idle already.
    pub fn closed(&mut self, error: LinkError) {
        if self.state != State::Idle {
            self.fail(error);
        }
    }

    /// Bytes received at `now`, copied in. [`Link::read_from`] does the
    /// same without the copy.
    pub fn receive(&mut self, bytes: &[u8], now: Time) {
        self.compact();
        self.inbuf.extend_from_slice(bytes);
        if !bytes.is_empty() {
            self.received_at(now);
        }
    }

    /// Reads once from `source` (the driver's socket) straight into the
    /// link's buffer, at most [`READ_CHUNK`] bytes. The result is the read's:
    /// `Ok(0)` is the end of the stream, which the driver reports with
    /// [`Link::closed`].
    pub fn read_from<R: Read>(&mut self, source: &mut R, now: Time) -> io::Result<usize> {
        self.compact();
        let start = self.inbuf.len();
        self.inbuf.resize(start + READ_CHUNK, 0);
        let result = source.read(&mut self.inbuf[start..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.inbuf.truncate(start + n);
        if n > 0 {
            self.received_at(now);
        }
        result
    }

    /// Writes queued commands to `sink` until none are left or it would
    /// block; the reply timer starts with the first write that leaves a
    /// reply awaited. An error is the driver's to report with
    /// [`Link::closed`].
    pub fn poll_transmit<W: Write>(&mut self, sink: &mut W, now: Time) -> io::Result<Flush> {
        if !self.is_connected() {
            return Ok(Flush::Done);
        }
        let flushed = self.out.write_to(sink)?;
        if !self.expected.is_empty() && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        Ok(flushed)
    }

    /// When the link next needs [`Link::handle_timeout`]: the connect
    /// deadline, the reply deadline, or the next heartbeat.
    pub fn poll_timeout(&self) -> Option<Time> {
        match self.state {
            State::Idle => None,
            State::Connecting { deadline } => Some(deadline),
            State::Handshaking | State::Ready => match self.waiting_since {
                Some(since) => Some(since + REPLY_TIMEOUT),
                None if self.expected.is_empty() => Some(self.last_rx + HEARTBEAT),
                None => None,
            },
        }
    }

    /// Acts on the time: a connect or a reply that took too long fails the
    /// link; an idle link queues a `PING`.
    pub fn handle_timeout(&mut self, now: Time) {
        match self.state {
            State::Idle => {}
            State::Connecting { deadline } => {
                if now >= deadline {
                    self.fail(LinkError::ConnectTimeout);
                }
            }
            State::Handshaking | State::Ready => match self.waiting_since {
                Some(since) if now >= since + REPLY_TIMEOUT => {
                    self.fail(LinkError::ReplyTimeout);
                }
                None if self.expected.is_empty() && now >= self.last_rx + HEARTBEAT => {
                    self.send([b"PING"], Command::Ping);
                }
                _ => {}
            },
        }
    }

    /// The next event, decoding the next frame received if it takes one.
    /// The message of a previous [`LinkEvent::Message`] is done with.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.current = None;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if let Some(command) = self.unanswered.pop_front() {
                return Some(LinkEvent::Unanswered(command));
            }
            if let Some(error) = self.failure.take() {
                return Some(LinkEvent::Failed(error));
            }
            if !self.decode_next() {
                return None;
            }
        }
    }

    /// The message announced by the last [`LinkEvent::Message`], borrowed
    /// from the read buffer.
    pub fn message(&self) -> Option<Inbound<'_>> {
        let span = self.current.as_ref()?;
        let room = std::str::from_utf8(self.inbuf.get(span.room.clone())?).ok()?;
        let epoch = std::str::from_utf8(self.inbuf.get(span.epoch.clone())?).ok()?;
        Some(Inbound {
            room,
            sender: span.sender,
            opcode: span.opcode,
            payload: self.inbuf.get(span.payload.clone())?,
            stamp: Some(Stamp {
                epoch,
                offset: span.offset,
                time_ms: span.time_ms,
            }),
        })
    }

    fn received_at(&mut self, now: Time) {
        self.last_rx = now;
        self.rx_at = now;
    }

    /// Drops the bytes already decoded, before more are appended (never
    /// while a message is lent out: both take `&mut self`).
    fn compact(&mut self) {
        self.current = None;
        self.inbuf.drain(..self.decoded);
        self.decoded = 0;
        if self.inbuf.is_empty() && self.inbuf.capacity() > 4 * READ_CHUNK {
            self.inbuf = Vec::new();
        }
    }

    /// Decodes and acts on one frame; `false` when no complete frame is left.
    fn decode_next(&mut self) -> bool {
        if !self.is_connected() || self.decoded == self.inbuf.len() {
            return false;
        }
        let at = self.decoded;
        let rest = &self.inbuf[at..];
        let result = match resp::decode(rest) {
            Ok(Some(decoded)) => {
                let awaited = self.expected.front().copied();
                let incoming =
                    frame::classify(&self.config, awaited, &decoded.frame, &self.inbuf, at);
                self.decoded += decoded.used;
                self.on_frame(incoming)
            }
            Ok(None) => {
                let max = self.config.max_frame();
                if rest.len() <= max {
                    return false;
                }
                Err(LinkError::OversizedFrame {
                    buffered: rest.len(),
                    max,
                })
            }
            Err(bad) => Err(LinkError::NotResp {
                first_byte: bad.first_byte,
            }),
        };
        if let Err(error) = result {
            self.fail(error);
        }
        true
    }

    fn on_frame(&mut self, incoming: Incoming) -> Result<(), LinkError> {
        match incoming {
            Incoming::Message(span) => {
                self.current = Some(span);
                self.events.push_back(LinkEvent::Message);
            }
            Incoming::Dropped(dropped) => self.events.push_back(LinkEvent::Dropped(dropped)),
            Incoming::Reply(reply) => match (self.expected.is_empty(), self.config.role, reply) {
                (false, _, reply) | (true, Role::Publisher, reply) => self.on_reply(reply)?,
                (true, Role::Subscriber, Reply::Error(message)) => {
                    return Err(LinkError::ErrorReply {
                        command: None,
                        message,
                    })
                }
                // The subscriber skips what it cannot use, as it does
                // pushes of unknown shape.
                (true, Role::Subscriber, _) => {
                    let dropped = LinkEvent::Dropped(Dropped::UnexpectedFrame);
                    self.events.push_back(dropped);
                }
            },
        }
        // Any frame shows that Redis is alive; replies may queue behind
        // messages.
        self.waiting_since = if self.expected.is_empty() {
            None
        } else {
            Some(self.rx_at)
        };
        if self.state == State::Handshaking && self.expected.is_empty() {
            self.state = State::Ready;
            self.events.push_back(LinkEvent::Ready);
        }
        Ok(())
    }

    /// Gives the connection up: what was queued goes, the commands awaited
    /// are reported as unanswered, then the failure.
    fn fail(&mut self, error: LinkError) {
        self.unanswered.append(&mut self.expected);
        let held = self.held.drain(..).map(|held| held.command);
        self.unanswered.extend(held);
        self.retained.clear();
        self.barrier = 0;
        self.retained_bytes = 0;
        self.reloading = [false; 2];
        self.failure = Some(error);
        self.state = State::Idle;
        self.out = WriteQueue::new();
        self.inbuf = Vec::new();
        self.decoded = 0;
        self.current = None;
        self.waiting_since = None;
    }
}

#[cfg(test)]
mod tests;
