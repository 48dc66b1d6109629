//! `wschat-bench`, the project's load tool, run as a child process.

use std::process::Command;

use serde_json::Value;

/// Runs the load tool with `args` (plus `--json --quiet`) and returns its
/// JSON report, with its exit status checked against `passed`.
pub fn bench(args: &[&str], passed: bool) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_wschat-bench"))
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run wschat-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.success(),
        passed,
        "{args:?}: {}\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}
