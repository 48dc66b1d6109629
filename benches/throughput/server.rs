//! The processes of the throughput bench: the servers under test (started
//! pinned, their logs drained, their CPU time read from /proc), and where
//! the binaries and the output files are.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The line a server prints once its plain listener is bound.
const LISTENING: &str = "listening on ";

/// The line wschat prints once its TLS listener (`--tls-listen`) is bound.
const LISTENING_TLS: &str = "listening for TLS on ";

/// Copies every line of `pipe` to the file `log` on a thread of its own,
/// to the end, and sends the text after each `listening ...` marker with
/// the marker it followed.
fn drain_log(
    pipe: Box<dyn Read + Send>,
    log: &Path,
) -> Result<mpsc::Receiver<(&'static str, String)>, String> {
    let mut log = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            for marker in [LISTENING, LISTENING_TLS] {
                if let Some(rest) = line.split(marker).nth(1) {
                    let _ = tx.send((marker, rest.trim().to_string()));
                }
            }
        }
    });
    Ok(rx)
}

/// The socket addresses in the text of a `listening` line.
fn addresses(text: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = text
        .split_whitespace()
        .filter_map(|a| a.trim_end_matches(',').parse().ok())
        .collect();
    if addrs.is_empty() {
        return Err(format!("no address in `{text}`"));
    }
    Ok(addrs)
}

/// A server under test, with its log drained by a thread.
pub struct Server {
    child: Child,
    /// The addresses of its `listening on` line, in order.
    pub addrs: Vec<SocketAddr>,
    /// The address of its `listening for TLS on` line, if it has one.
    pub tls_addr: Option<SocketAddr>,
}

impl Server {
    /// Starts `cmd` pinned to the server CPU and waits for the line
    /// `listening on ADDR` on `stdout` or `stderr` (whichever `from_stderr`
    /// says), and with `tls` also for `listening for TLS on ADDR`. Every
    /// line also goes to `log`, and the pipe is read to the end so a chatty
    /// server can never block on a full pipe.
    pub fn start(
        mut cmd: Command,
        from_stderr: bool,
        tls: bool,
        log: &Path,
    ) -> Result<Server, String> {
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
        let lines = drain_log(pipe, log)?;
        let wait_for = |what: &str| match lines.recv_timeout(Duration::from_secs(10)) {
            Ok((key, line)) if key == what => Ok(line),
            Ok((key, _)) => Err(format!("{shown}: `{key}` came before `{what}`")),
            Err(_) => Err(format!("{shown}: no `{what}` line within 10 s")),
        };
        let plain = wait_for(LISTENING);
        let secure = match (&plain, tls) {
            (Ok(_), true) => Some(wait_for(LISTENING_TLS)),
            _ => None,
        };
        let parsed = plain.and_then(|line| Ok((addresses(&line)?, secure.transpose()?)));
        let (addrs, secure) = match parsed {
            Ok(found) => found,
            Err(e) => {
                let _ = child.kill();
                return Err(format!("{shown}: {e}"));
            }
        };
        let tls_addr = match secure.map(|line| addresses(&line)) {
            Some(Ok(addrs)) => Some(addrs[0]),
            Some(Err(e)) => {
                let _ = child.kill();
                return Err(format!("{shown}: {e}"));
            }
            None => None,
        };
        Ok(Server {
            child,
            addrs,
            tls_addr,
        })
    }

    /// Its process id (taskset execs, so it is the server's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Nanoseconds this server has run on a CPU and waited for one, from
    /// `/proc/PID/schedstat` (taskset execs, so the pid is the server's).
    pub fn schedstat(&self) -> Option<(u64, u64)> {
        let text = fs::read_to_string(format!("/proc/{}/schedstat", self.child.id())).ok()?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some((fields.next()??, fields.next()??))
    }

    /// SIGTERM, then waits up to 10 s; returns the exit status text.
    pub fn stop(mut self) -> String {
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
pub struct Layout {
    /// target/release: where `wschat` and `wschat-bench` are.
    bins: PathBuf,
    /// target: where results and logs go.
    pub target: PathBuf,
}

impl Layout {
    /// This executable is target/release/deps/throughput-HASH, so the
    /// binaries are one level up whatever `CARGO_TARGET_DIR` says. `cargo
    /// bench` builds them (it builds a package's binaries for its benches);
    /// if they are missing anyway, build them.
    pub fn find() -> Result<Layout, String> {
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
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }
}

/// `taskset -c CPU program`, or just `program` when pinning is impossible.
pub fn pinned(cpu: &str, program: &Path, pin: bool) -> Command {
    if pin {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Whether `taskset` works and there are two CPUs to pin to.
pub fn can_pin() -> bool {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    cpus >= 2 && taskset
}
