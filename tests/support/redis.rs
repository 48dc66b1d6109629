//! A `redis-server` of the test's own for the cluster tests: on a free
//! loopback port, no persistence, killed on drop; it can be killed, stopped
//! (SIGSTOP) and restarted on the same port, and sent raw commands.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Daemon};

/// The `redis-server` executable, if installed.
pub fn redis_server_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// `Some(path)` when `redis-server` is installed. Otherwise the test is
/// skipped (`None`, with a line saying why), or fails when
/// `WSCHAT_REQUIRE_REDIS` is set to anything but `0` or nothing.
pub fn redis_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(path) = redis_server_path() {
        return Some(path);
    }
    let required = std::env::var("WSCHAT_REQUIRE_REDIS").is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!("{test}: redis-server not found, and WSCHAT_REQUIRE_REDIS is set (install: apt-get install redis-server)");
    }
    eprintln!("{test}: skipped: redis-server not found (install: apt-get install redis-server)");
    None
}

/// A `redis-server` of the test's own, on a loopback port, no persistence.
pub struct Redis {
    exe: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts `redis-server` on a free port and waits until it answers.
    pub fn start(exe: &Path) -> Redis {
        // Another process may take the free port before Redis binds it.
        let mut last = String::new();
        for _ in 0..5 {
            match Redis::try_start_on(exe, free_port()) {
                Ok(redis) => return redis,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// Starts `redis-server` on `port` (for a test that starts wschat first).
    pub fn start_on(exe: &Path, port: u16) -> Redis {
        Redis::try_start_on(exe, port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(exe: &Path, port: u16) -> Result<Redis, String> {
        let mut redis = Redis {
            exe: exe.to_path_buf(),
            port,
            child: None,
        };
        redis.spawn().map(|()| redis)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new(&self.exe)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.exe.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                ));
            }
            if let Ok(reply) = self.try_command(&[b"PING"]) {
                if reply == b"+PONG\r\n" {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!(
            "redis-server on port {} did not answer PING",
            self.port
        ))
    }

    /// The `--redis` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One `wschat --redis` instance of a cluster on this server, returned
    /// once both its links to Redis are up (within `wait`). Short shutdown
    /// and close timeouts, so that a SIGTERM ends it within a couple of
    /// seconds whatever its clients do.
    pub fn instance(&self, wait: Duration) -> Daemon {
        let url = self.url();
        let daemon = Daemon::start(&[
            "--redis",
            &url,
            "--shutdown-timeout",
            "1",
            "--close-timeout",
            "1",
        ]);
        daemon.wait_health("ok", wait);
        daemon
    }

    /// Kills the server at once (SIGKILL): its connections drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Sends a signal (`STOP`, `CONT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    /// Runs one command; returns the raw reply. Panics on error.
    pub fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis command {:?}: {e}", String::from_utf8_lossy(args[0])))
    }

    /// Runs one command whose reply is one line (status, error, integer).
    fn try_command(&self, args: &[&[u8]]) -> io::Result<Vec<u8>> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        s.write_all(&out)?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            if s.read(&mut byte)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            reply.push(byte[0]);
        }
        Ok(reply)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped server must be continued to die promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        self.kill();
    }
}
