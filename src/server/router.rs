//! Which path serves what: a complete request head becomes a [`Request`]
//! or a [`Refusal`].
//!
//! The upgrade rules themselves are `protocol::handshake`'s; this module
//! adds the server's routes and its policy on them (room names, allowed
//! origins, subprotocols, compression), from [`Routes`] alone, so that a
//! routing decision can be read (and tested) without the rest of the
//! configuration.

use std::time::Duration;

use super::history::Position;
use super::json;
use super::policy::{Allow, Refusal};
use super::poll::parse_timeout;
use super::room::{is_valid_room_name, LOBBY};
use super::sessions::{Token, SESSION_HEADER};
use crate::config::Config;
use crate::protocol::extension::Takeover;
use crate::protocol::handshake::{RequestHead, Upgrade};
use crate::protocol::http1::media_type;
use crate::protocol::HandshakeError;

/// What routing needs to know of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Origins allowed to upgrade; empty allows all.
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks.
    pub protocols: Vec<String>,
    /// What permessage-deflate negotiation may agree to (`None`: off).
    pub deflate: Option<Takeover>,
}

impl Routes {
    /// The routing part of `config`.
    pub fn from_config(config: &Config) -> Routes {
        let mut protocols = config.protocols.clone();
        // Always spoken: a client that offers it gets JSON with offsets.
        if !protocols.iter().any(|p| p == json::SUBPROTOCOL) {
            protocols.push(json::SUBPROTOCOL.to_string());
        }
        Routes {
            allowed_origins: config.allowed_origins.clone(),
            protocols,
            deflate: config.compression.takeover(),
        }
    }
}

/// What a complete request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /`: the chat page.
    Page,
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// A valid upgrade to a WebSocket endpoint.
    Upgrade {
        /// The accept key and subprotocol.
        upgrade: Upgrade,
        /// `None` for `/echo`, else the room's name.
        room: Option<String>,
        /// Where a returning client left off (`?since=EPOCH:OFFSET`).
        since: Option<Position>,
    },
    /// A request acted on once its body is read whole.
    WithBody(BodyRequest),
    /// `GET /room/{name}/events`: an SSE stream of the room.
    Events {
        /// The room's name.
        room: String,
        /// Where a returning client left off: `Last-Event-ID`, else
        /// `?since=`.
        since: Option<Position>,
    },
    /// `GET /room/{name}/poll`: a (long) poll of the room.
    Poll(PollRequest),
}

/// A poll: `GET /room/{name}/poll?since=EPOCH:OFFSET&timeout=SECS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRequest {
    /// The room's name.
    pub room: String,
    /// The position polled from (`since`), if given.
    pub since: Option<Position>,
    /// How long the poll may be held (`timeout`, 0 if absent), at most
    /// [`crate::server::poll::MAX_POLL_TIMEOUT`].
    pub timeout: Duration,
    /// The session it polls as (`Wschat-Session`), if it sent a token.
    pub session: Option<Token>,
}

/// What a posted message is, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// `text/plain` in UTF-8 (charset `utf-8`, or none said): a text
    /// message.
    Text,
    /// `application/octet-stream`: a binary message.
    Binary,
    /// Anything else, or no `Content-Type`.
    Unsupported,
}

/// A request whose body the server reads before it acts: the body's
/// length comes from `Content-Length` (at most `--max-message-size`), and
/// the reactor gets the body whole, with this, in `on_body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRequest {
    /// `POST /room/{name}/messages`: a message for the room.
    PostMessage {
        /// The room's name.
        room: String,
        /// The token of the session it is sent as (`Wschat-Session`).
        session: Option<Token>,
        /// Text, binary, or refused.
        content: Content,
    },
}

