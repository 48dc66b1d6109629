//! Shared helpers for the integration tests.
//!
//! * [`start_server`] runs an in-process `wschat::Server` on its own thread;
//!   the returned [`TestServer`] shuts it down (bounded wait) when dropped.
//! * [`RawClient`] is a deliberately dumb WebSocket client over a blocking
//!   `std::net::TcpStream`: it writes exactly the bytes a test builds and
//!   decodes what comes back with its own small frame decoder (not the
//!   crate's), so a test checks the server against an independent reading of
//!   RFC 6455.
//! * [`encode_frame`], [`encode_header`], [`close_payload`] build wire bytes
//!   for tests that need to cut a stream at arbitrary offsets.
//!
//! Every wait is bounded: reads and writes time out after [`IO_TIMEOUT`] of
//! silence, and a helper that fails panics with the bytes it saw.
//!
//! Each test binary includes this module with `mod common;` and uses only
//! part of it, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How long any single read or write may wait without progress.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The GUID of RFC 6455 section 1.3, appended to the key for the accept hash.
pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Opcodes (RFC 6455 section 5.2), as the low nibble of the first byte.
pub mod op {
    /// 0x0: continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// 0x1: text message (or its first fragment).
    pub const TEXT: u8 = 0x1;
    /// 0x2: binary message (or its first fragment).
    pub const BINARY: u8 = 0x2;
    /// 0x8: close.
    pub const CLOSE: u8 = 0x8;
    /// 0x9: ping.
    pub const PING: u8 = 0x9;
    /// 0xA: pong.
    pub const PONG: u8 = 0xA;
}

/// RSV bits as a 3-bit value, Autobahn style: bit 2 is RSV1, bit 1 RSV2,
/// bit 0 RSV3 (so `0b100` is RSV1 and `7` sets all three).
pub mod rsv {
    /// RSV1 (the permessage-deflate bit).
    pub const RSV1: u8 = 0b100;
    /// RSV2.
    pub const RSV2: u8 = 0b010;
    /// RSV3.
    pub const RSV3: u8 = 0b001;
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// A default [`wschat::Config`] listening on `127.0.0.1:0` (a free port).
pub fn test_config() -> wschat::Config {
    wschat::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..wschat::Config::default()
    }
}

/// A server running on its own thread for the duration of a test.
///
/// Dropping it calls `shutdown()` on its handle and waits, bounded by the
/// configured shutdown and close timeouts plus 5 s, for `run()` to return. If the server
/// does not stop in time, or `run()` returned an error, the drop panics
/// (unless the test is already panicking), so a test also checks that the
/// server stops cleanly.
pub struct TestServer {
    addr: SocketAddr,
    handle: wschat::ServerHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
    stop_wait: Duration,
}

/// Binds `config` (use [`test_config`] for a free loopback port) and runs the
/// server on a new thread. The server is bound on that thread (a `Server`
/// holds `Rc`s, so it is not `Send`); its address and handle come back over
/// a channel. Panics if binding fails.
pub fn start_server(config: wschat::Config) -> TestServer {
    let stop_wait = config.shutdown_timeout + config.close_timeout + Duration::from_secs(5);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("wschat-test-server".to_string())
        .spawn(move || {
            let server = match wschat::Server::bind(config) {
                Ok(server) => server,
                Err(e) => {
                    let message = format!("Server::bind failed: {e}");
                    let _ = tx.send(Err(message));
                    return Err(e);
                }
            };
            let _ = tx.send(Ok((server.local_addr(), server.handle())));
            server.run()
        })
        .expect("spawn server thread");
    let (addr, handle) = match rx.recv_timeout(IO_TIMEOUT) {
        Ok(Ok(started)) => started,
        Ok(Err(message)) => panic!("{message}"),
        Err(e) => panic!("server thread did not report its address: {e}"),
    };
    TestServer {
        addr,
        handle,
        thread: Some(thread),
        stop_wait,
    }
}

