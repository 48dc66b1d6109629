//! One `wschat-bench` run against one server, and what it measured: the
//! load generator's own figures (from its JSON line) and the server's CPU
//! time over the run (from /proc).

use std::process::Stdio;
use std::time::Instant;

use crate::cases::Case;
use crate::server::{pinned, Layout, Server};

/// CPU the load generator is pinned to, never shared with a server.
const LOAD_CPU: &str = "1";

/// A number from our own flat JSON line: `"key":123.4`.
pub fn json_number(line: &str, key: &str) -> Option<f64> {
    let pattern = format!("\"{key}\":");
    let start = line.find(&pattern)? + pattern.len();
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// One side of a comparison: the server, the URL, and the flags that
/// side alone takes.
pub struct Run<'a> {
    /// The process whose CPU time is read.
    pub server: &'a Server,
    /// `ws://`, `wss://` or `tcp://`.
    pub url: String,
    /// `--tcp`, the TLS flags of a `wss://` run, or the protocol of a
    /// broadcast.
    pub flags: Vec<String>,
}

/// What one `wschat-bench` run measured.
pub struct Measured {
    /// The headline figure.
    pub value: f64,
    /// The latency figure beside it, in µs.
    pub latency: f64,
    /// Connections that failed.
    pub errors: f64,
    /// The load generator's CPU use, percent of one core.
    pub client_cpu: f64,
    /// The server's CPU use over the whole run, percent of one core.
    pub server_cpu: f64,
    /// Server CPU time per operation in microseconds: the server's cost,
    /// comparable even when the load generator is the bottleneck (over the
    /// whole run, or as the load generator read it over the measured
    /// stretch, as the case says).
    pub server_us_per_op: f64,
    /// Time the server was runnable but waited for its CPU, percent of the
    /// run: anything well above 0 means another process (a build, a test)
    /// shared the core and the figure is too low.
    pub server_wait: f64,
    /// Full and resumed TLS handshakes (connect over `wss://`; NaN else).
    pub tls_full: f64,
    /// See `tls_full`.
    pub tls_resumed: f64,
    /// The run passed its own checks (exit status 0).
    pub passed: bool,
}

/// Runs `wschat-bench` pinned to the load CPU as `run` says and reads its
/// JSON line.
pub fn measure(
    layout: &Layout,
    pin: bool,
    case: &Case,
    run: &Run<'_>,
    secs: &str,
) -> Result<Measured, String> {
    let mut cmd = pinned(LOAD_CPU, &layout.bin("wschat-bench"), pin);
    cmd.arg(case.scenario)
        .args(["--url", &run.url])
        .args(case.args)
        .args(&run.flags)
        .args(["--duration", secs, "--json", "--quiet"]);
    if case.server_cpu.is_some() {
        cmd.args(["--server-pid", &run.server.pid().to_string()]);
    }
    let shown = format!("{cmd:?}");
    let before = run.server.schedstat();
    let wall = Instant::now();
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let wall_ns = wall.elapsed().as_nanos() as f64;
    let (server_cpu_ns, server_wait_ns) = match (before, run.server.schedstat()) {
        (Some((cpu0, wait0)), Some((cpu1, wait1))) => (
            cpu1.saturating_sub(cpu0) as f64,
            wait1.saturating_sub(wait0) as f64,
        ),
        _ => (f64::NAN, f64::NAN),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("{shown}: no JSON line ({})", out.status))?;
    let value = json_number(line, case.metric)
        .ok_or_else(|| format!("{shown}: no {} in {line}", case.metric))?;
    let field = |key: &str| json_number(line, key).unwrap_or(f64::NAN);
    // The server's figures over the measured stretch when the load
    // generator read them there, else over the whole run.
    let (server_cpu, server_wait, server_us_per_op) = match case.server_cpu {
        Some(key) => (
            field("server_cpu_pct"),
            field("server_cpu_wait_pct"),
            field(key),
        ),
        None => (
            server_cpu_ns / wall_ns * 100.0,
            server_wait_ns / wall_ns * 100.0,
            server_cpu_ns / field(case.count) / 1000.0,
        ),
    };
    Ok(Measured {
        value,
        latency: field(case.latency),
        errors: field("errors"),
        client_cpu: field("client_cpu_pct"),
        server_cpu,
        server_us_per_op,
        server_wait,
        tls_full: field("tls_full_handshakes"),
        tls_resumed: field("tls_resumed_handshakes"),
        passed: out.status.success(),
    })
}
