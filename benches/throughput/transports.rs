//! `cargo bench --bench throughput -- transports`: the same room of one
//! wschat, the same WebSocket sender at the same rate, and the receivers
//! on each transport in turn (README, "WebSocket, SSE, long polling and
//! polling, side by side"): a busy chat (1000 receivers, 10 messages a
//! second) and a fast one (100 receivers, 200 a second).
//!
//! wschat runs pinned to CPU 0 with `--history-size 1000` (a poll a
//! second at 200 messages a second needs 200 kept), `--max-requests-per-
//! connection 1000000` (so that every poller keeps its one connection,
//! instead of opening a new one every 100 polls), and `--poll-grace 3`;
//! `wschat-bench broadcast --transport` runs pinned to CPU 1. Before each
//! run the bench waits until `/metrics` counts no member, so that the
//! pollers of the run before (members until their poll's timeout plus the
//! grace) are not in the room.
//!
//! Each run's JSON line, with the case's name, goes to
//! `target/bench-transports.json`; the chart drawn from that file goes to
//! `target/bench-transports.svg` (the README's is copied to
//! `docs/transports.svg`). `WSCHAT_BENCH_SECS` sets the seconds of
//! sending per run (default 10).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use crate::chart::{json_str, render_groups, Group};
use crate::measure::json_number;
use crate::server::{pinned, Layout, Server};

/// CPU of the server, and of the load generator.
const SERVER_CPU: &str = "0";
const LOAD_CPU: &str = "1";

/// The room every run uses.
const ROOM: &str = "/room/bench";

/// How long the room may take to empty between runs.
const QUIET_LIMIT: Duration = Duration::from_secs(90);

/// A load: receivers, and the one sender's rate.
struct Load {
    name: &'static str,
    receivers: u32,
    rate: u32,
}

const LOADS: [Load; 2] = [
    Load {
        name: "busy chat: 1000 receivers, 10 msg/s",
        receivers: 1000,
        rate: 10,
    },
    Load {
        name: "fast room: 100 receivers, 200 msg/s",
        receivers: 100,
        rate: 200,
    },
];

/// The transports compared: label, `--transport` and its own flags.
const TRANSPORTS: [(&str, &[&str]); 5] = [
    ("websocket", &["--transport", "websocket"]),
    ("sse", &["--transport", "sse"]),
    (
        "long-poll",
        &["--transport", "long-poll", "--long-poll-timeout", "30"],
    ),
    (
        "poll 1 s",
        &["--transport", "poll", "--poll-interval", "1000"],
    ),
    (
        "poll 250 ms",
        &["--transport", "poll", "--poll-interval", "250"],
    ),
];

