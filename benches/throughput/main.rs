//! End-to-end throughput: wschat against a plain TCP echo baseline, and
//! wschat over TLS against itself without.
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
//! The `protocol` case drives one wschat room twice with the same
//! broadcast, its members speaking `wschat.v1` (JSON objects) or the classic
//! protocol: the ratio of the server's CPU time per delivery is the price
//! of JSON.
//!
//! wschat also listens for TLS (`--tls-listen`, an ECDSA P-256 certificate
//! the bench makes with rcgen under `target/bench-tls/`), and the `_tls`
//! cases drive that same process over `wss://` against `ws://`: the ratio
//! wss / ws is the price of TLS alone. The `wss://` runs pass `--insecure`
//! (the load generator then pays for the key exchange only, so it stays
//! below the server's cost per handshake); `WSCHAT_BENCH_TLS_CHECK=1`
//! makes them check the certificate against the bench's CA instead.
//!
//! Each run also reports the server's CPU use, the time it waited for its
//! core (another process on CPU 0 makes the figure low) and the load
//! generator's CPU use (near 100% means the client, not the server, was the
//! limit). Server CPU time per operation compares the servers' costs even
//! then. Each case is measured as `WSCHAT_BENCH_REPEATS` pairs (default
//! 5), which side goes first alternating, and the pair with the median
//! ratio is reported.
//!
//! Results are printed as a table and written as JSON lines to
//! `target/bench-results.json`. `WSCHAT_BENCH_SECS` sets the seconds per
//! measurement (default 5). A name filter as the first free argument runs
//! only the matching cases (`tls` runs the TLS cases).
//!
//! `transports` as the filter runs the transports comparison instead (see
//! `transports`): receivers on WebSocket, SSE, long polling and polling in
//! one room of one wschat, with its own results and chart.

mod cases;
mod cert;
mod chart;
mod measure;
mod server;
mod tcp_echo_baseline;
mod transports;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;

use cases::{Against, Case, Compare, CASES};
use measure::{json_number, measure, Measured, Run};
use server::{can_pin, pinned, Layout, Server};

/// The flag that turns this executable into the baseline server.
const BASELINE_FLAG: &str = "--tcp-echo-baseline";

/// CPU the servers are pinned to.
const SERVER_CPU: &str = "0";

/// Server run-queue wait (percent of a run) above which another process
/// is taken to have shared the server's core.
const CONTENDED_PCT: f64 = 5.0;

/// The servers of a run, and the certificate flags of the `wss://` runs.
struct Servers {
    wschat: Server,
    baseline: Server,
    tls_flags: Vec<String>,
}

impl Servers {
    /// Makes the certificate and starts wschat (plain and TLS listeners)
    /// and the baseline, both pinned to the server CPU.
    fn start(layout: &Layout, pin: bool) -> Result<Servers, String> {
        let cert = cert::make(&layout.target.join("bench-tls"))?;
        let mut wschat_cmd = pinned(SERVER_CPU, &layout.bin("wschat"), pin);
        wschat_cmd
            .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&cert.cert)
            .arg("--tls-key")
            .arg(&cert.key)
            .env("RUST_LOG", "info");
        let log = layout.target.join("bench-wschat.log");
        let wschat = Server::start(wschat_cmd, true, true, &log)?;
        let self_exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut baseline_cmd = pinned(SERVER_CPU, &self_exe, pin);
        baseline_cmd.arg(BASELINE_FLAG);
        let log = layout.target.join("bench-baseline.log");
        let baseline = Server::start(baseline_cmd, false, false, &log)?;
        let check = std::env::var("WSCHAT_BENCH_TLS_CHECK").is_ok_and(|v| v == "1");
        let tls_flags = if check {
            vec!["--ca".to_string(), cert.ca.display().to_string()]
        } else {
            vec!["--insecure".to_string()]
        };
        Ok(Servers {
            wschat,
            baseline,
            tls_flags,
        })
    }

    /// The measured side of `case` and the side it is compared against.
    fn runs(&self, case: &Case) -> Result<(Run<'_>, Run<'_>), String> {
        let ws = Run {
            server: &self.wschat,
            url: format!("ws://{}{}", self.wschat.addrs[0], case.path),
            flags: Vec::new(),
        };
        let addr = match case.against {
            Against::PlainWs => return Ok((self.wss(case)?, ws)),
            Against::ClassicProtocol => {
                let json = Run {
                    server: ws.server,
                    url: ws.url.clone(),
                    flags: vec!["--protocol".to_string(), "wschat.v1".to_string()],
                };
                return Ok((json, ws));
            }
            Against::Baseline { hangs_up: false } => self.baseline.addrs[0],
            Against::Baseline { hangs_up: true } => *self
                .baseline
                .addrs
                .get(1)
                .ok_or("the baseline has no hang-up port")?,
        };
        let tcp = Run {
            server: &self.baseline,
            url: format!("tcp://{addr}"),
            flags: vec!["--tcp".to_string()],
        };
        Ok((ws, tcp))
    }

    /// wschat's TLS listener, with the certificate flags and the case's own.
    fn wss(&self, case: &Case) -> Result<Run<'_>, String> {
        let tls_addr = self.wschat.tls_addr.ok_or("wschat has no TLS listener")?;
        let mut flags = self.tls_flags.clone();
        flags.extend(case.tls_args.iter().map(|a| a.to_string()));
        Ok(Run {
            server: &self.wschat,
            url: format!("wss://{tls_addr}{}", case.path),
            flags,
        })
    }
}

