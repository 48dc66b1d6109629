//! Server memory per idle WebSocket connection: (RSS with N held - RSS
//! with 0) / N, with and without permessage-deflate (`--compression
//! shared`) negotiated by every client. The target is at most 512 bytes.
//!
//! `cargo bench --bench footprint` (N = 10000, or `WSCHAT_FOOTPRINT_CONNS`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `target/release/wschat`, built if missing (this file runs from
/// `target/release/deps/`).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("wschat");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "wschat"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    bin
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(conns: usize) -> Server {
        let mut child = Command::new(server_binary())
            .args(["--listen", "127.0.0.1:0", "--max-connections"])
            .arg((conns + 100).to_string())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split("listening on ")
                    .nth(1)
                    .map(|a| a.trim().parse().unwrap())
            })
            .expect("listening on ADDR");
        // Keep draining the log so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, addr }
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Upgrades one connection to the lobby and leaves it open and idle.
fn hold(addr: SocketAddr, deflate: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(head.contains("permessage-deflate"), deflate, "{head}");
    s
}

fn measure(conns: usize, deflate: bool) -> f64 {
    let server = Server::start(conns);
    std::thread::sleep(Duration::from_millis(200));
    let before = server.rss_bytes();
    let held: Vec<TcpStream> = (0..conns).map(|_| hold(server.addr, deflate)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = server.rss_bytes();
    drop(held);
    (after.saturating_sub(before)) as f64 / conns as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let conns: usize = std::env::var("WSCHAT_FOOTPRINT_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let plain = measure(conns, false);
    let deflate = measure(conns, true);
    println!("server RSS per idle connection, {conns} held (target: at most 512 bytes):");
    println!("  no extension                  {plain:>6.0} bytes");
    println!("  permessage-deflate (shared)   {deflate:>6.0} bytes");
    println!(
        "{{\"case\":\"idle_footprint\",\"conns\":{conns},\"plain_bytes_per_conn\":{plain:.0},\"deflate_bytes_per_conn\":{deflate:.0}}}"
    );
}
