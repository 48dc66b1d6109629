//! The few plain HTTP answers: the chat page, health, errors, the 100
//! and the 101.
//!
//! Every response but the 101 and the 100 carries `Content-Length` and a
//! `Connection` header that tells the truth: `keep-alive` when the
//! connection reads another request after it, `close` when it ends. A
//! response to HEAD is the head a GET would get, without the body.

use std::io::Write as _;

use crate::protocol::handshake::Upgrade;
use crate::server::connection::AfterResponse;
use crate::server::policy::Refusal;

/// The chat page, embedded at build time so the binary is self-contained.
pub const CHAT_HTML: &str = include_str!("../chat.html");

/// The interim answer to `Expect: 100-continue` (RFC 9110 section 10.1.1):
/// the client may send its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How a response goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Whether the connection ends after it or reads the next request;
    /// the `Connection` header says which.
    pub after: AfterResponse,
    /// It answers a HEAD: the head alone, with the `Content-Length` of the
    /// body a GET would get.
    pub head_only: bool,
}

impl Reply {
    /// A whole response, after which the connection ends.
    pub const CLOSE: Reply = Reply {
        after: AfterResponse::Close,
        head_only: false,
    };

    /// The same, but ending the connection.
    pub fn closing(self) -> Reply {
        Reply {
            after: AfterResponse::Close,
            ..self
        }
    }
}

/// The reason phrase of the statuses this server sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

