//! End-to-end throughput: wschat against a plain TCP echo baseline.
//!
//! `cargo bench --bench throughput` starts the release `wschat` binary and
//! a minimal mio TCP server (this same executable, re-run with
//! `--tcp-echo-baseline`: an echo port, and a port that hangs up on accept
//! for connect cycles), each as its own process pinned to CPU 0, and
//! drives both from `wschat-bench` pinned to CPU 1 with the same
//! parameters. Server and load never share a core, and both servers get the
//! same one, so the ratio wschat / baseline is the cost of WebSocket and of
//! wschat's bookkeeping, not of where the scheduler put things.
//!
//! Each run also reports the server's CPU use, the time it waited for its
//! core (another process on CPU 0 makes the figure low) and the load
//! generator's CPU use (near 100% means the client, not the server, was the
//! limit). Server CPU time per operation compares the servers' costs even
//! then. Each case is measured as `WSCHAT_BENCH_REPEATS` pairs (default
//! 5), which server goes first alternating, and the pair with the median
//! ratio is reported.
//!
//! Results are printed as a table and written as JSON lines to
//! `target/bench-results.json`. `WSCHAT_BENCH_SECS` sets the seconds per
//! measurement (default 5). A name
//! filter as the first free argument runs only the matching cases.

mod chart;
mod tcp_echo_baseline;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The flag that turns this executable into the baseline server.
const BASELINE_FLAG: &str = "--tcp-echo-baseline";

/// CPU the servers are pinned to.
const SERVER_CPU: &str = "0";

/// CPU the load generator is pinned to, never shared with a server.
const LOAD_CPU: &str = "1";

/// Server run-queue wait (percent of a run) above which another process
/// is taken to have shared the server's core.
const CONTENDED_PCT: f64 = 5.0;

/// One comparison: the same `wschat-bench` flags against both servers.
struct Case {
    /// Name in the table and in the results file.
    name: &'static str,
    /// The `wschat-bench` scenario.
    scenario: &'static str,
    /// wschat endpoint path.
    path: &'static str,
    /// Flags after `--url`, shared by both runs.
    args: &'static [&'static str],
    /// Which baseline port to drive: the echo port, or the hang-up port
    /// (connect cycles, where the server must close first).
    baseline_hangs_up: bool,
    /// The headline figure (a JSON key of the summary).
    metric: &'static str,
    /// The JSON key counting the operations behind it, to turn server CPU
    /// time into CPU time per operation.
    count: &'static str,
    /// A latency figure reported beside it.
    latency: &'static str,
}

/// The comparisons, in the order they run (connect cycles last: they
/// leave the most kernel state behind).
const CASES: &[Case] = &[
    Case {
        name: "echo_16B_text",
        scenario: "echo",
        path: "/echo",
        args: &["--conns", "100", "--size", "16", "--pipeline", "16"],
        baseline_hangs_up: false,
        metric: "messages_per_sec",
        count: "messages",
        latency: "round_trip_p99_us",
    },
    Case {
        name: "echo_16KiB_binary",
        scenario: "echo",
        path: "/echo",
        args: &[
            "--conns",
            "10",
            "--size",
            "16384",
            "--pipeline",
            "4",
            "--binary",
        ],
        baseline_hangs_up: false,
        metric: "messages_per_sec",
        count: "messages",
        latency: "round_trip_p99_us",
    },
    Case {
        name: "connect_c50",
        scenario: "connect",
        path: "/echo",
        args: &["--concurrency", "50"],
        baseline_hangs_up: true,
        metric: "handshakes_per_sec",
        count: "handshakes",
        latency: "handshake_p99_us",
    },
];

/// A server under test, with its log drained by a thread.
struct Server {
    child: Child,
    /// The addresses of its `listening on` line, in order.
    addrs: Vec<SocketAddr>,
}