impl TestServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A clone of the server's handle (for example to call `shutdown()`
    /// while clients are still connected).
    pub fn handle(&self) -> wschat::ServerHandle {
        self.handle.clone()
    }

    /// Shuts the server down and waits (bounded) for `run()` to return.
    /// Returns `run()`'s result, or `Err(TimedOut)` if it did not return in
    /// time (the thread is then left running).
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.handle.shutdown();
        let deadline = Instant::now() + self.stop_wait;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "server on {} did not stop within {:?} of shutdown()",
                        self.addr, self.stop_wait
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match thread.join() {
            Ok(result) => result,
            Err(_) => Err(io::Error::other("server thread panicked")),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            if std::thread::panicking() {
                eprintln!("TestServer drop: {e}");
            } else {
                panic!("TestServer drop: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// One frame as received from the server, decoded by [`decode_frame`].
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1-3 as a 3-bit value (see [`rsv`]).
    pub rsv: u8,
    /// Opcode nibble (see [`op`]).
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
    /// The exact header bytes as received (to check the length encoding).
    pub header: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame (its first two payload bytes).
    pub fn close_code(&self) -> Option<u16> {
        match self.payload.as_slice() {
            [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }

    /// The reason bytes of a close frame (after the code).
    pub fn close_reason(&self) -> &[u8] {
        self.payload.get(2..).unwrap_or(&[])
    }

    /// Header followed by payload: the frame exactly as it was on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        out.extend_from_slice(&self.payload);
        out
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.opcode {
            op::CONTINUATION => "CONT",
            op::TEXT => "TEXT",
            op::BINARY => "BINARY",
            op::CLOSE => "CLOSE",
            op::PING => "PING",
            op::PONG => "PONG",
            _ => "RESERVED",
        };
        write!(
            f,
            "Frame {{ {name} fin={} rsv={} len={} header=[{}] payload=[{}]",
            self.fin,
            self.rsv,
            self.payload.len(),
            hex(&self.header),
            hex(&self.payload)
        )?;
        if self.opcode == op::CLOSE {
            write!(
                f,
                " code={:?} reason={:?}",
                self.close_code(),
                String::from_utf8_lossy(self.close_reason())
            )?;
        }
        write!(f, " }}")
    }
}

/// Lowercase hex of `bytes`, space separated, cut after 64 bytes.
pub fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut s: Vec<String> = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > SHOWN {
        s.push(format!("... ({} bytes)", bytes.len()));
    }
    s.join(" ")
}

/// Encodes a frame header: FIN, RSV (3-bit, see [`rsv`]), opcode (any nibble,
/// reserved ones included), the declared payload length with the shortest
/// encoding (any `u64`, so a length with the top bit set can be sent), and the
/// masking key if any.
pub fn encode_header(fin: bool, rsv: u8, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.push(u8::from(fin) << 7 | (rsv & 7) << 4 | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// XORs `data` with `key`, `data[0]` being payload byte number `offset`.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

/// Encodes a whole frame; the payload is masked with `mask` if given.
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = encode_header(fin, rsv, opcode, payload.len() as u64, mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// A masked client frame (FIN and RSV as given) with a fresh masking key.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, payload, Some(random_mask()))
}

/// The frame the server is expected to send: unmasked, RSV clear, shortest
/// length encoding.
pub fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, payload, None)
}

/// A close payload: the code (if any) big-endian, then the reason bytes.
pub fn close_payload(code: Option<u16>, reason: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(code) = code {
        out.extend_from_slice(&code.to_be_bytes());
    }
    out.extend_from_slice(reason);
    out
}

/// Decodes one server frame from the start of `buf`.
///
/// `Ok(None)`: not complete yet. `Ok(Some((frame, used)))`: a frame and how
/// many bytes it took. `Err(text)`: the bytes break a rule for server frames
/// (mask bit set, a length not in its shortest encoding, a 64-bit length with
/// its top bit set).
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        return Err(format!(
            "server frame has the MASK bit set: header starts [{}]",
            hex(&buf[..2])
        ));
    }
    let (len, header_len) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
            if len < 126 {
                return Err(format!(
                    "server frame length {len} not in shortest encoding: [{}]",
                    hex(&buf[..4])
                ));
            }
            (len, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(buf[2..10].try_into().unwrap());
            if len >> 63 != 0 || len <= 0xFFFF {
                return Err(format!(
                    "server frame 64-bit length {len} invalid or not shortest: [{}]",
                    hex(&buf[..10])
                ));
            }
            (len, 10)
        }
        small => (u64::from(small), 2),
    };
    let total = header_len as u64 + len;
    if (buf.len() as u64) < total {
        return Ok(None);
    }
    let total = total as usize;
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 7,
        opcode: b0 & 0x0F,
        payload: buf[header_len..total].to_vec(),
        header: buf[..header_len].to_vec(),
    };
    Ok(Some((frame, total)))
}

