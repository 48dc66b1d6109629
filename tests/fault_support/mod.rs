//! Helpers shared by the `fault_*` and `limits` tests ("wschat under abuse").
//!
//! Each of those test files includes this one with
//! `#[path = "fault_support/mod.rs"] mod support;` (in a folder, so Cargo
//! does not build it as a test target of its own).
//!
//! It does not depend on `tests/common` so that it can be included next to
//! it without name clashes. What it adds:
//!
//! * [`Daemon`]: the real `wschat` binary on a free loopback port, so a test
//!   can read that process's memory ([`Daemon::rss_kib`],
//!   [`Daemon::peak_rss_kib`]) and open descriptors ([`Daemon::fd_count`])
//!   apart from its own.
//! * [`http_get`] and [`Metrics`]: plain requests and the `/metrics` page.
//! * [`ws_connect`], [`masked_frame`], [`Decoder`]: a small, fast WebSocket
//!   client side for tests that move many frames (the decoder compacts its
//!   buffer once per read, not once per frame).
//! * [`Rng`]: a seeded generator, so "random" input is the same every run.
//!
//! Every wait is bounded.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Read/write timeout of the helpers' blocking sockets.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The key every [`ws_connect`] sends (RFC 6455 section 1.3's sample).
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The `Sec-WebSocket-Accept` that answers [`SAMPLE_KEY`].
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opcodes used by the tests.
pub mod op {
    /// Text message.
    pub const TEXT: u8 = 0x1;
    /// Binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

// ---------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------

/// The `wschat` binary, started with `--listen 127.0.0.1:0` and extra flags,
/// killed (SIGKILL) and reaped on drop. Its stderr is drained all the time
/// (so logging never blocks it) and the last lines are kept for messages.
pub struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

/// Lines of the daemon's stderr kept for failure messages.
const LOG_LINES_KEPT: usize = 60;

impl Daemon {
    /// Starts the binary with `args` after `--listen 127.0.0.1:0`; panics
    /// with its stderr if it exits or does not print `listening on ADDR`
    /// within 10 s (for example because it does not know a flag yet).
    pub fn start(args: &[&str]) -> Daemon {
        match Daemon::try_start(args) {
            Ok(daemon) => daemon,
            Err(message) => panic!("{message}"),
        }
    }

    /// Like [`Daemon::start`], returning the reason instead of panicking.
    pub fn try_start(args: &[&str]) -> Result<Daemon, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wschat"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn wschat: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                let mut kept = kept.lock().unwrap();
                if kept.len() == LOG_LINES_KEPT {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(20)) {
                let addr = addr
                    .parse()
                    .map_err(|e| format!("bad address {addr}: {e}"))?;
                return Ok(Daemon { child, addr, log });
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Let the reader thread collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                let log: Vec<String> = log.lock().unwrap().iter().cloned().collect();
                return Err(format!(
                    "wschat {args:?} exited with {status} before listening:\n{}",
                    log.join("\n")
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("wschat {args:?} did not print `listening on`"));
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

    /// The last lines it wrote to stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().cloned().collect::<Vec<_>>().join("\n")
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

// ---------------------------------------------------------------------------
// HTTP and metrics
// ---------------------------------------------------------------------------

/// Sends `request` on a new connection and reads until the server closes
/// it (bounded by `limit`). Returns every byte received; a reset after some
/// bytes ends the read like EOF does.
pub fn http_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(request)?;
    read_to_eof(&mut stream, limit)
}

/// Reads `stream` until EOF (or a reset after some bytes), at most `limit`.
pub fn read_to_eof(stream: &mut TcpStream, limit: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no EOF within {limit:?}; got {:?}",
                    String::from_utf8_lossy(&out)
                ),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !out.is_empty() => {
                return Ok(out)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue; // the deadline check above reports it
            }
            Err(e) => return Err(e),
        }
    }
}

/// A response split into status code, head text and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code (0 if the status line does not parse).
    pub status: u16,
    /// The head, up to and without the blank line.
    pub head: String,
    /// Bytes after the blank line.
    pub body: Vec<u8>,
}

impl Response {
    /// Parses raw response bytes; `None` without a complete head.
    pub fn parse(raw: &[u8]) -> Option<Response> {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Some(Response {
            status,
            head,
            body: raw[end + 4..].to_vec(),
        })
    }