impl Server {
    /// Starts `cmd` pinned to the server CPU and waits for the line
    /// `listening on ADDR` on `stdout` or `stderr` (whichever `from_stderr`
    /// says). Every line also goes to `log`, and the pipe is read to the
    /// end so a chatty server can never block on a full pipe.
    fn start(mut cmd: Command, from_stderr: bool, log: &Path) -> Result<Server, String> {
        let shown = format!("{cmd:?}");
        if from_stderr {
            cmd.stderr(Stdio::piped()).stdout(Stdio::null());
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        }
        let mut child = cmd.spawn().map_err(|e| format!("{shown}: {e}"))?;
        let pipe: Box<dyn Read + Send> = if from_stderr {
            Box::new(child.stderr.take().expect("piped"))
        } else {
            Box::new(child.stdout.take().expect("piped"))
        };
        let mut log = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                return Err(format!("{shown}: no `listening on` line within 10 s"));
            }
        };
        let addrs: Vec<SocketAddr> = line
            .split_whitespace()
            .filter_map(|a| a.trim_end_matches(',').parse().ok())
            .collect();
        if addrs.is_empty() {
            let _ = child.kill();
            return Err(format!("{shown}: no address in `listening on {line}`"));
        }
        Ok(Server { child, addrs })
    }

    /// Nanoseconds this server has run on a CPU and waited for one, from
    /// `/proc/PID/schedstat` (taskset execs, so the pid is the server's).
    fn schedstat(&self) -> Option<(u64, u64)> {
        let text = fs::read_to_string(format!("/proc/{}/schedstat", self.child.id())).ok()?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some((fields.next()??, fields.next()??))
    }

    /// SIGTERM, then waits up to 10 s; returns the exit status text.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.to_string();
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "killed after 10 s".to_string()
    }
}

/// Paths of the binaries and of the output files.
struct Layout {
    /// target/release: where `wschat` and `wschat-bench` are.
    bins: PathBuf,
    /// target: where results and logs go.
    target: PathBuf,
}

impl Layout {
    /// This executable is target/release/deps/throughput-HASH, so the
    /// binaries are one level up whatever `CARGO_TARGET_DIR` says. `cargo
    /// bench` builds them (it builds a package's binaries for its benches);
    /// if they are missing anyway, build them.
    fn find() -> Result<Layout, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bins = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("cannot locate the target directory")?
            .to_path_buf();
        let target = bins.parent().unwrap_or(&bins).to_path_buf();
        let layout = Layout { bins, target };
        if !layout.bin("wschat").exists() || !layout.bin("wschat-bench").exists() {
            eprintln!("building the release binaries...");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let status = Command::new(cargo)
                .args(["build", "--release", "--bins"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .map_err(|e| format!("cargo build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build --release --bins: {status}"));
            }
        }
        Ok(layout)
    }

    /// The path of the release binary `name`.
    fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }
}

