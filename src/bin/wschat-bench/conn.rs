//! One client connection: a non-blocking socket, its buffers and its phase.
//!
//! `Conn` turns mio readiness into [`Event`]s for a scenario and collects
//! what the scenario sends in an [`Outbox`], which is written with one
//! `write` per readiness event: a scenario that answers 16 echoes at once
//! puts 16 frames in one syscall. Pings are answered here, so no scenario
//! can forget to; everything else (what to send, what to measure) is the
//! scenario's business.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use wschat::protocol::frame::OpCode;

use crate::codec::{
    write_close, write_frame, ClientHandshake, Decoded, Frame, FrameReader, HandshakeFailure,
    Violation,
};
use crate::rng::Rng;
use crate::target::Target;

/// Largest message the client accepts from a server.
const MAX_MESSAGE: usize = 64 << 20;

/// Receive buffer to start with: enough for a handshake and small frames,
/// and small enough that 20000 idle connections stay cheap.
const INITIAL_RECV: usize = 8 * 1024;

/// A full read doubles the buffer up to this, so a busy connection drains
/// its socket in few syscalls.
const MAX_RECV_STEP: usize = 256 * 1024;

/// Linux's `EINPROGRESS`: a non-blocking connect has started.
const EINPROGRESS: i32 = 115;

