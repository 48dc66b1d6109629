//! Every way a peer can break the protocol, and the one answer each gets.
//!
//! A [`ProtocolError`] happens after the upgrade and maps to exactly one
//! close code; a [`HandshakeError`] happens before it and maps to exactly
//! one HTTP status. Only broken rules of the RFCs (and the size limits a
//! parser must have) are named here: what the server refuses or closes by
//! its own policy (a full server, a slow consumer, an origin, a timeout) is
//! `crate::server::policy`'s, whose table sits beside these. Reasons are
//! static strings: nothing internal is ever sent to a peer.

use std::fmt;

use super::close::CloseCode;

/// A broken rule of RFC 6455 (or RFC 7692, or a configured limit) seen
/// on an open connection. Each variant names the rule, not the symptom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// A client frame without the MASK bit (section 5.1).
    UnmaskedFrame,
    /// RSV1, RSV2 or RSV3 set without an extension that defines it (5.2).
    ReservedBitsSet,
    /// Opcode 0x3-0x7 or 0xB-0xF (section 5.2).
    ReservedOpCode(u8),
    /// A 64-bit payload length with its most significant bit set (5.2).
    LengthTopBitSet,
    /// A control frame without FIN (section 5.5).
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload (section 5.5).
    ControlFrameTooLong,
    /// A continuation frame with no message started (section 5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is open (5.4).
    MissingContinuation,
    /// A close frame whose payload is a single byte (section 5.5.1).
    CloseBodyTooShort,
    /// A received close code that may not be sent on the wire (section 7.4).
    InvalidCloseCode(u16),
    /// Invalid UTF-8 in a text message or a close reason (section 8.1).
    InvalidUtf8,
    /// A frame or message longer than the configured maximum.
    MessageTooLarge,
    /// RSV1 on a control or continuation frame (RFC 7692 section 6).
    CompressedControlOrContinuation,
    /// A compressed payload that does not inflate (RFC 7692 section 6.2).
    CorruptCompression,
}

impl ProtocolError {
    /// The close code this error is answered with (the one place it is chosen).
    pub fn close_code(self) -> CloseCode {
        use ProtocolError::*;
        match self {
            UnmaskedFrame
            | ReservedBitsSet
            | ReservedOpCode(_)
            | LengthTopBitSet
            | FragmentedControlFrame
            | ControlFrameTooLong
            | UnexpectedContinuation
            | MissingContinuation
            | CloseBodyTooShort
            | InvalidCloseCode(_)
            | CompressedControlOrContinuation => CloseCode::PROTOCOL_ERROR,
            InvalidUtf8 | CorruptCompression => CloseCode::INVALID_PAYLOAD,
            MessageTooLarge => CloseCode::MESSAGE_TOO_BIG,
        }
    }

