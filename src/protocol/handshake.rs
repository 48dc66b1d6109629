//! The opening handshake, server side (RFC 6455 section 4.2).
//!
//! Finds the end of a request head incrementally, parses it with `httparse`
//! into borrowed fields (no allocation per header), checks every rule of an
//! upgrade request and computes the accept key. Writing the responses is
//! left to `crate::http`; deciding which path serves what is the server's.

use base64::Engine as _;

use super::error::HandshakeError;
use super::extension::{negotiate, parse_offers, Deflate, Takeover};

/// The GUID every accept key is derived with (section 1.3).
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Header lines a request head may have.
pub const MAX_HEADERS: usize = 64;

/// Finds the end of a request head: the byte after the empty line that
/// ends it.
///
/// A line ends in CRLF or in a bare LF, which RFC 9112 section 2.2 lets a
/// recipient accept (httparse does): the head ends at `\n\n` or
/// `\n\r\n`, and `\r\n\r\n` is the latter. `scanned` is how many bytes
/// earlier calls already searched, so a head arriving one byte per read is
/// scanned once overall, not once per read.
pub fn find_head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    // An end begins at most two bytes before the new ones.
    let start = scanned.saturating_sub(2);
    let tail = buf.get(start..)?;
    tail.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .find_map(|(i, _)| match &tail[i + 1..] {
            [b'\n', ..] => Some(i + 2),
            [b'\r', b'\n', ..] => Some(i + 3),
            _ => None,
        })
        .map(|end| start + end)
}

/// Reads a request head as its bytes arrive, without keeping a copy: the
/// caller keeps the bytes, this keeps how far it has searched them.
///
/// Each call searches only what earlier calls did not (a head arriving one
/// byte per read is scanned once overall), refuses a head longer than the
/// limit as soon as it is, and checks the request line as soon as it ends,
/// so that an HTTP/0.9 request or garbage is refused at once instead of
/// waiting for a blank line that will never come.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadReader {
    /// Bytes of the buffer already searched for the end of the head.
    scanned: usize,
    /// The request line was complete and valid.
    line_checked: bool,
}

/// How far a request head has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadStatus {
    /// More bytes are needed; those so far are valid as far as they go.
    Partial,
    /// The head is `buf[..end]`, ending with its blank line.
    Complete(usize),
}

impl HeadReader {
    /// A reader at the start of a request.
    pub fn new() -> HeadReader {
        HeadReader::default()
    }

    /// Looks at `buf` (every byte of the request so far, the same buffer
    /// grown since the last call) for a complete head of at most
    /// `max_head_bytes`.
    pub fn read(
        &mut self,
        buf: &[u8],
        max_head_bytes: usize,
    ) -> Result<HeadStatus, HandshakeError> {
        match find_head_end(buf, self.scanned) {
            Some(end) if end <= max_head_bytes => Ok(HeadStatus::Complete(end)),
            None if buf.len() <= max_head_bytes => {
                if !self.line_checked {
                    // Only new bytes are searched: before, the line had no end.
                    if let Some(at) = buf[self.scanned..].iter().position(|&b| b == b'\n') {
                        check_request_line(&buf[..=self.scanned + at])?;
                        self.line_checked = true;
                    }
                }
                self.scanned = buf.len();
                Ok(HeadStatus::Partial)
            }
            _ => Err(HandshakeError::HeadTooLarge),
        }
    }
}

/// Whether `buf`, the first bytes of a connection, start a TLS record of
/// the handshake type (RFC 8446 section 5.1: content type 22, then a 3.x
/// version) rather than an HTTP request line, whose method is a token and
/// never starts with a control byte. One byte is enough to tell.
pub fn looks_like_tls(buf: &[u8]) -> bool {
    buf.first() == Some(&0x16) && !matches!(buf.get(1), Some(&major) if major != 0x03)
}

