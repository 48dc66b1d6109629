//! Python 3, which runs the second real client library of the tests
//! (`websockets`) and small helpers (a socket-activation trampoline).

use std::process::Command;

/// Whether `python3` can import `module`. When it cannot, prints why the
/// calling test is skipped (with `install`, how to get it) and returns
/// `false`, unless `WSCHAT_REQUIRE_PYTHON=1` (as in CI), which fails the
/// test instead.
pub fn python_or_skip(module: &str, install: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let required = std::env::var("WSCHAT_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
        assert!(!required, "python3 with {module} is required ({install})");
        println!("skipped: python3 with {module} not found (install: {install})");
    }
    found
}

/// Whether Python's `websockets` is there; see [`python_or_skip`].
pub fn python_websockets_or_skip() -> bool {
    python_or_skip("websockets", "pip install websockets")
}
