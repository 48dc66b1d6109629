//! One client connection: a non-blocking socket, its buffers and its phase.
//!
//! `Conn` turns mio readiness into [`Event`]s for a scenario and collects
//! what the scenario sends in an [`Outbox`], which is written with one
//! `write` per readiness event: a scenario that answers 16 echoes at once
//! puts 16 frames in one syscall. Pings are answered here, so no scenario
//! can forget to; everything else (what to send, what to measure) is the
//! scenario's business.
//!
//! The state machine lives here; the socket, the receive buffer, the send
//! queue, the TLS layer and the error kinds each live in their own module.
//! Under `wss://` the state machine sees plaintext as with `ws://`: TLS is
//! a layer between it and the socket (see `tls`), and a plain connection
//! takes the same path as before, byte for byte.

mod error;
mod recv;
mod send;
mod socket;
mod tls;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ClientConfig;

use crate::codec::{ClientHandshake, Decoded, Frame, FrameReader, Upgrade};
use crate::rng::Rng;
use crate::target::Target;

pub use error::ConnError;
use recv::RecvBuf;
pub use send::Outbox;
use send::SendBuf;
pub use socket::{connect_done, open_socket, Counted, Readiness, Wire};
pub use tls::Handshake as TlsHandshake;
use tls::Tls;

/// Largest message the client accepts from a server.
const MAX_MESSAGE: usize = 64 << 20;

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// TCP connect in progress; the upgrade request (if any) is queued.
    Connecting(Option<ClientHandshake>),
    /// Request sent, waiting for the 101.
    Upgrading(ClientHandshake),
    /// Messages (or plain-TCP bytes) flow.
    Open,
    /// We sent a close frame (or, on TCP, shut down writing); waiting for
    /// the server's close and end of stream.
    CloseSent,
    /// The server's close frame arrived and ours is queued; waiting for it
    /// to close TCP, as section 7.1.1 asks the server to do first.
    CloseReceived,
}

/// What a readiness event meant, handed to the scenario.
#[derive(Debug)]
pub enum Event<'a> {
    /// The upgrade succeeded (or, on plain TCP, the connect did).
    Opened,
    /// A complete data message.
    Message {
        /// Opcode 0x2 rather than 0x1.
        binary: bool,
        /// The unmasked payload.
        data: &'a [u8],
    },
    /// Plain-TCP bytes as they arrive, no framing.
    Bytes(&'a [u8]),
    /// The server pinged; the pong is already queued.
    Ping,
}

/// How the connection stands after a readiness event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Still open or still closing.
    Alive,
    /// Closed and finished: the socket can be dropped. `code` is the close
    /// code the server sent, if a close frame arrived.
    Finished {
        /// The server's close code.
        code: Option<u16>,
    },
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    phase: Phase,
    plain_tcp: bool,
    /// TLS under the bytes (`wss://`), or none (`ws://`, plain TCP).
    tls: Option<Tls>,
    rx: RecvBuf,
    tx: SendBuf,
    frames: FrameReader,
    /// The close code the server sent, once its close frame arrived.
    server_close: Option<u16>,
    /// What crossed the socket so far.
    wire: Wire,
}

impl Conn {
    /// Starts connecting to `target` (from `source`, if given) and queues
    /// the upgrade request for `upgrade` (its path and subprotocol), sent
    /// as soon as TCP (and, for `wss://`, the TLS handshake with
    /// `tls_config`) is up. Register [`stream`](Conn::stream) for both
    /// readable and writable.
    pub fn connect(
        target: &Target,
        upgrade: Upgrade<'_>,
        plain_tcp: bool,
        tls_config: Option<&Arc<ClientConfig>>,
        source: Option<IpAddr>,
        rng: &mut Rng,
    ) -> Result<Conn, ConnError> {
        let tls = match (&target.tls, tls_config) {
            (Some(name), Some(config)) => Some(Tls::start(config, name.clone())?),
            (None, None) => None,
            _ => {
                let why = "a TLS configuration goes with a wss:// URL and nothing else";
                return Err(ConnError::Tls(rustls::Error::General(why.into())));
            }
        };
        let stream = open_socket(target.addr, source).map_err(ConnError::Connect)?;
        let mut tx = Vec::new();
        let handshake =
            (!plain_tcp).then(|| ClientHandshake::start(rng, &target.host, upgrade, &mut tx));
        Ok(Conn {
            stream,
            phase: Phase::Connecting(handshake),
            plain_tcp,
            tls,
            rx: RecvBuf::new(),
            tx: SendBuf::with(tx),
            frames: FrameReader::new(MAX_MESSAGE),
            server_close: None,
            wire: Wire::default(),
        })
    }

