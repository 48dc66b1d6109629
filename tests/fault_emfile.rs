//! The accept loop out of descriptors (EMFILE): no busy loop, a warning at
//! most once a second, and accepting again as soon as descriptors free up.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::{tcp_connect, wait_for, Daemon};

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Sends `GET /healthz` and reads the whole answer.
fn healthz(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn out_of_descriptors_pauses_accepts_without_spinning_then_resumes() {
    let mut daemon = Daemon::start(&["--handshake-timeout", "60"]);
    let addr = daemon.addr();
    let pid = daemon.pid();
    // Lower the running server's open-files limit under what its
    // --max-connections was sized for: accept() now fails with EMFILE once
    // 20 more descriptors are in use.
    let limit = daemon.fd_count() + 20;
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());

    let mut held: Vec<TcpStream> = (0..60).map(|_| tcp_connect(addr)).collect();
    assert!(
        wait_for(Duration::from_secs(5), || (daemon.fd_count() >= limit)
            .then_some(()))
        .is_some(),
        "the server took every descriptor it may have"
    );
    // Forty connections wait in the backlog. A loop retrying accept() at
    // once would use a whole core; the server must stay nearly idle.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 40,
        "{used} ticks of CPU in 2 s while out of descriptors"
    );
    let warnings = daemon
        .log_tail()
        .lines()
        .filter(|l| l.contains("pausing accepts"))
        .count();
    assert!(
        (1..=4).contains(&warnings),
        "{warnings} warnings in about 2 s:\n{}",
        daemon.log_tail()
    );
    daemon.assert_alive();

    // Free descriptors: the oldest 45 clients leave. The 15 left, which
    // waited in the backlog, are now accepted and answered.
    let rest = held.split_off(45);
    drop(held);
    for (i, mut stream) in rest.into_iter().enumerate() {
        let answer = healthz(&mut stream);
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok"),
            "client {i} after descriptors freed: {answer:?}\n{}",
            daemon.log_tail()
        );
    }
    daemon.assert_alive();
}