    /// The close reason sent to the peer: short, static, under 123 bytes.
    pub fn reason(self) -> &'static str {
        use ProtocolError::*;
        match self {
            UnmaskedFrame => "client frames must be masked",
            ReservedBitsSet => "reserved bits set",
            ReservedOpCode(_) => "reserved opcode",
            LengthTopBitSet => "invalid payload length",
            FragmentedControlFrame => "fragmented control frame",
            ControlFrameTooLong => "control frame too long",
            UnexpectedContinuation => "continuation without a message",
            MissingContinuation => "expected a continuation frame",
            CloseBodyTooShort => "close payload of one byte",
            InvalidCloseCode(_) => "invalid close code",
            InvalidUtf8 => "invalid UTF-8",
            MessageTooLarge => "message too large",
            CompressedControlOrContinuation => "RSV1 on a control or continuation frame",
            CorruptCompression => "invalid compressed data",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpCode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why a request head was refused before any upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head did not end within the configured maximum size.
    HeadTooLarge,
    /// More header lines than the parser holds.
    TooManyHeaders,
    /// The request line or a header line is not valid HTTP/1.x.
    Malformed,
    /// An HTTP version other than 1.0 or 1.1 in the request line.
    UnsupportedHttpVersion,
    /// An upgrade with a method other than GET (RFC 6455 section 4.1).
    MethodNotAllowed,
    /// An upgrade over HTTP/1.0 (section 4.1: "HTTP/1.1 or higher").
    UpgradeNeedsHttp11,
    /// No Host header (section 4.1, item 4).
    MissingHost,
    /// More than one Host header line (RFC 9112 section 3.2: 400).
    DuplicateHost,
    /// A `Content-Length` that is not one run of digits, or is repeated
    /// (RFC 9112 section 6.3, item 5): the body's end is unknown.
    InvalidContentLength,
    /// `Upgrade` lacks the `websocket` token (section 4.2.1, item 3).
    MissingUpgradeWebsocket,
    /// `Connection` lacks the `upgrade` token (section 4.2.1, item 4).
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` missing, repeated or not 16 base64-encoded bytes.
    InvalidKey,
    /// `Sec-WebSocket-Version` missing or not 13 (section 4.2.2 item 4).
    UnsupportedVersion,
    /// A plain GET on a path that only speaks WebSocket.
    UpgradeRequired,
}

impl HandshakeError {
    /// The HTTP status code this error is answered with.
    pub fn status(self) -> u16 {
        use HandshakeError::*;
        match self {
            HeadTooLarge | TooManyHeaders => 431,
            Malformed
            | UpgradeNeedsHttp11
            | MissingHost
            | DuplicateHost
            | InvalidContentLength
            | MissingUpgradeWebsocket
            | MissingConnectionUpgrade
            | InvalidKey => 400,
            UnsupportedHttpVersion => 505,
            MethodNotAllowed => 405,
            UnsupportedVersion | UpgradeRequired => 426,
        }
    }

    /// The one-line reason sent as the response body.
    pub fn reason(self) -> &'static str {
        use HandshakeError::*;
        match self {
            HeadTooLarge => "request head too large",
            TooManyHeaders => "too many header fields",
            Malformed => "malformed request",
            UnsupportedHttpVersion => "HTTP version not supported",
            MethodNotAllowed => "method not allowed",
            UpgradeNeedsHttp11 => "WebSocket upgrade requires HTTP/1.1",
            MissingHost => "missing Host header",
            DuplicateHost => "duplicate Host header",
            InvalidContentLength => "invalid Content-Length",
            MissingUpgradeWebsocket => "Upgrade header must contain websocket",
            MissingConnectionUpgrade => "Connection header must contain upgrade",
            InvalidKey => "Sec-WebSocket-Key must be 16 base64-encoded bytes",
            UnsupportedVersion => "unsupported Sec-WebSocket-Version",
            UpgradeRequired => "this endpoint speaks WebSocket only",
        }
    }

    /// A short stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        use HandshakeError::*;
        match self {
            HeadTooLarge => "head_too_large",
            TooManyHeaders => "too_many_headers",
            Malformed => "malformed",
            UnsupportedHttpVersion => "http_version",
            MethodNotAllowed => "method",
            UpgradeNeedsHttp11 => "upgrade_http10",
            MissingHost => "missing_host",
            DuplicateHost => "duplicate_host",
            InvalidContentLength => "content_length",
            MissingUpgradeWebsocket => "upgrade_header",
            MissingConnectionUpgrade => "connection_header",
            InvalidKey => "key",
            UnsupportedVersion => "version",
            UpgradeRequired => "upgrade_required",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_error_stays_small() {
        assert!(std::mem::size_of::<ProtocolError>() <= 16);
    }

    #[test]
    fn reasons_fit_in_a_close_frame() {
        use ProtocolError::*;
        for e in [
            UnmaskedFrame,
            ReservedBitsSet,
            ReservedOpCode(3),
            LengthTopBitSet,
            FragmentedControlFrame,
            ControlFrameTooLong,
            UnexpectedContinuation,
            MissingContinuation,
            CloseBodyTooShort,
            InvalidCloseCode(1),
            InvalidUtf8,
            MessageTooLarge,
            CompressedControlOrContinuation,
            CorruptCompression,
        ] {
            assert!(e.reason().len() <= 123, "{e:?}");
            assert!(e.close_code().is_sendable(), "{e:?}");
        }
    }

    #[test]
    fn close_code_table() {
        assert_eq!(ProtocolError::UnmaskedFrame.close_code().0, 1002);
        assert_eq!(ProtocolError::InvalidUtf8.close_code().0, 1007);
        assert_eq!(ProtocolError::MessageTooLarge.close_code().0, 1009);
        assert_eq!(ProtocolError::CorruptCompression.close_code().0, 1007);
    }

    #[test]
    fn status_table() {
        assert_eq!(HandshakeError::HeadTooLarge.status(), 431);
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
        assert_eq!(HandshakeError::InvalidKey.status(), 400);
        assert_eq!(HandshakeError::MethodNotAllowed.status(), 405);
        assert_eq!(HandshakeError::DuplicateHost.status(), 400);
        assert_ne!(
            HandshakeError::DuplicateHost.reason(),
            HandshakeError::MissingHost.reason()
        );
        assert_ne!(
            HandshakeError::DuplicateHost.label(),
            HandshakeError::MissingHost.label()
        );
    }
}
