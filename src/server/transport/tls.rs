//! TLS over a TCP socket, with rustls's unbuffered connection.
//!
//! The unbuffered API leaves every buffer to the caller, so a connection
//! holds bytes only while they are in flight: received TLS bytes while a
//! record is incomplete, decrypted bytes the connection has not taken yet,
//! encrypted bytes the socket has not taken yet. Each is freed as soon as
//! it empties, so an idle TLS connection keeps rustls's state (keys, the
//! state machine) and no record buffer.

use std::cell::RefCell;
use std::io;

use mio::net::TcpStream;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, WriteTraffic,
};

use super::{read_socket, ReadResult};
use crate::server::tls::TLS_BUFFER_LIMIT;
use crate::server::write_queue::{BufferPool, ByteGauge, Flush, WriteQueue};

/// Plaintext encrypted per record: the TLS maximum.
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// Room reserved per record for its header, tag and content type.
const RECORD_OVERHEAD: usize = 64;

/// A TCP socket and the rustls connection over it.
pub struct TlsStream {
    tcp: TcpStream,
    tls: UnbufferedServerConnection,
    /// TLS bytes received and not yet processed (an incomplete record).
    incoming: Vec<u8>,
    /// Decrypted bytes the connection has not taken yet.
    plaintext: Vec<u8>,
    /// Encrypted bytes the socket has not taken yet.
    outgoing: Vec<u8>,
    /// Application data may be sent (the handshake is done).
    open: bool,
    /// The handshake's completion was already reported.
    reported: bool,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// rustls failed: it is not asked anything again (it would process the
    /// same bad bytes again, and it keeps positions in them).
    failed: bool,
    /// Where `outgoing` is counted with the write queues' bytes, and how
    /// much of it is counted now.
    gauge: Option<ByteGauge>,
    counted: usize,
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.sub(self.counted);
        }
    }
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("open", &self.open)
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .finish_non_exhaustive()
    }
}

/// Where processing the received bytes left the connection.
enum Progress {
    /// Everything received was processed; more is needed.
    Waiting,
    /// Both sides closed.
    Closed,
}

impl TlsStream {
    /// A new server-side TLS connection over `tcp`.
    pub fn new(tcp: TcpStream, tls: UnbufferedServerConnection) -> TlsStream {
        TlsStream {
            tcp,
            tls,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            open: false,
            reported: false,
            peer_closed: false,
            failed: false,
            gauge: None,
            counted: 0,
        }
    }

    /// Counts the encrypted bytes waiting for the socket into `gauge`.
    pub fn count_into(&mut self, gauge: ByteGauge) {
        gauge.add(self.outgoing.len());
        self.counted = self.outgoing.len();
        self.gauge = Some(gauge);
    }

    /// Encrypted bytes waiting for the socket.
    pub fn pending_bytes(&self) -> usize {
        self.outgoing.len()
    }

