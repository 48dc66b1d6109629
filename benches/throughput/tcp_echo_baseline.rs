//! The baseline: a minimal single-threaded mio TCP server.
//!
//! Its echo port does what wschat's `/echo` does minus WebSocket (no
//! handshake, no framing, no masking, no UTF-8 check) on the same reactor
//! design: one `Poll`, edge-triggered, read until `WouldBlock`, write back
//! what was read. Its hang-up port accepts and closes at once: the floor
//! of a connection's life, closed server-first like a WebSocket (so the
//! server, not the load generator, keeps the TIME_WAIT). The ratio
//! wschat / baseline is then the price of the protocol and of wschat's own
//! bookkeeping, with the kernel's share divided out.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

/// Token of the echo listener (connections use their slab index).
const ECHO: Token = Token(usize::MAX);

/// Token of the hang-up listener.
const HANGUP: Token = Token(usize::MAX - 1);

/// Bytes read per `read` call.
const CHUNK: usize = 64 * 1024;

/// One client: its socket and the echo bytes not yet written back.
struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    written: usize,
    /// The client shut down its side: close once `pending` is written.
    eof: bool,
}

impl Client {
    /// Writes pending bytes until done or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.pending.len() {
            match self.stream.write(&self.pending[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pending.clear();
        self.written = 0;
        Ok(())
    }

    /// Reads and echoes until `WouldBlock`, or until writing backs up
    /// (then the next writable event resumes: backpressure, as in wschat).
    /// `Ok(false)` means the connection is finished.
    fn on_ready(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.flush()?;
        while !self.eof && self.pending.is_empty() {
            match self.stream.read(buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    self.flush()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(!(self.eof && self.pending.is_empty()))
    }
}

/// A non-blocking listener with the backlog wschat uses (1024; mio's
/// `bind` asks for 128), so a burst of connects meets the same queue.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Serves forever (the process is ended by a signal): echo on one port of
/// `ip`, hang-up on another; `on_listening` gets both addresses.
pub fn serve(ip: IpAddr, on_listening: impl FnOnce(SocketAddr, SocketAddr)) -> io::Result<()> {
    let mut listener = bind(SocketAddr::new(ip, 0))?;
    let mut hangup = bind(SocketAddr::new(ip, 0))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, ECHO, Interest::READABLE)?;
    poll.registry()
        .register(&mut hangup, HANGUP, Interest::READABLE)?;
    on_listening(listener.local_addr()?, hangup.local_addr()?);
    let mut events = Events::with_capacity(1024);
    let mut clients: Slab<Client> = Slab::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == HANGUP {
                // Dropping the accepted socket closes it: FIN from our side first.
                while let Ok((stream, _)) = hangup.accept() {
                    drop(stream);
                }
                continue;
            }
            if event.token() == ECHO {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nodelay(true)?;
                            let entry = clients.vacant_entry();
                            poll.registry().register(
                                &mut stream,
                                Token(entry.key()),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            entry.insert(Client {
                                stream,
                                pending: Vec::new(),
                                written: 0,
                                eof: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // Out of fds or a connection reset before accept:
                        // drop this one, keep serving.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(client) = clients.get_mut(key) else {
                continue;
            };
            if !client.on_ready(&mut buf).unwrap_or(false) {
                let mut client = clients.remove(key);
                let _ = poll.registry().deregister(&mut client.stream);
            }
        }
    }
}