/// Decodes a complete byte stream of server frames; panics on leftovers or
/// an invalid frame.
pub fn decode_all(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        match decode_frame(bytes) {
            Ok(Some((frame, used))) => {
                frames.push(frame);
                bytes = &bytes[used..];
            }
            Ok(None) => panic!("truncated frame at end of stream: [{}]", hex(bytes)),
            Err(e) => panic!("{e}"),
        }
    }
    frames
}

/// Runs `check` on every case and panics once at the end listing every
/// failing case with its panic message, so that one bad case does not hide
/// the others. Each case should open its own connection.
pub fn check_all<T: fmt::Debug>(cases: &[T], check: impl Fn(&T)) {
    let mut failures = Vec::new();
    for case in cases {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(case)));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("case {case:02x?}: {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Randomness (deterministic: only keys and masks, never test data)
// ---------------------------------------------------------------------------

static RNG_STATE: AtomicU64 = AtomicU64::new(0x5EED_0FC0_FFEE);

/// A pseudo-random `u64` (splitmix64 over a global counter).
pub fn random_u64() -> u64 {
    let mut z = RNG_STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fresh 4-byte masking key.
pub fn random_mask() -> [u8; 4] {
    (random_u64() as u32).to_be_bytes()
}

/// A fresh `Sec-WebSocket-Key`: 16 pseudo-random bytes, base64.
pub fn random_key() -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&random_u64().to_be_bytes());
    raw[8..].copy_from_slice(&random_u64().to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// `Sec-WebSocket-Accept` for `key`, computed here: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{key}{WS_GUID}")).digest();
    base64::engine::general_purpose::STANDARD.encode(digest.bytes())
}

/// An opening handshake request for `path` with `key`, plus `extra` headers.
pub fn handshake_request(host: &str, path: &str, key: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A parsed HTTP response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHead {
    /// The status line without CRLF, e.g. `HTTP/1.1 101 Switching Protocols`.
    pub status_line: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The raw head, including the final blank line.
    pub raw: Vec<u8>,
}

impl HttpHead {
    /// The status code from the status line (0 if it cannot be parsed).
    pub fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The first header named `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses a head (status line, then `Name: value` lines); panics on
    /// anything malformed.
    pub fn parse(raw: &[u8]) -> HttpHead {
        let text = std::str::from_utf8(raw)
            .unwrap_or_else(|_| panic!("response head is not UTF-8: [{}]", hex(raw)));
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("").to_string();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("malformed header line {l:?} in {text:?}"));
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        HttpHead {
            status_line,
            headers,
            raw: raw.to_vec(),
        }
    }
}

/// Errors of the non-panicking reads.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing (or not enough) arrived within the allowed time.
    Timeout,
    /// The server closed the TCP connection (read returned 0).
    Eof,
    /// Another I/O error (for example a connection reset).
    Io(io::Error),
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// A raw WebSocket client over a blocking `TcpStream` (`TCP_NODELAY` on,
/// read and write timeouts set). Each `send_*` call is one or more plain
/// `write`s of exactly the given bytes; all reads are bounded.
pub struct RawClient {
    stream: TcpStream,
    /// Bytes received but not consumed yet.
    buf: Vec<u8>,
    response: Option<HttpHead>,
}

impl RawClient {
    /// Opens a TCP connection without any handshake.
    pub fn connect_tcp(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
            response: None,
        }
    }

    /// Connects and completes the opening handshake for `path` (no
    /// subprotocol, no extension offered). Panics unless the server answers
    /// 101 with the right `Sec-WebSocket-Accept`.
    pub fn connect(addr: SocketAddr, path: &str) -> RawClient {
        Self::connect_with_headers(addr, path, &[])
    }

    /// Like [`RawClient::connect`] with extra request headers (for example
    /// `("Sec-WebSocket-Protocol", "chat")`).
    pub fn connect_with_headers(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> RawClient {
        let mut client = Self::connect_tcp(addr);
        client.handshake(path, extra);
        client
    }

    /// Sends a handshake request on a fresh connection and checks the 101
    /// response (status, `Upgrade`, `Connection`, `Sec-WebSocket-Accept`).
    /// Bytes after the response head stay buffered for [`Self::read_frame`].
    pub fn handshake(&mut self, path: &str, extra: &[(&str, &str)]) -> HttpHead {
        let key = random_key();
        let host = self.stream.peer_addr().unwrap().to_string();
        self.send_raw(&handshake_request(&host, path, &key, extra));
        let head = self.read_http_head();
        check_101(&head, &key);
        self.response = Some(head.clone());
        head
    }

    /// The 101 response of the handshake done by `connect` or `handshake`.
    pub fn handshake_response(&self) -> Option<&HttpHead> {
        self.response.as_ref()
    }

    /// Reads an HTTP response head (up to the blank line, at most 16 KiB,
    /// bounded in time). Later bytes stay buffered.
    pub fn read_http_head(&mut self) -> HttpHead {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                return HttpHead::parse(&raw);
            }
            assert!(
                self.buf.len() < 16 * 1024,
                "HTTP head over 16 KiB: [{}]",
                hex(&self.buf)
            );
            match self.fill(Some(deadline)) {
                Ok(()) => {}
                Err(e) => panic!(
                    "reading HTTP response head: {e:?}; got so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// The underlying stream (for socket options or a half-close).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    // -- sending ------------------------------------------------------------

    /// Writes `bytes` as they are; panics on error.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("write of {} bytes failed: {e}", bytes.len()));
    }

    /// Writes `bytes` as they are, returning the error (for writes that may
    /// race with the server closing).
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes `bytes` in consecutive writes of at most `chunk_size` bytes.
    pub fn send_in_chunks(&mut self, bytes: &[u8], chunk_size: usize) {
        self.send_in_chunks_paced(bytes, chunk_size, Duration::ZERO);
    }

    /// Like [`Self::send_in_chunks`], sleeping `pause` between writes so that
    /// the server is likely to read each chunk on its own.
    pub fn send_in_chunks_paced(&mut self, bytes: &[u8], chunk_size: usize, pause: Duration) {
        assert!(chunk_size > 0);
        for (i, chunk) in bytes.chunks(chunk_size).enumerate() {
            if i > 0 && !pause.is_zero() {
                std::thread::sleep(pause);
            }
            self.send_raw(chunk);
        }
    }

    /// Sends one frame. `rsv` is the 3-bit RSV value (see [`rsv`]); with
    /// `mask` a fresh masking key is used, without it the frame is unmasked
    /// (which a server must reject).
    pub fn send_frame(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: bool) {
        let key = mask.then(random_mask);
        self.send_raw(&encode_frame(fin, rsv, opcode, payload, key));
    }

    /// Sends a masked, final text frame.
    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, 0, op::TEXT, text.as_bytes(), true);
    }

    /// Sends a masked, final binary frame.
    pub fn send_binary(&mut self, data: &[u8]) {
        self.send_frame(true, 0, op::BINARY, data, true);
    }

    /// Sends a masked ping.
    pub fn send_ping(&mut self, payload: &[u8]) {
        self.send_frame(true, 0, op::PING, payload, true);
    }

    /// Sends a masked close frame with `code` (none: empty payload) and
    /// `reason`.
    pub fn send_close(&mut self, code: Option<u16>, reason: &[u8]) {
        self.send_frame(true, 0, op::CLOSE, &close_payload(code, reason), true);
    }

    // -- receiving ----------------------------------------------------------

    /// Reads once more into the buffer. `deadline` bounds the whole wait;
    /// in any case one read waits at most [`IO_TIMEOUT`].
    fn fill(&mut self, deadline: Option<Instant>) -> Result<(), ReadError> {
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ReadError::Timeout);
                }
                left.min(IO_TIMEOUT)
            }
            None => IO_TIMEOUT,
        };
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut tmp = [0u8; 64 * 1024];
        loop {
            return match self.stream.read(&mut tmp) {
                Ok(0) => Err(ReadError::Eof),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    Err(ReadError::Timeout)
                }
                Err(e) => Err(ReadError::Io(e)),
            };
        }
    }

    /// Reads the next frame, waiting at most `limit` in total.
    pub fn try_read_frame(&mut self, limit: Duration) -> Result<Frame, ReadError> {
        self.next_frame(Some(Instant::now() + limit))
    }

    fn next_frame(&mut self, deadline: Option<Instant>) -> Result<Frame, ReadError> {
        loop {
            match decode_frame(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => panic!("{e}"),
            }
            self.fill(deadline)?;
        }
    }

    /// Reads the next frame; panics if the connection ends or stays silent
    /// for [`IO_TIMEOUT`] (a large frame may take longer as long as bytes
    /// keep coming).
    pub fn read_frame(&mut self) -> Frame {
        match self.next_frame(None) {
            Ok(frame) => frame,
            Err(e) => panic!("read_frame: {e:?}; buffered bytes: [{}]", hex(&self.buf)),
        }
    }

    /// Reads the next frame, which must arrive within `limit`.
    pub fn read_frame_within(&mut self, limit: Duration) -> Frame {
        match self.try_read_frame(limit) {
            Ok(frame) => frame,
            Err(e) => panic!(
                "no frame within {limit:?}: {e:?}; buffered bytes: [{}]",
                hex(&self.buf)
            ),
        }
    }

    /// Reads the next frame and asserts it is exactly the unfragmented,
    /// RSV-clear frame `opcode`/`payload` with shortest length encoding.
    pub fn expect_frame(&mut self, opcode: u8, payload: &[u8]) {
        let frame = self.read_frame();
        let expected = server_frame(true, opcode, payload);
        if frame.to_bytes() != expected {
            let want = decode_frame(&expected).unwrap().unwrap().0;
            panic!("unexpected frame\n  got:  {frame:?}\n  want: {want:?}");
        }
    }

    /// Expects a text frame with `text`.
    pub fn expect_text(&mut self, text: &str) {
        self.expect_frame(op::TEXT, text.as_bytes());
    }

    /// Expects a binary frame with `data`.
    pub fn expect_binary(&mut self, data: &[u8]) {
        self.expect_frame(op::BINARY, data);
    }

    /// Expects a pong with `payload`.
    pub fn expect_pong(&mut self, payload: &[u8]) {
        self.expect_frame(op::PONG, payload);
    }

    /// Reads the next frame and asserts it is a well-formed close frame:
    /// FIN, RSV clear, payload empty or a code plus a valid UTF-8 reason of
    /// at most 123 bytes. Returns it. Does not wait for the TCP close.
    pub fn expect_close_frame(&mut self) -> Frame {
        let frame = self.read_frame();
        assert_eq!(
            frame.opcode,
            op::CLOSE,
            "expected a close frame, got {frame:?}"
        );
        assert!(frame.fin && frame.rsv == 0, "malformed close {frame:?}");
        assert_ne!(
            frame.payload.len(),
            1,
            "close with 1-byte payload {frame:?}"
        );
        assert!(
            frame.close_reason().len() <= 123,
            "close reason over 123 bytes {frame:?}"
        );
        assert!(
            std::str::from_utf8(frame.close_reason()).is_ok(),
            "close reason not UTF-8 {frame:?}"
        );
        frame
    }

    /// Asserts that the very next frame is a close with `code` (no frame may
    /// come before it), then that the server closes the TCP connection
    /// (see [`Self::expect_eof`]).
    pub fn expect_close(&mut self, code: u16) {
        let frame = self.expect_close_frame();
        assert_eq!(
            frame.close_code(),
            Some(code),
            "expected close {code}, got {frame:?}"
        );
        self.expect_eof();
    }

    /// Asserts that the very next frame is a close with an empty payload,
    /// then that the server closes the TCP connection.
    pub fn expect_empty_close(&mut self) {
        let frame = self.expect_close_frame();
        assert!(
            frame.payload.is_empty(),
            "expected empty close, got {frame:?}"
        );
        self.expect_eof();
    }

    /// Asserts that no more bytes come and that the server closes the TCP
    /// connection (read returns 0) within [`IO_TIMEOUT`], without a reset.
    pub fn expect_eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "bytes after the close frame: [{}]",
            hex(&self.buf)
        );
        match self.fill(Some(Instant::now() + IO_TIMEOUT)) {
            Err(ReadError::Eof) => {}
            Ok(()) => panic!("expected TCP close, got more bytes: [{}]", hex(&self.buf)),
            Err(ReadError::Timeout) => {
                panic!("server did not close the TCP connection within {IO_TIMEOUT:?}")
            }
            Err(ReadError::Io(e)) => panic!("expected a clean TCP close (FIN), got {e}"),
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for
    /// `duration`.
    pub fn expect_no_frame_within(&mut self, duration: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected buffered bytes: [{}]",
            hex(&self.buf)
        );
        let deadline = Instant::now() + duration;
        match self.fill(Some(deadline)) {
            Err(ReadError::Timeout) => {}
            Ok(()) => {
                let shown = match decode_frame(&self.buf) {
                    Ok(Some((f, _))) => format!("{f:?}"),
                    _ => format!("[{}]", hex(&self.buf)),
                };
                panic!("expected silence for {duration:?}, got {shown}")
            }
            Err(e) => panic!("expected silence for {duration:?}, got {e:?}"),
        }
    }

    /// Reads everything until the server closes the connection and returns
    /// the bytes (buffered ones first). Panics on silence for
    /// [`IO_TIMEOUT`] or if `limit` passes.
    pub fn read_until_eof(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        loop {
            match self.fill(Some(deadline)) {
                Ok(()) => {}
                Err(ReadError::Eof) => return std::mem::take(&mut self.buf),
                Err(e) => panic!("read_until_eof: {e:?}; got so far: [{}]", hex(&self.buf)),
            }
        }
    }
}

/// Panics unless `head` is a valid 101 answer to a request with `key`.
pub fn check_101(head: &HttpHead, key: &str) {
    let text = String::from_utf8_lossy(&head.raw);
    assert!(
        head.status_line.starts_with("HTTP/1.1 101"),
        "handshake not accepted: {text:?}"
    );
    assert!(
        head.header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "bad Upgrade header: {text:?}"
    );
    assert!(
        head.header("Connection").is_some_and(|v| v
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))),
        "bad Connection header: {text:?}"
    );
    assert_eq!(
        head.header("Sec-WebSocket-Accept"),
        Some(accept_key(key).as_str()),
        "bad Sec-WebSocket-Accept: {text:?}"
    );
}
