//! Helpers of `tests/cluster.rs`: a real `redis-server`, real `wschat`
//! processes, plain HTTP and a small, fast WebSocket client.
//!
//! * [`redis_or_skip`] finds `redis-server`; without it a test prints why it
//!   is skipped and passes, unless `WSCHAT_REQUIRE_REDIS` is set (as in CI).
//! * [`Redis`]: `redis-server` on a free loopback port, no persistence,
//!   killed on drop; it can be killed, stopped (SIGSTOP) and restarted on
//!   the same port, and sent raw commands ([`Redis::command`]).
//! * [`Instance`]: the `wschat` binary with `--listen 127.0.0.1:0` (unless
//!   the flags name another) and given flags; the `listening on ADDR` line
//!   of its stderr gives the address; all its stderr is kept for checks;
//!   killed on drop.
//! * [`Client`]: a blocking WebSocket client whose decoder compacts its
//!   buffer once per read, not once per frame, so it can take thousands of
//!   messages quickly.
//!
//! Every wait is bounded.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Read and write timeout of blocking sockets.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Text opcode.
pub const TEXT: u8 = 0x1;
/// Binary opcode.
pub const BINARY: u8 = 0x2;

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

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

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A `redis-server` of the test's own, on a loopback port, no persistence.
pub struct Redis {
    exe: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts `redis-server` on a free port and waits until it answers.
    pub fn start(exe: &std::path::Path) -> Redis {
        let mut last = String::new();
        for _ in 0..5 {
            let mut redis = Redis {
                exe: exe.to_path_buf(),
                port: free_port(),
                child: None,
            };
            match redis.spawn() {
                Ok(()) => return redis,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// Starts `redis-server` on `port` (for a test that starts wschat first).
    pub fn start_on(exe: &std::path::Path, port: u16) -> Redis {
        let mut redis = Redis {
            exe: exe.to_path_buf(),
            port,
            child: None,
        };
        redis.spawn().unwrap_or_else(|e| panic!("{e}"));
        redis
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

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `--redis` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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

// ---------------------------------------------------------------------------
// wschat
// ---------------------------------------------------------------------------

/// A `wschat` process; killed on drop.
pub struct Instance {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    /// Starts `wschat` with `args` (plus `--listen 127.0.0.1:0` unless
    /// `args` has `--listen`) at log level `info`. Panics if it does not
    /// report its address within 10 s.
    pub fn start(args: &[&str]) -> Instance {
        Self::try_start(args, "info").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Instance::start`] with a chosen `RUST_LOG`; `Err` with the
    /// process's stderr if it exits or stays silent instead.
    pub fn try_start(args: &[&str], rust_log: &str) -> Result<Instance, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wschat"));
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wschat");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => addr.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(50));
                let log = log.lock().unwrap().join("\n");
                return Err(format!(
                    "wschat {args:?} did not start ({status:?}); stderr:\n{log}"
                ));
            }
        };
        Ok(Instance { child, addr, log })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its stderr lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Lines of its stderr that contain `text`.
    pub fn log_lines_with(&self, text: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.contains(text))
            .collect()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// `GET path`: status and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The body of `/healthz`.
pub fn health(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 200, "/healthz is always 200");
    body.trim().to_string()
}

/// Waits until `/healthz` says `want`; panics after `limit`.
pub fn wait_health(instance: &Instance, want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = health(instance.addr());
        if now == want {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{}: /healthz says {now:?}, not {want:?}, after {limit:?}; stderr:\n{}",
                instance.addr(),
                instance.log().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the series `series` (name and labels, as written) in
/// `/metrics`.
pub fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, page) = get(addr, "/metrics");
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

/// A blocking WebSocket client.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    mask_seed: u32,
}

impl Client {
    /// Connects to `path` (`/`, `/room/x`) and completes the handshake.
    pub fn connect(addr: SocketAddr, path: &str) -> Client {
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut client = Client {
            stream,
            buf: Vec::new(),
            start: 0,
            mask_seed: 0x9e37_79b9,
        };
        let deadline = Instant::now() + IO_TIMEOUT;
        let end = loop {
            if let Some(end) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(
                client.fill(deadline),
                "{addr}{path}: no response head: {:?}",
                String::from_utf8_lossy(&client.buf)
            );
        };
        let head = String::from_utf8_lossy(&client.buf[..end]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "{addr}{path}: not upgraded: {head}"
        );
        client.start = end;
        client
    }

    /// Sends a masked text message.
    pub fn send_text(&mut self, text: &str) {
        self.send(TEXT, text.as_bytes());
    }

    /// Sends a masked binary message.
    pub fn send_binary(&mut self, data: &[u8]) {
        self.send(BINARY, data);
    }

    fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.mask_seed ^= self.mask_seed << 13;
        self.mask_seed ^= self.mask_seed >> 17;
        self.mask_seed ^= self.mask_seed << 5;
        let key = self.mask_seed.to_be_bytes();
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&frame).expect("send a frame");
    }

    /// Reads more bytes; `false` on timeout or EOF.
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        let n = match self.stream.read(&mut self.buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => {
                self.buf.truncate(len);
                return false;
            }
        };
        self.buf.truncate(len + n);
        n > 0
    }

    /// The next data message (opcode, payload) before `deadline`, if any.
    /// Panics on a Close frame or a broken connection.
    pub fn next_before(&mut self, deadline: Instant) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((opcode, payload)) = self.decode() {
                match opcode {
                    TEXT | BINARY => return Some((opcode, payload)),
                    0x8 => panic!("closed by the server: {payload:?}"),
                    _ => continue, // ping/pong
                }
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// The next text message within `limit`; panics if none comes.
    pub fn expect_text(&mut self, limit: Duration) -> String {
        match self.next_before(Instant::now() + limit) {
            Some((TEXT, payload)) => String::from_utf8(payload).expect("UTF-8"),
            Some((op, payload)) => panic!("expected text, got opcode {op}: {payload:?}"),
            None => panic!("no message within {limit:?}"),
        }
    }

    /// Asserts that no data message comes within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        if let Some((_, payload)) = self.next_before(Instant::now() + wait) {
            panic!(
                "expected nothing, got {:?}",
                String::from_utf8_lossy(&payload)
            );
        }
    }

    /// Sends `text` and reads its echo `from{id}:{text}` (the next
    /// message must be it); returns the id.
    pub fn hello(&mut self, text: &str) -> u64 {
        self.send_text(text);
        sender_of(&self.expect_text(IO_TIMEOUT), text)
    }

    fn decode(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buf[self.start..];
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
        let (len, head) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < head + len {
            return None;
        }
        assert_eq!(
            b[0] & 0xf0,
            0x80,
            "one unfragmented frame per message, RSV clear"
        );
        let frame = (b[0] & 0x0f, b[head..head + len].to_vec());
        self.start += head + len;
        Some(frame)
    }
}

/// The id in `from{id}:{text}`, checking the text.
pub fn sender_of(message: &str, text: &str) -> u64 {
    let (from, rest) = message
        .split_once(':')
        .unwrap_or_else(|| panic!("no ':' in {message:?}"));
    assert_eq!(rest, text, "in {message:?}");
    from.strip_prefix("from")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no from{{id}} in {message:?}"))
}