/// The pair kept for a case: the median ratio of measured to reference,
/// both runs, and every pair's ratio.
struct Outcome {
    ratio: f64,
    ours: Measured,
    theirs: Measured,
    all: Vec<f64>,
}

/// Measures `case` as `repeats` pairs back to back and keeps the pair with
/// the median ratio (of the figure, or of the server's CPU per operation
/// as the case says): one noisy run on a shared machine neither makes nor
/// breaks a figure. Which side goes first alternates, so that a machine
/// getting busier or quieter during a case favours neither.
fn measure_case(
    layout: &Layout,
    pin: bool,
    case: &Case,
    servers: &Servers,
    secs: &str,
    repeats: usize,
) -> Result<Outcome, String> {
    let (ours_run, theirs_run) = servers.runs(case)?;
    let mut pairs = Vec::new();
    for round in 0..repeats {
        let (ours, theirs) = if round % 2 == 0 {
            let ours = measure(layout, pin, case, &ours_run, secs)?;
            (ours, measure(layout, pin, case, &theirs_run, secs)?)
        } else {
            let theirs = measure(layout, pin, case, &theirs_run, secs)?;
            (measure(layout, pin, case, &ours_run, secs)?, theirs)
        };
        let ratio = match case.compare {
            Compare::Figure => ours.value / theirs.value,
            Compare::ServerCpu => ours.server_us_per_op / theirs.server_us_per_op,
        };
        pairs.push((ratio, ours, theirs));
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let all = pairs.iter().map(|p| p.0).collect();
    let (ratio, ours, theirs) = pairs.swap_remove(pairs.len() / 2);
    Ok(Outcome {
        ratio,
        ours,
        theirs,
        all,
    })
}

/// The table's header line.
fn print_header() {
    println!(
        "{:<24} {:<9} {:>12} {:>10} {:>11} {:>9} {:>11} {:>12}",
        "case",
        "server",
        "figure",
        "p99 µs",
        "server cpu",
        "cpu wait",
        "client cpu",
        "server µs/op"
    );
}

/// Prints a case's two rows and its ratio line; returns whether a server
/// waited for its core long enough to make the figures low.
fn print_case(case: &Case, outcome: &Outcome) -> bool {
    let (ours, theirs) = case.sides();
    let mut contended = false;
    for (name, m) in [(ours, &outcome.ours), (theirs, &outcome.theirs)] {
        contended |= m.server_wait > CONTENDED_PCT;
        println!(
            "{:<24} {name:<9} {:>12.0} {:>10.0} {:>10.0}% {:>8.0}% {:>10.0}% {:>12.3}",
            if name == ours { case.name } else { "" },
            m.value,
            m.latency,
            m.server_cpu,
            m.server_wait,
            m.client_cpu,
            m.server_us_per_op,
        );
    }
    let all: Vec<String> = outcome.all.iter().map(|r| format!("{r:.3}")).collect();
    let cost_ratio = outcome.ours.server_us_per_op / outcome.theirs.server_us_per_op;
    let tls = if outcome.ours.tls_full.is_finite() {
        format!(
            "; TLS handshakes {:.0} full, {:.0} resumed",
            outcome.ours.tls_full, outcome.ours.tls_resumed
        )
    } else {
        String::new()
    };
    let compared = match case.compare {
        Compare::Figure => case.metric,
        Compare::ServerCpu => "server CPU per op",
    };
    println!(
        "{:<24} {:<9} {:>12.3}  ({compared}, {ours} / {theirs}, median of [{}]; server CPU per op {cost_ratio:.2}x{tls}){}",
        "",
        "ratio",
        outcome.ratio,
        all.join(", "),
        if passed(outcome) {
            ""
        } else {
            "  A RUN FAILED ITS CHECKS"
        }
    );
    contended
}

/// Whether both runs of the kept pair passed their own checks.
fn passed(outcome: &Outcome) -> bool {
    outcome.ours.passed && outcome.theirs.passed
}

/// A JSON number, or null for NaN.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".to_string()
    }
}

