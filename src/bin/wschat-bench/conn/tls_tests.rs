//! The TLS layer over loopback, against wschat itself run in-process with
//! `--tls-listen` and a CA made in the test: echoes across many records,
//! the closing handshake, full and resumed handshakes, and certificates
//! that do not check out.

use super::*;
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use super::tests::upgrade;
use crate::tls::TlsOptions;

/// A CA named `name` whose PEM is written to `dir/ca.pem`.
fn make_ca(dir: &std::path::Path, name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    ca
}

/// A fresh folder for one test's files.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wschat-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// wschat on its own thread with a TLS listener whose certificate (for
/// `localhost` and 127.0.0.1) the CA in `dir` signed.
struct TlsServer {
    tls_addr: std::net::SocketAddr,
    handle: wschat::ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl TlsServer {
    fn start(dir: &std::path::Path) -> TlsServer {
        let ca = make_ca(dir, "wschat-bench test CA");
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        let config = wschat::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls_listen: Some("127.0.0.1:0".parse().unwrap()),
            tls_cert: Some(dir.join("server.crt")),
            tls_key: Some(dir.join("server.key")),
            ..wschat::Config::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            let server = wschat::Server::bind(config).expect("bind");
            tx.send((server.tls_local_addr().unwrap(), server.handle()))
                .unwrap();
            server.run().expect("server run");
        });
        let (tls_addr, handle) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        TlsServer {
            tls_addr,
            handle,
            thread: Some(thread),
        }
    }

    fn target(&self, host: &str) -> Target {
        let url = format!("wss://{host}:{}/echo", self.tls_addr.port());
        Target::parse(&url).unwrap()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What one connection's life looked like.
#[derive(Debug)]
struct Life {
    status: Result<Status, String>,
    echoed: Vec<Vec<u8>>,
    handshake: Option<TlsHandshake>,
    negotiated: Option<String>,
}

/// Connects, sends `messages` once open, closes with 1000 once all are
/// echoed, and runs the connection until it ends (10 s at most).
fn echo_life(target: &Target, config: &Arc<ClientConfig>, messages: &[Vec<u8>]) -> Life {
    let mut rng = Rng::with_seed(21);
    let mut conn =
        Conn::connect(target, upgrade(target), false, Some(config), None, &mut rng).unwrap();
    let mut poll = Poll::new().unwrap();
    let interest = Interest::READABLE | Interest::WRITABLE;
    poll.registry()
        .register(conn.stream(), Token(0), interest)
        .unwrap();
    let mut events = Events::with_capacity(8);
    let mut echoed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if Instant::now() > deadline {
            break Err("timed out".to_string());
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        let Some(event) = events.iter().next() else {
            continue;
        };
        let result = conn.on_ready(Readiness::of(event), &mut rng, |e, out| match e {
            Event::Opened => messages.iter().for_each(|m| out.message(true, &[m])),
            Event::Message { data, .. } => {
                echoed.push(data.to_vec());
                if echoed.len() == messages.len() {
                    out.close(1000);
                }
            }
            _ => {}
        });
        match result {
            Ok(Status::Alive) => {}
            other => break other.map_err(|e| e.to_string()),
        }
    };
    Life {
        status,
        echoed,
        handshake: conn.tls_handshake(),
        negotiated: conn.tls_description(),
    }
}

fn options(dir: &std::path::Path, resume: bool) -> TlsOptions {
    TlsOptions {
        ca: Some(dir.join("ca.pem")),
        resume,
        ..TlsOptions::default()
    }
}

#[test]
fn echoes_over_many_records_and_closes_cleanly() {
    let dir = temp_dir("tls-echo");
    let server = TlsServer::start(&dir);
    let config = options(&dir, false).client_config().unwrap();
    // 300 KiB is 19 records each way and more than rustls buffers at once.
    let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let messages = vec![b"small".to_vec(), big, vec![0x5a; 16 * 1024]];
    for host in ["localhost", "127.0.0.1"] {
        let life = echo_life(&server.target(host), &config, &messages);
        assert_eq!(life.status, Ok(Status::Finished { code: Some(1000) }));
        assert_eq!(life.echoed, messages);
        assert_eq!(life.handshake, Some(TlsHandshake::Full));
        let negotiated = life.negotiated.unwrap();
        assert_eq!(negotiated, "TLSv1_3 TLS13_AES_128_GCM_SHA256 X25519");
    }
}

#[test]
fn resumption_only_with_resume() {
    let dir = temp_dir("tls-resume");
    let server = TlsServer::start(&dir);
    let target = server.target("localhost");
    let one = [b"x".to_vec()];
    let kinds = |resume| {
        let config = options(&dir, resume).client_config().unwrap();
        (0..3)
            .map(|_| echo_life(&target, &config, &one).handshake)
            .collect::<Vec<_>>()
    };
    use TlsHandshake::{Full, Resumed};
    assert_eq!(kinds(false), [Some(Full); 3]);
    assert_eq!(kinds(true), [Some(Full), Some(Resumed), Some(Resumed)]);
}

#[test]
fn an_unknown_issuer_fails_unless_insecure() {
    let dir = temp_dir("tls-issuer");
    let server = TlsServer::start(&dir);
    let other = temp_dir("tls-other-ca");
    make_ca(&other, "some other CA");
    let target = server.target("localhost");
    let one = [b"x".to_vec()];
    let strict = options(&other, false).client_config().unwrap();
    let life = echo_life(&target, &strict, &one);
    let err = life.status.unwrap_err();
    assert!(err.starts_with("tls: invalid peer certificate"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");

    let insecure = TlsOptions {
        insecure: true,
        ..TlsOptions::default()
    };
    let life = echo_life(&target, &insecure.client_config().unwrap(), &one);
    assert_eq!(life.status, Ok(Status::Finished { code: Some(1000) }));
}

#[test]
fn a_tls_config_goes_with_wss_only() {
    let config = TlsOptions {
        insecure: true,
        ..TlsOptions::default()
    }
    .client_config()
    .unwrap();
    let mut rng = Rng::with_seed(22);
    let ws = Target::parse("ws://127.0.0.1:9/").unwrap();
    let wss = Target::parse("wss://127.0.0.1:9/").unwrap();
    for (target, config) in [(&ws, Some(&config)), (&wss, None)] {
        let result = Conn::connect(target, upgrade(target), false, config, None, &mut rng);
        assert!(matches!(result, Err(ConnError::Tls(_))), "{result:?}");
    }
}
