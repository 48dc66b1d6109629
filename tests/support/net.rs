//! Sockets: blocking connections with bounded waits, from another loopback
//! address or with a small receive buffer, resets, and reading to EOF.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::IO_TIMEOUT;

/// Why a bounded read gave up.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing (or not enough) arrived within the allowed time.
    Timeout,
    /// The peer closed the TCP connection (read returned 0).
    Eof,
    /// Another I/O error (for example a connection reset).
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Timeout => write!(f, "timed out"),
            ReadError::Eof => write!(f, "EOF"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// `TCP_NODELAY` (a test's small writes go out at once) and both timeouts
/// at [`IO_TIMEOUT`], so a blocking call never hangs a test.
fn configured(stream: TcpStream) -> TcpStream {
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Connects with `TCP_NODELAY` and both timeouts set to [`IO_TIMEOUT`].
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    configured(stream)
}

/// Connects `socket`, set up as the caller needs it before the handshake.
fn connect_socket(socket: Socket, addr: SocketAddr) -> TcpStream {
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    configured(socket.into())
}

/// Connects from the loopback address `source` (any `127.x.y.z` works on
/// Linux), so a test can look like several client addresses.
pub fn tcp_connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    connect_socket(socket, addr)
}

/// Connects with a small receive buffer (set before the handshake, so the
/// advertised window stays small): a client that does not read then stops
/// the server's writes after a few KiB instead of megabytes.
pub fn tcp_connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    connect_socket(socket, addr)
}

/// Closes `stream` with a reset (RST) instead of FIN: `SO_LINGER` 0, drop.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// Reads `stream` until EOF, at most `limit`. A reset after some bytes ends
/// the read like EOF does: a server that closes with unread input resets,
/// and what it sent before still counts.
pub fn read_to_eof(stream: &mut TcpStream, limit: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no EOF within {limit:?}; got {:?}",
                    String::from_utf8_lossy(&out)
                ),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !out.is_empty() => {
                return Ok(out)
            }
            // The deadline check above reports it.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// A port free right now on 127.0.0.1, for a process that must come back
/// on the same port (or be started before what it connects to).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
