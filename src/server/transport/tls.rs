//! TLS over a TCP socket: the server side of a [`TlsConnection`] (records
//! decrypted in the loop's read buffer, buffers only while bytes are in
//! flight), its socket, and the write path that seals the write queue's
//! plaintext into the loop's one shared buffer.

use std::cell::RefCell;
use std::io;

use mio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;

use super::tls_connection::{Received, Sealer, TlsConnection, RECORD_PLAINTEXT};
use super::ReadResult;
use crate::server::tls::TLS_BUFFER_LIMIT;
use crate::server::write_queue::{BufferPool, ByteGauge, Flush, WriteQueue};

/// A TCP socket and the rustls connection over it.
pub struct TlsStream {
    tcp: TcpStream,
    tls: TlsConnection<UnbufferedServerConnection>,
    /// The handshake's completion was already reported.
    reported: bool,
    /// Where the encrypted bytes waiting are counted with the write
    /// queues' bytes, and how much of them is counted now.
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
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    /// A new server-side TLS connection over `tcp`.
    pub fn new(tcp: TcpStream, tls: UnbufferedServerConnection) -> TlsStream {
        TlsStream {
            tcp,
            tls: TlsConnection::new(tls),
            reported: false,
            gauge: None,
            counted: 0,
        }
    }

    /// Counts the encrypted bytes waiting for the socket into `gauge`.
    pub fn count_into(&mut self, gauge: ByteGauge) {
        let waiting = self.tls.outgoing().len();
        gauge.add(waiting);
        self.counted = waiting;
        self.gauge = Some(gauge);
    }

    /// Encrypted bytes waiting for the socket.
    pub fn pending_bytes(&self) -> usize {
        self.tls.outgoing().len()
    }

    /// Brings the gauge up to date with the encrypted bytes waiting.
    fn recount(&mut self) {
        if let Some(gauge) = &self.gauge {
            let waiting = self.tls.outgoing().len();
            gauge.sub(self.counted);
            gauge.add(waiting);
            self.counted = waiting;
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
        if self.tls.is_open() && !self.reported {
            self.reported = true;
            return true;
        }
        false
    }

    /// Whether the read that just returned plaintext emptied the stream
    /// (see [`TlsConnection::drained`]).
    pub fn drained(&self) -> bool {
        self.tls.drained()
    }

    /// Whether the handshake completed (and was reported).
    pub fn established(&self) -> bool {
        self.reported
    }

    /// Plaintext if some is waiting; else TLS bytes from the socket,
    /// processed until there is plaintext or the socket would block (see
    /// [`TlsConnection::read`]: records are read into the second half of
    /// `buf`, the loop's read buffer, and their plaintext written to its
    /// front). What rustls has to send on the way is sent.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<ReadResult> {
        let received = self.tls.read(buf, None, &mut self.tcp);
        let _ = self.flush_outgoing();
        Ok(match received? {
            Received::Plaintext(n) => ReadResult::Data(n),
            Received::WouldBlock => ReadResult::WouldBlock,
            Received::End => ReadResult::Eof,
            Received::Failed(err) => ReadResult::TlsFailed(err),
        })
    }

    /// TLS bytes received outside [`TlsStream::read`] (those that followed
    /// a PROXY header), processed; what rustls answers is sent.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), rustls::Error> {
        let fed = self.tls.feed(bytes);
        let _ = self.flush_outgoing();
        fed
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
            if !self.tls.is_open() {
                // Nothing may be sent before the handshake completes; the
                // bytes wait in the queue (there are none in practice: the
                // request that causes them comes after the handshake).
                return Ok(Flush::Blocked);
            }
            let mut sink = Encrypt { stream: self };
            queue.write_to_pooled(&mut sink, pool)?;
        }
    }

    /// Writes `bytes` now if the handshake is done, for a connection that
    /// is dropped right after.
    pub fn write_once(&mut self, bytes: &[u8]) {
        // (The last bytes of a connection: a copy into the connection's
        // own buffer costs nothing that matters.)
        if self.tls.is_open() && self.tls.encrypt(bytes).is_ok() {
            let _ = self.flush_outgoing();
        }
    }

    /// Queues a close_notify alert and writes what can be written.
    pub fn close_notify(&mut self) {
        self.tls.close_notify();
        let _ = self.flush_outgoing();
    }

    /// Writes the encrypted bytes waiting, until none is left or the
    /// socket would block.
    fn flush_outgoing(&mut self) -> io::Result<Flush> {
        let result = self.tls.send_waiting(&mut self.tcp);
        self.recount();
        result.map(|done| if done { Flush::Done } else { Flush::Blocked })
    }
}

thread_local! {
    /// Small slices of plaintext gathered into one record: a record per
    /// frame would cost a header, a tag and a seal each.
    static GATHERED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Slices shorter than this are gathered with their neighbours into one
/// record; longer ones are sealed where they are.
const GATHER_BELOW: usize = 4 * 1024;

/// The gathering buffer is freed past this, so one burst does not keep it
/// large.
const GATHERED_KEEP: usize = 256 * 1024;

/// The write queue's plaintext, encrypted as it is written: records are
/// sealed into the loop's shared buffer and written at once (see
/// [`TlsConnection::seal_and_send`]); a connection with encrypted bytes
/// still waiting reads as `WouldBlock`.
struct Encrypt<'a> {
    stream: &'a mut TlsStream,
}