    /// Brings the gauge up to date with `outgoing`.
    fn recount(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.sub(self.counted);
            gauge.add(self.outgoing.len());
            self.counted = self.outgoing.len();
        }
    }

    /// The socket under TLS.
    pub fn socket(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket under TLS.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// `true` once, when the handshake has completed.
    pub fn take_handshake_done(&mut self) -> bool {
        if self.open && !self.reported {
            self.reported = true;
            return true;
        }
        false
    }

    /// Whether the handshake completed (and was reported).
    pub fn established(&self) -> bool {
        self.reported
    }

    /// Plaintext if some is waiting; else TLS bytes from the socket,
    /// processed until there is plaintext or the socket would block.
    ///
    /// The records are decrypted where they were read, in `buf` (the loop's
    /// read buffer), and their plaintext is moved to its front: no copy
    /// into a buffer of the connection's own, which keeps only the bytes
    /// of a record cut by the end of a read.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<ReadResult> {
        loop {
            if !self.plaintext.is_empty() {
                let n = self.plaintext.len().min(buf.len());
                buf[..n].copy_from_slice(&self.plaintext[..n]);
                self.plaintext.drain(..n);
                release_if_empty(&mut self.plaintext);
                return Ok(ReadResult::Data(n));
            }
            if self.peer_closed {
                return Ok(ReadResult::Eof);
            }
            let kept = self.incoming.len();
            if self.failed || kept + RECORD_OVERHEAD >= buf.len() {
                // (A record longer than the read buffer cannot be: TLS
                // records are at most 16 KiB plus overhead.)
                let n = match read_socket(&mut self.tcp, buf)? {
                    ReadResult::Data(n) => n,
                    other => return Ok(other),
                };
                if let Err(err) = self.feed(&buf[..n]) {
                    return Ok(ReadResult::TlsFailed(err));
                }
                continue;
            }
            buf[..kept].copy_from_slice(&self.incoming);
            let n = match read_socket(&mut self.tcp, &mut buf[kept..])? {
                ReadResult::Data(n) => n,
                other => return Ok(other),
            };
            self.incoming.clear();
            match self.process_in_place(&mut buf[..kept + n]) {
                Ok(0) => {
                    let _ = self.flush_outgoing();
                }
                Ok(len) => {
                    let _ = self.flush_outgoing();
                    return Ok(ReadResult::Data(len));
                }
                Err(err) => {
                    self.failed = true;
                    self.send_alert(&err);
                    return Ok(ReadResult::TlsFailed(err));
                }
            }
        }
    }

    /// Runs rustls over `data` until it needs more bytes: records are
    /// decrypted in place and their plaintext moved to the front of `data`
    /// (returns its length); bytes of an incomplete record are kept in
    /// `incoming` for the next read.
    fn process_in_place(&mut self, data: &mut [u8]) -> Result<usize, rustls::Error> {
        /// Records moved per round: their places are noted while rustls
        /// borrows `data`, and the moves done once it is released.
        const ROUND: usize = 32;
        let base = data.as_ptr() as usize;
        let end = data.len();
        let mut consumed = 0;
        let mut plain = 0;
        let mut spilled = false;
        let result = loop {
            let mut found = [(0usize, 0usize); ROUND];
            let mut count = 0;
            let mut seen = 0;
            let mut reading = false;
            let status = self.tls.process_tls_records(&mut data[consumed..]);
            let mut discard = status.discard;
            let stop = match status.state {
                Err(err) => break Err(err),
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    reading = true;
                    while seen < ROUND {
                        let Some(record) = records.next_record() else {
                            break;
                        };
                        let record = record?;
                        seen += 1;
                        discard += record.discard;
                        let payload = record.payload;
                        let start = (payload.as_ptr() as usize).wrapping_sub(base);
                        if spilled || start.saturating_add(payload.len()) > end {
                            // Not decrypted in `data` (rustls held it), or
                            // after one that was not: in order, it waits
                            // with the connection's plaintext.
                            spilled = true;
                            self.plaintext.extend_from_slice(payload);
                        } else {
                            found[count] = (start, payload.len());
                            count += 1;
                        }
                    }
                    None
                }
                Ok(state) => handle(
                    state,
                    &mut self.plaintext,
                    &mut self.outgoing,
                    &mut self.open,
                    &mut self.peer_closed,
                )?,
            };
            // Plaintext never overtakes the bytes consumed, so the moves
            // only write over records already done with.
            for &(start, len) in &found[..count] {
                data.copy_within(start..start + len, plain);
                plain += len;
            }
            consumed += discard;
            // (A read that yields no record and consumes nothing would
            // yield the same again.)
            if stop.is_some() || (reading && seen == 0 && discard == 0) {
                break Ok(plain);
            }
        };
        if result.is_ok() {
            self.incoming.extend_from_slice(&data[consumed..]);
        } else {
            self.incoming.clear();
        }
        release_if_empty(&mut self.incoming);
        self.recount();
        result
    }

    /// TLS bytes received, processed: plaintext kept for [`TlsStream::read`],
    /// handshake messages sent. On a failure the alert rustls prepared is
    /// sent (best effort) before the error is returned.
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
            self.send_alert(&err);
            return Err(err);
        }
        let _ = self.flush_outgoing();
        Ok(())
    }

    /// Sends the alert rustls queued on a failure, if any. rustls hands a
    /// queued alert out before it looks at the received bytes again, so
    /// one call on the same buffer takes it; a second call would process
    /// the bad bytes again (and fail again), so there is none.
    fn send_alert(&mut self, err: &rustls::Error) {
        let before = self.outgoing.len();
        let status = self.tls.process_tls_records(&mut self.incoming);
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
        let _ = self.flush_outgoing();
    }

    /// Runs rustls over the received bytes until it needs more.
    fn process(&mut self) -> Result<Progress, rustls::Error> {
        loop {
            let status = self.tls.process_tls_records(&mut self.incoming);
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

    /// Encrypts the queue's plaintext (at most [`TLS_BUFFER_LIMIT`] ahead
    /// of the socket) and writes the records, until both are empty or the
    /// socket would block.
    pub fn write_queue(
        &mut self,
        queue: &mut WriteQueue,
        pool: &mut BufferPool,
    ) -> io::Result<Flush> {
        loop {
            if self.flush_outgoing()? == Flush::Blocked {
                return Ok(Flush::Blocked);
            }
            if queue.is_empty() {
                return Ok(Flush::Done);
            }
            if !self.open {
                // Nothing may be sent before the handshake completes; the
                // bytes wait in the queue (there are none in practice: the
                // request that causes them comes after the handshake).
                return Ok(Flush::Blocked);
            }
            let mut sink = Encrypt { stream: self };
            queue.write_to_pooled(&mut sink, pool)?;
        }
    }

    /// Runs `f` with rustls's writer and the outgoing buffer, once rustls
    /// is ready to send application data. The received bytes are always
    /// passed along (rustls keeps positions in them), and whatever else
    /// rustls has to say first (records received, handshake messages) is
    /// handled on the way.
    fn with_writer<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        if self.failed {
            return None;
        }
        let mut f = Some(f);
        for _ in 0..64 {
            let status = self.tls.process_tls_records(&mut self.incoming);
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

    /// Seals `plaintext` (one record's worth at most) onto `sealed[*len..]`.
    fn seal_into(
        &mut self,
        plaintext: &[u8],
        sealed: &mut Vec<u8>,
        len: &mut usize,
    ) -> io::Result<()> {
        let mut need = plaintext.len() + RECORD_OVERHEAD;
        loop {
            if sealed.len() < *len + need {
                sealed.resize(*len + need, 0);
            }
            let out = &mut sealed[*len..];
            let result = self.with_writer(|writer, _| writer.encrypt(plaintext, out));
            match result {
                Some(Ok(written)) => {
                    *len += written;
                    return Ok(());
                }
                Some(Err(EncryptError::InsufficientSize(InsufficientSizeError {
                    required_size,
                }))) => {
                    need = required_size;
                }
                Some(Err(e)) => return Err(io::Error::other(format!("TLS: {e}"))),
                None => return Err(io::Error::other("TLS: not ready to send application data")),
            }
        }
    }

    /// Encrypts `plaintext` onto the end of `outgoing` (the last bytes of
    /// a connection: a copy here costs nothing that matters).
    fn encrypt(&mut self, plaintext: &[u8]) -> io::Result<()> {
        let (mut sealed, mut len) = (Vec::new(), 0);
        for record in plaintext.chunks(RECORD_PLAINTEXT) {
            self.seal_into(record, &mut sealed, &mut len)?;
        }
        self.outgoing.extend_from_slice(&sealed[..len]);
        Ok(())
    }

    /// Writes `bytes` now if the handshake is done, for a connection that
    /// is dropped right after.
    pub fn write_once(&mut self, bytes: &[u8]) {
        if self.open && self.encrypt(bytes).is_ok() {
            let _ = self.flush_outgoing();
        }
    }

    /// Queues a close_notify alert and writes what can be written.
    pub fn close_notify(&mut self) {
        self.with_writer(|writer, outgoing| {
            let start = outgoing.len();
            outgoing.resize(start + RECORD_OVERHEAD, 0);
            match writer.queue_close_notify(&mut outgoing[start..]) {
                Ok(written) => outgoing.truncate(start + written),
                Err(_) => outgoing.truncate(start),
            }
        });
        let _ = self.flush_outgoing();
    }

    /// Writes the encrypted bytes waiting, until none is left or the
    /// socket would block.
    fn flush_outgoing(&mut self) -> io::Result<Flush> {
        let result = write_some(&mut self.tcp, &self.outgoing);
        let sent = *result.as_ref().unwrap_or(&0);
        let blocked = sent < self.outgoing.len();
        self.outgoing.drain(..sent);
        release_if_empty(&mut self.outgoing);
        self.recount();
        result.map(|_| if blocked { Flush::Blocked } else { Flush::Done })
    }
}

/// Acts on one state of the connection; `Some` when processing should
/// stop for now.
fn handle(
    state: ConnectionState<'_, '_, ServerConnectionData>,
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

thread_local! {
    /// Where records are sealed before they are written, shared by every
    /// connection of the loop's thread: sealing writes into memory that is
    /// already there (no allocation, no zeroing per record), and only what
    /// the socket does not take is copied into the connection's own buffer.
    static SEALED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Small slices of plaintext gathered into one record: a record per
    /// frame would cost a header, a tag and a seal each.
    static GATHERED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Slices shorter than this are gathered with their neighbours into one
/// record; longer ones are sealed where they are.
const GATHER_BELOW: usize = 4 * 1024;

/// The shared buffers are freed past this, so one burst does not keep
/// them large.
const SHARED_KEEP: usize = 256 * 1024;

/// The write queue's plaintext, encrypted as it is written: records are
/// sealed into the loop's [`SEALED`] buffer and written at once; a
/// connection with encrypted bytes still waiting reads as `WouldBlock`.
struct Encrypt<'a> {
    stream: &'a mut TlsStream,
}

impl Encrypt<'_> {
    /// Seals what `bufs` hold, up to [`TLS_BUFFER_LIMIT`] of plaintext,
    /// into `sealed`; returns the plaintext taken and the sealed length.
    fn seal_all(
        &mut self,
        bufs: &[io::IoSlice<'_>],
        sealed: &mut Vec<u8>,
        gathered: &mut Vec<u8>,
    ) -> io::Result<(usize, usize)> {
        let (mut taken, mut len) = (0, 0);
        gathered.clear();
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            let room = TLS_BUFFER_LIMIT - taken;
            if room == 0 {
                break;
            }
            let buf = &buf[..buf.len().min(room)];
            if buf.len() < GATHER_BELOW {
                if gathered.len() + buf.len() > RECORD_PLAINTEXT {
                    self.stream.seal_into(gathered, sealed, &mut len)?;
                    gathered.clear();
                }
                gathered.extend_from_slice(buf);
            } else {
                if !gathered.is_empty() {
                    self.stream.seal_into(gathered, sealed, &mut len)?;
                    gathered.clear();
                }
                for record in buf.chunks(RECORD_PLAINTEXT) {
                    self.stream.seal_into(record, sealed, &mut len)?;
                }
            }
            taken += buf.len();
        }
        if !gathered.is_empty() {
            self.stream.seal_into(gathered, sealed, &mut len)?;
        }
        Ok((taken, len))
    }
}

impl io::Write for Encrypt<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if !self.stream.outgoing.is_empty() {
            // Earlier records go first.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        SEALED.with_borrow_mut(|sealed| {
            GATHERED.with_borrow_mut(|gathered| {
                let (taken, len) = self.seal_all(bufs, sealed, gathered)?;
                // Bytes rustls had to send on the way (a key update) are
                // older than these records.
                let start = self.stream.outgoing.len();
                if start > 0 {
                    self.stream.outgoing.extend_from_slice(&sealed[..len]);
                } else {
                    let sent = write_some(&mut self.stream.tcp, &sealed[..len])?;
                    self.stream.outgoing.extend_from_slice(&sealed[sent..len]);
                }
                self.stream.recount();
                if sealed.len() > SHARED_KEEP {
                    *sealed = Vec::new();
                }
                if gathered.capacity() > SHARED_KEEP {
                    *gathered = Vec::new();
                }
                Ok(taken)
            })
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes as much of `bytes` as the socket takes now; returns how much.
fn write_some(tcp: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    use std::io::Write;
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
