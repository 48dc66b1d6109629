//! HTTP as the tests see it: the opening handshake's request and its
//! checks, one response parser, plain requests, `/healthz` and `/metrics`.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{hex, read_to_eof, RawClient, IO_TIMEOUT};

/// The GUID of RFC 6455 section 1.3, appended to the key for the accept hash.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

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

/// Panics unless `head` is a valid 101 answer to a request with `key`.
pub fn check_101(head: &Response, key: &str) {
    let text = &head.head;
    assert!(
        head.status_line().starts_with("HTTP/1.1 101"),
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

/// A response: its head parsed, and the bytes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code (0 if the status line has none).
    pub status: u16,
    /// The head as received, from the status line to the blank line
    /// included.
    pub head: String,
    /// Header fields in order, names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Bytes after the head (empty when the head was read on its own).
    pub body: Vec<u8>,
}

impl Response {
    /// Parses `raw` up to the end of its head; `None` without a complete
    /// head. Panics on a head that is not UTF-8 or has a line that is not
    /// `Name: value`: the server never sends one.
    pub fn parse(raw: &[u8]) -> Option<Response> {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&raw[..end])
            .unwrap_or_else(|_| panic!("response head is not UTF-8: [{}]", hex(&raw[..end])));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("malformed header line {l:?} in {head:?}"));
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Some(Response {
            status,
            head: head.to_string(),
            headers,
            body: raw[end..].to_vec(),
        })
    }

    /// The status line without CRLF, e.g. `HTTP/1.1 101 Switching Protocols`.
    pub fn status_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Length` value; panics without one (every answer of
    /// the server but the 101 has one).
    pub fn content_length(&self) -> usize {
        self.header("content-length")
            .unwrap_or_else(|| panic!("no Content-Length in {:?}", self.head))
            .parse()
            .unwrap_or_else(|e| panic!("Content-Length in {:?}: {e}", self.head))
    }

    /// The body as text (lossy), for reasons and short pages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Plain HTTP on a [`RawClient`]: whole responses read one at a time by
/// their `Content-Length`, so that several can follow on one connection.
impl RawClient {
    /// Reads one response: its head, then as many body bytes as its
    /// `Content-Length` says. Later bytes stay buffered.
    pub fn read_response(&mut self) -> Response {
        let mut response = self.read_http_head();
        let length = response.content_length();
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.decoder.pending() < length {
            self.fill_until(deadline).unwrap_or_else(|e| {
                panic!(
                    "body of {length} bytes after {:?}: {e}; got [{}]",
                    response.head,
                    hex(self.decoder.buffered())
                )
            });
        }
        response.body = self.decoder.take(length);
        response
    }

    /// Sends `request` as it is and reads one response.
    pub fn request(&mut self, request: &[u8]) -> Response {
        self.send_raw(request);
        self.read_response()
    }
}

/// Sends `request` on a new connection and reads until the server closes
/// it (bounded by `limit`). Returns every byte received; a reset after some
/// bytes ends the read like EOF does.
pub fn http_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(request)?;
    read_to_eof(&mut stream, limit)
}

/// `GET path` over HTTP/1.1 with `Connection: close`; panics unless a
/// complete response arrives and the connection then ends.
pub fn http_get(addr: SocketAddr, path: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
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

/// The body of `/healthz` (`ok`, or `degraded` in cluster mode without
/// Redis), which is always a 200.
pub fn health(addr: SocketAddr) -> String {
    let response = http_get(addr, "/healthz");
    assert_eq!(response.status, 200, "/healthz is always 200");
    String::from_utf8_lossy(&response.body).trim().to_string()
}

/// The `/metrics` page, read as `name{labels} value` samples.
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
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
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
