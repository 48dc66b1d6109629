//! rustls's unbuffered connection and the bytes in flight around it, for
//! either side: the server's transport drives the server side, the load
//! tool the client side, both with the same record handling.
//!
//! The unbuffered API leaves every buffer to the caller, so a connection
//! holds bytes only while they are in flight: received TLS bytes while a
//! record is incomplete, decrypted bytes the caller has not taken yet,
//! encrypted bytes the socket has not taken yet. Each is freed as soon as
//! it empties, so an idle connection keeps rustls's state (keys, the state
//! machine) and no record buffer. Received records are decrypted where
//! they were read, in the caller's buffer, and their plaintext written to
//! where the caller wants it: no copy into a buffer of the connection's
//! own.

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
    WriteTraffic,
};
use std::cell::RefCell;
use std::io::{self, Read, Write};

/// Plaintext encrypted per record: the TLS maximum.
pub const RECORD_PLAINTEXT: usize = 16 * 1024;

/// Room reserved per record for its header, tag and content type.
pub const RECORD_OVERHEAD: usize = 64;

thread_local! {
    /// Where records are sealed before they are written, shared by every
    /// connection of the thread: sealing writes into memory that is
    /// already there (no allocation, no zeroing per record), and only what
    /// the socket does not take is copied into the connection's own buffer.
    static SEALED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The shared sealing buffer is freed past this, so one burst does not
/// keep it large.
const SEALED_KEEP: usize = 256 * 1024;

/// The side of an unbuffered rustls connection: its one method that is not
/// generic over the side.
pub trait Side {
    /// rustls's per-side connection data.
    type Data;

    /// Processes the records in `incoming` until rustls needs something.
    fn process_records<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process_records<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process_records<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
}

/// Where processing the received bytes left the connection.
enum Progress {
    /// Everything received was processed; more is needed.
    Waiting,
    /// Both sides closed.
    Closed,
}

/// What a [`TlsConnection::read`] gave.
#[derive(Debug)]
pub enum Received {
    /// `n` bytes of plaintext at the front of the buffer.
    Plaintext(usize),
    /// Nothing more for now: the socket is drained.
    WouldBlock,
    /// The peer sent close_notify, or closed TCP.
    End,
    /// rustls failed on the bytes; the alert that names it is queued.
    Failed(rustls::Error),
}

/// An unbuffered rustls connection of side `C` with its bytes in flight.
pub struct TlsConnection<C> {
    tls: C,
    /// TLS bytes received and not yet processed (an incomplete record).
    incoming: Vec<u8>,
    /// Decrypted bytes the caller has not taken yet.
    plaintext: Vec<u8>,
    /// Encrypted bytes the socket has not taken yet.
    outgoing: Vec<u8>,
    /// Application data may be sent (the handshake is done).
    open: bool,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// rustls failed: it is not asked anything again (it would process the
    /// same bad bytes again, and it keeps positions in them).
    failed: bool,
    /// The last socket read of this [`TlsConnection::read`] left space
    /// free: the socket was empty then, and a later byte raises a new edge.
    socket_drained: bool,
}

impl<C> std::fmt::Debug for TlsConnection<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("open", &self.open)
            .field("incoming", &self.incoming.len())
            .field("plaintext", &self.plaintext.len())
            .field("outgoing", &self.outgoing.len())
            .field("peer_closed", &self.peer_closed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<C: Side> TlsConnection<C> {
    /// A connection whose handshake has not started on the wire yet.
    pub fn new(tls: C) -> TlsConnection<C> {
        TlsConnection {
            tls,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            open: false,
            peer_closed: false,
            failed: false,
            socket_drained: false,
        }
    }

    /// rustls's connection (what was negotiated, how the handshake went).
    pub fn rustls(&self) -> &C {
        &self.tls
    }

    /// Application data may be sent: the handshake is done.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The peer sent close_notify (or the connection closed).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// rustls failed on the received bytes; nothing more is processed.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Decrypted bytes waiting to be taken.
    pub fn has_plaintext(&self) -> bool {
        !self.plaintext.is_empty()
    }

    /// Moves waiting plaintext to the front of `buf`; returns how much.
    pub fn take_plaintext(&mut self, buf: &mut [u8]) -> usize {
        let n = self.plaintext.len().min(buf.len());
        buf[..n].copy_from_slice(&self.plaintext[..n]);
        self.plaintext.drain(..n);
        release_if_empty(&mut self.plaintext);
        n
    }

    /// Encrypted bytes waiting for the socket.
    pub fn outgoing(&self) -> &[u8] {
        &self.outgoing
    }

    /// Marks the first `n` bytes of [`TlsConnection::outgoing`] as sent.
    pub fn sent(&mut self, n: usize) {
        self.outgoing.drain(..n);
        release_if_empty(&mut self.outgoing);
    }

    /// Writes the encrypted bytes waiting, as many as `tcp` takes now;
    /// `true` once none is left.
    pub fn send_waiting(&mut self, tcp: &mut impl Write) -> io::Result<bool> {
        if self.outgoing.is_empty() {
            return Ok(true);
        }
        let sent = write_some(tcp, &self.outgoing)?;
        self.sent(sent);
        Ok(self.outgoing.is_empty())
    }

    /// Seals records with `f` into the buffer the thread's connections
    /// share and writes them to `tcp` at once; only what the socket does
    /// not take is kept in [`TlsConnection::outgoing`].
    pub fn seal_and_send<R>(
        &mut self,
        tcp: &mut impl Write,
        f: impl FnOnce(&mut Sealer<'_, '_, C::Data>) -> io::Result<R>,
    ) -> io::Result<R> {
        SEALED.with_borrow_mut(|sealed| {
            let mut len = 0;
            let result = self.seal(sealed, &mut len, f)?;
            // Bytes rustls had to send on the way (a key update) are older
            // than these records.
            let sent = match self.outgoing.is_empty() {
                true => write_some(tcp, &sealed[..len])?,
                false => 0,
            };
            self.outgoing.extend_from_slice(&sealed[sent..len]);
            if sealed.len() > SEALED_KEEP {
                *sealed = Vec::new();
            }
            Ok(result)
        })
    }

    /// Plaintext if some is waiting; else TLS bytes from `socket`,
    /// processed until there is plaintext or the socket would block.
    ///
    /// The records are read into `records` (if `None`, the second half of
    /// `buf`) and decrypted there, their plaintext written to the front of
    /// `buf`: no copy into a buffer of the connection's own, which keeps
    /// only the bytes of a record cut by the end of a read. Anything rustls
    /// has to send (the handshake's next flight, an alert) waits in
    /// [`TlsConnection::outgoing`] for the caller to write.
    pub fn read(
        &mut self,
        buf: &mut [u8],
        mut records: Option<&mut [u8]>,
        socket: &mut impl Read,
    ) -> io::Result<Received> {
        // Plaintext kept from an earlier read says nothing of the socket now.
        self.socket_drained = false;
        loop {
            if self.has_plaintext() {
                return Ok(Received::Plaintext(self.take_plaintext(buf)));
            }
            if self.peer_closed {
                return Ok(Received::End);
            }
            if self.socket_drained {
                // Processed all the socket had, and no plaintext came of it
                // (an incomplete record, a handshake message): the next
                // read would only say `WouldBlock`.
                return Ok(Received::WouldBlock);
            }
            let (out, ciphertext) = match records.as_deref_mut() {
                Some(records) => (&mut *buf, records),
                None => buf.split_at_mut(buf.len() / 2),
            };
            let Some(kept) = self.restore_cut_record(ciphertext) else {
                // (Too little room for a record: the bytes go through the
                // connection's own buffers.)
                let Some(n) = read_socket(socket, out)? else {
                    return Ok(Received::WouldBlock);
                };
                if n == 0 {
                    return Ok(Received::End);
                }
                self.socket_drained = n < out.len();
                if let Err(err) = self.feed(&out[..n]) {
                    return Ok(Received::Failed(err));
                }
                continue;
            };
            let Some(n) = read_socket(socket, &mut ciphertext[kept..])? else {
                return Ok(Received::WouldBlock);
            };
            if n == 0 {
                return Ok(Received::End);
            }
            self.socket_drained = kept + n < ciphertext.len();
            match self.decrypt_into(&mut ciphertext[..kept + n], out) {
                Ok(0) => {}
                Ok(len) => return Ok(Received::Plaintext(len)),
                Err(err) => return Ok(Received::Failed(err)),
            }
        }
    }

    /// Whether the read that just returned plaintext emptied the stream:
    /// its socket read left buffer space free, and rustls holds nothing
    /// more (no plaintext, no close_notify to report). Reading again would
    /// only return `WouldBlock`.
    pub fn drained(&self) -> bool {
        self.socket_drained && !self.has_plaintext() && !self.peer_closed && !self.failed
    }

    /// Bytes of a record cut by the previous read, kept for the next.
    pub fn cut_record_len(&self) -> usize {
        self.incoming.len()
    }

    /// Copies the bytes of a record cut by the previous read to the front
    /// of `ciphertext`, where the next read continues them; returns how
    /// many (they stay kept until [`TlsConnection::decrypt_into`]).
    /// `None` when they would not leave room for a record: the caller
    /// reads into a buffer of its own and [`TlsConnection::feed`]s it
    /// instead.
    fn restore_cut_record(&mut self, ciphertext: &mut [u8]) -> Option<usize> {
        let kept = self.incoming.len();
        if self.failed || kept + RECORD_OVERHEAD >= ciphertext.len() {
            // (A record longer than the read buffer cannot be: TLS records
            // are at most 16 KiB plus overhead.)
            return None;
        }
        ciphertext[..kept].copy_from_slice(&self.incoming);
        Some(kept)
    }

    /// Runs rustls over `ciphertext` (what
    /// [`TlsConnection::restore_cut_record`] put first, and what was read
    /// after it) until it needs more bytes: the records are decrypted
    /// where they are, and their plaintext is written to `plaintext`
    /// (returns its length; what does not fit is kept for
    /// [`TlsConnection::take_plaintext`]). Bytes of an incomplete record
    /// are kept for the next read. On a failure the alert rustls prepared
    /// is queued in [`TlsConnection::outgoing`].
    ///
    /// rustls hands each record's plaintext out of a buffer of its own,
    /// so it is copied once, straight to where the caller wants it: a
    /// caller splits its read buffer in two, reads into one part and gets
    /// the plaintext in the other.
    fn decrypt_into(
        &mut self,
        ciphertext: &mut [u8],
        plaintext: &mut [u8],
    ) -> Result<usize, rustls::Error> {
        let (result, consumed) = self.decrypt_records(ciphertext, plaintext);
        // What rustls did not consume is kept, failure or not: rustls keeps
        // positions in those bytes, and the alert of a failure is asked for
        // over them.
        self.incoming.clear();
        self.incoming.extend_from_slice(&ciphertext[consumed..]);
        if let Err(err) = &result {
            self.failed = true;
            self.queue_alert(err);
            self.incoming.clear();
        }
        release_if_empty(&mut self.incoming);
        result
    }

    /// [`TlsConnection::decrypt_into`]'s loop: the plaintext written (or
    /// rustls's error), and the bytes of `ciphertext` consumed.
    fn decrypt_records(
        &mut self,
        ciphertext: &mut [u8],
        out: &mut [u8],
    ) -> (Result<usize, rustls::Error>, usize) {
        let mut consumed = 0;
        let mut written = 0;
        loop {
            let status = self.tls.process_records(&mut ciphertext[consumed..]);
            let mut discard = status.discard;
            let mut records = 0;
            let mut reading = false;
            let stop = match status.state {
                Err(err) => return (Err(err), consumed + discard),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    reading = true;
                    while let Some(record) = traffic.next_record() {
                        let record = match record {
                            Ok(record) => record,
                            Err(err) => return (Err(err), consumed + discard),
                        };
                        records += 1;
                        discard += record.discard;
                        let payload = record.payload;
                        let room = out.len() - written;
                        if self.plaintext.is_empty() && payload.len() <= room {
                            out[written..written + payload.len()].copy_from_slice(payload);
                            written += payload.len();
                        } else {
                            // After one that did not fit, in order: it
                            // waits with the connection's plaintext.
                            self.plaintext.extend_from_slice(payload);
                        }
                    }
                    None
                }
                Ok(state) => match handle(
                    state,
                    &mut self.plaintext,
                    &mut self.outgoing,
                    &mut self.open,
                    &mut self.peer_closed,
                ) {
                    Ok(stop) => stop,
                    Err(err) => return (Err(err), consumed + discard),
                },
            };
            consumed += discard;
            // (A round that yields no record and consumes nothing would
            // yield the same again. Once the connection is open, records
            // that used every byte leave nothing to learn from one more
            // round: anything rustls has to send is handed out before the
            // next record is sealed.)
            let all_read = reading && self.open && consumed == ciphertext.len();
            if stop.is_some() || all_read || (reading && records == 0 && discard == 0) {
                return (Ok(written), consumed);
            }
        }
    }

    /// TLS bytes received, processed: plaintext kept for
    /// [`TlsConnection::take_plaintext`], handshake messages queued. On a
    /// failure the alert rustls prepared is queued before the error is
    /// returned.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General(
                "the connection already failed".into(),
            ));
        }
        self.incoming.extend_from_slice(bytes);
        let result = self.process();
        release_if_empty(&mut self.incoming);
        if let Err(err) = result {
            self.failed = true;
            self.queue_alert(&err);
            return Err(err);
        }
        Ok(())
    }

    /// Lets rustls say what it has to say before any bytes came (a
    /// client's ClientHello).
    pub fn start(&mut self) -> Result<(), rustls::Error> {
        self.feed(&[])
    }

    /// Queues the alert rustls prepared on a failure, if any. rustls hands
    /// a queued alert out before it looks at the received bytes again, so
    /// one call on the same buffer takes it; a second call would process
    /// the bad bytes again (and fail again), so there is none.
    fn queue_alert(&mut self, err: &rustls::Error) {
        let before = self.outgoing.len();
        let status = self.tls.process_records(&mut self.incoming);
        if let Ok(state @ ConnectionState::EncodeTlsData(_)) = status.state {
            let (mut open, mut closed) = (self.open, self.peer_closed);
            let _ = handle(
                state,
                &mut self.plaintext,
                &mut self.outgoing,
                &mut open,
                &mut closed,
            );
        }
        // rustls's unbuffered connection queues no alert for a record it
        // cannot even frame; before the handshake is done, alerts go in
        // the clear, so one is written here (RFC 8446 section 6).
        if self.outgoing.len() == before && !self.open {
            self.outgoing
                .extend_from_slice(&[21, 3, 3, 0, 2, 2, alert_for(err)]);
        }
    }

    /// Runs rustls over the received bytes until it needs more.
    fn process(&mut self) -> Result<Progress, rustls::Error> {
        loop {
            let status = self.tls.process_records(&mut self.incoming);
            let discard = status.discard;
            let progress = match status.state {
                Err(err) => {
                    self.incoming.drain(..discard);
                    return Err(err);
                }
                Ok(state) => handle(
                    state,
                    &mut self.plaintext,
                    &mut self.outgoing,
                    &mut self.open,
                    &mut self.peer_closed,
                )?,
            };
            self.incoming.drain(..discard);
            if let Some(progress) = progress {
                return Ok(progress);
            }
        }
    }

    /// Runs `f` with rustls's writer and the outgoing buffer, once rustls
    /// is ready to send application data. The received bytes are always
    /// passed along (rustls keeps positions in them), and whatever else
    /// rustls has to say first (records received, handshake messages) is
    /// handled on the way.
    fn with_writer<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, C::Data>, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        if self.failed {
            return None;
        }
        let mut f = Some(f);
        for _ in 0..64 {
            let status = self.tls.process_records(&mut self.incoming);
            let discard = status.discard;
            let (result, stop) = match status.state {
                Ok(ConnectionState::WriteTraffic(mut writer)) => {
                    let f = f.take()?;
                    (Some(f(&mut writer, &mut self.outgoing)), true)
                }
                Ok(state) => {
                    let step = handle(
                        state,
                        &mut self.plaintext,
                        &mut self.outgoing,
                        &mut self.open,
                        &mut self.peer_closed,
                    );
                    (None, !matches!(step, Ok(None)))
                }
                Err(_) => {
                    self.failed = true;
                    (None, true)
                }
            };
            self.incoming.drain(..discard);
            if stop {
                return result;
            }
        }
        None
    }

    /// Runs `f` with a [`Sealer`] writing records onto `sealed[*len..]`:
    /// any number of records for one pass through rustls's state.
    fn seal<R>(
        &mut self,
        sealed: &mut Vec<u8>,
        len: &mut usize,
        f: impl FnOnce(&mut Sealer<'_, '_, C::Data>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.with_writer(|writer, _| {
            f(&mut Sealer {
                writer,
                sealed,
                len,
            })
        })
        .unwrap_or_else(|| Err(io::Error::other("TLS: not ready to send application data")))
    }

    /// Encrypts `plaintext` onto the end of [`TlsConnection::outgoing`].
    pub fn encrypt(&mut self, plaintext: &[u8]) -> io::Result<()> {
        let (mut sealed, mut len) = (Vec::new(), 0);
        self.seal(&mut sealed, &mut len, |sealer| sealer.seal_all(plaintext))?;
        self.outgoing.extend_from_slice(&sealed[..len]);
        Ok(())
    }

    /// Queues a close_notify alert.
    pub fn close_notify(&mut self) {
        self.with_writer(|writer, outgoing| {
            let start = outgoing.len();
            outgoing.resize(start + RECORD_OVERHEAD, 0);
            match writer.queue_close_notify(&mut outgoing[start..]) {
                Ok(written) => outgoing.truncate(start + written),
                Err(_) => outgoing.truncate(start),
            }
        });
    }
}

