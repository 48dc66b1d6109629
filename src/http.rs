//! The few plain HTTP answers: the chat page, health, errors and the 101.
//!
//! Every response carries `Content-Length` and, except the 101,
//! `Connection: close`: the server answers one request per connection.

use std::io::Write as _;

use crate::protocol::handshake::Upgrade;
use crate::server::policy::Refusal;

/// The chat page, embedded at build time so the binary is self-contained.
pub const CHAT_HTML: &str = include_str!("../chat.html");

/// The reason phrase of the statuses this server sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

/// A complete response with a body, ending the connection.
pub fn response(
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The chat page (`GET /`).
pub fn chat_page() -> Vec<u8> {
    response(200, &[], "text/html; charset=utf-8", CHAT_HTML.as_bytes())
}

/// A plain text 200, for `/healthz` and `/metrics`.
pub fn text(body: &str) -> Vec<u8> {
    response(200, &[], "text/plain; charset=utf-8", body.as_bytes())
}

/// The answer to a refused request: its status, the headers that status
/// calls for, and the one-line reason as the body.
pub fn error(refusal: Refusal) -> Vec<u8> {
    let mut body = refusal.reason().as_bytes().to_vec();
    body.push(b'\n');
    response(
        refusal.status(),
        refusal.headers(),
        "text/plain; charset=utf-8",
        &body,
    )
}

/// The 101 that completes an upgrade (RFC 6455 section 4.2.2).
pub fn switching_protocols(upgrade: &Upgrade) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    let _ = write!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        upgrade.accept
    );
    if let Some(protocol) = &upgrade.protocol {
        let _ = write!(out, "Sec-WebSocket-Protocol: {protocol}\r\n");
    }
    if let Some(deflate) = &upgrade.deflate {
        let _ = write!(
            out,
            "Sec-WebSocket-Extensions: {}\r\n",
            deflate.response_header()
        );
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HandshakeError;

    fn head_of(bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes).into_owned();
        text.split("\r\n\r\n").next().unwrap().to_string()
    }

    #[test]
    fn responses_have_length_and_close() {
        let r = text("ok");
        let head = head_of(&r);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Length: 2"));
        assert!(head.contains("Connection: close"));
        assert!(r.ends_with(b"\r\n\r\nok"));
    }

    #[test]
    fn version_error_names_supported_version() {
        let head = head_of(&error(HandshakeError::UnsupportedVersion.into()));
        assert!(head.starts_with("HTTP/1.1 426 Upgrade Required"));
        assert!(head.contains("Sec-WebSocket-Version: 13"));
    }

    #[test]
    fn method_error_names_allowed_method() {
        let head = head_of(&error(HandshakeError::MethodNotAllowed.into()));
        assert!(head.starts_with("HTTP/1.1 405 "));
        assert!(head.contains("Allow: GET"));
    }

    #[test]
    fn switching_protocols_carries_accept_and_protocol() {
        let r = switching_protocols(&Upgrade {
            accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
            protocol: Some("chat".into()),
            deflate: None,
        });
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn chat_page_is_html() {
        let head = head_of(&chat_page());
        assert!(head.contains("Content-Type: text/html; charset=utf-8"));
    }
}