/// A case's results as one flat JSON line; the two sides' figures are
/// keyed by their names (`wschat` and `baseline`, or `wss` and `ws`).
fn json_line(case: &Case, outcome: &Outcome, secs: &str, pin: bool) -> String {
    let (ours, theirs) = case.sides();
    let (a, b) = (&outcome.ours, &outcome.theirs);
    let mut fields: Vec<(String, String)> = vec![
        ("case".into(), format!("\"{}\"", case.name)),
        ("metric".into(), format!("\"{}\"", case.metric)),
        ("subject".into(), format!("\"{ours}\"")),
        ("reference".into(), format!("\"{theirs}\"")),
        (ours.into(), num(a.value)),
        (theirs.into(), num(b.value)),
        ("ratio".into(), num(outcome.ratio)),
        (
            "ratio_of".into(),
            match case.compare {
                Compare::Figure => format!("\"{}\"", case.metric),
                Compare::ServerCpu => "\"server_cpu_per_op\"".to_string(),
            },
        ),
        (
            "server_cpu_per_op_ratio".into(),
            num(a.server_us_per_op / b.server_us_per_op),
        ),
        ("latency_metric".into(), format!("\"{}\"", case.latency)),
    ];
    for (prefix, m) in [(ours, a), (theirs, b)] {
        fields.push((format!("{prefix}_latency_us"), num(m.latency)));
        fields.push((format!("{prefix}_errors"), num(m.errors)));
        fields.push((format!("{prefix}_server_cpu_pct"), num(m.server_cpu)));
        fields.push((format!("{prefix}_server_wait_pct"), num(m.server_wait)));
        let per_op = num(m.server_us_per_op);
        fields.push((format!("{prefix}_server_us_per_op"), per_op));
        fields.push((format!("{prefix}_client_cpu_pct"), num(m.client_cpu)));
    }
    if a.tls_full.is_finite() {
        fields.push(("tls_full_handshakes".into(), num(a.tls_full)));
        fields.push(("tls_resumed_handshakes".into(), num(a.tls_resumed)));
    }
    fields.push(("passed".into(), passed(outcome).to_string()));
    fields.push(("seconds".into(), secs.to_string()));
    fields.push(("pinned".into(), pin.to_string()));
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

/// Writes the JSON lines and the chart drawn from them.
fn write_outputs(layout: &Layout, lines: &[String]) -> Result<(), String> {
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
    Ok(())
}

/// The name filter, the seconds per measurement and the pair count.
fn parameters() -> Result<(String, String, usize), String> {
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
    Ok((filter, secs, repeats))
}

/// Starts the servers, runs the cases, writes the results; `Ok(false)`
/// when a run failed its own checks or wschat did not exit 0 on SIGTERM.
fn run() -> Result<bool, String> {
    let (filter, secs, repeats) = parameters()?;
    let layout = Layout::find()?;
    let pin = can_pin();
    if !pin {
        eprintln!("warning: taskset or a second CPU missing; server and load are not pinned");
    }
    if filter == "transports" {
        return transports::run(&layout, pin);
    }
    let servers = Servers::start(&layout, pin)?;
    eprintln!(
        "wschat on {} (TLS {}), baseline on {}, {secs} s per measurement, pinned: {pin}, wss:// with {}",
        servers.wschat.addrs[0],
        servers.wschat.tls_addr.map_or("-".into(), |a| a.to_string()),
        servers.baseline.addrs[0],
        servers.tls_flags.join(" "),
    );
    let mut lines = Vec::new();
    let mut all_passed = true;
    let mut contended = false;
    print_header();
    for case in CASES.iter().filter(|c| c.name.contains(&filter)) {
        let outcome = measure_case(&layout, pin, case, &servers, &secs, repeats)?;
        all_passed &= passed(&outcome);
        contended |= print_case(case, &outcome);
        lines.push(json_line(case, &outcome, &secs, pin));
    }
    if contended {
        println!(
            "warning: a server waited over 5% of a run for its CPU: another process shared it, \
             so those figures are low (run on a quiet machine)"
        );
    }
    let wschat_exit = servers.wschat.stop();
    servers.baseline.stop();
    println!("wschat on SIGTERM: {wschat_exit}");
    write_outputs(&layout, &lines)?;
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