    /// The socket, to register with mio.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The bytes this connection read and wrote at its socket so far
    /// (handshake, frames, pongs, TLS records).
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// Whether the upgrade (or TCP connect) is done and not yet closing.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// How the TLS handshake went, once it is over (`None` for `ws://`).
    pub fn tls_handshake(&self) -> Option<TlsHandshake> {
        self.tls.as_ref()?.handshake()
    }

    /// What TLS negotiated, once the handshake is over (`None` for `ws://`).
    pub fn tls_description(&self) -> Option<String> {
        self.tls.as_ref()?.describe()
    }

    /// Handles one readiness event: finishes the connect, flushes queued
    /// bytes, reads until the socket is drained, and hands every event to
    /// `handler`, whose sends go out in one write at the end.
    pub fn on_ready<F>(
        &mut self,
        readiness: Readiness,
        rng: &mut Rng,
        mut handler: F,
    ) -> Result<Status, ConnError>
    where
        F: FnMut(Event<'_>, &mut Outbox<'_>),
    {
        if let Phase::Connecting(_) = self.phase {
            if !self.finish_connect(readiness)? {
                return Ok(Status::Alive);
            }
            if let Phase::Open = self.phase {
                self.emit(rng, &mut handler, Event::Opened);
            }
        }
        self.flush()?;
        let status = if readiness.readable || readiness.closed {
            self.read_all(readiness, rng, &mut handler)?
        } else {
            // Writable only: the last read drained the socket and nothing
            // has arrived since, so a read would only say `WouldBlock`.
            Status::Alive
        };
        self.flush()?;
        Ok(status)
    }

