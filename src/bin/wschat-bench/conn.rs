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
/// created non-blocking (`SOCK_NONBLOCK`, no extra syscall), bound (with
/// `SO_REUSEADDR`, so ports of closed connections in TIME_WAIT can be taken
/// again), connected, then handed to mio. `TCP_NODELAY` is set since every
/// write here is a complete batch.
pub fn open_socket(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
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

    /// One `read` into the free space: the bytes read (`0` is end of
    /// stream) and whether they filled all of it (more may be waiting).
    fn read_from(&mut self, r: &mut impl Read) -> io::Result<(usize, bool)> {
        self.reserve(0);
        let free = self.buf.len() - self.end;
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        if n == free && self.buf.len() < MAX_RECV_STEP {
            // The read filled the buffer: more is likely waiting, read bigger.
            let doubled = (self.buf.len() * 2).min(MAX_RECV_STEP);
            self.buf.resize(doubled, 0);
        }
        Ok((n, n == free))
    }
}

/// What a readiness event says about the socket's receive side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// New bytes may have arrived.
    pub readable: bool,
    /// The send buffer has room (for a connecting socket: it connected).
    pub writable: bool,
    /// The peer closed its side, or the socket has an error: read to the
    /// end whatever else the event says.
    pub closed: bool,
    /// The peer's FIN is in and nothing went wrong: once a read leaves
    /// buffer space free, the end of stream is next.
    pub fin: bool,
}