/// One read of `socket`; `None` if it would block.
fn read_socket(socket: &mut impl Read, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        return match socket.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// Writes as much of `bytes` as `tcp` takes now; returns how much.
fn write_some(tcp: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match tcp.write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Seals records onto the end of a buffer, growing it as needed.
pub struct Sealer<'w, 'c, Data> {
    writer: &'w mut WriteTraffic<'c, Data>,
    sealed: &'w mut Vec<u8>,
    len: &'w mut usize,
}

impl<Data> std::fmt::Debug for Sealer<'_, '_, Data> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("len", &self.len).finish()
    }
}

impl<Data> Sealer<'_, '_, Data> {
    /// Seals `plaintext` (one record's worth at most) as one record.
    pub fn seal_record(&mut self, plaintext: &[u8]) -> io::Result<()> {
        let mut need = plaintext.len() + RECORD_OVERHEAD;
        loop {
            let len = *self.len;
            if self.sealed.len() < len + need {
                self.sealed.resize(len + need, 0);
            }
            match self.writer.encrypt(plaintext, &mut self.sealed[len..]) {
                Ok(written) => {
                    *self.len += written;
                    return Ok(());
                }
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    need = required_size;
                }
                Err(e) => return Err(io::Error::other(format!("TLS: {e}"))),
            }
        }
    }

    /// Seals `plaintext` as full records and a last shorter one.
    pub fn seal_all(&mut self, plaintext: &[u8]) -> io::Result<()> {
        plaintext
            .chunks(RECORD_PLAINTEXT)
            .try_for_each(|record| self.seal_record(record))
    }
}

