//! The TLS read loop of `Transport` (`server/transport/`) over real
//! loopback sockets, with the rustls connection the server makes
//! (`Certificates::load` on PEM files written at start, then `accept()`):
//! whatever a client sends, in whatever pieces, reading never panics,
//! never spins, and ends as rustls alone ends on the same bytes: a
//! `process_new_packets` error comes out as `TlsFailed` with that error as
//! soon as its bytes are in, without waiting for the peer to close; else
//! `Eof` at the FIN. Split or whole, the end is the same. What rustls's
//! own fuzzing covers, and why this target fuzzes the loop around it
//! instead, is in `fuzz/README.md`.
//!
//! The first byte picks the scenario (low 2 bits) and seeds the splits:
//! * 0, 1: the bytes alone, as if they were TLS records;
//! * 2: a real ClientHello (from a rustls client), then the bytes;
//! * 3: a full handshake with a rustls client, then the bytes as
//!   application data, written in records of the split sizes: the loop
//!   must hand every byte over once, in order, then see `close_notify`.
#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use wschat::server::tls::Certificates;
use wschat::server::transport::{ReadResult, Transport};

/// How long one scenario may wait for the loopback to deliver bytes.
const LIMIT: Duration = Duration::from_secs(5);

/// Read calls one drain may make before it counts as spinning: each call
/// takes bytes from rustls or from the socket, and neither is endless.
const MAX_READS: usize = 100_000;

struct Fixture {
    certs: Certificates,
    client: Arc<ClientConfig>,
    listener: TcpListener,
    client_hello: Vec<u8>,
}

/// A CA and a leaf for `localhost`, written as PEM and loaded the way the
/// server loads `--tls-cert` and `--tls-key`; a client that trusts the CA;
/// one listener on loopback; one ClientHello.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("wschat-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert_path, leaf.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let certs = Certificates::load(&cert_path, &key_path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        let mut roots = RootCertStore::empty();
        roots.add(issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let mut hello = Vec::new();
        new_client(&client).write_tls(&mut hello).unwrap();
        Fixture {
            certs,
            client,
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            client_hello: hello,
        }
    })
}

fn new_client(config: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Piece sizes from a seed: small and large, changing piece to piece.
struct Splits(u32);

impl Splits {
    fn next(&mut self) -> usize {
        // xorshift32
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        let max = [1, 2, 5, 17, 300, 5000][(self.0 >> 24) as usize % 6];
        1 + self.0 as usize % max
    }

    fn pieces<'a>(&mut self, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let (piece, rest) = data.split_at(self.next().min(data.len()));
            out.push(piece);
            data = rest;
        }
        out
    }
}

/// How a connection's reading ended.
#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Failed(rustls::Error),
    Io(ErrorKind),
}

/// A server transport and the client's socket, connected on loopback.
struct Pair {
    server: Transport,
    client: TcpStream,
    plaintext: Vec<u8>,
}

impl Drop for Pair {
    /// Ends with a reset: no TIME_WAIT left behind by each input, so a
    /// long run does not run out of loopback ports.
    fn drop(&mut self) {
        let _ = socket2::SockRef::from(&self.client).set_linger(Some(Duration::ZERO));
    }
}

impl Pair {
    fn new(f: &Fixture) -> Pair {
        let client = TcpStream::connect(f.listener.local_addr().unwrap()).unwrap();
        client.set_nodelay(true).unwrap();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        let (accepted, _) = f.listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let tcp = mio::net::TcpStream::from_std(accepted);
        let server = Transport::tls(tcp, f.certs.accept().unwrap());
        Pair {
            server,
            client,
            plaintext: Vec::new(),
        }
    }

    /// Reads until the transport would block (`None`) or ends.
    fn drain(&mut self) -> Option<End> {
        let mut buf = [0u8; 4096];
        for _ in 0..MAX_READS {
            match self.server.read(&mut buf) {
                Ok(ReadResult::Data(n)) => {
                    assert!(n > 0 && n <= buf.len(), "read {n}");
                    self.plaintext.extend_from_slice(&buf[..n]);
                }
                Ok(ReadResult::WouldBlock) => return None,
                Ok(ReadResult::Eof) => return Some(End::Eof),
                Ok(ReadResult::TlsFailed(e)) => return Some(End::Failed(e)),
                Ok(ReadResult::Proxied(_) | ReadResult::ProxyRefused(_)) => {
                    unreachable!("this transport expects no PROXY header")
                }
                Err(e) => return Some(End::Io(e.kind())),
            }
        }
        panic!("the read loop made {MAX_READS} calls without blocking or ending");
    }

