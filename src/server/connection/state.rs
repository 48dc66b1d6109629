//! The connection's state machine: an HTTP exchange (a request head, its
//! body if it has one, its answer, and again while the connection is kept
//! alive), or a WebSocket session after a 101; and how input is fed to
//! whichever it is.

use super::{Compression, Connection, Flags};
use crate::protocol::deflate::Inflater;
use crate::protocol::handshake::{looks_like_tls, HeadReader, HeadStatus};
use crate::protocol::session::{Event, Input, Limits};
use crate::protocol::{HandshakeError, Session};
use crate::server::outgoing::Format;
use crate::server::proxy::looks_like_proxy_header;
use crate::server::router::BodyRequest;
use crate::server::timer::{Time, Timer};

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
    /// What a room's messages look like to it (classic or `wschat.v1`).
    pub format: Format,
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
pub(super) enum State {
    /// Reading a request head: the connection's first, or the next one
    /// on a kept-alive connection.
    Head(Exchange),
    /// Reading the body of a request whose head was routed (boxed: the
    /// request is rare and every connection carries the state).
    Body(Box<PendingBody>),
    /// Upgraded: frames flow.
    WebSocket(WebSocket),
    /// An SSE stream: events flow until either side closes; what the
    /// client sends is ignored (boxed, like every rare state).
    Stream(Box<super::EventStream>),
    /// A poll held until there is something to answer; the requests
    /// pipelined behind it wait.
    Polling(Box<super::HeldPoll>),
    /// The last HTTP response is queued, after which the connection ends.
    Responded,
}

/// An HTTP exchange between answers: the next head as it arrives, and how
/// many answers the connection carried (`--max-requests-per-connection`).
#[derive(Debug, Default)]
pub(super) struct Exchange {
    reader: HeadReader,
    served: u32,
}

impl Exchange {
    /// The exchange after `served` answers, reading a fresh head.
    pub(super) fn after(served: u32) -> Exchange {
        Exchange {
            reader: HeadReader::new(),
            served,
        }
    }
}

/// A request whose body is being read; it is acted on once the body is
/// whole. The connection keeps only the body's bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub struct PendingBody {
    /// What the request asks for.
    pub request: BodyRequest,
    /// The body's length, from `Content-Length` (within the limit).
    pub length: usize,
    /// What follows the answer, decided from the head.
    pub after: AfterResponse,
    /// Body bytes held so far (the inbound budget counts them).
    held: usize,
    /// Answers the connection carried before this request.
    served: u32,
}

impl PendingBody {
    /// A body of `length` bytes to read for `request`.
    pub fn new(request: BodyRequest, length: usize, after: AfterResponse) -> PendingBody {
        PendingBody {
            request,
            length,
            after,
            held: 0,
            served: 0,
        }
    }
}

/// What every connection's input is read with, owned by the loop.
#[derive(Debug)]
pub struct Shared<'a> {
    /// Longest request head accepted.
    pub max_head_bytes: usize,
    /// `--proxy-protocol`: a PROXY header from an untrusted peer is refused.
    pub proxy_protocol: bool,
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
    /// A request body is whole: it is the first `length` bytes.
    Body(Box<PendingBody>),
    /// The head breaks a rule of HTTP or of the upgrade.
    Refused(HandshakeError),
    /// WebSocket frames: this many bytes were used; the session's events
    /// are in the events list, in order.
    Frames(usize),
    /// Input after the last response (or on an SSE stream): ignored.
    Ignored,
    /// Input behind a held poll: kept, unread, until it is answered.
    Waiting,
    /// A TLS handshake arrived on a plain connection.
    TlsOnPlainPort,
    /// A PROXY protocol header from a peer that may not send one.
    ProxyHeaderUntrusted,
}

impl Connection {
    /// Completes the upgrade: queues the 101 and opens the session, whose
    /// first ping is due at `ping_at`.
    pub fn upgrade(&mut self, response: Vec<u8>, ws: WebSocket, ping_at: Time) {
        self.state = State::WebSocket(ws);
        // The head's bytes need not stay resident for the connection's life.
        self.inbuf = Vec::new();
        self.queue.push_owned(response);
        self.arm(Timer::Ping, ping_at);
    }

    /// Queues a plain HTTP response. After it, the connection ends (`at`
    /// is then the time the client has to take it) or waits for the next
    /// request (`at` is then when it is closed if none has begun).
    /// Returns whether reading resumed (see [`Connection::finish_exchange`]).
    #[must_use]
    pub fn respond(&mut self, response: Vec<u8>, after: AfterResponse, at: Time) -> bool {
        self.queue.push_owned(response);
        match after {
            AfterResponse::Close => self.finish_exchange(at),
            AfterResponse::NextRequest => {
                let served = self.requests_served().saturating_add(1);
                self.state = State::Head(Exchange::after(served));
                self.arm(Timer::KeepAlive, at);
                false
            }
        }
    }

