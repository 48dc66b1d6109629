//! What the server refuses or closes by its own policy, and the one answer
//! each gets.
//!
//! `protocol` names only broken rules of the RFCs ([`HandshakeError`],
//! `ProtocolError`). A full server, a foreign origin, an address over its
//! limits, a slow reader or a client over its message rate break no rule:
//! the server decides them, so they are named here. With the tables in
//! `protocol::error`, every refusal maps to exactly one HTTP status and
//! every close to exactly one close code, each in one place.

use std::fmt;

use crate::protocol::{CloseCode, HandshakeError};

/// Why a request gets an HTTP error instead of what it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request breaks a rule of HTTP or of RFC 6455's handshake.
    Protocol(HandshakeError),
    /// A path the server does not serve.
    NotFound,
    /// A `/room/{name}` path whose name breaks the naming rule.
    InvalidRoomName,
    /// A `since` that is not `EPOCH:OFFSET`.
    InvalidPosition,
    /// An `Origin` not in `--allowed-origin`.
    ForbiddenOrigin,
    /// The server is at `--max-connections`.
    ServerFull,
    /// One address has too many connections or handshakes.
    TooManyFromAddress,
    /// The request head did not complete within `--handshake-timeout`.
    Timeout,
    /// A TLS handshake arrived on the plain listener.
    TlsOnPlainPort,
    /// With `--proxy-protocol`, a trusted peer's first bytes are not a
    /// PROXY protocol header.
    ProxyHeaderMissing,
    /// A PROXY protocol header that is broken or too long.
    ProxyHeaderMalformed,
    /// A PROXY protocol header from a peer outside `--trusted-proxy`:
    /// anyone could claim any address with one.
    ProxyHeaderUntrusted,
    /// A method the path does not take; the `Allow` header lists those
    /// it does.
    MethodNotAllowed(Allow),
    /// A request to a path that reads a body, without `Content-Length`.
    LengthRequired,
    /// A body sent with a `Transfer-Encoding`: this server reads only
    /// bodies whose length the head gives.
    TransferEncoding,
    /// A `Content-Length` over `--max-message-size`, refused from the
    /// head alone.
    BodyTooLarge,
    /// The request body did not complete within `--handshake-timeout`
    /// of the request's first byte.
    BodyTimeout,
    /// The body would take the bytes being received past
    /// `--max-inbound-memory`.
    InboundMemory,
    /// A request that needs a session without a valid `Wschat-Session`.
    Unauthorized,
    /// A posted message whose `Content-Type` is neither
    /// `text/plain; charset=utf-8` nor `application/octet-stream`.
    UnsupportedMediaType,
    /// A posted text message that is not UTF-8.
    InvalidUtf8,
    /// A member posting over `--max-messages-per-second`.
    RateLimited,
    /// A `Last-Event-ID` that is not `EPOCH:OFFSET`.
    InvalidLastEventId,
    /// A poll `timeout` that is not a number of seconds.
    InvalidTimeout,
    /// No session could be made: no system randomness for its token, or
    /// as many pollers as `--max-connections` already.
    SessionUnavailable,
}

/// The methods a path takes, as a 405 lists them in `Allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// Pages and WebSocket endpoints: GET, and HEAD wherever GET works.
    GetHead,
    /// Paths that take a body.
    Post,
}

impl From<HandshakeError> for Refusal {
    fn from(err: HandshakeError) -> Refusal {
        Refusal::Protocol(err)
    }
}