    /// Drains until the end comes, bounded by [`LIMIT`].
    fn drain_to_end(&mut self) -> End {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(end) = self.drain() {
                return end;
            }
            assert!(Instant::now() < deadline, "no end within {LIMIT:?}");
            std::thread::yield_now();
        }
    }

    /// Writes `pieces` one by one, reading after each; then reads to the
    /// end, after a FIN unless the bytes alone must end it (`ends_alone`:
    /// a failure must be reported without waiting for the peer).
    fn feed(&mut self, pieces: &[&[u8]], ends_alone: bool) -> End {
        for piece in pieces {
            self.client.write_all(piece).unwrap();
            if let Some(end) = self.drain() {
                return end;
            }
        }
        if !ends_alone {
            self.client.shutdown(Shutdown::Write).unwrap();
        }
        self.drain_to_end()
    }

    /// Everything the server sent, once it closed its side (`close_notify`
    /// where rustls still sends one, and FIN): whole TLS records, a
    /// failure's alert the last.
    fn check_records(mut self, end: &End) {
        self.server.shutdown_write();
        let mut sent = Vec::new();
        match self.client.read_to_end(&mut sent) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("reading what the server sent: {e}"),
        }
        let mut types = Vec::new();
        let mut rest = &sent[..];
        while !rest.is_empty() {
            assert!(rest.len() >= 5, "a cut record header: {rest:02x?}");
            let (kind, version) = (rest[0], [rest[1], rest[2]]);
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            assert!((20..=23).contains(&kind), "record type {kind}");
            assert!(version == [3, 3] || version == [3, 1], "{version:?}");
            assert!(
                len <= 16384 + 256 && rest.len() >= 5 + len,
                "record of {len}"
            );
            types.push(kind);
            rest = &rest[5 + len..];
        }
        // A failure's alert is the last record (rustls sends no
        // close_notify after a fatal alert): in the clear, or encrypted
        // once the handshake has switched to encrypted records.
        let last = types.last().copied();
        let told = last == Some(21) || (last == Some(23) && types.contains(&23));
        if let End::Failed(e) = end {
            if !matches!(e, rustls::Error::AlertReceived(_)) {
                assert!(told, "{e}: no alert last: {types:?}");
            }
        }
    }
}

/// How rustls alone ends on `stream` (read from memory, processed after
/// each `read_tls`, as its own fuzz targets drive it): the oracle.
fn rustls_alone(f: &Fixture, mut stream: &[u8]) -> End {
    let mut conn = rustls::ServerConnection::new(f.certs.config()).unwrap();
    let mut sink = Vec::new();
    loop {
        match conn.read_tls(&mut stream) {
            Ok(0) => return End::Eof,
            Ok(_) => {}
            Err(e) => return End::Io(e.kind()),
        }
        if let Err(e) = conn.process_new_packets() {
            return End::Failed(e);
        }
        while conn.wants_write() {
            conn.write_tls(&mut sink).unwrap();
        }
    }
}

/// The bytes whole and in pieces: the end rustls alone comes to (a failure
/// before any FIN), never plaintext.
fn raw(f: &Fixture, prefix: &[u8], data: &[u8], splits: &mut Splits) {
    let mut stream = prefix.to_vec();
    stream.extend_from_slice(data);
    let expected = rustls_alone(f, &stream);
    let ends_alone = expected != End::Eof;
    let mut whole = Pair::new(f);
    let whole_end = whole.feed(&[&stream], ends_alone);
    assert_eq!(whole_end, expected, "written whole");
    let mut split = Pair::new(f);
    let split_end = split.feed(&splits.pieces(&stream), ends_alone);
    assert_eq!(split_end, expected, "written in pieces");
    // No handshake can finish on bytes that hold no client's keys.
    assert!(whole.plaintext.is_empty() && split.plaintext.is_empty());
    whole.check_records(&whole_end);
}

/// A real handshake, then `data` as application data in records of the
/// split sizes, then `close_notify`: every byte comes out once, in order.
fn application_data(f: &Fixture, data: &[u8], splits: &mut Splits) {
    let mut pair = Pair::new(f);
    pair.client.set_nonblocking(true).unwrap();
    let mut client = new_client(&f.client);
    let deadline = Instant::now() + LIMIT;
    while client.is_handshaking() || !pair.server.take_handshake_done() {
        assert!(Instant::now() < deadline, "no handshake within {LIMIT:?}");
        while client.wants_write() {
            client.write_tls(&mut pair.client).unwrap();
        }
        match client.read_tls(&mut pair.client) {
            Ok(0) => panic!("the server closed during the handshake"),
            Ok(_) => {
                client.process_new_packets().unwrap();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        assert_eq!(pair.drain(), None);
    }
    pair.client.set_nonblocking(false).unwrap();
    for piece in splits.pieces(data) {
        client.writer().write_all(piece).unwrap();
        while client.wants_write() {
            client.write_tls(&mut pair.client).unwrap();
        }
        assert_eq!(pair.drain(), None);
    }
    client.send_close_notify();
    while client.wants_write() {
        client.write_tls(&mut pair.client).unwrap();
    }
    assert_eq!(pair.drain_to_end(), End::Eof);
    assert!(pair.plaintext == data, "plaintext changed on the way");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let mut splits = Splits(u32::from(mode).wrapping_mul(0x9e37_79b9) | 1);
    match mode & 3 {
        0 | 1 => raw(f, &[], rest, &mut splits),
        2 => raw(f, &f.client_hello, rest, &mut splits),
        _ => application_data(f, rest, &mut splits),
    }
});