/// Decides what a request head asks for, or why it is refused.
///
/// With allowed origins listed, a browser's upgrade (browsers always send
/// `Origin`) must come from one of them: the defence against cross-site
/// WebSocket hijacking. Clients that send no `Origin` are not browsers and
/// are not affected.
pub fn route(head: &RequestHead<'_>, routes: &Routes) -> Result<Request, Refusal> {
    // Two hosts make any request ambiguous, upgrade or not.
    head.host()?;
    let path = head.path();
    let room = match path {
        "/" => Some(LOBBY.to_string()),
        "/echo" => None,
        _ => match path.strip_prefix("/room/") {
            Some(rest) => match rest.split_once('/') {
                Some((name, what)) => return route_room_path(head, routes, name, what),
                None if is_valid_room_name(rest) => Some(rest.to_string()),
                None => return Err(Refusal::InvalidRoomName),
            },
            None => return route_plain(head.method, path),
        },
    };
    if !is_get_or_head(head.method) {
        return Err(Refusal::MethodNotAllowed(Allow::GetHead));
    }
    // HEAD answers as a plain GET would: it cannot switch protocols.
    if head.method == "HEAD" || !head.wants_upgrade() {
        return match path {
            "/" => Ok(Request::Page),
            _ => Err(HandshakeError::UpgradeRequired.into()),
        };
    }
    let upgrade = head.check_upgrade(&routes.protocols, routes.deflate)?;
    check_origin(head, routes)?;
    let since = since_of(head)?;
    Ok(Request::Upgrade {
        upgrade,
        room,
        since,
    })
}

/// The value of parameter `name` in `query`, with the percent-escapes a
/// position may carry decoded (`%3A` for `:`, as `URLSearchParams` writes
/// it); `None` if absent.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| value.replace("%3A", ":").replace("%3a", ":"))
    })
}

/// HEAD works wherever GET does (RFC 9110 section 9.3.2).
fn is_get_or_head(method: &str) -> bool {
    method == "GET" || method == "HEAD"
}

/// The paths that are never upgraded.
fn route_plain(method: &str, path: &str) -> Result<Request, Refusal> {
    match path {
        "/healthz" | "/metrics" if !is_get_or_head(method) => {
            Err(Refusal::MethodNotAllowed(Allow::GetHead))
        }
        "/healthz" => Ok(Request::Health),
        "/metrics" => Ok(Request::Metrics),
        _ => Err(Refusal::NotFound),
    }
}

/// With allowed origins listed, a browser's request (browsers always
/// send `Origin` on an upgrade, a post, or a cross-site GET) must come
/// from one of them.
fn check_origin(head: &RequestHead<'_>, routes: &Routes) -> Result<(), Refusal> {
    let allowed = &routes.allowed_origins;
    match head.header("origin") {
        Some(origin) if !allowed.is_empty() && !allowed.iter().any(|o| o.as_bytes() == origin) => {
            Err(Refusal::ForbiddenOrigin)
        }
        _ => Ok(()),
    }
}

/// The `since` query parameter, if given.
fn since_of(head: &RequestHead<'_>) -> Result<Option<Position>, Refusal> {
    match query_param(head.query(), "since") {
        Some(value) => Ok(Some(
            Position::parse(&value).map_err(|_| Refusal::InvalidPosition)?,
        )),
        None => Ok(None),
    }
}

/// Where an SSE client left off: `Last-Event-ID` (what `EventSource`
/// sends when it reconnects, newer than any URL), else `since`.
fn stream_position(head: &RequestHead<'_>) -> Result<Option<Position>, Refusal> {
    let last = head
        .header("last-event-id")
        .map(<[u8]>::trim_ascii)
        .filter(|v| !v.is_empty());
    match last {
        Some(id) => std::str::from_utf8(id)
            .ok()
            .and_then(|id| Position::parse(id).ok())
            .map(Some)
            .ok_or(Refusal::InvalidLastEventId),
        None => since_of(head),
    }
}

/// The session token a request carries in `Wschat-Session`, if a
/// well-formed one.
fn session_of(head: &RequestHead<'_>) -> Option<Token> {
    head.header(SESSION_HEADER).and_then(Token::parse)
}

