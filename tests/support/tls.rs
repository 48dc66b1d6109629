//! A test PKI and TLS clients: a CA made in the test, leaf certificates it
//! signs for `localhost` and 127.0.0.1, and rustls clients that trust it.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::IO_TIMEOUT;

/// A TLS client stream over a blocking socket.
pub type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// A certificate authority that lives for one test, and a folder for its
/// files.
pub struct TestCa {
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA; its files go to a fresh folder named after `tag`.
    pub fn new(tag: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!("wschat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "wschat test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
        TestCa { dir, issuer }
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a leaf for `localhost` and 127.0.0.1 whose common name is
    /// `cn`, written to `{name}.crt` and `{name}.key`; returns both paths.
    pub fn issue(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// A client configuration that trusts this CA only.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// A TLS connection to `addr` with the handshake done.
pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    stream
}

/// The common name of the certificate `stream`'s server presented.
pub fn peer_common_name(stream: &TlsClient) -> String {
    let certs = stream
        .conn
        .peer_certificates()
        .expect("a server certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref()).unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .expect("a common name");
    cn.as_str().unwrap().to_string()
}

/// A WebSocket over TLS to `path` on `addr`, by tungstenite (an
/// independent client) over rustls.
pub fn wss_connect(
    addr: SocketAddr,
    path: &str,
    config: Arc<ClientConfig>,
) -> tungstenite::WebSocket<TlsClient> {
    let stream = tls_connect(addr, config);
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, response) = tungstenite::client(url.as_str(), stream).expect("wss handshake");
    assert_eq!(response.status(), 101);
    ws
}