/// Acts on one state of the connection; `Some` when processing should
/// stop for now.
fn handle<Data>(
    state: ConnectionState<'_, '_, Data>,
    plaintext: &mut Vec<u8>,
    outgoing: &mut Vec<u8>,
    open: &mut bool,
    peer_closed: &mut bool,
) -> Result<Option<Progress>, rustls::Error> {
    match state {
        ConnectionState::ReadTraffic(mut records) => {
            while let Some(record) = records.next_record() {
                plaintext.extend_from_slice(record?.payload);
            }
            Ok(None)
        }
        ConnectionState::EncodeTlsData(mut encoder) => {
            let mut need = 4 * 1024;
            loop {
                let start = outgoing.len();
                outgoing.resize(start + need, 0);
                match encoder.encode(&mut outgoing[start..]) {
                    Ok(written) => {
                        outgoing.truncate(start + written);
                        return Ok(None);
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        outgoing.truncate(start);
                        need = required_size;
                    }
                    Err(_) => {
                        outgoing.truncate(start);
                        return Ok(None);
                    }
                }
            }
        }
        // The bytes encoded so far are in `outgoing`, which the caller
        // writes, in order, as the socket takes them.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Ok(None)
        }
        ConnectionState::BlockedHandshake => Ok(Some(Progress::Waiting)),
        ConnectionState::WriteTraffic(_) => {
            *open = true;
            Ok(Some(Progress::Waiting))
        }
        ConnectionState::PeerClosed => {
            *peer_closed = true;
            Ok(None)
        }
        ConnectionState::Closed => {
            *peer_closed = true;
            Ok(Some(Progress::Closed))
        }
        // No early data is accepted; any other state needs nothing now.
        _ => Ok(Some(Progress::Waiting)),
    }
}

