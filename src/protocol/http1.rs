//! HTTP/1.1 rules beyond the head itself: how a request's body is
//! delimited (RFC 9112 section 6), whether the client lets the connection
//! persist after the answer (section 9.3), and whether it waits for a
//! `100 Continue` before sending its body (RFC 9110 section 10.1.1).
//!
//! Pure functions of a parsed head. What the server does with the answers
//! (which paths read a body, how large one may be, how many requests a
//! connection serves) is `crate::server`'s policy.

use super::error::HandshakeError;
use super::handshake::RequestHead;

/// How a request's body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body.
    None,
    /// Exactly this many bytes follow the head. A length too large for a
    /// `u64` saturates: every limit refuses it all the same.
    Length(u64),
    /// A `Transfer-Encoding` (chunked or any other coding): the end is
    /// found only by decoding, and it overrides any `Content-Length`.
    Coded,
}

impl BodyFraming {
    /// Whether bytes of a body follow the head.
    pub fn has_body(self) -> bool {
        !matches!(self, BodyFraming::None | BodyFraming::Length(0))
    }
}

/// How the body of `head`'s request is delimited.
///
/// A `Content-Length` that is not one run of digits, or that comes in more
/// than one line or as a list, is refused (section 6.3, item 5): a server
/// that guessed which one counts could read a different request boundary
/// than a proxy in front of it did (request smuggling).
pub fn body_framing(head: &RequestHead<'_>) -> Result<BodyFraming, HandshakeError> {
    if head.header_values("transfer-encoding").next().is_some() {
        return Ok(BodyFraming::Coded);
    }
    let mut values = head.header_values("content-length");
    let Some(value) = values.next() else {
        return Ok(BodyFraming::None);
    };
    if values.next().is_some() {
        return Err(HandshakeError::InvalidContentLength);
    }
    parse_content_length(value)
        .map(BodyFraming::Length)
        .ok_or(HandshakeError::InvalidContentLength)
}

/// `Content-Length = 1*DIGIT` (RFC 9110 section 8.6), around optional
/// whitespace; saturates rather than overflows.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Whether the client lets the connection persist after the answer
/// (RFC 9112 section 9.3): HTTP/1.1 unless it says `Connection: close`;
/// HTTP/1.0 only when it says `Connection: keep-alive` (the 1.0 custom
/// that section 9.3 and its appendix C.2.2 describe).
pub fn client_keeps_alive(head: &RequestHead<'_>) -> bool {
    if head.has_token("connection", "close") {
        return false;
    }
    head.minor_version >= 1 || head.has_token("connection", "keep-alive")
}

/// A media type (RFC 9110 section 8.3.1): `type/subtype`, and the
/// `charset` parameter if there is one (unquoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    /// `type/subtype`, as sent (compare without case).
    pub essence: &'a str,
    /// The `charset` parameter's value, as sent (compare without case).
    pub charset: Option<&'a str>,
}

/// Reads a `Content-Type` value: `type/subtype` then `;`-separated
/// parameters, each `name=value` with the value a token or a quoted
/// string (escapes are not undone: no charset name has one). `None` if it
/// is not one.
pub fn media_type(value: &[u8]) -> Option<MediaType<'_>> {
    let value = std::str::from_utf8(value).ok()?;
    let mut parts = value.split(';');
    let essence = parts.next()?.trim();
    let (kind, sub) = essence.split_once('/')?;
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if !token(kind) || !token(sub) {
        return None;
    }
    let mut charset = None;
    for param in parts {
        let (name, raw) = param.trim().split_once('=')?;
        let value = match raw.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"')?,
            None => raw,
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            charset = Some(value);
        }
    }
    Some(MediaType { essence, charset })
}