/// A parsed request head; every field borrows from the head's bytes.
#[derive(Debug)]
pub struct RequestHead<'h> {
    /// The request method, e.g. `GET`.
    pub method: &'h str,
    /// The request target, e.g. `/room/rust?x=1`.
    pub target: &'h str,
    /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    headers: Vec<(&'h str, &'h [u8])>,
}

/// A valid upgrade request, ready to be answered with 101.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The subprotocol chosen, if the client offered one the server speaks.
    pub protocol: Option<String>,
    /// permessage-deflate, if offered and agreed.
    pub deflate: Option<Deflate>,
}

/// Parses a complete head (ending in `\r\n\r\n`).
pub fn parse_head(head: &[u8]) -> Result<RequestHead<'_>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HandshakeError::Malformed),
        Err(e) => return Err(parse_error(e)),
    }
    // Complete guarantees method, path and version are set.
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HandshakeError::Malformed);
    };
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name, h.value))
        .collect::<Vec<_>>();
    Ok(RequestHead {
        method,
        target,
        minor_version,
        headers,
    })
}

fn parse_error(e: httparse::Error) -> HandshakeError {
    match e {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders,
        httparse::Error::Version => HandshakeError::UnsupportedHttpVersion,
        _ => HandshakeError::Malformed,
    }
}

/// Checks the request line alone, as soon as it is complete (`line` ends
/// with its `\n`), so that an HTTP/0.9 request or garbage is refused at
/// once instead of waiting for a blank line that will never come.
pub fn check_request_line(line: &[u8]) -> Result<(), HandshakeError> {
    let mut req = httparse::Request::new(&mut []);
    match req.parse(line) {
        Ok(_) => Ok(()),
        Err(e) => Err(parse_error(e)),
    }
}

impl<'h> RequestHead<'h> {
    /// The target in origin form (path and query): an absolute-form
    /// target (`http://host/echo?x`, RFC 9112 section 3.2.2), which a
    /// server must accept, loses its scheme and authority.
    pub fn origin_form(&self) -> &'h str {
        let Some(rest) = strip_http_scheme(self.target) else {
            return self.target;
        };
        // An empty path is "/" (RFC 9112 section 3.2.1).
        match rest.find(['/', '?', '#']) {
            Some(at) if rest[at..].starts_with('/') => &rest[at..],
            _ => "/",
        }
    }

    /// The path part of the target, without the query string.
    pub fn path(&self) -> &'h str {
        self.origin_form().split(['?', '#']).next().unwrap_or("")
    }

    /// The query string of the target, without its `?` (empty if none).
    pub fn query(&self) -> &'h str {
        let without_fragment = self.target.split('#').next().unwrap_or("");
        without_fragment.split_once('?').map_or("", |(_, q)| q)
    }

    /// Every value of the header `name` (case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'h [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The single value of `name`, or `None` if it is absent or repeated.
    pub fn header(&self, name: &str) -> Option<&'h [u8]> {
        let mut values = self.header_values(name);
        let first = values.next()?;
        values.next().is_none().then_some(first)
    }

    /// The `Host` header, if sent; more than one is an error, since the
    /// two could name different hosts (RFC 9112 section 3.2).
    pub fn host(&self) -> Result<Option<&'h [u8]>, HandshakeError> {
        let mut values = self.header_values("host");
        let first = values.next();
        match values.next() {
            Some(_) => Err(HandshakeError::DuplicateHost),
            None => Ok(first),
        }
    }

    /// Whether any value of `name` lists `token` (comma lists, any case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .flat_map(|v| v.split(|b| *b == b','))
            .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the client asks for a WebSocket at all (as opposed to a page).
    pub fn wants_upgrade(&self) -> bool {
        self.header_values("upgrade").next().is_some()
            || self.header_values("sec-websocket-key").next().is_some()
            || self.header_values("sec-websocket-version").next().is_some()
    }

    /// Checks the upgrade rules of section 4.2.1, chooses a subprotocol
    /// from `protocols` (the first of the client's list the server speaks)
    /// and negotiates permessage-deflate under `deflate` (`None`: never).
    pub fn check_upgrade(
        &self,
        protocols: &[String],
        deflate: Option<Takeover>,
    ) -> Result<Upgrade, HandshakeError> {
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if self.minor_version < 1 {
            return Err(HandshakeError::UpgradeNeedsHttp11);
        }
        if self.host()?.is_none() {
            return Err(HandshakeError::MissingHost);
        }
        if !self.has_token("upgrade", "websocket") {
            return Err(HandshakeError::MissingUpgradeWebsocket);
        }
        if !self.has_token("connection", "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        // Section 4.2.2: a wrong version gets 426 and the versions we speak.
        if self.header("sec-websocket-version").map(trim) != Some(b"13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        let key = self
            .header("sec-websocket-key")
            .map(trim)
            .filter(|k| is_valid_key(k))
            .ok_or(HandshakeError::InvalidKey)?;
        let offers = parse_offers(self.header_values("sec-websocket-extensions"));
        Ok(Upgrade {
            accept: accept_key(key),
            protocol: self.choose_protocol(protocols),
            deflate: deflate.and_then(|takeover| negotiate(&offers, takeover)),
        })
    }

    fn choose_protocol(&self, supported: &[String]) -> Option<String> {
        self.header_values("sec-websocket-protocol")
            .flat_map(|v| v.split(|b| *b == b','))
            .map(trim)
            .find_map(|offered| supported.iter().find(|s| s.as_bytes() == offered).cloned())
    }
}

/// Whether `key` is base64 for exactly 16 bytes (section 4.1, item 7).
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|bytes| bytes.len() == 16)
}