/// What a post's `Content-Type` makes of its body.
fn content_of(head: &RequestHead<'_>) -> Content {
    let mut values = head.header_values("content-type");
    let (Some(value), None) = (values.next(), values.next()) else {
        return Content::Unsupported;
    };
    let Some(media) = media_type(value) else {
        return Content::Unsupported;
    };
    let utf8 = media
        .charset
        .is_none_or(|c| c.eq_ignore_ascii_case("utf-8"));
    if media.essence.eq_ignore_ascii_case("text/plain") && utf8 {
        Content::Text
    } else if media
        .essence
        .eq_ignore_ascii_case("application/octet-stream")
    {
        Content::Binary
    } else {
        Content::Unsupported
    }
}

/// `/room/{name}/messages` (a POST with a body), `/room/{name}/events`
/// and `/room/{name}/poll` (GET or HEAD).
fn route_room_path(
    head: &RequestHead<'_>,
    routes: &Routes,
    name: &str,
    what: &str,
) -> Result<Request, Refusal> {
    let allow = match what {
        "messages" => Allow::Post,
        "events" | "poll" => Allow::GetHead,
        _ => return Err(Refusal::NotFound),
    };
    if !is_valid_room_name(name) {
        return Err(Refusal::InvalidRoomName);
    }
    let allowed = match allow {
        Allow::Post => head.method == "POST",
        Allow::GetHead => is_get_or_head(head.method),
    };
    if !allowed {
        return Err(Refusal::MethodNotAllowed(allow));
    }
    check_origin(head, routes)?;
    let room = name.to_string();
    Ok(match what {
        "messages" => Request::WithBody(BodyRequest::PostMessage {
            room,
            session: session_of(head),
            content: content_of(head),
        }),
        "events" => Request::Events {
            room,
            since: stream_position(head)?,
        },
        _ => Request::Poll(PollRequest {
            room,
            since: since_of(head)?,
            timeout: match query_param(head.query(), "timeout") {
                Some(value) => parse_timeout(&value).map_err(|_| Refusal::InvalidTimeout)?,
                None => Duration::ZERO,
            },
            session: session_of(head),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::parse_head;

    fn route_of(head: &str) -> Result<Request, Refusal> {
        let head = parse_head(head.as_bytes())?;
        route(&head, &Routes::from_config(&Config::default()))
    }

    const UPGRADE: &str = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn foreign_origins_are_refused_when_a_list_is_set() {
        let routes = Routes {
            allowed_origins: vec!["https://chat.example".to_string()],
            ..Routes::from_config(&Config::default())
        };
        let check = |origin: &str| {
            let text = format!("GET / HTTP/1.1\r\n{origin}{UPGRADE}");
            let head = parse_head(text.as_bytes()).unwrap();
            route(&head, &routes).map(|_| ())
        };
        assert_eq!(check("Origin: https://chat.example\r\n"), Ok(()));
        assert_eq!(
            check("Origin: https://evil.example\r\n"),
            Err(Refusal::ForbiddenOrigin)
        );
        assert_eq!(check(""), Ok(()), "no Origin: not a browser");
        let text = format!("GET / HTTP/1.1\r\nOrigin: https://evil.example\r\n{UPGRADE}");
        let head = parse_head(text.as_bytes()).unwrap();
        assert!(
            route(&head, &Routes::from_config(&Config::default())).is_ok(),
            "no list: every origin"
        );
    }

    #[test]
    fn plain_routes() {
        assert_eq!(
            route_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Ok(Request::Page)
        );
        assert_eq!(route_of("GET /?room=x HTTP/1.1\r\n\r\n"), Ok(Request::Page));
        assert_eq!(
            route_of("GET /healthz HTTP/1.1\r\n\r\n"),
            Ok(Request::Health)
        );
        assert_eq!(
            route_of("GET /metrics HTTP/1.0\r\n\r\n"),
            Ok(Request::Metrics)
        );
        assert_eq!(
            route_of("GET /nope HTTP/1.1\r\n\r\n"),
            Err(Refusal::NotFound)
        );
        assert_eq!(
            route_of("POST / HTTP/1.1\r\n\r\n"),
            Err(Refusal::MethodNotAllowed(Allow::GetHead))
        );
        assert_eq!(
            route_of("DELETE /healthz HTTP/1.1\r\n\r\n"),
            Err(Refusal::MethodNotAllowed(Allow::GetHead))
        );
        assert_eq!(
            route_of("GET /echo HTTP/1.1\r\n\r\n"),
            Err(HandshakeError::UpgradeRequired.into())
        );
        assert_eq!(
            route_of("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HandshakeError::DuplicateHost.into())
        );
    }

    #[test]
    fn head_is_routed_like_get_and_never_upgrades() {
        assert_eq!(route_of("HEAD / HTTP/1.1\r\n\r\n"), Ok(Request::Page));
        assert_eq!(
            route_of("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Ok(Request::Metrics)
        );
        assert_eq!(
            route_of(&format!("HEAD /echo HTTP/1.1\r\n{UPGRADE}")),
            Err(HandshakeError::UpgradeRequired.into())
        );
        assert_eq!(
            route_of("HEAD /nope HTTP/1.1\r\n\r\n"),
            Err(Refusal::NotFound)
        );
    }

    #[test]
    fn room_messages_take_a_post() {
        assert_eq!(
            route_of("POST /room/rust/messages HTTP/1.1\r\n\r\n"),
            Ok(Request::WithBody(BodyRequest::PostMessage {
                room: "rust".into(),
                session: None,
                content: Content::Unsupported,
            }))
        );
        for method in ["GET", "HEAD", "PUT"] {
            assert_eq!(
                route_of(&format!("{method} /room/rust/messages HTTP/1.1\r\n\r\n")),
                Err(Refusal::MethodNotAllowed(Allow::Post)),
                "{method}"
            );
        }
        assert_eq!(
            route_of("POST /room/a%20b/messages HTTP/1.1\r\n\r\n"),
            Err(Refusal::InvalidRoomName)
        );
        assert_eq!(
            route_of("POST /room/rust/other HTTP/1.1\r\n\r\n"),
            Err(Refusal::NotFound)
        );
        assert_eq!(
            route_of("POST /echo HTTP/1.1\r\n\r\n"),
            Err(Refusal::MethodNotAllowed(Allow::GetHead))
        );
    }

    #[test]
    fn posts_say_what_they_carry_and_as_whom() {
        let post = |headers: &str| match route_of(&format!(
            "POST /room/r/messages HTTP/1.1\r\n{headers}\r\n"
        )) {
            Ok(Request::WithBody(BodyRequest::PostMessage {
                session, content, ..
            })) => (session, content),
            other => panic!("{other:?}"),
        };
        let token = "0000000100112233445566778899aabbccddeeff";
        for (headers, content) in [
            ("Content-Type: text/plain; charset=utf-8\r\n", Content::Text),
            (
                "Content-Type: text/plain;charset=\"UTF-8\"\r\n",
                Content::Text,
            ),
            ("Content-Type: text/plain\r\n", Content::Text),
            (
                "Content-Type: application/octet-stream\r\n",
                Content::Binary,
            ),
            (
                "Content-Type: text/plain; charset=latin1\r\n",
                Content::Unsupported,
            ),
            ("Content-Type: application/json\r\n", Content::Unsupported),
            ("", Content::Unsupported),
            (
                "Content-Type: text/plain\r\nContent-Type: text/plain\r\n",
                Content::Unsupported,
            ),
        ] {
            assert_eq!(post(headers).1, content, "{headers:?}");
        }
        let (session, _) = post(&format!("Wschat-Session: {token}\r\n"));
        assert_eq!(session, Token::parse(token.as_bytes()));
        assert_eq!(post("Wschat-Session: nope\r\n").0, None);
    }

    #[test]
    fn streams_and_polls_take_get_and_head() {
        match route_of("GET /room/r/events?since=ab%3A3 HTTP/1.1\r\nLast-Event-ID: cd:7\r\n\r\n") {
            Ok(Request::Events { room, since }) => {
                assert_eq!(room, "r");
                assert_eq!(since.map(|p| (p.epoch, p.offset)), Some(("cd".into(), 7)));
            }
            other => panic!("{other:?}"),
        }
        match route_of("HEAD /room/r/events?since=ab:3 HTTP/1.1\r\n\r\n") {
            Ok(Request::Events { since, .. }) => assert_eq!(since.unwrap().offset, 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            route_of("GET /room/r/events HTTP/1.1\r\nLast-Event-ID: x\r\n\r\n"),
            Err(Refusal::InvalidLastEventId)
        );
        match route_of("GET /room/r/poll?since=ab:3&timeout=2.5 HTTP/1.1\r\n\r\n") {
            Ok(Request::Poll(poll)) => {
                assert_eq!(poll.since.unwrap().offset, 3);
                assert_eq!(poll.timeout, Duration::from_millis(2500));
                assert_eq!(poll.session, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            route_of("GET /room/r/poll?timeout=soon HTTP/1.1\r\n\r\n"),
            Err(Refusal::InvalidTimeout)
        );
        assert_eq!(
            route_of("GET /room/r/poll?since=nope HTTP/1.1\r\n\r\n"),
            Err(Refusal::InvalidPosition)
        );
        for path in ["events", "poll"] {
            assert_eq!(
                route_of(&format!("POST /room/r/{path} HTTP/1.1\r\n\r\n")),
                Err(Refusal::MethodNotAllowed(Allow::GetHead))
            );
        }
    }

    #[test]
    fn every_room_endpoint_checks_the_origin() {
        let routes = Routes {
            allowed_origins: vec!["https://chat.example".to_string()],
            ..Routes::from_config(&Config::default())
        };
        for request in [
            "POST /room/r/messages HTTP/1.1\r\n",
            "GET /room/r/events HTTP/1.1\r\n",
            "GET /room/r/poll HTTP/1.1\r\n",
        ] {
            let check = |origin: &str| {
                let text = format!("{request}{origin}\r\n");
                route(&parse_head(text.as_bytes()).unwrap(), &routes).map(|_| ())
            };
            assert_eq!(
                check("Origin: https://evil.example\r\n"),
                Err(Refusal::ForbiddenOrigin)
            );
            assert_eq!(check("Origin: https://chat.example\r\n"), Ok(()));
            assert_eq!(check(""), Ok(()), "no Origin: not a browser");
        }
    }

    #[test]
    fn upgrade_routes() {
        let lobby = route_of(&format!("GET / HTTP/1.1\r\n{UPGRADE}")).unwrap();
        assert!(matches!(lobby, Request::Upgrade { room: Some(ref r), .. } if r == LOBBY));
        let since = route_of(&format!(
            "GET /room/rust?x=1&since=ab1%3A41 HTTP/1.1\r\n{UPGRADE}"
        ))
        .unwrap();
        let at = Position {
            epoch: "ab1".into(),
            offset: 41,
        };
        assert!(matches!(since, Request::Upgrade { since: Some(ref p), .. } if *p == at));
        assert_eq!(
            route_of(&format!("GET /?since=ab1 HTTP/1.1\r\n{UPGRADE}")),
            Err(Refusal::InvalidPosition)
        );
        let echo = route_of(&format!("GET /echo HTTP/1.1\r\n{UPGRADE}")).unwrap();
        assert!(matches!(echo, Request::Upgrade { room: None, .. }));
        let room = route_of(&format!("GET /room/rust HTTP/1.1\r\n{UPGRADE}")).unwrap();
        assert!(matches!(room, Request::Upgrade { room: Some(ref r), .. } if r == "rust"));
        assert_eq!(
            route_of(&format!("GET /room/a%20b HTTP/1.1\r\n{UPGRADE}")),
            Err(Refusal::InvalidRoomName)
        );
        assert_eq!(
            route_of(&format!("GET /room/ HTTP/1.1\r\n{UPGRADE}")),
            Err(Refusal::InvalidRoomName)
        );
    }
}
