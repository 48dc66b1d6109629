//! The connection's state machine: a request head, then a WebSocket
//! session or an HTTP exchange, and how input is fed to whichever it is.

use super::{Compression, Connection, Flags};
use crate::protocol::deflate::Inflater;
use crate::protocol::handshake::{looks_like_tls, HeadReader, HeadStatus};
use crate::protocol::session::{Event, Input, Limits};
use crate::protocol::{HandshakeError, Session};
use crate::server::outgoing::Format;
use crate::server::proxy::looks_like_proxy_header;
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
    /// Reading a request head.
    Head(HeadReader),
    /// Upgraded: frames flow.
    WebSocket(WebSocket),
    /// A plain HTTP response is queued, after which the connection ends.
    Responded,
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
    /// The head breaks a rule of HTTP or of the upgrade.
    Refused(HandshakeError),
    /// WebSocket frames: this many bytes were used; the session's events
    /// are in the events list, in order.
    Frames(usize),
    /// Input after the last response: ignored.
    Ignored,
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
}
