//! What a connection's bytes travel over: plain TCP, or TLS over TCP.
//!
//! Every read, every write and every socket option of a client connection
//! goes through a [`Transport`], so that the connection above sees
//! plaintext either way and no other code writes around it.
//!
//! Under TLS, rustls is driven by hand: TLS bytes are read from the socket
//! into it and plaintext taken out; the write queue's plaintext goes into
//! it in as few calls as the queue's chunks allow (vectored), at most
//! `tls::TLS_BUFFER_LIMIT` at a time, and its records leave in vectored
//! writes. A flush is done only when rustls holds nothing more to send.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::server::UnbufferedServerConnection;

mod tls;
pub mod tls_connection;

use self::tls::TlsStream;
use super::proxy::{read_proxy_header, InvalidProxyHeader, ProxyHeader};
use super::write_queue::{BufferPool, ByteGauge, Flush, WriteQueue};

/// The result of one read.
#[derive(Debug)]
pub enum ReadResult {
    /// `n` bytes are in the buffer.
    Data(usize),
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
    /// The TLS peer broke the protocol (or failed the handshake); an alert
    /// was sent where possible and the connection is over.
    TlsFailed(rustls::Error),
    /// The PROXY protocol header came whole: the client's address (`None`
    /// when the proxy speaks for itself). The client's bytes follow.
    Proxied(Option<SocketAddr>),
    /// The first bytes are not a valid PROXY protocol header.
    ProxyRefused(InvalidProxyHeader),
}

/// A client connection's byte stream.
#[derive(Debug)]
pub struct Transport {
    stream: Stream,
    /// With `--proxy-protocol`, a trusted peer's first bytes must be a
    /// PROXY header, read below everything else (below TLS, too).
    gate: Option<Box<ProxyGate>>,
}

/// Plain TCP, or TLS over it.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    /// Boxed: rustls's state is large, and plain connections should not
    /// pay for it.
    Tls(Box<TlsStream>),
}

/// The bytes of a connection before and just after its PROXY header.
#[derive(Debug, Default)]
struct ProxyGate {
    /// Received so far, while the header is incomplete.
    held: Vec<u8>,
    /// The header came: what followed it waits in `held` to be taken.
    passed: bool,
    /// The header was refused: whatever follows is read and dropped (the
    /// refusal is answered once, and the connection is ending).
    refused: bool,
}

impl Transport {
    /// A freshly accepted TCP socket, set up for this server: no Nagle
    /// delay, and (on Linux) delayed ACKs, so that the ACK of a request
    /// rides on its answer instead of going out as a packet of its own.
    pub fn tcp(stream: TcpStream) -> Transport {
        Transport {
            stream: Stream::Tcp(tuned(stream)),
            gate: None,
        }
    }

    /// A TCP socket used as it is, for a last word before it is dropped.
    pub fn raw(stream: TcpStream) -> Transport {
        Transport {
            stream: Stream::Tcp(stream),
            gate: None,
        }
    }

    /// A freshly accepted TCP socket under TLS.
    pub fn tls(stream: TcpStream, tls: UnbufferedServerConnection) -> Transport {
        Transport {
            stream: Stream::Tls(Box::new(TlsStream::new(tuned(stream), tls))),
            gate: None,
        }
    }

    /// The same transport, expecting a PROXY protocol header first.
    pub fn behind_proxy_protocol(mut self) -> Transport {
        self.gate = Some(Box::default());
        self
    }

    /// Counts the bytes the transport holds for the peer (encrypted
    /// records under TLS) into `gauge`, beside the write queues'.
    pub fn count_into(&mut self, gauge: &ByteGauge) {
        if let Stream::Tls(t) = &mut self.stream {
            t.count_into(gauge.clone());
        }
    }

    /// Bytes the transport holds for the peer, not yet written.
    pub fn pending_bytes(&self) -> usize {
        match &self.stream {
            Stream::Tcp(_) => 0,
            Stream::Tls(t) => t.pending_bytes(),
        }
    }

