//! What a connection's bytes travel over: plain TCP today.
//!
//! Every read, every write and every socket option of a client connection
//! goes through a [`Transport`], so that a transport that transforms the
//! bytes (TLS) can take its place under the same connection without any
//! other code writing around it.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::write_queue::{BufferPool, Flush, WriteQueue};

/// The result of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadResult {
    /// `n` bytes are in the buffer.
    Data(usize),
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
}

/// A client connection's byte stream.
#[derive(Debug)]
pub enum Transport {
    /// A plain TCP socket.
    Tcp(TcpStream),
}

impl Transport {
    /// A freshly accepted TCP socket, set up for this server: no Nagle
    /// delay, and (on Linux) delayed ACKs, so that the ACK of a request
    /// rides on its answer instead of going out as a packet of its own.
    pub fn tcp(stream: TcpStream) -> Transport {
        let _ = stream.set_nodelay(true);
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&stream).set_tcp_quickack(false);
        Transport::Tcp(stream)
    }

    /// Registers the socket for both directions, once: mio is
    /// edge-triggered, so writes are tried at once and the writable event
    /// only resumes one that blocked.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let Transport::Tcp(stream) = self;
        registry.register(stream, token, Interest::READABLE | Interest::WRITABLE)
    }

    /// Removes the socket from the poller (before it is dropped).
    pub fn deregister(&mut self, registry: &Registry) {
        let Transport::Tcp(stream) = self;
        let _ = registry.deregister(stream);
    }

    /// Reads once into `buf`, retrying on `EINTR`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<ReadResult> {
        let Transport::Tcp(stream) = self;
        loop {
            return match stream.read(buf) {
                Ok(0) => Ok(ReadResult::Eof),
                Ok(n) => Ok(ReadResult::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadResult::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Whether a read of `n` bytes into a buffer of `capacity` emptied the
    /// transport. For TCP, a read that did not fill the buffer took all the
    /// socket had, and bytes (or a FIN) arriving later raise a new edge
    /// (epoll and kqueue alike), so the `WouldBlock` read that would follow
    /// is a system call saved per wakeup. A transport that keeps decoded
    /// bytes of its own (TLS) cannot rely on that.
    pub fn drained_by(&self, n: usize, capacity: usize) -> bool {
        match self {
            Transport::Tcp(_) => n < capacity,
        }
    }

    /// Writes `queue` until it is empty or the socket would block.
    pub fn write_queue(
        &mut self,
        queue: &mut WriteQueue,
        pool: &mut BufferPool,
    ) -> io::Result<Flush> {
        let Transport::Tcp(stream) = self;
        queue.write_to_pooled(stream, pool)
    }

    /// Writes what fits of `bytes` now, outside any queue: a last answer to
    /// a connection that is dropped right after (a refusal at accept, a
    /// timeout), which gets no more of the server's time.
    pub fn write_once(&mut self, bytes: &[u8]) {
        let Transport::Tcp(stream) = self;
        let _ = stream.write(bytes);
    }

    /// Sends at once the ACK the kernel holds back (see [`Transport::tcp`]).
    /// A client that writes its request in pieces with Nagle's algorithm on
    /// waits for that ACK before it sends the next piece: with no answer to
    /// ride on yet, a delayed ACK would cost it 40 ms per piece.
    pub fn ack_now(&self) {
        #[cfg(target_os = "linux")]
        {
            let Transport::Tcp(stream) = self;
            let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
        }
    }

    /// Holds back partial segments until [`Transport::shutdown_write`]: the
    /// final bytes then leave in one segment with the FIN, one packet and
    /// one wakeup fewer for the peer.
    pub fn hold_for_fin(&self) {
        #[cfg(target_os = "linux")]
        {
            let Transport::Tcp(stream) = self;
            let _ = socket2::SockRef::from(stream).set_tcp_cork(true);
        }
    }

    /// Sends FIN after the bytes written so far.
    pub fn shutdown_write(&mut self) {
        let Transport::Tcp(stream) = self;
        // The peer may be gone already; the socket is closed either way.
        let _ = stream.shutdown(Shutdown::Write);
    }
}
