//! The certificate wschat serves in the TLS cases: an ECDSA P-256 leaf
//! for `localhost` and 127.0.0.1, signed by a CA made at the same time,
//! written under `target/bench-tls/` (made anew each run).

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};

/// Where the files are.
pub struct BenchCert {
    /// The CA certificate (PEM), for `wschat-bench --ca`.
    pub ca: PathBuf,
    /// The leaf certificate (PEM), for `wschat --tls-cert`.
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM), for `wschat --tls-key`.
    pub key: PathBuf,
}

/// Makes the CA and the leaf and writes them to `dir`.
pub fn make(dir: &Path) -> Result<BenchCert, String> {
    let fail = |e: &dyn std::fmt::Display| format!("bench certificate: {e}");
    fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wschat bench CA");
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(&e))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| fail(&e))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut params = CertificateParams::new(names).map_err(|e| fail(&e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "wschat bench server");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(&e))?;
    let cert = params.signed_by(&key, &ca).map_err(|e| fail(&e))?;
    let files = BenchCert {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    for (path, pem) in [
        (&files.ca, ca.pem()),
        (&files.cert, cert.pem()),
        (&files.key, key.serialize_pem()),
    ] {
        fs::write(path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(files)
}
