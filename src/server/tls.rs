//! TLS for `--tls-listen`: the certificate in service, loading and
//! reloading it, and how handshake failures are named.
//!
//! rustls is driven by hand from the loop (see `transport`): its
//! unbuffered connection takes TLS bytes in and gives plaintext and TLS
//! bytes out, on the one thread, without blocking. The crypto provider is
//! ring: it builds in 27 s here against aws-lc-rs's 45 s, moves records as
//! fast, and keeps an idle connection under 4 KiB (README, TLS).
//!
//! A reload (SIGHUP) builds a whole new `ServerConfig`; connections made
//! before keep the one they started with (each holds an `Arc` of it), new
//! handshakes use the new one at once, and a file that fails to load
//! leaves the old pair in service.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::ServerConfig;

/// Bytes of encrypted records one connection may hold before they are
/// written: what the write queue hands to TLS waits there only this long,
/// so backpressure and the memory budgets still see the rest in the queue.
pub const TLS_BUFFER_LIMIT: usize = 80 * 1024;

/// Why a certificate and key could not be put in service.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read(PathBuf, io::Error),
    /// The certificate file holds no PEM certificate.
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key (PKCS#8, RSA or SEC1).
    NoKey(PathBuf),
    /// The certificate could not be parsed as X.509.
    BadCertificate(String),
    /// rustls refused the pair (for instance, the key does not match).
    Refused(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            TlsError::NoCertificate(path) => {
                write!(f, "no PEM certificate in {}", path.display())
            }
            TlsError::NoKey(path) => write!(
                f,
                "no PEM private key (PKCS#8, RSA or SEC1) in {}",
                path.display()
            ),
            TlsError::BadCertificate(why) => write!(f, "invalid certificate: {why}"),
            TlsError::Refused(e) => write!(f, "certificate and key refused: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// What the log and `/metrics` say of the certificate in service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject of the end-entity certificate.
    pub subject: String,
    /// Its not-after time, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// The certificate and key in service, and where they are reloaded from.
#[derive(Debug)]
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    config: Arc<ServerConfig>,
    info: CertificateInfo,
}

impl Certificates {
    /// Loads the PEM chain at `cert_path` and the key at `key_path`.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Certificates, TlsError> {
        let (config, info) = build(cert_path, key_path)?;
        Ok(Certificates {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            config,
            info,
        })
    }

    /// Loads the files again. On success the new pair serves every new
    /// handshake; on failure the old pair stays in service.
    pub fn reload(&mut self) -> Result<&CertificateInfo, TlsError> {
        let (config, info) = build(&self.cert_path, &self.key_path)?;
        self.config = config;
        self.info = info;
        Ok(&self.info)
    }

    /// The rustls configuration in service (for tests and fuzzing that
    /// compare the transport with rustls driven its usual way).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The certificate in service.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// The server side of a new TLS connection. The unbuffered kind: the
    /// transport owns every buffer, so an idle connection keeps none.
    pub fn accept(&self) -> Result<UnbufferedServerConnection, rustls::Error> {
        UnbufferedServerConnection::new(self.config.clone())
    }
}

/// A rustls configuration for the pair: TLS 1.3 and 1.2, ALPN `http/1.1`.
fn build(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Arc<ServerConfig>, CertificateInfo), TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|e| TlsError::Read(cert_path.into(), e))?;
    let key_pem = std::fs::read(key_path).map_err(|e| TlsError::Read(key_path.into(), e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate(cert_path.into()));
    };
    let info = describe(leaf)?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(key_path.into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Refused)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Refused)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Resumption: TLS 1.3 tickets (encrypted under a key that rotates every
    // 6 hours), besides the TLS 1.2 session cache rustls keeps by default.
    // A resumed handshake skips the certificate signature, the costly part.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Refused)?;
    Ok((Arc::new(config), info))
}

/// The subject and expiry of a DER certificate.
fn describe(der: &CertificateDer<'_>) -> Result<CertificateInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// A short stable label for a failed handshake, for `/metrics`.
pub fn failure_label(err: &rustls::Error) -> &'static str {
    use rustls::Error::*;
    match err {
        PeerIncompatible(rustls::PeerIncompatible::SupportedVersionsExtensionRequired) => {
            "protocol_version"
        }
        PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon) => "no_shared_cipher",
        PeerIncompatible(_) => "incompatible",
        InvalidMessage(_) | InappropriateMessage { .. } | InappropriateHandshakeMessage { .. } => {
            "invalid_message"
        }
        AlertReceived(_) => "alert_received",
        NoApplicationProtocol => "alpn",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![format!("{name}.test")]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wschat-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_pair_loads_and_names_its_certificate() {
        let dir = temp_dir("load");
        let (cert, key) = write_pair(&dir, "a");
        let certs = Certificates::load(&cert, &key).unwrap();
        assert!(certs.info().subject.contains("rcgen"), "{:?}", certs.info());
        assert!(certs.info().not_after > 1_700_000_000);
        assert!(certs.accept().is_ok());
    }

    #[test]
    fn bad_files_are_named_and_a_failed_reload_keeps_the_old_pair() {
        let dir = temp_dir("bad");
        let (cert, key) = write_pair(&dir, "a");
        let (_, other_key) = write_pair(&dir, "b");
        let missing = dir.join("missing.pem");
        assert!(matches!(
            Certificates::load(&missing, &key),
            Err(TlsError::Read(..))
        ));
        assert!(matches!(
            Certificates::load(&key, &key),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(matches!(
            Certificates::load(&cert, &cert),
            Err(TlsError::NoKey(_))
        ));
        let mismatch = Certificates::load(&cert, &other_key).unwrap_err();
        assert!(matches!(mismatch, TlsError::Refused(_)), "{mismatch}");

        let mut certs = Certificates::load(&cert, &key).unwrap();
        let before = certs.info().clone();
        std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----\nhalf").unwrap();
        assert!(certs.reload().is_err());
        assert_eq!(certs.info(), &before, "the old pair stays in service");
    }
}
