//! The TCP socket under a connection: how it is opened, and what mio's
//! readiness events say about it.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

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

/// Whether a connecting socket has connected, by what `readiness` says.
///
/// epoll reports a connecting socket writable only once it has connected,
/// and failure as an error: a clean writable event needs no check.
/// Anything else gets mio's recipe (`SO_ERROR`, then `getpeername` to tell
/// "not yet" from "connected"), two syscalls a connect-rate scenario would
/// otherwise pay per connection.
pub fn connect_done(stream: &TcpStream, readiness: Readiness) -> io::Result<bool> {
    if !readiness.writable || readiness.closed {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
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

/// Bytes that crossed a socket, counted where the system calls return: a
/// request or response head, a frame header, a TLS record all count, as
/// they would on the wire (less TCP/IP headers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    /// Bytes read from the socket.
    pub read: u64,
    /// Bytes written to the socket.
    pub written: u64,
}

impl Wire {
    /// Both directions together.
    pub fn total(&self) -> u64 {
        self.read + self.written
    }

    /// Adds `other`'s counts (another connection's).
    pub fn add(&mut self, other: Wire) {
        self.read += other.read;
        self.written += other.written;
    }
}

/// A socket whose reads and writes are counted into a [`Wire`]: every
/// byte a connection moves goes through one, so no path (TLS records,
/// pongs, close frames, HTTP heads) escapes the count.
#[derive(Debug)]
pub struct Counted<'a> {
    stream: &'a mut TcpStream,
    wire: &'a mut Wire,
}

impl<'a> Counted<'a> {
    /// `stream`, counting into `wire`.
    pub fn new(stream: &'a mut TcpStream, wire: &'a mut Wire) -> Counted<'a> {
        Counted { stream, wire }
    }

    /// Shuts down writing (plain TCP's close).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.wire.read += n as u64;
        Ok(n)
    }
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.wire.written += n as u64;
        Ok(n)
    }

    // rustls writes its records vectored: forwarded, or they would go out
    // one `write` each.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.stream.write_vectored(bufs)?;
        self.wire.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
