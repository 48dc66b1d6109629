//! systemd integration of the real binary: sd_notify (`READY=1` once
//! listening, `STOPPING=1` on SIGTERM, `WATCHDOG=1` at half of
//! `WATCHDOG_USEC`) heard on a datagram socket of the test's own, and socket
//! activation (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`).
//!
//! Handing a listening socket to a child as descriptor 3 needs `dup2`
//! between fork and exec, which std offers only through `unsafe`; a few
//! lines of Python (standard library only) do it instead and then exec the
//! binary, as systemd does. Without python3 those tests print
//! `skipped: python3 not found` and pass, unless `WSCHAT_REQUIRE_PYTHON=1`
//! (as in CI).

mod support;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{assert_healthy, free_port, op, python_or_skip, Daemon, RawClient};

/// The variables of the service manager, removed from every child so that
/// a test run under systemd does not hand its own on.
const MANAGER_VARIABLES: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// A datagram socket standing in for systemd's notify socket, in a
/// directory of its own under the temporary directory (removed on drop).
struct NotifySocket {
    socket: UnixDatagram,
    dir: PathBuf,
}

impl NotifySocket {
    fn new(tag: &str) -> NotifySocket {
        let dir = std::env::temp_dir().join(format!("wschat-sd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
        NotifySocket { socket, dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("notify")
    }

    /// The next datagram within `limit`, if one comes.
    fn next_within(&self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("recv on the notify socket: {e}"),
            }
        }
    }

    /// The next datagram; panics with `what` if none comes within 5 s.
    fn expect_next(&self, what: &str) -> String {
        self.next_within(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no {what} on the notify socket within 5 s"))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The binary with `NOTIFY_SOCKET` and the variables in `env`, and none of
/// the manager's variables this test process may have.
fn notified_daemon(notify: &NotifySocket, env: &[(&str, &str)]) -> Daemon {
    let mut command = Command::new(Daemon::binary());
    for name in MANAGER_VARIABLES {
        command.env_remove(name);
    }
    command
        .env("NOTIFY_SOCKET", notify.path())
        .envs(env.iter().copied());
    Daemon::try_start_command(command, &[], "info").unwrap_or_else(|e| panic!("{e}"))
}

/// The lines of one notification, which sd_notify(3) ends with a newline.
fn lines(message: &str) -> Vec<&str> {
    message.lines().collect()
}

#[test]
fn notify_socket_hears_ready_once_listening_and_stopping_on_sigterm() {
    let notify = NotifySocket::new("ready");
    let mut daemon = notified_daemon(&notify, &[]);
    let ready = notify.expect_next("READY=1");
    let status = format!("STATUS=listening on {}", daemon.addr());
    assert_eq!(lines(&ready), ["READY=1", status.as_str()], "{ready:?}");
    // Ready means serving.
    assert_healthy(daemon.addr());
    // No WATCHDOG_USEC, no pings: nothing more until the shutdown.
    assert_eq!(notify.next_within(Duration::from_millis(300)), None);
    daemon.signal("-TERM");
    assert_eq!(notify.expect_next("STOPPING=1"), "STOPPING=1\n");
    let exit = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn watchdog_pings_come_at_half_of_watchdog_usec() {
    let notify = NotifySocket::new("watchdog");
    let daemon = notified_daemon(&notify, &[("WATCHDOG_USEC", "200000")]);
    assert!(lines(&notify.expect_next("READY=1")).contains(&"READY=1"));
    // Every 100 ms: about 10 in a second. A loaded machine may lose a few;
    // a loop that spins on the timer would send far more.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(1) {
        if let Some(message) = notify.next_within(Duration::from_millis(250)) {
            assert_eq!(message, "WATCHDOG=1\n");
            pings += 1;
        }
    }
    assert!((4..=15).contains(&pings), "{pings} pings in 1 s");
    drop(daemon);
}

#[test]
fn no_watchdog_pings_when_watchdog_pid_names_another_process() {
    let notify = NotifySocket::new("watchdog-pid");
    let _daemon = notified_daemon(
        &notify,
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    assert!(lines(&notify.expect_next("READY=1")).contains(&"READY=1"));
    assert_eq!(notify.next_within(Duration::from_millis(500)), None);
}

/// Binds one listening socket per port on 127.0.0.1, moves them to
/// descriptors 3, 4, …, sets `LISTEN_FDS`, `LISTEN_PID` (its own process
/// id plus an offset; exec keeps the id) and `LISTEN_FDNAMES` (unless
/// `-`), then execs the program after `--`.
const TRAMPOLINE: &str = r#"
import os, socket, sys
sep = sys.argv.index("--")
pid_offset, names = int(sys.argv[1]), sys.argv[2]
ports = [int(p) for p in sys.argv[3:sep]]
for i, port in enumerate(ports):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    fd, want = s.detach(), 3 + i
    if fd != want:
        os.dup2(fd, want)
        os.close(fd)
    os.set_inheritable(want, True)
os.environ["LISTEN_FDS"] = str(len(ports))
os.environ["LISTEN_PID"] = str(os.getpid() + pid_offset)
if names != "-":
    os.environ["LISTEN_FDNAMES"] = names
os.execv(sys.argv[sep + 1], sys.argv[sep + 1:])
"#;

/// Whether python3 runs the trampoline; if not, the test is skipped.
fn python3_or_skip() -> bool {
    python_or_skip("os", "apt-get install python3")
}

/// The binary, socket-activated by the trampoline with listeners on
/// `ports` named `names`, run with `args`.
fn activated(pid_offset: i32, names: &str, ports: &[u16], args: &[&str]) -> Result<Daemon, String> {
    let mut command = Command::new("python3");
    for name in MANAGER_VARIABLES {
        command.env_remove(name);
    }
    command.args(["-c", TRAMPOLINE, &pid_offset.to_string(), names]);
    command.args(ports.iter().map(u16::to_string));
    command.args(["--", Daemon::binary()]);
    Daemon::try_start_command(command, args, "info")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Completes a WebSocket handshake on `addr` and has a message echoed.
fn assert_echoes(addr: SocketAddr) {
    let mut client = RawClient::connect(addr, "/echo");
    client.send_text("activated");
    client.expect_frame(op::TEXT, b"activated");
}

#[test]
fn socket_activation_serves_on_descriptor_3_instead_of_binding_listen() {
    if !python3_or_skip() {
        return;
    }
    let (handed, flag) = (free_port(), free_port());
    let listen = loopback(flag).to_string();
    let daemon =
        activated(0, "-", &[handed], &["--listen", &listen]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(daemon.addr(), loopback(handed));
    let from = format!("listener from systemd: fd 3 (unknown) on 127.0.0.1:{handed}");
    assert_eq!(
        daemon.log_lines_with(&from).len(),
        1,
        "{}",
        daemon.log_tail()
    );
    assert_healthy(daemon.addr());
    assert_echoes(daemon.addr());
    let refused = TcpStream::connect_timeout(&loopback(flag), Duration::from_secs(2));
    assert!(refused.is_err(), "--listen {listen} was bound as well");
}

#[test]
fn listen_fdnames_pick_the_plain_listener_and_others_are_reported() {
    if !python3_or_skip() {
        return;
    }
    let (tls, plain) = (free_port(), free_port());
    let daemon = activated(0, "tls:plain", &[tls, plain], &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(daemon.addr(), loopback(plain));
    let from = format!("listener from systemd: fd 4 (plain) on 127.0.0.1:{plain}");
    assert_eq!(
        daemon.log_lines_with(&from).len(),
        1,
        "{}",
        daemon.log_tail()
    );
    let unused = format!("fd 3 (tls) on 127.0.0.1:{tls} not used");
    assert_eq!(
        daemon.log_lines_with(&unused).len(),
        1,
        "{}",
        daemon.log_tail()
    );
    assert_echoes(daemon.addr());
}

#[test]
fn listen_fds_for_another_process_are_left_alone() {
    if !python3_or_skip() {
        return;
    }
    let handed = free_port();
    let daemon = activated(1, "-", &[handed], &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        daemon.addr().port(),
        handed,
        "took a listener not meant for it"
    );
    assert!(daemon.log_lines_with("from systemd").is_empty());
    assert_echoes(daemon.addr());
}

#[test]
fn only_a_tls_listener_is_an_error_not_a_plain_port() {
    if !python3_or_skip() {
        return;
    }
    let err = activated(0, "tls", &[free_port()], &[])
        .err()
        .expect("started without a plain listener");
    assert!(
        err.contains("systemd passed no plain listener (names: tls)"),
        "{err}"
    );
}
