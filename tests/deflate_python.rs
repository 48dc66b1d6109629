//! permessage-deflate against another real client library that compresses:
//! Python's `websockets` (installed by `.ci/run`). Skipped with a clear line
//! when it is missing, unless `WSCHAT_REQUIRE_PYTHON=1` (as in CI).

mod support;

use std::process::Command;

use support::{start_server, test_config};

fn python_websockets_available() -> bool {
    Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn python_websockets_compresses_with_wschat() {
    if !python_websockets_available() {
        let required = std::env::var("WSCHAT_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "python3 with websockets is required (pip install websockets)"
        );
        println!("skipped: python3 websockets not found (install: pip install websockets)");
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