    /// Ends an HTTP exchange after what is queued: no more requests are
    /// read, the queued answers go out, then FIN; the client has until
    /// `close_by`. A request begun and not answered is dropped, requests
    /// held for a slow reader too. Returns whether reading resumed (it was
    /// paused for them): the peer's FIN must still be seen.
    #[must_use]
    pub fn finish_exchange(&mut self, close_by: Time) -> bool {
        self.state = State::Responded;
        self.inbuf = Vec::new();
        self.queue.seal();
        self.arm(Timer::Close, close_by);
        self.flags.set(Flags::PENDING_INPUT, false);
        self.flags.replace(Flags::PAUSED, false)
    }

    /// Reads the body of a routed request next; the request's timer runs on.
    pub fn expect_body(&mut self, mut pending: PendingBody) {
        pending.served = self.requests_served();
        self.state = State::Body(Box::new(pending));
    }

    /// Queues `100 Continue`, for a client that waits for it before it
    /// sends its body.
    pub fn send_continue(&mut self) {
        self.queue.push_owned(crate::http::CONTINUE.to_vec());
    }

    /// A kept-alive connection sees the first bytes of its next request:
    /// from now the request has until `by`, instead of the idle timer.
    /// Returns whether the timer changed.
    #[must_use]
    pub fn begin_request(&mut self, by: Time) -> bool {
        let idle = matches!(self.state, State::Head(_))
            && self.timer == Timer::KeepAlive
            && self.deadline.is_some();
        if idle {
            self.arm(Timer::Handshake, by);
        }
        idle
    }

    /// Answers this HTTP connection carried.
    pub fn requests_served(&self) -> u32 {
        match &self.state {
            State::Head(exchange) => exchange.served,
            State::Body(pending) => pending.served,
            State::Polling(poll) => poll.served,
            _ => 0,
        }
    }

    /// Whether a request body is being read.
    pub fn is_reading_body(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    /// Whether the connection is in an HTTP exchange that may read more
    /// requests: before or between answers, or within a request.
    pub fn is_exchanging(&self) -> bool {
        matches!(self.state, State::Head(_) | State::Body(_))
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
        self.is_closing() && !self.flags.get(Flags::DEAD)
    }

    /// Whether unused input is worth keeping: more will be read and used.
    pub fn keeps_input(&self) -> bool {
        !self.flags.get(Flags::DEAD) && !matches!(self.state, State::Responded)
    }

    /// Feeds input to the state machine: a head is looked for while
    /// handshaking (`max_head_bytes` at most), frames go to the session.
    #[must_use]
    pub fn receive(
        &mut self,
        data: &mut [u8],
        shared: &mut Shared<'_>,
        events: &mut Vec<Event>,
    ) -> Received {
        match &mut self.state {
            State::Head(_) if !self.transport.is_tls() && looks_like_tls(data) => {
                Received::TlsOnPlainPort
            }
            // A definite signature takes 12 bytes; any header is longer.
            State::Head(_)
                if shared.proxy_protocol
                    && !self.flags.get(Flags::BEHIND_PROXY)
                    && data.len() >= 12
                    && looks_like_proxy_header(data) =>
            {
                Received::ProxyHeaderUntrusted
            }
            State::Head(exchange) => match exchange.reader.read(data, shared.max_head_bytes) {
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
            State::Body(_) => self.receive_body(data.len()),
            State::Responded | State::Stream(_) => Received::Ignored,
            State::Polling(_) => Received::Waiting,
        }
    }

    /// Feeds `len` bytes (the body so far, then whatever follows it) to
    /// the body being read.
    fn receive_body(&mut self, len: usize) -> Received {
        let State::Body(pending) = &mut self.state else {
            return Received::Ignored;
        };
        if len < pending.length {
            pending.held = len;
            self.transport.ack_now();
            return Received::Partial;
        }
        let served = pending.served;
        match std::mem::replace(&mut self.state, State::Head(Exchange::after(served))) {
            State::Body(pending) => Received::Body(pending),
            _ => Received::Ignored,
        }
    }

    /// Bytes held for input not yet acted on: a WebSocket message being
    /// received, or a request body (what the inbound budget counts).
    pub fn buffered_bytes(&self) -> usize {
        match &self.state {
            State::WebSocket(ws) => ws.session.buffered_bytes(),
            State::Body(pending) => pending.held,
            _ => 0,
        }
    }
}