/// Opens a non-blocking TCP connection to `addr`, from `source` if given.
///
/// std cannot bind before connecting, so the socket is made with socket2:
/// created non-blocking, bound (with `SO_REUSEADDR`, so ports of closed
/// connections in TIME_WAIT can be taken again), connected, then handed to
/// mio. `TCP_NODELAY` is set since every write here is a complete batch.
pub fn open_socket(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        socket.set_reuse_address(true)?;
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Received bytes not yet decoded, in one growable buffer.
///
/// Bytes live in `buf[start..end]`; the space after `end` is read into
/// directly, and consumed bytes are only moved when room runs out.
#[derive(Debug)]
pub struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    /// An empty buffer of [`INITIAL_RECV`] bytes.
    fn new() -> RecvBuf {
        RecvBuf {
            buf: vec![0; INITIAL_RECV],
            start: 0,
            end: 0,
        }
    }

    /// The bytes received and not yet consumed.
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops `n` bytes from the front.
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for at least `total` unconsumed bytes and one more read.
    fn reserve(&mut self, total: usize) {
        if self.start > 0 && (self.end == self.buf.len() || self.start + total > self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let wanted = total.max(self.end + 1);
        if wanted > self.buf.len() {
            let grown = wanted
                .max(self.buf.len() * 2)
                .min(wanted.max(MAX_RECV_STEP));
            self.buf.resize(grown, 0);
        }
    }

    /// One `read` into the free space; `Ok(0)` is end of stream.
    fn read_from(&mut self, r: &mut impl Read) -> io::Result<usize> {
        self.reserve(0);
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        if self.end == self.buf.len() && self.buf.len() < MAX_RECV_STEP {
            // The read filled the buffer: more is likely waiting, read bigger.
            let doubled = (self.buf.len() * 2).min(MAX_RECV_STEP);
            self.buf.resize(doubled, 0);
        }
        Ok(n)
    }
}

/// Why a connection failed. Its `Display` text is the key errors are
/// counted under, so it names the cause without per-connection details.
#[derive(Debug)]
pub enum ConnError {
    /// Creating the socket or the TCP connect failed.
    Connect(io::Error),
    /// A read or write failed after connecting (e.g. reset by the server).
    Io(io::Error),
    /// The server's answer to the upgrade was not a valid 101.
    Handshake(HandshakeFailure),
    /// The server broke RFC 6455 after the upgrade.
    Protocol(Violation),
    /// The server closed TCP without a close handshake (1006).
    UnexpectedEof(&'static str),
    /// The scenario gave up waiting (handshake or close).
    Timeout(&'static str),
    /// The server closed the connection (with this close code, if it sent
    /// one) while the scenario still needed it.
    Closed(Option<u16>),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Connect(e) => write!(f, "connect: {}", io_kind(e)),
            ConnError::Io(e) => write!(f, "io: {}", io_kind(e)),
            ConnError::Handshake(h) => h.fmt(f),
            ConnError::Protocol(v) => v.fmt(f),
            ConnError::UnexpectedEof(when) => write!(f, "eof {when}"),
            ConnError::Timeout(what) => write!(f, "timeout: {what}"),
            ConnError::Closed(Some(code)) => write!(f, "closed by server: {code}"),
            ConnError::Closed(None) => f.write_str("closed by server"),
        }
    }
}

/// An io error without its OS error number, so equal causes count together.
fn io_kind(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

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

/// Where a scenario queues what it sends; written out in one batch.
#[derive(Debug)]
pub struct Outbox<'a> {
    tx: &'a mut Vec<u8>,
    rng: &'a mut Rng,
    plain_tcp: bool,
    close: &'a mut Option<u16>,
}

impl Outbox<'_> {
    /// Queues one message of `len` bytes written by `fill`: a masked
    /// text or binary frame, or on plain TCP just the bytes.
    pub fn message(&mut self, binary: bool, len: usize, fill: impl FnOnce(&mut [u8])) {
        if self.plain_tcp {
            let start = self.tx.len();
            self.tx.resize(start + len, 0);
            fill(&mut self.tx[start..]);
        } else {
            let opcode = if binary { OpCode::Binary } else { OpCode::Text };
            write_frame(self.tx, self.rng, opcode, len, fill);
        }
    }

    /// Starts the closing handshake with `code` after what is queued
    /// (on plain TCP: shuts down writing once the queue is flushed).
    pub fn close(&mut self, code: u16) {
        *self.close = Some(code);
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    phase: Phase,
    plain_tcp: bool,
    rx: RecvBuf,
    tx: Vec<u8>,
    /// Bytes of `tx` already written.
    tx_pos: usize,
    /// Plain TCP: shut down writing as soon as `tx` is flushed.
    shutdown_pending: bool,
    frames: FrameReader,
    /// The close code the server sent, once its close frame arrived.
    server_close: Option<u16>,
}

impl Conn {
    /// Starts connecting to `target` (from `source`, if given) and queues
    /// the upgrade request, sent as soon as TCP is up. Register
    /// [`stream`](Conn::stream) for both readable and writable.
    pub fn connect(
        target: &Target,
        plain_tcp: bool,
        source: Option<IpAddr>,
        rng: &mut Rng,
    ) -> Result<Conn, ConnError> {
        let stream = open_socket(target.addr, source).map_err(ConnError::Connect)?;
        let mut tx = Vec::new();
        let handshake =
            (!plain_tcp).then(|| ClientHandshake::start(rng, &target.host, &target.path, &mut tx));
        Ok(Conn {
            stream,
            phase: Phase::Connecting(handshake),
            plain_tcp,
            rx: RecvBuf::new(),
            tx,
            tx_pos: 0,
            shutdown_pending: false,
            frames: FrameReader::new(MAX_MESSAGE),
            server_close: None,
        })
    }

    /// The socket, to register with mio.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Whether the upgrade (or TCP connect) is done and not yet closing.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Handles one readiness event: finishes the connect, flushes queued
    /// bytes, reads until the socket is drained, and hands every event to
    /// `handler`, whose sends go out in one write at the end.
    pub fn on_ready<F>(&mut self, rng: &mut Rng, mut handler: F) -> Result<Status, ConnError>
    where
        F: FnMut(Event<'_>, &mut Outbox<'_>),
    {
        if let Phase::Connecting(_) = self.phase {
            if !self.finish_connect()? {
                return Ok(Status::Alive);
            }
            if let Phase::Open = self.phase {
                self.emit(rng, &mut handler, Event::Opened);
            }
        }
        self.flush()?;
        let status = self.read_all(rng, &mut handler)?;
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
        let mut outbox = Outbox {
            tx: &mut self.tx,
            rng,
            plain_tcp: self.plain_tcp,
            close: &mut close,
        };
        fill(&mut outbox);
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
    fn finish_connect(&mut self) -> Result<bool, ConnError> {
        // mio's recipe: a writable event may also mean "connect failed",
        // and a spurious one means "not yet".
        if let Some(e) = self.stream.take_error().map_err(ConnError::Connect)? {
            return Err(ConnError::Connect(e));
        }
        match self.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(ConnError::Connect(e)),
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
        handler(
            event,
            &mut Outbox {
                tx: &mut self.tx,
                rng,
                plain_tcp: self.plain_tcp,
                close: &mut close,
            },
        );
        if let Some(code) = close {
            self.start_close(rng, code);
        }
    }

    fn start_close(&mut self, rng: &mut Rng, code: u16) {
        match self.phase {
            Phase::Open if self.plain_tcp => {
                self.shutdown_pending = true;
                self.phase = Phase::CloseSent;
            }
            Phase::Open => {
                write_close(&mut self.tx, rng, Some(code));
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
        while self.tx_pos < self.tx.len() {
            match self.stream.write(&self.tx[self.tx_pos..]) {
                Ok(0) => return Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.tx_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        self.tx.clear();
        self.tx_pos = 0;
        if self.shutdown_pending {
            self.shutdown_pending = false;
            match self.stream.shutdown(Shutdown::Write) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads until `WouldBlock`, decoding after every read.
    fn read_all<F>(&mut self, rng: &mut Rng, handler: &mut F) -> Result<Status, ConnError>
    where
        F: FnMut(Event<'_>, &mut Outbox<'_>),
    {
        loop {
            match self.rx.read_from(&mut self.stream) {
                Ok(0) => return self.on_eof(),
                Ok(_) => self.process(rng, handler)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Status::Alive),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
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
                &mut Outbox {
                    tx: &mut self.tx,
                    rng,
                    plain_tcp: true,
                    close: &mut close,
                },
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
            let mut outbox = Outbox {
                tx: &mut self.tx,
                rng,
                plain_tcp: false,
                close: &mut close,
            };
            match frame {
                None => {}
                Some(Frame::Message { binary, data }) => {
                    handler(Event::Message { binary, data }, &mut outbox)
                }
                Some(Frame::Ping(payload)) => {
                    write_frame(outbox.tx, outbox.rng, OpCode::Pong, payload.len(), |p| {
                        p.copy_from_slice(payload)
                    });
                    handler(Event::Ping, &mut outbox);
                }
                Some(Frame::Pong) => {}
                Some(Frame::Close(code)) => {
                    // Section 5.5.1: answer with a close frame, echoing the
                    // code, unless ours already went out.
                    if let Phase::Open = self.phase {
                        write_close(outbox.tx, outbox.rng, code);
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