    /// The value of header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` over HTTP/1.1; panics unless a complete response arrives and
/// the connection then ends.
pub fn http_get(addr: SocketAddr, path: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let raw = http_exchange(addr, request.as_bytes(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    Response::parse(&raw).unwrap_or_else(|| panic!("GET {path}: no response head in {raw:?}"))
}

/// Panics unless `GET /healthz` answers `200 ok`.
pub fn assert_healthy(addr: SocketAddr) {
    let response = http_get(addr, "/healthz");
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"ok"[..]),
        "/healthz: {response:?}"
    );
}

/// The `/metrics` page, parsed into `name{labels} value` samples.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The page as served.
    pub text: String,
}

impl Metrics {
    /// Fetches `/metrics` from `addr`; panics unless it answers 200.
    pub fn fetch(addr: SocketAddr) -> Metrics {
        let response = http_get(addr, "/metrics");
        assert_eq!(response.status, 200, "/metrics: {response:?}");
        Metrics {
            text: String::from_utf8(response.body).expect("/metrics is UTF-8"),
        }
    }

    /// Fetches `/metrics`, or `None` if the server answers anything else
    /// (a 503 at the connection limit, say) or the request fails.
    pub fn try_fetch(addr: SocketAddr) -> Option<Metrics> {
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let raw = http_exchange(addr, request.as_bytes(), IO_TIMEOUT).ok()?;
        let response = Response::parse(&raw)?;
        (response.status == 200).then(|| Metrics {
            text: String::from_utf8_lossy(&response.body).into_owned(),
        })
    }

    /// The value of the sample whose name (with labels, exactly as printed,
    /// e.g. `wschat_protocol_errors_total{code="1008"}`) is `series`.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
    }

    /// Like [`Metrics::get`], 0 when the series is absent (a labelled
    /// counter appears only once counted).
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    /// Like [`Metrics::get`], panicking with the page if absent.
    pub fn require(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{}", self.text))
    }
}

/// Open connections as `/metrics` reports them, not counting the request
/// that asks (the gauge is read while that connection is open).
pub fn open_connections(addr: SocketAddr) -> f64 {
    Metrics::fetch(addr).require("wschat_connections") - 1.0
}

/// Calls `probe` every 20 ms until it returns `Some`, or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------

/// Connects with `TCP_NODELAY` and both timeouts set to [`IO_TIMEOUT`].
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Connects from the loopback address `source` (any `127.x.y.z` works on
/// Linux), so a test can look like several client addresses.
pub fn tcp_connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr} from {source}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Connects with a small receive buffer (set before the handshake, so the
/// advertised window stays small): a client that does not read then stops
/// the server's writes after a few KiB instead of megabytes.
pub fn tcp_connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Closes `stream` with a reset (RST) instead of FIN: `SO_LINGER` 0, drop.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// An upgrade request for `path` with [`SAMPLE_KEY`] and `extra` headers.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Reads a response head (bounded) from `stream`. Returns the head and the
/// bytes that came after it.
pub fn read_head(stream: &mut TcpStream) -> io::Result<(Response, Vec<u8>)> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = raw[end + 4..].to_vec();
            raw.truncate(end + 4);
            return Ok((Response::parse(&raw).unwrap(), rest));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || raw.len() > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no response head: {:?}", String::from_utf8_lossy(&raw)),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF before a head: {:?}", String::from_utf8_lossy(&raw)),
                ))
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sends an upgrade request for `path` on `stream` and returns the answer
/// (any status) and the bytes after its head.
pub fn try_upgrade(
    stream: &mut TcpStream,
    path: &str,
    extra: &[(&str, &str)],
) -> io::Result<(Response, Vec<u8>)> {
    let addr = stream.peer_addr()?;
    stream.write_all(&upgrade_request(addr, path, extra))?;
    read_head(stream)
}

/// Upgrades `stream` to `path`; panics unless the answer is a correct 101.
/// Returns the bytes that came after the head (feed them to a [`Decoder`]).
pub fn upgrade(stream: &mut TcpStream, path: &str) -> Vec<u8> {
    let (response, rest) =
        try_upgrade(stream, path, &[]).unwrap_or_else(|e| panic!("upgrade {path}: {e}"));
    assert_eq!(response.status, 101, "upgrade {path}: {response:?}");
    assert_eq!(
        response.header("Sec-WebSocket-Accept"),
        Some(SAMPLE_ACCEPT),
        "{response:?}"
    );
    rest
}

/// A connected, upgraded WebSocket client socket and its frame decoder.
pub struct Ws {
    /// The socket (blocking, timeouts set).
    pub stream: TcpStream,
    /// Bytes received and not yet decoded.
    pub decoder: Decoder,
}

impl Ws {
    /// Connects to `addr` and upgrades to `path`.
    pub fn connect(addr: SocketAddr, path: &str) -> Ws {
        Ws::over(tcp_connect(addr), path)
    }

