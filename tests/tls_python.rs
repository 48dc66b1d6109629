//! wss:// with another real client library: Python's `websockets` over the
//! standard `ssl` module (OpenSSL), trusting only the CA made in the test.
//! An echo and a room with permessage-deflate, shared with a client on the
//! plain listener. Skipped with a clear line when `websockets` is missing,
//! unless `WSCHAT_REQUIRE_PYTHON=1` (as in CI).

mod support;

use std::process::Command;

use support::{python_websockets_or_skip, start_server, test_config, TestCa};

#[test]
fn python_websockets_over_ssl_echoes_and_chats_compressed() {
    if !python_websockets_or_skip() {
        return;
    }
    let ca = TestCa::new("tls-python");
    let (cert, key) = ca.issue("server", "wschat python test");
    let server = start_server(wschat::Config {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..test_config()
    });
    // The script bounds itself to 30 s; it exits non-zero on any failure.
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/tls_client.py"
        ))
        .arg(server.tls_addr().to_string())
        .arg(server.addr().to_string())
        .arg(ca.dir().join("ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "python client failed:\n{stdout}\n{stderr}"
    );
}