    /// Queues messages outside a readiness event (a timer fired) and
    /// writes them at once.
    pub fn send(
        &mut self,
        rng: &mut Rng,
        fill: impl FnOnce(&mut Outbox<'_>),
    ) -> Result<(), ConnError> {
        let mut close = None;
        fill(&mut self.tx.outbox(rng, self.plain_tcp, &mut close));
        if let Some(code) = close {
            self.start_close(rng, code);
        }
        self.flush()
    }

    /// Starts the closing handshake: a close frame with `code` (plain TCP:
    /// shut down writing). A no-op if closing has already begun.
    pub fn close(&mut self, rng: &mut Rng, code: u16) -> Result<(), ConnError> {
        self.start_close(rng, code);
        self.flush()
    }

    /// `true` once TCP is connected; moves to the next phase.
    fn finish_connect(&mut self, readiness: Readiness) -> Result<bool, ConnError> {
        if !connect_done(&self.stream, readiness).map_err(ConnError::Connect)? {
            return Ok(false);
        }
        if let Phase::Connecting(handshake) = &mut self.phase {
            self.phase = match handshake.take() {
                Some(handshake) => Phase::Upgrading(handshake),
                None => Phase::Open,
            };
        }
        Ok(true)
    }

    /// Hands one event to the handler and applies a close it asked for.
    fn emit<F>(&mut self, rng: &mut Rng, handler: &mut F, event: Event<'_>)
    where
        F: FnMut(Event<'_>, &mut Outbox<'_>),
    {
        let mut close = None;
        handler(event, &mut self.tx.outbox(rng, self.plain_tcp, &mut close));
        if let Some(code) = close {
            self.start_close(rng, code);
        }
    }

    /// Queues our close (or marks the TCP shutdown) once, from the open
    /// phase only: a second close, or one during the handshake, is a no-op.
    fn start_close(&mut self, rng: &mut Rng, code: u16) {
        match self.phase {
            Phase::Open if self.plain_tcp => {
                self.tx.shutdown_when_flushed();
                self.phase = Phase::CloseSent;
            }
            Phase::Open => {
                self.tx.queue_close(rng, Some(code));
                self.phase = Phase::CloseSent;
            }
            _ => {}
        }
    }

    /// Writes queued bytes until done or the socket is full.
    fn flush(&mut self) -> Result<(), ConnError> {
        if let Phase::Connecting(_) = self.phase {
            return Ok(());
        }
        let mut socket = Counted::new(&mut self.stream, &mut self.wire);
        match &mut self.tls {
            None => self.tx.flush(&mut socket),
            Some(tls) => tls.flush(&mut self.tx, &mut socket),
        }
    }

    /// Reads until the socket is drained, decoding after every read.
    ///
    /// A read that leaves buffer space free proves the socket was empty at
    /// that moment, and with edge-triggered polling any later byte brings a
    /// new event, so the loop stops there instead of paying one more
    /// syscall for the `WouldBlock`. When the peer's FIN came with the
    /// event, nothing can follow the bytes read: a short read is the end of
    /// stream, again without the read that would return 0. After an error
    /// reading goes on until the error shows. Under TLS the first shortcut
    /// holds of the socket read under rustls, once rustls holds no
    /// decrypted bytes that no event would announce (see `Tls::drained`);
    /// the second does not (a close_notify may be among the bytes).
    fn read_all<F>(
        &mut self,
        readiness: Readiness,
        rng: &mut Rng,
        handler: &mut F,
    ) -> Result<Status, ConnError>
    where
        F: FnMut(Event<'_>, &mut Outbox<'_>),
    {
        loop {
            let mut socket = Counted::new(&mut self.stream, &mut self.wire);
            let read = match &mut self.tls {
                None => self.rx.read_from(&mut socket),
                Some(tls) => {
                    self.rx.reserve(self.rx.data().len() + tls.wanted_room());
                    self.rx.read_from(&mut tls.reader(&mut socket))
                }
            };
            match read {
                Ok((0, _)) => return self.on_eof(),
                Ok((_, filled)) => {
                    self.process(rng, handler)?;
                    let drained = match &self.tls {
                        None => !filled,
                        Some(tls) => !filled && tls.drained(),
                    };
                    if drained && readiness.fin && self.tls.is_none() {
                        return self.on_eof();
                    }
                    if drained && !readiness.closed {
                        return Ok(Status::Alive);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Status::Alive),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::from_io(e)),
            }
        }
    }

    /// The server closed its side of TCP.
    fn on_eof(&mut self) -> Result<Status, ConnError> {
        match self.phase {
            Phase::CloseReceived => Ok(Status::Finished {
                code: self.server_close,
            }),
            // Plain TCP has no close frame: end of stream is the close.
            Phase::Open | Phase::CloseSent if self.plain_tcp => Ok(Status::Finished { code: None }),
            Phase::CloseSent => Err(ConnError::UnexpectedEof("after our close frame")),
            Phase::Open => Err(ConnError::UnexpectedEof("without a close frame")),
            Phase::Connecting(_) | Phase::Upgrading(_) => {
                Err(ConnError::UnexpectedEof("during the handshake"))
            }
        }
    }

    /// Decodes everything complete in the receive buffer.
    fn process<F>(&mut self, rng: &mut Rng, handler: &mut F) -> Result<(), ConnError>
    where
        F: FnMut(Event<'_>, &mut Outbox<'_>),
    {
        if let Phase::Upgrading(handshake) = &self.phase {
            match handshake.parse_response(self.rx.data()) {
                Ok(None) => return Ok(()),
                Ok(Some(head_len)) => {
                    self.rx.consume(head_len);
                    self.phase = Phase::Open;
                    self.emit(rng, handler, Event::Opened);
                }
                Err(failure) => return Err(ConnError::Handshake(failure)),
            }
        }
        if self.plain_tcp {
            let mut close = None;
            handler(
                Event::Bytes(self.rx.data()),
                &mut self.tx.outbox(rng, true, &mut close),
            );
            let len = self.rx.data().len();
            self.rx.consume(len);
            if let Some(code) = close {
                self.start_close(rng, code);
            }
            return Ok(());
        }
        self.process_frames(rng, handler)
    }

    /// The frame loop: data messages go to the handler, pings are answered,
    /// a close frame is answered with ours.
    fn process_frames<F>(&mut self, rng: &mut Rng, handler: &mut F) -> Result<(), ConnError>
    where
        F: FnMut(Event<'_>, &mut Outbox<'_>),
    {
        let mut close = None;
        loop {
            let decoded = self
                .frames
                .decode(self.rx.data())
                .map_err(ConnError::Protocol)?;
            let (consumed, frame) = match decoded {
                Decoded::Incomplete { needed } => {
                    self.rx.reserve(needed);
                    break;
                }
                Decoded::Frame { consumed, frame } => (consumed, frame),
            };
            let mut outbox = self.tx.outbox(rng, false, &mut close);
            match frame {
                None => {}
                Some(Frame::Message { binary, data }) => {
                    handler(Event::Message { binary, data }, &mut outbox)
                }
                Some(Frame::Ping(payload)) => {
                    outbox.pong(payload);
                    handler(Event::Ping, &mut outbox);
                }
                Some(Frame::Pong) => {}
                Some(Frame::Close(code)) => {
                    // Section 5.5.1: answer with a close frame, echoing the
                    // code, unless ours already went out.
                    if let Phase::Open = self.phase {
                        outbox.close_reply(code);
                    }
                    self.phase = Phase::CloseReceived;
                    self.server_close = code;
                }
            }
            self.rx.consume(consumed);
        }
        if let Some(code) = close {
            self.start_close(rng, code);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