/// Runs every load on every transport; `Ok(false)` when a run failed its
/// checks (something lost, duplicated or failed).
pub fn run(layout: &Layout, pin: bool) -> Result<bool, String> {
    let secs = std::env::var("WSCHAT_BENCH_SECS").unwrap_or_else(|_| "10".to_string());
    let mut cmd = pinned(SERVER_CPU, &layout.bin("wschat"), pin);
    cmd.args(["--listen", "127.0.0.1:0", "--history-size", "1000"])
        .args(["--max-requests-per-connection", "1000000"])
        .args(["--poll-grace", "3"])
        .env("RUST_LOG", "info");
    let log = layout.target.join("bench-transports-wschat.log");
    let server = Server::start(cmd, true, false, &log)?;
    let addr = server.addrs[0];
    eprintln!("wschat on {addr}, {secs} s of sending per run, pinned: {pin}");
    println!("| load | transport | deliveries | deliveries/s | p50 | p99 | lost | dup | requests/delivery | bytes/delivery (read + written) | server CPU per 1000 deliveries | server CPU | server waited | load CPU |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut lines = Vec::new();
    let mut passed = true;
    for load in &LOADS {
        for (label, flags) in TRANSPORTS {
            wait_quiet(addr)?;
            let (line, ok) = run_one(layout, pin, &server, load, flags, &secs)?;
            passed &= ok;
            print_row(load, label, &line, ok);
            let case = format!(
                "{{\"load\":\"{}\",\"label\":\"{label}\",\"passed\":{ok},",
                load.name
            );
            lines.push(line.replacen('{', &case, 1));
        }
    }
    let exit = server.stop();
    println!("wschat on SIGTERM: {exit}");
    let mut text = lines.join("\n");
    text.push('\n');
    let results = layout.target.join("bench-transports.json");
    fs::write(&results, &text).map_err(|e| format!("{}: {e}", results.display()))?;
    let svg = layout.target.join("bench-transports.svg");
    fs::write(&svg, chart(&text)).map_err(|e| format!("{}: {e}", svg.display()))?;
    println!(
        "results: {}\nchart: {} (README: docs/transports.svg)",
        results.display(),
        svg.display()
    );
    Ok(passed && exit.contains("exit status: 0"))
}

/// One run of `wschat-bench broadcast`: its JSON line and whether it
/// passed its own checks.
fn run_one(
    layout: &Layout,
    pin: bool,
    server: &Server,
    load: &Load,
    flags: &[&str],
    secs: &str,
) -> Result<(String, bool), String> {
    let mut cmd = pinned(LOAD_CPU, &layout.bin("wschat-bench"), pin);
    cmd.arg("broadcast")
        .args(["--url", &format!("ws://{}{ROOM}", server.addrs[0])])
        .args(["--conns", &load.receivers.to_string()])
        .args(["--senders", "1", "--rate", &load.rate.to_string()])
        .args(["--duration", secs, "--drain", "3"])
        .args(flags)
        .args([
            "--server-pid",
            &server.pid().to_string(),
            "--json",
            "--quiet",
        ]);
    let shown = format!("{cmd:?}");
    eprintln!("{shown}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("{shown}: no JSON line ({})", out.status))?;
    Ok((line.to_string(), out.status.success()))
}

/// Waits until the server's `/metrics` counts no room member.
fn wait_quiet(addr: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let members = members(addr)?;
        if members == 0 {
            return Ok(());
        }
        if start.elapsed() > QUIET_LIMIT {
            return Err(format!("{members} members still in the room after 90 s"));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// The sum of `wschat_members{transport=…}` on `/metrics`.
fn members(addr: SocketAddr) -> Result<u64, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("/metrics: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("/metrics: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("/metrics: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("wschat_members{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// A field of a run's line, NaN when missing.
fn field(line: &str, key: &str) -> f64 {
    json_number(line, key).unwrap_or(f64::NAN)
}

/// Bytes per delivery, both directions.
fn bytes(line: &str) -> f64 {
    field(line, "bytes_read_per_delivery") + field(line, "bytes_written_per_delivery")
}

/// A latency in µs as ms (or µs below a millisecond).
fn ms(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Prints a run's row of the Markdown table.
fn print_row(load: &Load, label: &str, line: &str, ok: bool) {
    let f = |key| field(line, key);
    println!(
        "| {} | {label} | {:.0} of {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.3} | {:.0} ({:.0} + {:.0}) | {:.2} ms | {:.1}% | {:.1}% | {:.1}% |{}",
        load.name,
        f("deliveries"),
        f("deliveries_expected"),
        f("deliveries_per_sec"),
        ms(f("delivery_latency_p50_us")),
        ms(f("delivery_latency_p99_us")),
        f("lost"),
        f("duplicates"),
        f("requests_per_delivery"),
        bytes(line),
        f("bytes_read_per_delivery"),
        f("bytes_written_per_delivery"),
        f("server_cpu_per_1000_deliveries_ms"),
        f("server_cpu_pct"),
        f("server_cpu_wait_pct"),
        f("client_cpu_pct"),
        if ok { "" } else { " FAILED ITS CHECKS" }
    );
}

/// The chart of the results file: for each load, the four figures where
/// the transports differ, one group each.
pub fn chart(json_lines: &str) -> String {
    type Figure = (
        &'static str,
        &'static str,
        fn(&str) -> f64,
        fn(f64) -> String,
    );
    let figures: [Figure; 4] = [
        (
            "delivery latency, p50",
            "send to receive (lower is better)",
            |l| field(l, "delivery_latency_p50_us"),
            ms,
        ),
        (
            "HTTP requests per delivery",
            "requests the receivers sent while the messages flowed",
            |l| field(l, "requests_per_delivery"),
            |v| format!("{v:.3}"),
        ),
        (
            "bytes on the wire per delivery",
            "read and written at the receivers' sockets, heads included",
            bytes,
            |v| format!("{v:.0} B"),
        ),
        (
            "server CPU per 1000 deliveries",
            "from /proc/PID/schedstat, sending and draining",
            |l| field(l, "server_cpu_per_1000_deliveries_ms"),
            |v| format!("{v:.2} ms"),
        ),
    ];
    let lines: Vec<&str> = json_lines.lines().filter(|l| l.starts_with('{')).collect();
    let mut groups = Vec::new();
    for load in &LOADS {
        let runs: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| json_str(l, "load") == Some(load.name))
            .collect();
        for (title, note, value, shown) in &figures {
            groups.push(Group {
                title: format!("{}: {title}", load.name),
                note: note.to_string(),
                bars: runs
                    .iter()
                    .map(|l| {
                        let label = json_str(l, "label").unwrap_or("?").to_string();
                        let v = value(l);
                        (label, v, shown(v))
                    })
                    .collect(),
            });
        }
    }
    let palette = ["#2563eb", "#16a34a", "#d97706", "#9ca3af", "#6b7280"];
    render_groups(
        "wschat: WebSocket, SSE, long polling and polling, same room, same sender",
        &groups,
        &palette,
    )
}
