//! wss:// with another real client library: Python's `websockets` over the
//! standard `ssl` module (OpenSSL), trusting only the CA made in the test.
//! An echo and a room with permessage-deflate, shared with a client on the
//! plain listener. Skipped with a clear line when `websockets` is missing,
//! unless `WSCHAT_REQUIRE_PYTHON=1` (as in CI).

mod support;

use std::process::Command;

use support::{start_server, test_config, TestCa};

fn python_websockets_available() -> bool {
    Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn python_websockets_over_ssl_echoes_and_chats_compressed() {
    if !python_websockets_available() {
        let required = std::env::var("WSCHAT_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "python3 with websockets is required (pip install websockets)"
        );
        println!("skipped: python3 websockets not found (install: pip install websockets)");
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
