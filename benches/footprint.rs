//! Server memory per idle WebSocket connection: (RSS with N held - RSS
//! with 0) / N, with and without permessage-deflate (`--compression
//! shared`) negotiated by every client, and over `wss://` (TLS 1.3, the
//! throughput bench's ECDSA P-256 certificate, made anew under
//! `target/bench-tls/`). The targets are at most 512 bytes for `ws://`
//! and 4 KiB for `wss://`.
//!
//! `cargo bench --bench footprint` (N = 10000, or `WSCHAT_FOOTPRINT_CONNS`).

#[path = "throughput/cert.rs"]
mod cert;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// `target/release/wschat`, built if missing (this file runs from
/// `target/release/deps/`).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("wschat");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "wschat"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    bin
}

struct Server {
    child: Child,
    /// The plain listener, or the TLS one if the server was given a
    /// certificate.
    addr: SocketAddr,
}

impl Server {
    /// wschat for `conns` connections; with `tls`, also listening for TLS
    /// with that certificate, and `addr` is the TLS listener's.
    fn start(conns: usize, tls: Option<&cert::BenchCert>) -> Server {
        let mut cmd = Command::new(server_binary());
        cmd.args(["--listen", "127.0.0.1:0", "--max-connections"])
            .arg((conns + 100).to_string());
        if let Some(cert) = tls {
            cmd.args(["--tls-listen", "127.0.0.1:0", "--tls-cert"])
                .arg(&cert.cert)
                .arg("--tls-key")
                .arg(&cert.key);
        }
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let marker = match tls {
            Some(_) => "listening for TLS on ",
            None => "listening on ",
        };
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.split(marker).nth(1).map(|a| a.trim().parse().unwrap()))
            .expect("listening on ADDR");
        // Keep draining the log so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, addr }
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking TCP connection to `addr` with a 10 s read timeout.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Upgrades `s` to the lobby (offering permessage-deflate if asked) and
/// checks the 101.
fn upgrade(s: &mut impl ReadWrite, deflate: bool) {
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(head.contains("permessage-deflate"), deflate, "{head}");
}

/// A byte stream in both directions: a socket, or TLS over one.
trait ReadWrite: Read + Write {}

impl<T: Read + Write> ReadWrite for T {}

/// A client configuration that trusts the bench CA, resumption off (every
/// connection makes a full handshake, as new clients would), AES-128-GCM
/// first as browsers and wschat-bench offer it.
fn tls_client(cert: &cert::BenchCert) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_file(&cert.ca).unwrap();
    roots.add(ca).unwrap();
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// (RSS with `conns` held by `hold` - RSS with none) / `conns`.
fn measure<T>(server: Server, conns: usize, mut hold: impl FnMut(SocketAddr) -> T) -> f64 {
    std::thread::sleep(Duration::from_millis(200));
    let before = server.rss_bytes();
    let held: Vec<T> = (0..conns).map(|_| hold(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = server.rss_bytes();
    drop(held);
    (after.saturating_sub(before)) as f64 / conns as f64
}

/// Plain `ws://`, with or without permessage-deflate.
fn measure_ws(conns: usize, deflate: bool) -> f64 {
    measure(Server::start(conns, None), conns, |addr| {
        let mut s = connect(addr);
        upgrade(&mut s, deflate);
        s
    })
}

/// `wss://`: the TLS handshake, then the upgrade, then idle.
fn measure_wss(conns: usize) -> f64 {
    let dir = std::env::current_exe().unwrap();
    let target = dir.parent().unwrap().parent().unwrap().parent().unwrap();
    let cert = cert::make(&target.join("bench-tls")).unwrap();
    let config = tls_client(&cert);
    let name = ServerName::try_from("localhost").unwrap();
    measure(Server::start(conns, Some(&cert)), conns, |addr| {
        let tls = ClientConnection::new(config.clone(), name.clone()).unwrap();
        let mut s = StreamOwned::new(tls, connect(addr));
        upgrade(&mut s, false);
        s
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let conns: usize = std::env::var("WSCHAT_FOOTPRINT_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let plain = measure_ws(conns, false);
    let deflate = measure_ws(conns, true);
    let tls = measure_wss(conns);
    println!("server RSS per idle connection, {conns} held:");
    println!("  ws://, no extension                  {plain:>6.0} bytes (target: at most 512)");
    println!("  ws://, permessage-deflate (shared)   {deflate:>6.0} bytes (target: at most 512)");
    println!("  wss://, TLS 1.3 (AES-128-GCM)        {tls:>6.0} bytes (target: at most 4096)");
    println!(
        "{{\"case\":\"idle_footprint\",\"conns\":{conns},\"plain_bytes_per_conn\":{plain:.0},\"deflate_bytes_per_conn\":{deflate:.0},\"tls_bytes_per_conn\":{tls:.0}}}"
    );
}