/// `base64(SHA-1(key + GUID))`, the `Sec-WebSocket-Accept` value (section 4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// What follows `http://` or `https://` (any case), the scheme of an
/// absolute-form target.
fn strip_http_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &[u8] = b"GET /chat HTTP/1.1\r\n\
Host: server.example.com\r\n\
Connection: keep-alive, Upgrade\r\n\
Pragma: no-cache\r\n\
Upgrade: websocket\r\n\
Origin: http://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: superchat, chat\r\n\r\n";

    fn protocols() -> Vec<String> {
        vec!["chat".to_string()]
    }

    fn check(head: &[u8]) -> Result<Upgrade, HandshakeError> {
        parse_head(head)?.check_upgrade(&protocols(), Some(Takeover::Never))
    }

    fn with_header(line: &str, replace: &str) -> Vec<u8> {
        let text = std::str::from_utf8(CHROME).unwrap();
        text.replace(line, replace).into_bytes()
    }

    #[test]
    fn rfc_accept_key_vectors() {
        for (key, accept) in [
            ("dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("x3JJHMbDL1EzLkh9GBhXDw==", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="),
            ("rRXp2i/XCuCsKqs5MN12Ag==", "c/LP8JsVmZWV/EB3lgGDVmVQWVA="),
        ] {
            assert_eq!(accept_key(key.as_bytes()), accept);
        }
    }

    #[test]
    fn chrome_request_is_accepted_with_first_supported_protocol() {
        let up = check(CHROME).unwrap();
        assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.protocol.as_deref(), Some("chat"));
        assert!(up.deflate.is_some(), "Chrome's deflate offer is taken");
    }

    #[test]
    fn no_common_protocol_means_none() {
        let head = with_header("superchat, chat", "a, b");
        assert_eq!(check(&head).unwrap().protocol, None);
    }

    #[test]
    fn protocols_over_several_headers() {
        let head = with_header(
            "Sec-WebSocket-Protocol: superchat, chat",
            "Sec-WebSocket-Protocol: x\r\nSec-WebSocket-Protocol: y, chat",
        );
        assert_eq!(check(&head).unwrap().protocol.as_deref(), Some("chat"));
    }

    #[test]
    fn tokens_match_in_any_case() {
        let head = with_header("Upgrade: websocket", "UPGRADE: WebSocket");
        let head = String::from_utf8(head)
            .unwrap()
            .replace("keep-alive, Upgrade", "upgrade");
        assert!(check(head.as_bytes()).is_ok());
    }

    #[test]
    fn each_broken_rule_has_its_error() {
        let cases: [(&str, &str, HandshakeError); 9] = [
            (
                "GET /chat HTTP/1.1",
                "POST /chat HTTP/1.1",
                HandshakeError::MethodNotAllowed,
            ),
            (
                "GET /chat HTTP/1.1",
                "GET /chat HTTP/1.0",
                HandshakeError::UpgradeNeedsHttp11,
            ),
            (
                "Host: server.example.com\r\n",
                "",
                HandshakeError::MissingHost,
            ),
            (
                "Upgrade: websocket",
                "Upgrade: h2c",
                HandshakeError::MissingUpgradeWebsocket,
            ),
            (
                "keep-alive, Upgrade",
                "keep-alive",
                HandshakeError::MissingConnectionUpgrade,
            ),
            (
                "Version: 13",
                "Version: 8",
                HandshakeError::UnsupportedVersion,
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "dGhlIHNhbXBsZQ==",
                HandshakeError::InvalidKey,
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "!!!!!!!!!!!!!!!!!!!!!!==",
                HandshakeError::InvalidKey,
            ),
            (
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                "",
                HandshakeError::InvalidKey,
            ),
        ];
        for (from, to, err) in cases {
            assert_eq!(check(&with_header(from, to)), Err(err), "{from} -> {to}");
        }
    }

    #[test]
    fn two_host_lines_are_their_own_error() {
        let head = with_header(
            "Host: server.example.com",
            "Host: server.example.com\r\nHost: other.example.com",
        );
        assert_eq!(check(&head), Err(HandshakeError::DuplicateHost));
        let plain = parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n").unwrap();
        assert_eq!(plain.host(), Err(HandshakeError::DuplicateHost));
        let none = parse_head(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(none.host(), Ok(None));
    }

    #[test]
    fn repeated_key_is_invalid() {
        let head = with_header(
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==",
        );
        assert_eq!(check(&head), Err(HandshakeError::InvalidKey));
    }

    #[test]
    fn malformed_heads() {
        assert_eq!(
            parse_head(b"GET / HTTP/2.0\r\n\r\n").err(),
            Some(HandshakeError::UnsupportedHttpVersion)
        );
        assert_eq!(
            parse_head(b"\x01\x02 garbage\r\n\r\n").err(),
            Some(HandshakeError::Malformed)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").err(),
            Some(HandshakeError::Malformed)
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("X-{i}: y\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(
            parse_head(&many).err(),
            Some(HandshakeError::TooManyHeaders)
        );
    }

    #[test]
    fn request_line_is_judged_on_its_own() {
        assert_eq!(check_request_line(b"GET /echo HTTP/1.1\r\n"), Ok(()));
        assert!(check_request_line(b"GET /\r\n").is_err(), "HTTP/0.9");
        assert!(check_request_line(b"\x16\x03\x01\x02\n").is_err());
        assert_eq!(
            check_request_line(b"GET / HTTP/2.0\r\n"),
            Err(HandshakeError::UnsupportedHttpVersion)
        );
    }

    #[test]
    fn head_end_found_incrementally() {
        let head = CHROME;
        let mut scanned = 0;
        for len in 1..=head.len() {
            let found = find_head_end(&head[..len], scanned);
            if len < head.len() {
                assert_eq!(found, None, "len {len}");
            } else {
                assert_eq!(found, Some(head.len()));
            }
            scanned = len;
        }
    }

    #[test]
    fn lines_may_end_in_a_bare_lf() {
        let head = b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n";
        assert_eq!(find_head_end(head, 0), Some(head.len()));
        let mut reader = HeadReader::new();
        for len in 1..head.len() {
            assert_eq!(reader.read(&head[..len], 8192), Ok(HeadStatus::Partial));
        }
        assert_eq!(
            reader.read(head, 8192),
            Ok(HeadStatus::Complete(head.len()))
        );
        let parsed = parse_head(head).unwrap();
        assert_eq!(
            (parsed.path(), parsed.header("host")),
            ("/healthz", Some(&b"x"[..]))
        );
        // Mixed endings, and the blank line as CRLF after bare LFs.
        for mixed in [
            &b"GET / HTTP/1.1\r\nHost: x\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: x\r\n\n",
            b"GET / HTTP/1.1\n\n",
        ] {
            assert_eq!(find_head_end(mixed, 0), Some(mixed.len()), "{mixed:?}");
            assert!(parse_head(mixed).is_ok(), "{mixed:?}");
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: x\n\rX", 0), None);
    }

    #[test]
    fn absolute_form_targets_route_by_their_path() {
        for (target, path) in [
            ("http://example.com/echo", "/echo"),
            ("HTTPS://example.com:8443/room/a?x=1", "/room/a"),
            ("http://example.com", "/"),
            ("http://example.com?q", "/"),
            ("http://user@example.com/healthz#f", "/healthz"),
            ("/plain?x", "/plain"),
            ("ftp://example.com/echo", "ftp://example.com/echo"),
            ("*", "*"),
        ] {
            let text = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let head = parse_head(text.as_bytes()).unwrap();
            assert_eq!(head.path(), path, "{target}");
        }
        let head = parse_head(b"GET http://h/room/a?x=1 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(head.origin_form(), "/room/a?x=1");
    }

    #[test]
    fn path_drops_query() {
        let head = parse_head(b"GET /room/a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!(head.path(), "/room/a");
        assert!(!head.wants_upgrade());
    }

    #[test]
    fn head_reader_finds_the_end_in_any_split() {
        for step in 1..CHROME.len() {
            let mut reader = HeadReader::new();
            let mut got = None;
            for end in (step..CHROME.len() + step).step_by(step) {
                let buf = &CHROME[..end.min(CHROME.len())];
                match reader.read(buf, 8192).unwrap() {
                    HeadStatus::Partial => assert!(buf.len() < CHROME.len()),
                    HeadStatus::Complete(at) => {
                        got = Some(at);
                        break;
                    }
                }
            }
            assert_eq!(got, Some(CHROME.len()), "step {step}");
        }
    }

    #[test]
    fn head_reader_refuses_early() {
        let mut reader = HeadReader::new();
        assert_eq!(reader.read(b"GET / HT", 8192), Ok(HeadStatus::Partial));
        assert_eq!(
            reader.read(b"GET / HTTP/1.1\r\nHost: a", 8192),
            Ok(HeadStatus::Partial)
        );
        let mut garbage = HeadReader::new();
        assert_eq!(
            garbage.read(b"\x16\x03\x01\x02\x00\x01\n", 8192),
            Err(HandshakeError::Malformed)
        );
        let mut long = HeadReader::new();
        assert_eq!(
            long.read(&[b'a'; 20], 16),
            Err(HandshakeError::HeadTooLarge)
        );
        let mut complete = HeadReader::new();
        assert_eq!(
            complete.read(b"GET / HTTP/1.1\r\n\r\nextra", 16),
            Err(HandshakeError::HeadTooLarge)
        );
    }

    #[test]
    fn a_client_hello_is_told_from_a_request_line() {
        assert!(looks_like_tls(b"\x16\x03\x01\x02\x00\x01"));
        assert!(looks_like_tls(b"\x16"));
        assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_tls(b"\x16\x04"));
        assert!(!looks_like_tls(b""));
    }
}