impl Refusal {
    /// The HTTP status this refusal is answered with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Protocol(err) => err.status(),
            Refusal::NotFound => 404,
            Refusal::InvalidRoomName | Refusal::InvalidPosition => 400,
            Refusal::ForbiddenOrigin => 403,
            Refusal::ServerFull => 503,
            Refusal::TooManyFromAddress => 429,
            Refusal::Timeout => 408,
            Refusal::TlsOnPlainPort => 400,
            // The peer is a proxy or a confused client: a plain 400 (then
            // the close) tells either what went wrong.
            Refusal::ProxyHeaderMissing
            | Refusal::ProxyHeaderMalformed
            | Refusal::ProxyHeaderUntrusted => 400,
            Refusal::MethodNotAllowed(_) => 405,
            Refusal::LengthRequired | Refusal::TransferEncoding => 411,
            Refusal::BodyTooLarge => 413,
            Refusal::BodyTimeout => 408,
            Refusal::InboundMemory => 503,
            Refusal::Unauthorized => 401,
            Refusal::UnsupportedMediaType => 415,
            Refusal::InvalidUtf8 | Refusal::InvalidLastEventId | Refusal::InvalidTimeout => 400,
            Refusal::RateLimited => 429,
            Refusal::SessionUnavailable => 503,
        }
    }

    /// The one-line reason sent as the response body.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Protocol(err) => err.reason(),
            Refusal::NotFound => "not found",
            Refusal::InvalidRoomName => "room names are 1-64 letters, digits, '-', '_' or '.'",
            Refusal::InvalidPosition => {
                "since must be EPOCH:OFFSET (letters and digits, then a number)"
            }
            Refusal::ForbiddenOrigin => "origin not allowed",
            Refusal::ServerFull => "server at connection limit",
            Refusal::TooManyFromAddress => "too many connections from this address",
            Refusal::Timeout => "request timeout",
            Refusal::TlsOnPlainPort => "this port speaks plain HTTP, not TLS",
            Refusal::ProxyHeaderMissing => "PROXY protocol header required",
            Refusal::ProxyHeaderMalformed => "malformed PROXY protocol header",
            Refusal::ProxyHeaderUntrusted => "PROXY protocol header from an untrusted address",
            Refusal::MethodNotAllowed(_) => "method not allowed",
            Refusal::LengthRequired => "Content-Length required",
            Refusal::TransferEncoding => {
                "Transfer-Encoding is not supported: send the body with Content-Length"
            }
            Refusal::BodyTooLarge => "request body too large",
            Refusal::BodyTimeout => "request body not complete in time",
            Refusal::InboundMemory => "server busy receiving other requests",
            Refusal::Unauthorized => "missing or invalid Wschat-Session",
            Refusal::UnsupportedMediaType => {
                "send text/plain; charset=utf-8 or application/octet-stream"
            }
            Refusal::InvalidUtf8 => "a text/plain message must be UTF-8",
            Refusal::RateLimited => "too many messages: over --max-messages-per-second",
            Refusal::InvalidLastEventId => {
                "Last-Event-ID must be EPOCH:OFFSET (letters and digits, then a number)"
            }
            Refusal::InvalidTimeout => "timeout must be a number of seconds",
            Refusal::SessionUnavailable => "no session can be made now",
        }
    }

    /// A short stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Protocol(err) => err.label(),
            Refusal::NotFound => "not_found",
            Refusal::InvalidRoomName => "room_name",
            Refusal::InvalidPosition => "since",
            Refusal::ForbiddenOrigin => "origin",
            Refusal::ServerFull => "server_full",
            Refusal::TooManyFromAddress => "per_address_limit",
            Refusal::Timeout => "timeout",
            Refusal::TlsOnPlainPort => "tls_on_plain_port",
            Refusal::ProxyHeaderMissing => "proxy_header_missing",
            Refusal::ProxyHeaderMalformed => "proxy_header_malformed",
            Refusal::ProxyHeaderUntrusted => "proxy_header_untrusted",
            Refusal::MethodNotAllowed(_) => "method",
            Refusal::LengthRequired => "length_required",
            Refusal::TransferEncoding => "transfer_encoding",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::InboundMemory => "inbound_memory",
            Refusal::Unauthorized => "session",
            Refusal::UnsupportedMediaType => "media_type",
            Refusal::InvalidUtf8 => "utf8",
            Refusal::RateLimited => "rate",
            Refusal::InvalidLastEventId => "last_event_id",
            Refusal::InvalidTimeout => "poll_timeout",
            Refusal::SessionUnavailable => "session_unavailable",
        }
    }

    /// The headers this status calls for, besides the usual ones.
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Refusal::Protocol(HandshakeError::MethodNotAllowed) => &[("Allow", "GET")],
            Refusal::Protocol(HandshakeError::UnsupportedVersion) => {
                &[("Sec-WebSocket-Version", "13")]
            }
            Refusal::Protocol(HandshakeError::UpgradeRequired) => {
                &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
            }
            Refusal::MethodNotAllowed(Allow::GetHead) => &[("Allow", "GET, HEAD")],
            Refusal::MethodNotAllowed(Allow::Post) => &[("Allow", "POST")],
            Refusal::ServerFull
            | Refusal::TooManyFromAddress
            | Refusal::InboundMemory
            | Refusal::RateLimited
            | Refusal::SessionUnavailable => &[("Retry-After", "1")],
            // RFC 9110 section 15.5.2: a 401 names the scheme that would do.
            Refusal::Unauthorized => &[("WWW-Authenticate", "Wschat-Session")],
            _ => &[],
        }
    }

    /// Whether the connection may read another request after this
    /// answer: the request was read to its end, so the next one starts
    /// at a known byte. A head that could not be read, a body left
    /// unread, or a client the server gives up on closes instead.
    pub fn keeps_connection(self) -> bool {
        matches!(
            self,
            Refusal::NotFound
                | Refusal::InvalidRoomName
                | Refusal::InvalidPosition
                | Refusal::MethodNotAllowed(_)
                | Refusal::Unauthorized
                | Refusal::UnsupportedMediaType
                | Refusal::InvalidUtf8
                | Refusal::RateLimited
                | Refusal::InvalidLastEventId
                | Refusal::InvalidTimeout
                | Refusal::Protocol(HandshakeError::UpgradeRequired)
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

/// Why the server closes an open WebSocket that broke no protocol rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyClose {
    /// The client does not read what it is sent fast enough: its queue
    /// passed `--max-backpressure`, or all queues passed
    /// `--max-outbound-memory` and its was among the largest.
    SlowConsumer,
    /// The client sends more than `--max-messages-per-second`.
    RateLimited,
    /// The client stayed silent past `--idle-timeout`, even when pinged.
    IdleTimeout,
    /// The server is shutting down.
    ShuttingDown,
    /// A member catching up on history fell so far behind that a message
    /// it still needed was forgotten (by the size, age or byte bound).
    HistoryOverrun,
}

impl PolicyClose {
    /// The close code this close is sent with.
    pub fn close_code(self) -> CloseCode {
        match self {
            PolicyClose::SlowConsumer | PolicyClose::RateLimited | PolicyClose::HistoryOverrun => {
                CloseCode::POLICY_VIOLATION
            }
            PolicyClose::IdleTimeout | PolicyClose::ShuttingDown => CloseCode::GOING_AWAY,
        }
    }

    /// The close reason: short and static.
    pub fn reason(self) -> &'static str {
        match self {
            PolicyClose::SlowConsumer => "slow consumer",
            PolicyClose::RateLimited => "rate limit exceeded",
            PolicyClose::IdleTimeout => "idle timeout",
            PolicyClose::ShuttingDown => "server shutting down",
            PolicyClose::HistoryOverrun => "slow consumer: fell behind the room history",
        }
    }

    /// Whether the connection is failed (its input discarded, the close
    /// counted as an error) rather than closed with a handshake that waits
    /// for the client's reply.
    pub fn fails(self) -> bool {
        matches!(
            self,
            PolicyClose::SlowConsumer | PolicyClose::RateLimited | PolicyClose::HistoryOverrun
        )
    }
}