/// Seals what `bufs` hold, up to [`TLS_BUFFER_LIMIT`] of plaintext, small
/// slices gathered in `gathered`; returns the plaintext taken.
fn seal_slices<D>(
    bufs: &[io::IoSlice<'_>],
    sealer: &mut Sealer<'_, '_, D>,
    gathered: &mut Vec<u8>,
) -> io::Result<usize> {
    gathered.clear();
    let mut taken = 0;
    for buf in bufs.iter().filter(|b| !b.is_empty()) {
        let room = TLS_BUFFER_LIMIT - taken;
        if room == 0 {
            break;
        }
        let buf = &buf[..buf.len().min(room)];
        if buf.len() < GATHER_BELOW {
            if gathered.len() + buf.len() > RECORD_PLAINTEXT {
                sealer.seal_record(gathered)?;
                gathered.clear();
            }
            gathered.extend_from_slice(buf);
        } else {
            if !gathered.is_empty() {
                sealer.seal_record(gathered)?;
                gathered.clear();
            }
            sealer.seal_all(buf)?;
        }
        taken += buf.len();
    }
    if !gathered.is_empty() {
        sealer.seal_record(gathered)?;
    }
    Ok(taken)
}

impl io::Write for Encrypt<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if !self.stream.tls.outgoing().is_empty() {
            // Earlier records go first.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let stream = &mut *self.stream;
        let taken = GATHERED.with_borrow_mut(|gathered| {
            let taken = stream.tls.seal_and_send(&mut stream.tcp, |sealer| {
                seal_slices(bufs, sealer, gathered)
            });
            if gathered.capacity() > GATHERED_KEEP {
                *gathered = Vec::new();
            }
            taken
        });
        stream.recount();
        taken
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::transport::tls_connection::tests::{client, configs};
    use rustls::client::UnbufferedClientConnection;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::time::{Duration, Instant};

    type Client = TlsConnection<UnbufferedClientConnection>;

    /// Reads `server` until it has something to say, as an event would.
    fn read_ready(server: &mut TlsStream, buf: &mut [u8]) -> ReadResult {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match server.read(buf).unwrap() {
                ReadResult::WouldBlock if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => return other,
            }
        }
    }

    /// Lets `server` take in a handshake flight (loopback delivers at
    /// once; the pause covers a busy machine) and answer it.
    fn settle(server: &mut TlsStream, buf: &mut [u8]) {
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(server.read(buf).unwrap(), ReadResult::WouldBlock));
    }

    /// Writes what `client` has to send.
    fn send(client: &mut Client, socket: &mut StdStream) {
        socket.write_all(client.outgoing()).unwrap();
        let n = client.outgoing().len();
        client.sent(n);
    }

    /// A server stream and a blocking client over loopback, handshake done.
    fn connected() -> (TlsStream, Client, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut socket = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let tls = UnbufferedServerConnection::new(configs().0.clone()).unwrap();
        let mut server = TlsStream::new(TcpStream::from_std(accepted), tls);
        let mut client = client();
        let mut buf = vec![0u8; 64 * 1024];
        while !client.is_open() {
            send(&mut client, &mut socket);
            settle(&mut server, &mut buf);
            let n = socket.read(&mut buf).unwrap();
            client.feed(&buf[..n]).unwrap();
        }
        send(&mut client, &mut socket);
        settle(&mut server, &mut buf);
        assert!(server.take_handshake_done());
        (server, client, socket)
    }

    /// Seals `plaintext` as records and sends them.
    fn send_plaintext(client: &mut Client, socket: &mut StdStream, plaintext: &[u8]) {
        client.encrypt(plaintext).unwrap();
        send(client, socket);
    }

    #[test]
    fn a_read_that_takes_all_the_socket_had_says_the_stream_is_drained() {
        let (mut server, mut client, mut socket) = connected();
        let mut buf = vec![0u8; 64 * 1024];
        send_plaintext(&mut client, &mut socket, b"hello");
        let ReadResult::Data(n) = read_ready(&mut server, &mut buf) else {
            panic!("no plaintext");
        };
        assert_eq!(&buf[..n], b"hello");
        assert!(server.drained(), "one short read took everything");
    }

    #[test]
    fn a_read_that_fills_its_buffer_is_not_the_end() {
        let (mut server, mut client, mut socket) = connected();
        let message: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        send_plaintext(&mut client, &mut socket, &message);
        // All of it is in the socket before the first read.
        std::thread::sleep(Duration::from_millis(100));
        let mut buf = vec![0u8; 64 * 1024];
        let ReadResult::Data(n) = read_ready(&mut server, &mut buf) else {
            panic!("no plaintext");
        };
        let mut got = buf[..n].to_vec();
        assert!(
            !server.drained(),
            "the read filled its half: more is waiting"
        );
        while got.len() < message.len() {
            match read_ready(&mut server, &mut buf) {
                ReadResult::Data(n) => got.extend_from_slice(&buf[..n]),
                other => panic!("{other:?} after {} bytes", got.len()),
            }
        }
        assert_eq!(got, message);
        assert!(server.drained(), "the last read took the rest");
    }

    #[test]
    fn plaintext_left_from_an_earlier_read_is_not_taken_for_an_empty_socket() {
        let (mut server, mut client, mut socket) = connected();
        let message = vec![7u8; 40_000];
        send_plaintext(&mut client, &mut socket, &message);
        std::thread::sleep(Duration::from_millis(50));
        // A buffer too small for a record: plaintext is kept between reads.
        let mut small = vec![0u8; 1024];
        let ReadResult::Data(n) = read_ready(&mut server, &mut small) else {
            panic!("no plaintext");
        };
        assert_eq!(n, 1024);
        assert!(!server.drained(), "decrypted bytes are still waiting");
        let ReadResult::Data(_) = read_ready(&mut server, &mut small) else {
            panic!("the kept plaintext is handed out");
        };
        assert!(
            !server.drained(),
            "taken from what was kept, not the socket"
        );
    }
}