/// A complete response with a body, sent as `reply` says.
pub fn response(
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    reply: Reply,
) -> Vec<u8> {
    let connection = match reply.after {
        AfterResponse::Close => "close",
        AfterResponse::NextRequest => "keep-alive",
    };
    let mut out = Vec::with_capacity(160 + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !reply.head_only {
        out.extend_from_slice(body);
    }
    out
}

/// A head with no `Content-Length`: the `200` of an SSE stream (whose
/// body ends when the connection closes), or the answer to a HEAD of a
/// path whose body cannot be known without doing the GET (RFC 9110
/// section 9.3.2 lets it go without one).
pub fn head_without_length(
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    after: AfterResponse,
) -> Vec<u8> {
    let connection = match after {
        AfterResponse::Close => "close",
        AfterResponse::NextRequest => "keep-alive",
    };
    let mut out = Vec::with_capacity(160);
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nConnection: {connection}\r\n",
        reason_phrase(status)
    );
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The headers of an SSE stream besides its type: no cache may keep it,
/// and nginx must not buffer it.
pub const EVENT_STREAM_HEADERS: &[(&str, &str)] =
    &[("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")];

/// The head of an SSE stream (`GET /room/{name}/events`): no length, so
/// the stream ends when the connection does; for a HEAD, the same head,
/// after which the connection goes on as `reply` says.
pub fn event_stream(reply: Reply) -> Vec<u8> {
    let after = match reply.head_only {
        true => reply.after,
        false => AfterResponse::Close,
    };
    head_without_length(200, "text/event-stream", EVENT_STREAM_HEADERS, after)
}

/// A `200` JSON answer (a poll's): never cached. For a HEAD, the head
/// without a length (the answer depends on the GET's moment).
pub fn json(body: &[u8], reply: Reply) -> Vec<u8> {
    let headers = [("Cache-Control", "no-store")];
    if reply.head_only {
        return head_without_length(200, "application/json", &headers, reply.after);
    }
    response(200, &headers, "application/json", body, reply)
}

/// `204 No Content`: a post accepted. No `Content-Length` (RFC 9110
/// section 8.6: a 204 never has one), no body.
pub fn no_content(reply: Reply) -> Vec<u8> {
    let connection = match reply.after {
        AfterResponse::Close => "close",
        AfterResponse::NextRequest => "keep-alive",
    };
    format!("HTTP/1.1 204 No Content\r\nConnection: {connection}\r\n\r\n").into_bytes()
}

/// The chat page (`GET /`).
pub fn chat_page(reply: Reply) -> Vec<u8> {
    response(
        200,
        &[],
        "text/html; charset=utf-8",
        CHAT_HTML.as_bytes(),
        reply,
    )
}

/// A plain text 200, for `/healthz` and `/metrics`.
pub fn text(body: &str, reply: Reply) -> Vec<u8> {
    response(
        200,
        &[],
        "text/plain; charset=utf-8",
        body.as_bytes(),
        reply,
    )
}

/// The answer to a refused request: its status, the headers that status
/// calls for, and the one-line reason as the body.
pub fn error(refusal: Refusal, reply: Reply) -> Vec<u8> {
    let mut body = refusal.reason().as_bytes().to_vec();
    body.push(b'\n');
    response(
        refusal.status(),
        refusal.headers(),
        "text/plain; charset=utf-8",
        &body,
        reply,
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
    use crate::server::policy::Allow;

    fn head_of(bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes).into_owned();
        text.split("\r\n\r\n").next().unwrap().to_string()
    }

    const KEEP: Reply = Reply {
        after: AfterResponse::NextRequest,
        head_only: false,
    };

    #[test]
    fn responses_have_length_and_a_truthful_connection_header() {
        let r = text("ok", Reply::CLOSE);
        let head = head_of(&r);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Length: 2"));
        assert!(head.contains("Connection: close"));
        assert!(r.ends_with(b"\r\n\r\nok"));
        let kept = head_of(&text("ok", KEEP));
        assert!(kept.contains("Connection: keep-alive"));
        assert!(!kept.contains("close"));
    }

    #[test]
    fn a_head_answer_is_the_get_answer_without_its_body() {
        let get = chat_page(KEEP);
        let head = chat_page(Reply {
            head_only: true,
            ..KEEP
        });
        assert_eq!(head, get[..head.len()]);
        assert!(head.ends_with(b"\r\n\r\n"));
        let length = format!("Content-Length: {}\r\n", CHAT_HTML.len());
        assert!(String::from_utf8(head).unwrap().contains(&length));
    }

    #[test]
    fn version_error_names_supported_version() {
        let head = head_of(&error(
            HandshakeError::UnsupportedVersion.into(),
            Reply::CLOSE,
        ));
        assert!(head.starts_with("HTTP/1.1 426 Upgrade Required"));
        assert!(head.contains("Sec-WebSocket-Version: 13"));
    }

    #[test]
    fn method_error_names_allowed_method() {
        let head = head_of(&error(
            HandshakeError::MethodNotAllowed.into(),
            Reply::CLOSE,
        ));
        assert!(head.starts_with("HTTP/1.1 405 "));
        assert!(head.contains("Allow: GET"));
        let post = error(Refusal::MethodNotAllowed(Allow::Post), KEEP);
        assert!(head_of(&post).contains("\r\nAllow: POST"));
    }

    #[test]
    fn new_statuses_have_their_phrases() {
        for (refusal, line) in [
            (Refusal::LengthRequired, "HTTP/1.1 411 Length Required"),
            (Refusal::BodyTooLarge, "HTTP/1.1 413 Content Too Large"),
            (Refusal::Unauthorized, "HTTP/1.1 401 Unauthorized"),
        ] {
            assert!(head_of(&error(refusal, Reply::CLOSE)).starts_with(line));
        }
        assert!(CONTINUE.starts_with(b"HTTP/1.1 100 Continue\r\n"));
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
    fn heads_without_a_length() {
        let sse = String::from_utf8(event_stream(KEEP)).unwrap();
        assert!(sse.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(sse.contains("Content-Type: text/event-stream\r\n"));
        assert!(sse.contains("Cache-Control: no-cache\r\n"));
        assert!(
            sse.contains("Connection: close\r\n"),
            "the body ends with it"
        );
        assert!(!sse.contains("Content-Length") && sse.ends_with("\r\n\r\n"));
        let head = Reply {
            head_only: true,
            ..KEEP
        };
        assert!(String::from_utf8(event_stream(head))
            .unwrap()
            .contains("Connection: keep-alive"));
        let json_head = String::from_utf8(json(b"{}", head)).unwrap();
        assert!(!json_head.contains("Content-Length") && json_head.ends_with("\r\n\r\n"));
        let got = String::from_utf8(json(b"{}", KEEP)).unwrap();
        assert!(got.contains("Content-Type: application/json\r\n"));
        assert!(got.contains("Cache-Control: no-store\r\n") && got.ends_with("\r\n\r\n{}"));
        assert_eq!(
            no_content(KEEP),
            b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn chat_page_is_html() {
        let head = head_of(&chat_page(Reply::CLOSE));
        assert!(head.contains("Content-Type: text/html; charset=utf-8"));
    }
}
