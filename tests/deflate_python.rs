//! permessage-deflate against another real client library that compresses:
//! Python's `websockets` (installed by `.ci/run`). Skipped with a clear line
//! when it is missing, unless `WSCHAT_REQUIRE_PYTHON=1` (as in CI).

mod support;

use std::process::Command;

use support::{python_websockets_or_skip, start_server, test_config};

#[test]
fn python_websockets_compresses_with_wschat() {
    if !python_websockets_or_skip() {
        return;
    }
    let server = start_server(test_config());
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/deflate_client.py"
        ))
        .arg(server.addr().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "python client failed:\n{stdout}\n{stderr}"
    );
}
