//! The real `wschat` binary as a child process: for what only a process of
//! its own shows (its memory, descriptors, exit status, log, and signals)
//! and for flags that `Config` does not have.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{health, wait_for};

/// How long the binary may take to print `listening on ADDR`.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Lines of stderr that [`Daemon::log_tail`] shows in failure messages.
const LOG_TAIL_LINES: usize = 60;

/// The `wschat` binary, killed (SIGKILL) and reaped on drop. Its stderr is
/// read all the time, so logging never blocks it, and kept for checks.
pub struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts the binary with `args` at log level `info`; panics with its
    /// stderr if it does not start.
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::try_start(args, "info").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the binary with `args`, plus `--listen 127.0.0.1:0` unless
    /// `args` name an address, and `RUST_LOG=rust_log`. The address comes
    /// from its `listening on ADDR` line. `Err` with its stderr if it exits
    /// first (a flag it does not know, a port in use) or stays silent for
    /// 10 s.
    pub fn try_start(args: &[&str], rust_log: &str) -> Result<Daemon, String> {
        Daemon::try_start_command(Command::new(Daemon::binary()), args, rust_log)
    }

    /// The path of the `wschat` binary under test.
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_wschat")
    }

    /// Like [`Daemon::try_start`], with `command` set up by the caller:
    /// the binary with environment variables of its own, or a launcher
    /// that takes `args` and execs the binary in its own process (so that
    /// [`Daemon::pid`] is the daemon's).
    pub fn try_start_command(
        mut command: Command,
        args: &[&str],
        rust_log: &str,
    ) -> Result<Daemon, String> {
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn wschat: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let failed = |child: &mut Child, why: String| {
            let _ = child.kill();
            let status = child.wait().ok();
            let log = log.lock().unwrap().join("\n");
            Err(format!(
                "wschat {args:?} {why} ({status:?}); stderr:\n{log}"
            ))
        };
        match rx.recv_timeout(START_LIMIT) {
            Ok(addr) => match addr.parse() {
                Ok(addr) => Ok(Daemon { child, addr, log }),
                Err(e) => failed(&mut child, format!("printed a bad address {addr}: {e}")),
            },
            // The reader has seen the end of stderr, so the log is complete.
            Err(RecvTimeoutError::Disconnected) => {
                failed(&mut child, "exited before listening".into())
            }
            Err(RecvTimeoutError::Timeout) => {
                failed(&mut child, "did not print `listening on`".into())
            }
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it `signal` (as `kill` names it: `-TERM`, `-INT`, …).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}: {status}", self.pid());
    }

    /// Every line it wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The lines of its stderr so far that contain `text`.
    pub fn log_lines_with(&self, text: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(text)).cloned().collect()
    }

    /// The last lines it wrote to stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Panics (with the log tail) if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "wschat exited with {status}; last log lines:\n{}",
                self.log_tail()
            );
        }
    }

    /// Its exit status once it exits, or `None` if it still runs after
    /// `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_for(limit, || self.child.try_wait().unwrap())
    }

    /// Waits until `/healthz` says `want`; panics with the log after
    /// `limit`.
    pub fn wait_health(&self, want: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let now = health(self.addr);
            if now == want {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: /healthz says {now:?}, not {want:?}, after {limit:?}; stderr:\n{}",
                    self.addr,
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One `kB` field of `/proc/PID/status` (e.g. `VmRSS`), in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}"))
    }

    /// Resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Highest resident memory since start (`VmHWM`), in KiB: catches a
    /// spike that sampling would miss.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    /// Open descriptors now (entries of `/proc/PID/fd`).
    pub fn fd_count(&self) -> usize {
        let path = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// KiB to MiB, for messages.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
