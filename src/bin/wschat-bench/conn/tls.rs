//! TLS under a connection: rustls's unbuffered `ClientConnection`, driven
//! by the same record handling as the server's side
//! ([`TlsConnection`]).
//!
//! Input: TLS bytes are read into one buffer the thread's connections
//! share (it stays in the cache) and decrypted there, their plaintext
//! written straight into the connection's receive buffer; only a record
//! cut by the end of a read is kept aside until the next. Output: the send
//! queue's plaintext is sealed into records in one buffer the thread's
//! connections share, written at once, and only what the socket does not
//! take is kept. Handshake messages are sent as soon as they exist; the
//! upgrade request, queued before the handshake ends, waits in the send
//! queue and leaves right behind the client's Finished.
//!
//! The plain path never comes here: a `ws://` connection has no `Tls`.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use rustls::HandshakeKind;
use wschat::server::transport::tls_connection::{Received, TlsConnection, RECORD_PLAINTEXT};

use super::send::SendBuf;
use super::ConnError;

/// Plaintext sealed per write: five full records (four 16 KiB messages
/// with their frame headers leave in one write).
const SEAL_AT_ONCE: usize = 5 * RECORD_PLAINTEXT;

/// TLS bytes one socket read may bring: five full records and a cut one.
const SOCKET_READ: usize = 6 * RECORD_PLAINTEXT + 2048;

/// Room a busy connection's receive buffer keeps free for a read: the
/// plaintext of a whole socket read (a small room would split records
/// into many reads, and cut more of them, whose bytes are kept aside and
/// put back).
const BUSY_READ_ROOM: usize = SOCKET_READ;

thread_local! {
    /// Where every connection of the thread reads TLS bytes and decrypts
    /// them, so that they stay in the cache; only the plaintext goes to
    /// the connection's receive buffer.
    static CIPHERTEXT: RefCell<Vec<u8>> = RefCell::new(vec![0; SOCKET_READ]);
}

/// The rustls side of one `wss://` connection.
#[derive(Debug)]
pub struct Tls {
    /// Boxed: its state is large, and plain connections do not pay for it.
    conn: Box<TlsConnection<UnbufferedClientConnection>>,
    /// The last read brought plaintext and left more to read.
    busy: bool,
}

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
        let client =
            UnbufferedClientConnection::new(config.clone(), name).map_err(ConnError::Tls)?;
        let mut conn = Box::new(TlsConnection::new(client));
        conn.start().map_err(ConnError::Tls)?;
        Ok(Tls { conn, busy: false })
    }

    /// The handshake's kind, once it has completed.
    pub fn handshake(&self) -> Option<Handshake> {
        let c = self.conn.rustls();
        match c.handshake_kind()? {
            _ if c.is_handshaking() => None,
            HandshakeKind::Resumed => Some(Handshake::Resumed),
            HandshakeKind::Full | HandshakeKind::FullWithHelloRetryRequest => Some(Handshake::Full),
        }
    }

    /// What was negotiated, once the handshake is over: the version, the
    /// cipher suite and the key exchange, e.g. `TLSv1_3
    /// TLS13_AES_128_GCM_SHA256 X25519`.
    pub fn describe(&self) -> Option<String> {
        let c = self.conn.rustls();
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
        Plaintext { tls: self, tcp }
    }

    /// Free space the receive buffer should have before the next read:
    /// room for whole records once the connection is busy (a record is
    /// cut, or the last read left more to read), none while it is idle,
    /// so idle connections keep small buffers.
    pub fn wanted_room(&self) -> usize {
        if self.busy || self.conn.cut_record_len() > 0 {
            BUSY_READ_ROOM
        } else {
            0
        }
    }

    /// Whether the plaintext read just made emptied the connection (see
    /// [`TlsConnection::drained`]): bytes arriving later raise a new edge,
    /// so the read that would say `WouldBlock` is saved.
    pub fn drained(&self) -> bool {
        self.conn.drained()
    }

    /// Seals the queue's bytes into records and writes them, until both
    /// are empty or the socket would block. Before the handshake is done
    /// only its own messages go; the queue waits.
    pub fn flush(&mut self, tx: &mut SendBuf, tcp: &mut impl Write) -> Result<(), ConnError> {
        loop {
            if !self.conn.send_waiting(tcp).map_err(ConnError::Io)? {
                return Ok(()); // the writable event resumes
            }
            if tx.unsent().is_empty() {
                tx.clear();
                return Ok(());
            }
            if !self.conn.is_open() {
                return Ok(());
            }
            let unsent = tx.unsent();
            let chunk = &unsent[..unsent.len().min(SEAL_AT_ONCE)];
            self.conn
                .seal_and_send(tcp, |sealer| sealer.seal_all(chunk))
                .map_err(ConnError::Io)?;
            tx.advance(chunk.len());
        }
    }
}

/// Plaintext read through rustls from the socket.
///
/// A `read` returns plaintext rustls already holds, else reads the socket
/// into the thread's shared buffer and decrypts it there, writing the
/// plaintext to `buf`, until there is plaintext (see
/// [`TlsConnection::read`]); `Ok(0)` is the end (close_notify, or TCP
/// closed without one), `WouldBlock` that the socket is drained. A read
/// may leave decrypted bytes no readiness event announces, so a caller
/// reads until one of those two, or until [`Tls::drained`]. A TLS failure
/// is an `InvalidData` error wrapping the `rustls::Error` (see
/// [`ConnError::from_io`]), after the alert that names it was sent.
#[derive(Debug)]
pub struct Plaintext<'a, S> {
    tls: &'a mut Tls,
    tcp: &'a mut S,
}

impl<S: Read + Write> Read for Plaintext<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let tls = &mut *self.tls;
        let received = CIPHERTEXT.with_borrow_mut(|ciphertext| {
            // Plaintext is never longer than its records: a read no longer
            // than `buf` decrypts into it whole.
            let room = ciphertext.len().min(buf.len());
            tls.conn.read(buf, Some(&mut ciphertext[..room]), self.tcp)
        });
        // The handshake's next flight (or an alert) goes out now; if the
        // socket is full, the flush after the reads resumes it.
        let sent = tls.conn.send_waiting(self.tcp);
        let received = received?;
        tls.busy = matches!(received, Received::Plaintext(_)) && !tls.conn.drained();
        let n = match received {
            Received::Plaintext(n) => n,
            Received::WouldBlock => return Err(io::ErrorKind::WouldBlock.into()),
            Received::End => return Ok(0),
            Received::Failed(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
        };
        sent?;
        Ok(n)
    }
}