/// `taskset -c CPU program`, or just `program` when pinning is impossible.
fn pinned(cpu: &str, program: &Path, pin: bool) -> Command {
    if pin {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Whether `taskset` works and there are two CPUs to pin to.
fn can_pin() -> bool {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    cpus >= 2 && taskset
}

/// A number from our own flat JSON line: `"key":123.4`.
fn json_number(line: &str, key: &str) -> Option<f64> {
    let pattern = format!("\"{key}\":");
    let start = line.find(&pattern)? + pattern.len();
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// What one `wschat-bench` run measured.
struct Measured {
    value: f64,
    latency: f64,
    errors: f64,
    /// The load generator's CPU use, percent of one core.
    client_cpu: f64,
    /// The server's CPU use over the whole run, percent of one core.
    server_cpu: f64,
    /// Server CPU time per operation in microseconds: the server's cost,
    /// comparable even when the load generator is the bottleneck.
    server_us_per_op: f64,
    /// Time the server was runnable but waited for its CPU, percent of the
    /// run: anything well above 0 means another process (a build, a test)
    /// shared the core and the figure is too low.
    server_wait: f64,
    /// The run passed its own checks (exit status 0).
    passed: bool,
}

/// Runs `wschat-bench` pinned to the load CPU against `server` and reads
/// its JSON line.
fn measure(
    layout: &Layout,
    pin: bool,
    case: &Case,
    server: &Server,
    tcp: bool,
    secs: &str,
) -> Result<Measured, String> {
    let url = match (tcp, case.baseline_hangs_up) {
        (false, _) => format!("ws://{}{}", server.addrs[0], case.path),
        (true, false) => format!("tcp://{}", server.addrs[0]),
        (true, true) => format!(
            "tcp://{}",
            server
                .addrs
                .get(1)
                .ok_or("the baseline has no hang-up port")?
        ),
    };
    let mut cmd = pinned(LOAD_CPU, &layout.bin("wschat-bench"), pin);
    cmd.arg(case.scenario)
        .args(["--url", &url])
        .args(case.args)
        .args(["--duration", secs, "--json", "--quiet"]);
    if tcp {
        cmd.arg("--tcp");
    }
    let shown = format!("{cmd:?}");
    let before = server.schedstat();
    let wall = Instant::now();
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let wall_ns = wall.elapsed().as_nanos() as f64;
    let (server_cpu_ns, server_wait_ns) = match (before, server.schedstat()) {
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
    Ok(Measured {
        value,
        latency: json_number(line, case.latency).unwrap_or(f64::NAN),
        errors: json_number(line, "errors").unwrap_or(f64::NAN),
        client_cpu: json_number(line, "client_cpu_pct").unwrap_or(f64::NAN),
        server_cpu: server_cpu_ns / wall_ns * 100.0,
        server_us_per_op: json_number(line, case.count)
            .map_or(f64::NAN, |ops| server_cpu_ns / ops / 1000.0),
        server_wait: server_wait_ns / wall_ns * 100.0,
        passed: out.status.success(),
    })
}

/// A JSON number, or null for NaN.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".to_string()
    }
}

/// Starts both servers, runs the cases, writes the results; `Ok(false)`
/// when a run failed its own checks or wschat did not exit 0 on SIGTERM.
fn run() -> Result<bool, String> {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let secs = std::env::var("WSCHAT_BENCH_SECS").unwrap_or_else(|_| "5".to_string());
    secs.parse::<f64>()
        .map_err(|_| format!("WSCHAT_BENCH_SECS={secs}: not a number"))?;
    let repeats: usize = std::env::var("WSCHAT_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let layout = Layout::find()?;
    let pin = can_pin();
    if !pin {
        eprintln!("warning: taskset or a second CPU missing; server and load are not pinned");
    }
    let self_exe = std::env::current_exe().map_err(|e| e.to_string())?;

    let mut wschat_cmd = pinned(SERVER_CPU, &layout.bin("wschat"), pin);
    wschat_cmd
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info");
    let wschat = Server::start(wschat_cmd, true, &layout.target.join("bench-wschat.log"))?;
    let mut baseline_cmd = pinned(SERVER_CPU, &self_exe, pin);
    baseline_cmd.arg(BASELINE_FLAG);
    let baseline = Server::start(
        baseline_cmd,
        false,
        &layout.target.join("bench-baseline.log"),
    )?;
    eprintln!(
        "wschat on {}, baseline on {}, {secs} s per measurement, pinned: {pin}",
        wschat.addrs[0], baseline.addrs[0]
    );

    let mut lines = Vec::new();
    let mut all_passed = true;
    let mut contended = false;
    println!(
        "{:<18} {:<9} {:>12} {:>10} {:>11} {:>9} {:>11} {:>12}",
        "case",
        "server",
        "figure",
        "p99 µs",
        "server cpu",
        "cpu wait",
        "client cpu",
        "server µs/op"
    );
    for case in CASES.iter().filter(|c| c.name.contains(&filter)) {
        // Pairs measured back to back, the pair with the median ratio kept:
        // one noisy run on a shared machine neither makes nor breaks a figure.
        // Which server goes first alternates, so that a machine getting
        // busier or quieter during a case favours neither.
        let mut pairs = Vec::new();
        for round in 0..repeats {
            let (ws, base) = if round % 2 == 0 {
                let ws = measure(&layout, pin, case, &wschat, false, &secs)?;
                (ws, measure(&layout, pin, case, &baseline, true, &secs)?)
            } else {
                let base = measure(&layout, pin, case, &baseline, true, &secs)?;
                (measure(&layout, pin, case, &wschat, false, &secs)?, base)
            };
            pairs.push((ws.value / base.value, ws, base));
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let all: Vec<String> = pairs.iter().map(|p| format!("{:.3}", p.0)).collect();
        let (ratio, ws, base) = pairs.swap_remove(pairs.len() / 2);
        let passed = ws.passed && base.passed;
        all_passed &= passed;
        for (name, m) in [("wschat", &ws), ("baseline", &base)] {
            contended |= m.server_wait > CONTENDED_PCT;
            println!(
                "{:<18} {name:<9} {:>12.0} {:>10.0} {:>10.0}% {:>8.0}% {:>10.0}% {:>12.3}",
                if name == "wschat" { case.name } else { "" },
                m.value,
                m.latency,
                m.server_cpu,
                m.server_wait,
                m.client_cpu,
                m.server_us_per_op,
            );
        }
        let cost_ratio = ws.server_us_per_op / base.server_us_per_op;
        println!(
            "{:<18} {:<9} {ratio:>12.3}  ({}, wschat / baseline, median of [{}]; server CPU per op {cost_ratio:.2}x){}",
            "",
            "ratio",
            case.metric,
            all.join(", "),
            if passed {
                ""
            } else {
                "  A RUN FAILED ITS CHECKS"
            }
        );
        let mut fields: Vec<(String, String)> = vec![
            ("case".into(), format!("\"{}\"", case.name)),
            ("metric".into(), format!("\"{}\"", case.metric)),
            ("wschat".into(), num(ws.value)),
            ("baseline".into(), num(base.value)),
            ("ratio".into(), num(ratio)),
            ("server_cpu_per_op_ratio".into(), num(cost_ratio)),
            ("latency_metric".into(), format!("\"{}\"", case.latency)),
        ];
        for (prefix, m) in [("wschat", &ws), ("baseline", &base)] {
            fields.push((format!("{prefix}_latency_us"), num(m.latency)));
            fields.push((format!("{prefix}_errors"), num(m.errors)));
            fields.push((format!("{prefix}_server_cpu_pct"), num(m.server_cpu)));
            fields.push((format!("{prefix}_server_wait_pct"), num(m.server_wait)));
            fields.push((
                format!("{prefix}_server_us_per_op"),
                num(m.server_us_per_op),
            ));
            fields.push((format!("{prefix}_client_cpu_pct"), num(m.client_cpu)));
        }
        fields.push(("passed".into(), passed.to_string()));
        fields.push(("seconds".into(), secs.clone()));
        fields.push(("pinned".into(), pin.to_string()));
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        lines.push(format!("{{{}}}", body.join(",")));
    }
    if contended {
        println!(
            "warning: a server waited over 5% of a run for its CPU: another process shared it, \
             so those figures are low (run on a quiet machine)"
        );
    }
    let wschat_exit = wschat.stop();
    baseline.stop();
    println!("wschat on SIGTERM: {wschat_exit}");
    let results = layout.target.join("bench-results.json");
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(&results, &text).map_err(|e| format!("{}: {e}", results.display()))?;
    println!("results: {}", results.display());
    let svg_path = layout.target.join("bench-chart.svg");
    fs::write(&svg_path, chart::render(&text, json_number))
        .map_err(|e| format!("{}: {e}", svg_path.display()))?;
    println!(
        "chart: {} (README: docs/performance.svg)",
        svg_path.display()
    );
    Ok(all_passed && wschat_exit.contains("exit status: 0"))
}

/// Either the baseline server (with the flag) or the benchmark itself.
fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(BASELINE_FLAG) {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let served = tcp_echo_baseline::serve(ip, |echo, hangup| {
            println!("listening on {echo} {hangup}");
        });
        if let Err(e) = served {
            eprintln!("baseline: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("throughput: {e}");
            ExitCode::from(2)
        }
    }
}
