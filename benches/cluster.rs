//! The cluster point: broadcast deliveries/s and p99 latency of one wschat
//! next to two instances sharing one port (`--reuse-port`) through Redis,
//! measured with the same `wschat-bench broadcast` run. Needs
//! `redis-server`; says so and stops without it.
//!
//! `cargo bench --bench cluster` (`WSCHAT_BENCH_SECS` seconds per run, 5).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `target/release`, where `wschat` and `wschat-bench` are (built if missing).
fn bins() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    if !dir.join("wschat").exists() || !dir.join("wschat-bench").exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--release", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "cargo build --release --bins");
    }
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `wschat` with `args` and waits for its `listening on` line.
fn wschat(args: &[&str]) -> Proc {
    let mut child = Command::new(bins().join("wschat"))
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("listening on")),
        "wschat {args:?} did not start"
    );
    std::thread::spawn(move || lines.for_each(drop));
    Proc(child)
}

/// Waits until `addr` accepts connections (bounded).
fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the broadcast scenario against `url`; returns (deliveries/s, p99 µs, lost).
fn broadcast(url: &str, secs: &str) -> (f64, f64, f64) {
    let out = Command::new(bins().join("wschat-bench"))
        .args([
            "broadcast",
            "--url",
            url,
            "--conns",
            "1000",
            "--senders",
            "10",
        ])
        .args(["--rate", "100", "--duration", secs, "--json", "-q"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text.lines().last().unwrap_or_default();
    let field = |key: &str| -> f64 {
        json.split(&format!("\"{key}\":"))
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    (
        field("deliveries_per_sec"),
        field("delivery_latency_p99_us"),
        field("lost"),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: redis-server not found (install: apt-get install redis-server)");
        return;
    }
    let secs = std::env::var("WSCHAT_BENCH_SECS").unwrap_or_else(|_| "5".into());
    let redis_port = free_port();
    let _redis = Proc(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], redis_port)));
    let redis = format!("redis://127.0.0.1:{redis_port}");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let single = {
        let _server = wschat(&["--listen", &listen, "--max-connections", "5000"]);
        broadcast(&format!("ws://{listen}/"), &secs)
    };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let pair = {
        let flags = ["--listen", &listen, "--reuse-port", "--redis", &redis];
        let _a = wschat(&flags);
        let _b = wschat(&flags);
        // Both instances must have their Redis links up before the load.
        std::thread::sleep(Duration::from_millis(500));
        broadcast(&format!("ws://{listen}/"), &secs)
    };
    println!("broadcast, 1000 receivers, 10 senders x 100 msg/s, {secs} s:");
    println!(
        "{:<34} {:>14} {:>10} {:>6}",
        "", "deliveries/s", "p99 µs", "lost"
    );
    for (name, (rate, p99, lost)) in [
        ("one instance", single),
        ("two instances, --reuse-port + Redis", pair),
    ] {
        println!("{name:<34} {rate:>14.0} {p99:>10.0} {lost:>6}");
    }
    println!(
        "{{\"case\":\"cluster_broadcast\",\"single_per_sec\":{:.0},\"single_p99_us\":{:.0},\"pair_per_sec\":{:.0},\"pair_p99_us\":{:.0}}}",
        single.0, single.1, pair.0, pair.1
    );
}