    /// Upgrades an already connected `stream` to `path`.
    pub fn over(mut stream: TcpStream, path: &str) -> Ws {
        let rest = upgrade(&mut stream, path);
        let mut decoder = Decoder::default();
        decoder.push(&rest);
        Ws { stream, decoder }
    }

    /// Sends one masked frame; panics on error.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        self.stream
            .write_all(&masked_frame(opcode, payload, [1, 2, 3, 4]))
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Sends a masked text frame.
    pub fn send_text(&mut self, text: &str) {
        self.send(op::TEXT, text.as_bytes());
    }

    /// Reads the next frame within `limit`: `Ok((opcode, payload))`, or the
    /// error (`TimedOut`, `UnexpectedEof`, a reset...).
    pub fn next_frame(&mut self, limit: Duration) -> io::Result<(u8, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((opcode, payload)) = self.decoder.next_frame() {
                return Ok((opcode, payload.to_vec()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no frame in time"));
            }
            self.decoder.read_from(&mut self.stream, left)?;
        }
    }

    /// Reads the next frame that is not a Ping or Pong; panics on error.
    pub fn next_message(&mut self, limit: Duration) -> (u8, Vec<u8>) {
        loop {
            match self.next_frame(limit) {
                Ok((op::PING | op::PONG, _)) => continue,
                Ok(frame) => return frame,
                Err(e) => panic!("no message within {limit:?}: {e}"),
            }
        }
    }

    /// Expects a Close frame with `code` (skipping Pings and Pongs), then
    /// EOF (or a reset) within `limit`. Returns the close reason.
    pub fn expect_close(&mut self, code: u16, limit: Duration) -> String {
        let (opcode, payload) = self.next_message(limit);
        assert_eq!(
            opcode,
            op::CLOSE,
            "expected Close {code}, got opcode {opcode} {:?}",
            String::from_utf8_lossy(&payload)
        );
        let got = payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
        assert_eq!(got, Some(code), "close reason {reason:?}");
        match read_to_eof(&mut self.stream, limit) {
            Ok(rest) => assert!(rest.is_empty(), "bytes after Close: {rest:?}"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("no TCP close after Close {code}: {e}"),
        }
        reason
    }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// A final, masked client frame with key `key`.
pub fn masked_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = frame_header(opcode, payload.len() as u64, Some(key));
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    out
}

/// A final frame header (FIN set, RSV clear) announcing `len` bytes, masked
/// with `key` if given; shortest length encoding.
pub fn frame_header(opcode: u8, len: u64, key: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.push(0x80 | (opcode & 0x0F));
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = key {
        out.extend_from_slice(&key);
    }
    out
}

/// A masked Close frame with `code`.
pub fn close_frame(code: u16) -> Vec<u8> {
    masked_frame(op::CLOSE, &code.to_be_bytes(), [9, 8, 7, 6])
}

/// Decodes server frames (unmasked) from a growing buffer. The buffer is
/// compacted when bytes are added, never per frame, so millions of small
/// frames decode in linear time.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not decoded yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame as `(opcode, payload)`; `None` if the
    /// buffer holds only part of one. Panics on a masked server frame, a
    /// fragment, or RSV bits (this server sends none of those).
    pub fn next_frame(&mut self) -> Option<(u8, &[u8])> {
        let buf = &self.buf[self.start..];
        if buf.len() < 2 {
            return None;
        }
        let (b0, b1) = (buf[0], buf[1]);
        assert_eq!(b0 & 0xF0, 0x80, "server frame: FIN clear or RSV set");
        assert_eq!(b1 & 0x80, 0, "server frame masked");
        let (len, header) = match b1 & 0x7F {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if buf.len() < header + len {
            return None;
        }
        let begin = self.start + header;
        self.start += header + len;
        Some((b0 & 0x0F, &self.buf[begin..begin + len]))
    }

    /// One read from `stream` (waiting at most `limit`) into the buffer.
    /// EOF is `UnexpectedEof`; silence is `TimedOut`.
    pub fn read_from(&mut self, stream: &mut TcpStream, limit: Duration) -> io::Result<usize> {
        stream.set_read_timeout(Some(limit.max(Duration::from_millis(1))))?;
        let mut tmp = [0u8; 64 * 1024];
        loop {
            return match stream.read(&mut tmp) {
                Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF")),
                Ok(n) => {
                    self.push(&tmp[..n]);
                    Ok(n)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"))
                }
                Err(e) => Err(e),
            };
        }
    }
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

/// A seeded pseudo-random generator (splitmix64): the same bytes every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The `p`-th percentile (0-100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// KiB to MiB, for messages.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
