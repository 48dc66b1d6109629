//! The client side of `wss://`: which certificates to trust and whether
//! sessions are resumed, as one rustls `ClientConfig` every connection of
//! a run shares.
//!
//! Certificates are checked by default, against the system's roots (read
//! by `rustls-native-certs`), or against the CAs of `--ca FILE` instead.
//! `--insecure` checks nothing at all ([`AcceptAnyServer`]), for
//! self-signed test certificates.
//!
//! The TLS 1.3 cipher suites are offered in the order browsers offer them,
//! AES-128-GCM first (rustls's own default puts AES-256-GCM first, and a
//! server that honours the client's order, as rustls does, then pays for
//! SHA-384 and four more AES rounds); `--cipher` offers one suite alone.
//!
//! Resumption lives in the shared config's session store: with `--resume`
//! the TLS 1.3 tickets a server sends are kept ([`store`]) and offered by
//! the next connections; without it the config keeps no session at all,
//! so every handshake is full.

mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::ring::cipher_suite;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CipherSuite, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    SupportedCipherSuite,
};

/// A TLS 1.3 cipher suite to offer alone (`--cipher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cipher {
    /// TLS13_AES_128_GCM_SHA256.
    Aes128,
    /// TLS13_AES_256_GCM_SHA384.
    Aes256,
    /// TLS13_CHACHA20_POLY1305_SHA256.
    Chacha20,
}

impl Cipher {
    /// The rustls suite.
    fn suite(self) -> SupportedCipherSuite {
        match self {
            Cipher::Aes128 => cipher_suite::TLS13_AES_128_GCM_SHA256,
            Cipher::Aes256 => cipher_suite::TLS13_AES_256_GCM_SHA384,
            Cipher::Chacha20 => cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        }
    }
}

/// How the client speaks TLS: the `--ca`, `--insecure` and `--resume` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust the CAs in this PEM file instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Check no certificate and no signature.
    pub insecure: bool,
    /// Offer the session tickets of earlier connections.
    pub resume: bool,
    /// Offer this TLS 1.3 suite alone (and no TLS 1.2).
    pub cipher: Option<Cipher>,
}

impl TlsOptions {
    /// The configuration all connections of a run share.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(self.provider());
        let versions: &[_] = match self.cipher {
            Some(_) => &[&rustls::version::TLS13],
            None => rustls::DEFAULT_VERSIONS,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
                .with_no_client_auth()
        } else {
            let roots = match &self.ca {
                Some(path) => roots_from_file(path)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = if self.resume {
            Resumption::store(Arc::new(store::TicketStore::default()))
        } else {
            Resumption::disabled()
        };
        Ok(Arc::new(config))
    }
}

impl TlsOptions {
    /// ring, offering the suites browsers offer in their order, or the
    /// one `--cipher` names.
    fn provider(&self) -> CryptoProvider {
        let mut provider = rustls::crypto::ring::default_provider();
        match self.cipher {
            Some(cipher) => provider.cipher_suites = vec![cipher.suite()],
            None => provider
                .cipher_suites
                .sort_by_key(|s| browser_rank(s.suite())),
        }
        provider
    }
}

/// Where browsers put a TLS 1.3 suite in their ClientHello (AES-128-GCM,
/// AES-256-GCM, ChaCha20-Poly1305); the sort is stable, so TLS 1.2 suites
/// keep rustls's order after them.
fn browser_rank(suite: CipherSuite) -> u8 {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    }
}

/// The CA certificates of a PEM file (`--ca`).
fn roots_from_file(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("--ca {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--ca {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("--ca {}: no PEM certificate", path.display()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("--ca {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The system's trusted roots; an error if there are none.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "no trusted roots found in the system's store{why}; use --ca FILE or --insecure"
        ));
    }
    Ok(roots)
}

/// The name the server's certificate must carry: the URL's host, a DNS
/// name or an IP address (without brackets).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|_| format!("{host}: not a valid TLS name"))
}

/// `--insecure`: a verifier that accepts any certificate for any name and
/// any handshake signature. It proves nothing about the server; it exists
/// for self-signed test certificates, and it keeps the load generator's
/// handshake cost to key exchange alone.
#[derive(Debug)]
pub struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wschat-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_ca_file_is_read_and_bad_ones_are_named() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let good = temp_file("ca.pem", cert.pem().as_bytes());
        let opts = TlsOptions {
            ca: Some(good),
            ..TlsOptions::default()
        };
        assert!(opts.client_config().is_ok());

        let empty = temp_file("empty.pem", b"no certificate here\n");
        let missing = empty.with_file_name("missing.pem");
        for (path, words) in [(empty, "no PEM certificate"), (missing, "--ca")] {
            let opts = TlsOptions {
                ca: Some(path),
                ..TlsOptions::default()
            };
            let err = opts.client_config().unwrap_err();
            assert!(err.contains(words), "{err}");
        }
    }

    #[test]
    fn resumption_follows_the_flag() {
        let insecure = |resume| TlsOptions {
            insecure: true,
            resume,
            ..TlsOptions::default()
        };
        let on = insecure(true).client_config().unwrap();
        let off = insecure(false).client_config().unwrap();
        // Debug is the only window on the store; a disabled one is a no-op.
        assert!(format!("{:?}", on.resumption).contains("TicketStore"));
        assert!(format!("{:?}", off.resumption).contains("NoClientSessionStorage"));
        assert_eq!(on.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn suites_in_browser_order_or_one_alone() {
        let suites = |cipher| {
            let opts = TlsOptions {
                insecure: true,
                cipher,
                ..TlsOptions::default()
            };
            let provider = opts.provider();
            assert!(opts.client_config().is_ok());
            provider
                .cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        };
        let all = suites(None);
        assert_eq!(
            all[..3],
            [
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
        assert!(all.len() > 3, "TLS 1.2 suites follow");
        assert_eq!(
            suites(Some(Cipher::Aes256)),
            [CipherSuite::TLS13_AES_256_GCM_SHA384]
        );
    }

    #[test]
    fn server_names_for_hosts_and_addresses() {
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(server_name("bad name").is_err());
    }
}