/// Whether the client waits for `100 Continue` before it sends its body
/// (`Expect: 100-continue`, which only HTTP/1.1 clients may send).
pub fn expects_continue(head: &RequestHead<'_>) -> bool {
    head.minor_version >= 1 && head.has_token("expect", "100-continue")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::parse_head;

    fn framing_of(headers: &str) -> Result<BodyFraming, HandshakeError> {
        let text = format!("POST /x HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
        body_framing(&parse_head(text.as_bytes()).unwrap())
    }

    #[test]
    fn content_length_is_one_run_of_digits() {
        assert_eq!(framing_of(""), Ok(BodyFraming::None));
        assert_eq!(
            framing_of("Content-Length: 42\r\n"),
            Ok(BodyFraming::Length(42))
        );
        assert_eq!(
            framing_of("content-length:  0 \r\n"),
            Ok(BodyFraming::Length(0))
        );
        assert_eq!(
            framing_of("Content-Length: 99999999999999999999999\r\n"),
            Ok(BodyFraming::Length(u64::MAX)),
            "saturates"
        );
        for bad in ["", "-1", "+1", "1.0", "0x10", "1 2", "5, 5", "abc", "٣"] {
            assert_eq!(
                framing_of(&format!("Content-Length: {bad}\r\n")),
                Err(HandshakeError::InvalidContentLength),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn duplicate_or_conflicting_lengths_are_refused() {
        for headers in [
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ] {
            assert_eq!(
                framing_of(headers),
                Err(HandshakeError::InvalidContentLength),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn a_transfer_coding_overrides_the_length() {
        assert_eq!(
            framing_of("Transfer-Encoding: chunked\r\n"),
            Ok(BodyFraming::Coded)
        );
        assert_eq!(
            framing_of("Content-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n"),
            Ok(BodyFraming::Coded)
        );
        assert!(BodyFraming::Coded.has_body());
        assert!(BodyFraming::Length(1).has_body());
        assert!(!BodyFraming::Length(0).has_body() && !BodyFraming::None.has_body());
    }

    #[test]
    fn persistence_by_version_and_connection_tokens() {
        let keeps = |request: &str| {
            let text = format!("{request}\r\n");
            client_keeps_alive(&parse_head(text.as_bytes()).unwrap())
        };
        assert!(keeps("GET / HTTP/1.1\r\n"));
        assert!(keeps(
            "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n"
        ));
        assert!(!keeps("GET / HTTP/1.1\r\nConnection: Close\r\n"));
        assert!(!keeps(
            "GET / HTTP/1.1\r\nConnection: x\r\nConnection: te, close\r\n"
        ));
        assert!(!keeps("GET / HTTP/1.0\r\n"));
        assert!(keeps("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n"));
        assert!(!keeps(
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n"
        ));
    }

    #[test]
    fn media_types_and_their_charset() {
        let plain = media_type(b"text/plain; charset=utf-8").unwrap();
        assert_eq!(
            (plain.essence, plain.charset),
            ("text/plain", Some("utf-8"))
        );
        let quoted = media_type(b"Text/Plain;Charset=\"UTF-8\"").unwrap();
        assert_eq!(
            (quoted.essence, quoted.charset),
            ("Text/Plain", Some("UTF-8"))
        );
        let bare = media_type(b" application/octet-stream ").unwrap();
        assert_eq!(
            (bare.essence, bare.charset),
            ("application/octet-stream", None)
        );
        for bad in [
            &b""[..],
            b"text",
            b"/plain",
            b"text/",
            b"text/plain; charset",
            b"a/b;x=\"y",
            b"\xff/x",
        ] {
            assert_eq!(media_type(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_http_1_1_expects_continue() {
        let expects = |request: &str| {
            let text = format!("{request}\r\n");
            expects_continue(&parse_head(text.as_bytes()).unwrap())
        };
        assert!(expects("POST / HTTP/1.1\r\nExpect: 100-Continue\r\n"));
        assert!(!expects("POST / HTTP/1.1\r\n"));
        assert!(!expects("POST / HTTP/1.0\r\nExpect: 100-continue\r\n"));
    }
}