impl fmt::Display for PolicyClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        assert_eq!(Refusal::NotFound.status(), 404);
        assert_eq!(Refusal::InvalidRoomName.status(), 400);
        assert_eq!(Refusal::ForbiddenOrigin.status(), 403);
        assert_eq!(Refusal::ServerFull.status(), 503);
        assert_eq!(Refusal::TooManyFromAddress.status(), 429);
        assert_eq!(Refusal::Timeout.status(), 408);
        assert_eq!(Refusal::from(HandshakeError::InvalidKey).status(), 400);
        assert_eq!(
            Refusal::ServerFull.to_string(),
            "503 server at connection limit"
        );
    }

    #[test]
    fn proxy_header_refusals() {
        let all = [
            Refusal::ProxyHeaderMissing,
            Refusal::ProxyHeaderMalformed,
            Refusal::ProxyHeaderUntrusted,
        ];
        for refusal in all {
            assert_eq!(refusal.status(), 400);
            assert!(refusal.headers().is_empty());
            assert!(refusal.reason().contains("PROXY protocol header"));
        }
        let labels = all.map(Refusal::label);
        assert_eq!(
            labels,
            [
                "proxy_header_missing",
                "proxy_header_malformed",
                "proxy_header_untrusted"
            ]
        );
        assert_eq!(
            Refusal::ProxyHeaderMissing.to_string(),
            "400 PROXY protocol header required"
        );
    }

    #[test]
    fn http_exchange_refusals() {
        let cases = [
            (Refusal::MethodNotAllowed(Allow::GetHead), 405, true),
            (Refusal::MethodNotAllowed(Allow::Post), 405, true),
            (Refusal::LengthRequired, 411, false),
            (Refusal::TransferEncoding, 411, false),
            (Refusal::BodyTooLarge, 413, false),
            (Refusal::BodyTimeout, 408, false),
            (Refusal::InboundMemory, 503, false),
            (Refusal::Unauthorized, 401, true),
            (Refusal::NotFound, 404, true),
            (Refusal::Timeout, 408, false),
            (HandshakeError::Malformed.into(), 400, false),
            (HandshakeError::HeadTooLarge.into(), 431, false),
            (HandshakeError::InvalidContentLength.into(), 400, false),
        ];
        for (refusal, status, keeps) in cases {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            assert_eq!(refusal.keeps_connection(), keeps, "{refusal:?}");
            assert!(!refusal.reason().contains('\n'), "{refusal:?}");
        }
        let allow = |r: Refusal| r.headers().iter().find(|(n, _)| *n == "Allow").map(|h| h.1);
        assert_eq!(
            allow(Refusal::MethodNotAllowed(Allow::GetHead)),
            Some("GET, HEAD")
        );
        assert_eq!(allow(Refusal::MethodNotAllowed(Allow::Post)), Some("POST"));
        assert!(Refusal::TransferEncoding
            .reason()
            .contains("Content-Length"));
        assert_eq!(
            Refusal::Unauthorized.to_string(),
            "401 missing or invalid Wschat-Session"
        );
        assert_ne!(Refusal::BodyTimeout.label(), Refusal::Timeout.label());
    }

    #[test]
    fn transport_refusals() {
        let cases = [
            (Refusal::UnsupportedMediaType, 415, true),
            (Refusal::InvalidUtf8, 400, true),
            (Refusal::RateLimited, 429, true),
            (Refusal::InvalidLastEventId, 400, true),
            (Refusal::InvalidTimeout, 400, true),
            (Refusal::InvalidPosition, 400, true),
            (Refusal::SessionUnavailable, 503, false),
        ];
        let mut labels = std::collections::BTreeSet::new();
        for (refusal, status, keeps) in cases {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            assert_eq!(refusal.keeps_connection(), keeps, "{refusal:?}");
            assert!(!refusal.reason().contains('\n'), "{refusal:?}");
            assert!(labels.insert(refusal.label()), "{refusal:?}");
        }
        let retry = |r: Refusal| r.headers().iter().any(|(n, _)| *n == "Retry-After");
        assert!(retry(Refusal::RateLimited) && retry(Refusal::SessionUnavailable));
        assert_ne!(
            Refusal::RateLimited.label(),
            Refusal::TooManyFromAddress.label()
        );
    }

    #[test]
    fn close_table() {
        for close in [
            PolicyClose::SlowConsumer,
            PolicyClose::RateLimited,
            PolicyClose::IdleTimeout,
            PolicyClose::ShuttingDown,
        ] {
            assert!(close.reason().len() <= 123);
            assert!(close.close_code().is_sendable());
        }
        assert_eq!(PolicyClose::SlowConsumer.close_code().0, 1008);
        assert_eq!(PolicyClose::RateLimited.close_code().0, 1008);
        assert_eq!(PolicyClose::IdleTimeout.close_code().0, 1001);
        assert!(PolicyClose::SlowConsumer.fails() && !PolicyClose::ShuttingDown.fails());
    }
}