impl Readiness {
    /// The receive-side facts of one mio event.
    pub fn of(event: &mio::event::Event) -> Readiness {
        Readiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            closed: event.is_read_closed() || event.is_error(),
            fin: event.is_read_closed() && !event.is_error(),
        }
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
    /// Queues one message whose payload is `parts` joined: a masked text
    /// or binary frame, or on plain TCP just the bytes.
    pub fn message(&mut self, binary: bool, parts: &[&[u8]]) {
        if self.plain_tcp {
            for part in parts {
                self.tx.extend_from_slice(part);
            }
        } else {
            let opcode = if binary { OpCode::Binary } else { OpCode::Text };
            write_frame(self.tx, self.rng, opcode, parts);
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
    fn finish_connect(&mut self, readiness: Readiness) -> Result<bool, ConnError> {
        // epoll reports a connecting socket writable only once it has
        // connected, and failure as an error: a clean writable event needs
        // no check. Anything else gets mio's recipe (`SO_ERROR`, then
        // `getpeername` to tell "not yet" from "connected"), two syscalls
        // a connect-rate scenario would otherwise pay per connection.
        if !readiness.writable || readiness.closed {
            if let Some(e) = self.stream.take_error().map_err(ConnError::Connect)? {
                return Err(ConnError::Connect(e));
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(ConnError::Connect(e)),
            }
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

    /// Queues our close (or marks the TCP shutdown) once, from the open
    /// phase only: a second close, or one during the handshake, is a no-op.
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

    /// Reads until the socket is drained, decoding after every read.
    ///
    /// A read that leaves buffer space free proves the socket was empty at
    /// that moment, and with edge-triggered polling any later byte brings a
    /// new event, so the loop stops there instead of paying one more
    /// syscall for the `WouldBlock`. When the peer's FIN came with the
    /// event, nothing can follow the bytes read: a short read is the end of
    /// stream, again without the read that would return 0. After an error
    /// reading goes on until the error shows.
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
            match self.rx.read_from(&mut self.stream) {
                Ok((0, _)) => return self.on_eof(),
                Ok((_, filled)) => {
                    self.process(rng, handler)?;
                    if !filled && readiness.fin {
                        return self.on_eof();
                    }
                    if !filled && !readiness.closed {
                        return Ok(Status::Alive);
                    }
                }
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
                    write_frame(outbox.tx, outbox.rng, OpCode::Pong, &[payload]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use std::time::{Duration, Instant};

    use mio::{Events, Interest, Poll, Token};
    use wschat::protocol::frame::{decode_header, encode_frame};
    use wschat::protocol::handshake::accept_key;
    use wschat::protocol::mask::apply_mask;

    /// Reads one client frame from a blocking socket: checks it is masked
    /// and returns the opcode and the unmasked payload.
    fn read_client_frame(s: &mut std::net::TcpStream) -> (OpCode, Vec<u8>) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        let (header, n) = loop {
            if let Some(found) = decode_header(&buf).unwrap() {
                break found;
            }
            s.read_exact(&mut byte).unwrap();
            buf.push(byte[0]);
        };
        assert_eq!(n, buf.len());
        let mask = header.mask.expect("client frames are masked");
        let mut payload = vec![0u8; header.payload_len as usize];
        s.read_exact(&mut payload).unwrap();
        apply_mask(&mut payload, mask, 0);
        (header.opcode, payload)
    }

    /// A scripted server: 101 with the first fragment in the same write,
    /// a ping between fragments, then a close with 1001.
    fn scripted_server(listener: TcpListener) -> Vec<(OpCode, Vec<u8>)> {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let text = String::from_utf8(head).unwrap();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key.as_bytes())
        )
        .into_bytes();
        encode_frame(false, OpCode::Text, false, &[b"hello "], &mut out);
        s.write_all(&out).unwrap();
        out.clear();
        encode_frame(true, OpCode::Ping, false, &[b"p1"], &mut out);
        encode_frame(true, OpCode::Continuation, false, &[b"world"], &mut out);
        // Split mid-frame across two writes.
        s.write_all(&out[..5]).unwrap();
        thread::sleep(Duration::from_millis(20));
        s.write_all(&out[5..]).unwrap();
        let mut seen = vec![read_client_frame(&mut s)];
        out.clear();
        encode_frame(
            true,
            OpCode::Close,
            false,
            &[&1001u16.to_be_bytes()],
            &mut out,
        );
        s.write_all(&out).unwrap();
        seen.push(read_client_frame(&mut s));
        seen
    }

    /// A poll with `conn` registered for reading and writing.
    fn poll_for(conn: &mut Conn) -> (Poll, Events) {
        let poll = Poll::new().unwrap();
        poll.registry()
            .register(
                conn.stream(),
                Token(0),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        (poll, Events::with_capacity(8))
    }

    #[test]
    fn fragments_pings_and_close_against_a_scripted_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || scripted_server(listener));
        let target = Target::parse(&format!("ws://{addr}/echo")).unwrap();
        let mut rng = Rng::with_seed(11);
        let mut conn = Conn::connect(&target, false, None, &mut rng).unwrap();
        let (mut poll, mut events) = poll_for(&mut conn);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            assert!(Instant::now() < deadline, "timed out; saw {seen:?}");
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            let Some(event) = events.iter().next() else {
                continue;
            };
            let status = conn
                .on_ready(Readiness::of(event), &mut rng, |e, _| {
                    seen.push(match e {
                        Event::Opened => "opened".to_string(),
                        Event::Message { binary, data } => {
                            format!("{binary}:{}", String::from_utf8_lossy(data))
                        }
                        Event::Bytes(_) => "bytes".to_string(),
                        Event::Ping => "ping".to_string(),
                    })
                })
                .unwrap();
            if status != Status::Alive {
                break status;
            }
        };
        assert_eq!(status, Status::Finished { code: Some(1001) });
        assert_eq!(seen, ["opened", "ping", "false:hello world"]);
        let answers = server.join().unwrap();
        assert_eq!(answers[0], (OpCode::Pong, b"p1".to_vec()));
        assert_eq!(answers[1], (OpCode::Close, 1001u16.to_be_bytes().to_vec()));
    }

    #[test]
    fn refused_connect_is_a_connect_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = Target::parse(&format!("ws://127.0.0.1:{port}/")).unwrap();
        let mut rng = Rng::with_seed(12);
        let mut conn = Conn::connect(&target, false, None, &mut rng).unwrap();
        let (mut poll, mut events) = poll_for(&mut conn);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        let event = events.iter().next().expect("an event");
        let result = conn.on_ready(Readiness::of(event), &mut rng, |_, _| {});
        assert!(matches!(result, Err(ConnError::Connect(_))), "{result:?}");
    }

    #[test]
    fn receive_buffer_grows_for_a_large_frame_and_compacts() {
        let mut rx = RecvBuf::new();
        let mut src: &[u8] = &[1u8; 100];
        assert_eq!(rx.read_from(&mut src).unwrap(), (100, false));
        rx.consume(60);
        rx.reserve(100_000);
        assert_eq!(rx.data(), &[1u8; 40][..]);
        assert!(rx.buf.len() >= 100_000);
        rx.consume(40);
        assert!(rx.data().is_empty());
    }
}