/// The alert description for a failure rustls sent no alert for.
fn alert_for(err: &rustls::Error) -> u8 {
    match err {
        rustls::Error::InvalidMessage(_) => 50, // decode_error
        rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => 10, // unexpected_message
        _ => 40,                                // handshake_failure
    }
}

/// Frees a buffer that emptied, so an idle connection keeps none.
fn release_if_empty(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = Vec::new();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use std::sync::{Arc, OnceLock};

    /// A server and a client configuration that trust each other (made
    /// once: key generation is the slow part).
    pub(crate) fn configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
        static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
        CONFIGS.get_or_init(|| {
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
            let key = KeyPair::generate().unwrap();
            let leaf = CertificateParams::new(vec!["pair.test".to_string()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let server = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap();
            let mut roots = RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            let client = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            (Arc::new(server), Arc::new(client))
        })
    }

    type Server = TlsConnection<UnbufferedServerConnection>;
    type Client = TlsConnection<UnbufferedClientConnection>;

    /// A client of the server [`configs`] describe, its ClientHello
    /// queued.
    pub(crate) fn client() -> Client {
        let name = ServerName::try_from("pair.test").unwrap();
        let config = configs().1.clone();
        let mut client = TlsConnection::new(UnbufferedClientConnection::new(config, name).unwrap());
        client.start().unwrap();
        client
    }

    /// A client and a server that completed their handshake in memory.
    fn pair() -> (Client, Server) {
        let (server_config, _) = configs();
        let mut client = client();
        let mut server =
            TlsConnection::new(UnbufferedServerConnection::new(server_config.clone()).unwrap());
        for _ in 0..8 {
            if client.is_open() && server.is_open() {
                break;
            }
            let to_server = client.outgoing().to_vec();
            client.sent(to_server.len());
            server.feed(&to_server).unwrap();
            let to_client = server.outgoing().to_vec();
            server.sent(to_client.len());
            client.feed(&to_client).unwrap();
        }
        assert!(
            client.is_open() && server.is_open(),
            "{client:?} {server:?}"
        );
        // The server's session tickets reach the client.
        let tickets = server.outgoing().to_vec();
        server.sent(tickets.len());
        client.feed(&tickets).unwrap();
        assert!(!client.has_plaintext());
        (client, server)
    }

    /// A socket that has `wire` to give, in reads of at most the sizes
    /// `cuts` gives in turn, then would block.
    struct Pieces<'a> {
        wire: &'a [u8],
        cuts: std::iter::Cycle<std::slice::Iter<'a, usize>>,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.wire.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = (*self.cuts.next().unwrap())
                .min(buf.len())
                .min(self.wire.len());
            buf[..n].copy_from_slice(&self.wire[..n]);
            self.wire = &self.wire[n..];
            Ok(n)
        }
    }

    /// Receives `wire` as reads of the sizes `cuts` gives, as a transport
    /// does: a read buffer of `buffer` bytes split in two, the records
    /// read into the second half and their plaintext taken from the first;
    /// returns the plaintext in order.
    fn receive(
        rx: &mut TlsConnection<impl Side>,
        wire: &[u8],
        cuts: &[usize],
        buffer: usize,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; buffer];
        let mut got = Vec::new();
        let mut socket = Pieces {
            wire,
            cuts: cuts.iter().cycle(),
        };
        loop {
            match rx.read(&mut buf, None, &mut socket).unwrap() {
                Received::Plaintext(n) => got.extend_from_slice(&buf[..n]),
                Received::WouldBlock if socket.wire.is_empty() => break,
                Received::WouldBlock => {}
                Received::End => break,
                Received::Failed(err) => panic!("{err}"),
            }
        }
        assert_eq!(rx.cut_record_len(), 0, "every record was whole in the end");
        got
    }

    /// `messages` sealed by `tx` the way the transports do: runs of them
    /// through one pass of rustls's state.
    fn seal_messages(tx: &mut TlsConnection<impl Side>, messages: &[Vec<u8>]) -> Vec<u8> {
        let (mut sealed, mut len) = (Vec::new(), 0);
        for run in messages.chunks(3) {
            tx.seal(&mut sealed, &mut len, |sealer| {
                run.iter().try_for_each(|m| sealer.seal_all(m))
            })
            .unwrap();
        }
        sealed.truncate(len);
        sealed
    }

    fn message(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    #[test]
    fn records_of_every_size_arrive_whole_and_in_order_both_ways() {
        let (mut client, mut server) = pair();
        let messages: Vec<Vec<u8>> = [0, 1, 4, 300, 16_383, 16_384, 16_385, 40_000, 7]
            .iter()
            .enumerate()
            .map(|(i, &len)| message(i, len))
            .collect();
        let expected = messages.concat();
        let wire = seal_messages(&mut client, &messages);
        assert_eq!(receive(&mut server, &wire, &[65_536], 192 * 1024), expected);
        let wire = seal_messages(&mut server, &messages);
        assert_eq!(receive(&mut client, &wire, &[65_536], 192 * 1024), expected);
    }

    #[test]
    fn a_read_buffer_too_small_for_a_record_still_gets_everything() {
        let (mut client, mut server) = pair();
        let messages = vec![message(1, 50_000), message(2, 10)];
        let wire = seal_messages(&mut client, &messages);
        // Halves of 8 KiB: a 16 KiB record never fits, and goes through
        // the connection's own buffers instead.
        assert_eq!(
            receive(&mut server, &wire, &[3_000], 16 * 1024),
            messages.concat()
        );
    }

    #[test]
    fn a_corrupted_record_fails_with_an_alert_and_nothing_after_it_is_taken() {
        let (mut client, mut server) = pair();
        let mut wire = seal_messages(&mut client, &[message(1, 100), message(2, 100)]);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut buf = vec![0u8; 64 * 1024];
        let (out, ciphertext) = buf.split_at_mut(32 * 1024);
        ciphertext[..wire.len()].copy_from_slice(&wire);
        assert!(server
            .decrypt_into(&mut ciphertext[..wire.len()], out)
            .is_err());
        assert!(server.failed());
        assert!(!server.outgoing().is_empty(), "an alert is queued");
        assert!(server.restore_cut_record(ciphertext).is_none());
    }

    #[test]
    fn a_handshake_message_refused_before_the_handshake_is_answered_without_a_panic() {
        // A handshake record whose message claims 3.6 MB: rustls has noted
        // where the message starts when it refuses it, and asking it for
        // the alert over other bytes than those it refused made it index
        // out of bounds (found by the `tls_transport` fuzz target).
        let tls = UnbufferedServerConnection::new(configs().0.clone()).unwrap();
        let mut server = TlsConnection::new(tls);
        let record = [0x16, 0x03, 0x07, 0x00, 0x04, 0x31, 0x38, 0x34, 0x00];
        let mut buf = vec![0u8; 64 * 1024];
        let (out, ciphertext) = buf.split_at_mut(32 * 1024);
        let kept = server.restore_cut_record(ciphertext).unwrap();
        ciphertext[kept..kept + record.len()].copy_from_slice(&record);
        let result = server.decrypt_into(&mut ciphertext[..kept + record.len()], out);
        assert!(result.is_err(), "{result:?}");
        assert!(server.failed());
        assert!(!server.outgoing().is_empty(), "an alert is queued");
        let mut server =
            TlsConnection::new(UnbufferedServerConnection::new(configs().0.clone()).unwrap());
        assert!(server.feed(&record).is_err());
        assert!(!server.outgoing().is_empty(), "an alert is queued");
    }

    #[test]
    fn close_notify_reaches_the_peer() {
        let (mut client, mut server) = pair();
        client.close_notify();
        let wire = client.outgoing().to_vec();
        assert!(receive(&mut server, &wire, &[wire.len()], 64 * 1024).is_empty());
        assert!(server.peer_closed());
    }

    #[test]
    fn an_idle_connection_keeps_no_record_buffer() {
        let (mut client, mut server) = pair();
        let wire = seal_messages(&mut client, &[message(1, 20_000)]);
        receive(&mut server, &wire, &[5_000], 64 * 1024);
        assert_eq!(server.incoming.capacity(), 0);
        assert_eq!(server.plaintext.capacity(), 0);
        assert_eq!(server.outgoing.capacity(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any split of the records into reads gives the same plaintext.
        #[test]
        fn any_split_into_reads_gives_the_same_plaintext(
            lens in proptest::collection::vec(0usize..20_000, 1..8),
            cuts in proptest::collection::vec(1usize..40_000, 1..6),
        ) {
            let (mut client, mut server) = pair();
            let messages: Vec<Vec<u8>> =
                lens.iter().enumerate().map(|(i, &len)| message(i, len)).collect();
            let wire = seal_messages(&mut client, &messages);
            prop_assert_eq!(receive(&mut server, &wire, &cuts, 96 * 1024), messages.concat());
        }
    }
}
