//! TLS under a connection: rustls's `ClientConnection` driven by hand, as
//! the server drives its side.
//!
//! Input: TLS bytes go from the socket into rustls (`read_tls`), are
//! processed (`process_new_packets`), and plaintext comes out of its
//! reader into the connection's receive buffer. Output: the send queue's
//! plaintext goes into its writer and the records leave with `write_tls`
//! (vectored). Handshake messages are sent as soon as they exist; the
//! upgrade request, queued before the handshake ends, waits in rustls
//! and leaves right behind the client's Finished.
//!
//! The plain path never comes here: a `ws://` connection has no `Tls`.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use rustls::{ClientConfig, ClientConnection};

use super::send::SendBuf;
use super::ConnError;

/// The rustls side of one `wss://` connection (boxed: its state is large,
/// and plain connections do not pay for it).
#[derive(Debug)]
pub struct Tls(Box<ClientConnection>);

/// How the TLS handshake went, once it is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Certificate, key exchange and signature: the whole price.
    Full,
    /// A session ticket of an earlier connection was accepted.
    Resumed,
}

impl Tls {
    /// A client connection to `name`; its ClientHello is queued at once.
    pub fn start(config: &Arc<ClientConfig>, name: ServerName<'static>) -> Result<Tls, ConnError> {
        ClientConnection::new(config.clone(), name)
            .map(|c| Tls(Box::new(c)))
            .map_err(ConnError::Tls)
    }

    /// The handshake's kind, once it has completed.
    pub fn handshake(&self) -> Option<Handshake> {
        match self.0.handshake_kind()? {
            _ if self.0.is_handshaking() => None,
            HandshakeKind::Resumed => Some(Handshake::Resumed),
            HandshakeKind::Full | HandshakeKind::FullWithHelloRetryRequest => Some(Handshake::Full),
        }
    }

    /// What was negotiated, once the handshake is over: the version, the
    /// cipher suite and the key exchange, e.g. `TLSv1_3
    /// TLS13_AES_128_GCM_SHA256 X25519`.
    pub fn describe(&self) -> Option<String> {
        let c = &self.0;
        if c.is_handshaking() {
            return None;
        }
        Some(format!(
            "{:?} {:?} {:?}",
            c.protocol_version()?,
            c.negotiated_cipher_suite()?.suite(),
            c.negotiated_key_exchange_group()?.name()
        ))
    }

    /// A `Read` of plaintext over `tcp`, for the receive buffer.
    pub fn reader<'a, S: Read + Write>(&'a mut self, tcp: &'a mut S) -> Plaintext<'a, S> {
        Plaintext {
            tls: &mut self.0,
            tcp,
        }
    }

    /// Moves the queue's bytes into rustls and its records to the socket,
    /// until both are empty or the socket would block.
    pub fn flush(&mut self, tx: &mut SendBuf, tcp: &mut impl Write) -> Result<(), ConnError> {
        loop {
            let moved = match tx.unsent() {
                [] => 0,
                bytes => self.0.writer().write(bytes).map_err(ConnError::Io)?,
            };
            tx.advance(moved);
            if !send_records(&mut self.0, tcp).map_err(ConnError::Io)? {
                return Ok(()); // the writable event resumes
            }
            if tx.unsent().is_empty() {
                tx.clear();
                return Ok(());
            }
            if moved == 0 {
                // Still handshaking and rustls's plaintext buffer is full:
                // the rest follows once the handshake is done.
                return Ok(());
            }
        }
    }
}

/// Writes rustls's pending records; `false` if the socket would block.
fn send_records(tls: &mut ClientConnection, tcp: &mut impl Write) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Plaintext read through rustls from the socket.
///
/// A `read` returns plaintext rustls already holds, else reads TLS bytes
/// from the socket and processes them until there is some; `Ok(0)` is the
/// end (close_notify, or TCP closed without one), `WouldBlock` that the
/// socket is drained. rustls may hold decrypted bytes no readiness event
/// announces, so a caller reads until one of those two. A TLS failure is
/// an `InvalidData` error wrapping the `rustls::Error` (see
/// [`ConnError::from_io`]), after the alert that names it was sent.
#[derive(Debug)]
pub struct Plaintext<'a, S> {
    tls: &'a mut ClientConnection,
    tcp: &'a mut S,
}

impl<S: Read + Write> Read for Plaintext<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.tls.read_tls(self.tcp)? == 0 {
                return Ok(0);
            }
            if let Err(err) = self.tls.process_new_packets() {
                let _ = send_records(self.tls, self.tcp);
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
            // The handshake's next flight (and the plaintext queued behind
            // it) goes out now; if the socket is full, the flush after the
            // reads resumes it.
            send_records(self.tls, self.tcp)?;
        }
    }
}