    /// Whether the bytes travel under TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    fn socket(&self) -> &TcpStream {
        match &self.stream {
            Stream::Tcp(stream) => stream,
            Stream::Tls(t) => t.socket(),
        }
    }

    fn socket_mut(&mut self) -> &mut TcpStream {
        match &mut self.stream {
            Stream::Tcp(stream) => stream,
            Stream::Tls(t) => t.socket_mut(),
        }
    }

    /// Registers the socket for both directions, once: mio is
    /// edge-triggered, so writes are tried at once and the writable event
    /// only resumes one that blocked.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            self.socket_mut(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Removes the socket from the poller (before it is dropped).
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(self.socket_mut());
    }

    /// Whether the TLS handshake has completed and was not reported yet
    /// (`true` once per TLS connection), for counting handshakes.
    pub fn take_handshake_done(&mut self) -> bool {
        match &mut self.stream {
            Stream::Tls(t) => t.take_handshake_done(),
            Stream::Tcp(_) => false,
        }
    }

    /// Whether a TLS handshake was completed (and reported).
    pub fn tls_established(&self) -> bool {
        matches!(&self.stream, Stream::Tls(t) if t.established())
    }

    /// Reads once into `buf` (plaintext, under TLS), retrying on `EINTR`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<ReadResult> {
        if self.gate.is_some() {
            if let Some(result) = self.read_through_gate(buf)? {
                return Ok(result);
            }
        }
        match &mut self.stream {
            Stream::Tcp(stream) => read_socket(stream, buf),
            Stream::Tls(t) => t.read(buf),
        }
    }

    /// Reads the PROXY header, then hands what followed it on: `None`
    /// once the gate is gone and reading goes on as usual.
    fn read_through_gate(&mut self, buf: &mut [u8]) -> io::Result<Option<ReadResult>> {
        let Some(gate) = self.gate.as_mut() else {
            return Ok(None);
        };
        if gate.passed {
            let rest = std::mem::take(&mut gate.held);
            match &mut self.stream {
                Stream::Tcp(_) => {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    gate.held = rest[n..].to_vec();
                    if gate.held.is_empty() {
                        self.gate = None;
                    }
                    return Ok(Some(ReadResult::Data(n)));
                }
                Stream::Tls(t) => {
                    self.gate = None;
                    if let Err(err) = t.feed(&rest) {
                        return Ok(Some(ReadResult::TlsFailed(err)));
                    }
                    return Ok(None);
                }
            }
        }
        loop {
            let n = match read_socket(self.socket_mut(), buf)? {
                ReadResult::Data(n) => n,
                other => return Ok(Some(other)),
            };
            let Some(gate) = self.gate.as_mut() else {
                return Ok(None);
            };
            if gate.refused {
                continue;
            }
            gate.held.extend_from_slice(&buf[..n]);
            match read_proxy_header(&gate.held) {
                ProxyHeader::Partial => continue,
                ProxyHeader::Invalid(why) => {
                    gate.refused = true;
                    gate.held = Vec::new();
                    return Ok(Some(ReadResult::ProxyRefused(why)));
                }
                ProxyHeader::Complete { source, consumed } => {
                    gate.held.drain(..consumed);
                    gate.passed = true;
                    if gate.held.is_empty() {
                        self.gate = None;
                    }
                    return Ok(Some(ReadResult::Proxied(source)));
                }
            }
        }
    }

    /// Whether a read of `n` bytes into a buffer of `capacity` emptied the
    /// transport. For TCP, a read that did not fill the buffer took all the
    /// socket had, and bytes (or a FIN) arriving later raise a new edge
    /// (epoll and kqueue alike), so the `WouldBlock` read that would follow
    /// is a system call saved per wakeup. Under TLS the same holds of the
    /// socket read under it, once rustls holds no plaintext that no
    /// readiness event would announce.
    pub fn drained_by(&self, n: usize, capacity: usize) -> bool {
        match &self.stream {
            Stream::Tcp(_) => n < capacity && self.gate.is_none(),
            Stream::Tls(t) => t.drained() && self.gate.is_none(),
        }
    }

    /// Writes `queue` until it is empty or the socket would block.
    pub fn write_queue(
        &mut self,
        queue: &mut WriteQueue,
        pool: &mut BufferPool,
    ) -> io::Result<Flush> {
        match &mut self.stream {
            Stream::Tcp(stream) => queue.write_to_pooled(stream, pool),
            Stream::Tls(t) => t.write_queue(queue, pool),
        }
    }

    /// Writes what fits of `bytes` now, outside any queue: a last answer to
    /// a connection that is dropped right after (a refusal at accept, a
    /// timeout), which gets no more of the server's time. Under TLS the
    /// bytes go out only once the handshake is done.
    pub fn write_once(&mut self, bytes: &[u8]) {
        match &mut self.stream {
            Stream::Tcp(stream) => {
                let _ = stream.write(bytes);
            }
            Stream::Tls(t) => t.write_once(bytes),
        }
    }

    /// Sends at once the ACK the kernel holds back (see [`Transport::tcp`]).
    /// A client that writes its request in pieces with Nagle's algorithm on
    /// waits for that ACK before it sends the next piece: with no answer to
    /// ride on yet, a delayed ACK would cost it 40 ms per piece.
    pub fn ack_now(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(self.socket()).set_tcp_quickack(true);
    }

    /// Holds back partial segments until [`Transport::shutdown_write`]: the
    /// final bytes then leave in one segment with the FIN, one packet and
    /// one wakeup fewer for the peer.
    pub fn hold_for_fin(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(self.socket()).set_tcp_cork(true);
    }

    /// Sends FIN after the bytes written so far (under TLS, after a
    /// `close_notify` alert, so the peer can tell an end from a cut).
    pub fn shutdown_write(&mut self) {
        if let Stream::Tls(t) = &mut self.stream {
            t.close_notify();
        }
        // The peer may be gone already; the socket is closed either way.
        let _ = self.socket_mut().shutdown(Shutdown::Write);
    }
}

/// Reads a TCP socket once, retrying on `EINTR`.
pub(crate) fn read_socket(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<ReadResult> {
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

/// `stream` with Nagle's delay off and (on Linux) delayed ACKs on.
fn tuned(stream: TcpStream) -> TcpStream {
    let _ = stream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(&stream).set_tcp_quickack(false);
    stream
}
