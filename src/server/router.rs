//! Which path serves what: a complete request head becomes a [`Request`]
//! or a [`Refusal`].
//!
//! The upgrade rules themselves are `protocol::handshake`'s; this module
//! adds the server's routes and its policy on them (room names, allowed
//! origins, subprotocols, compression), from [`Routes`] alone, so that a
//! routing decision can be read (and tested) without the rest of the
//! configuration.

use super::history::Position;
use super::json;
use super::policy::{Allow, Refusal};
use super::room::{is_valid_room_name, LOBBY};
use crate::config::Config;
use crate::protocol::extension::Takeover;
use crate::protocol::handshake::{RequestHead, Upgrade};
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
                Some((name, "messages")) => return route_messages(head.method, name),
                Some(_) => return Err(Refusal::NotFound),
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
    if let Some(origin) = head.header("origin") {
        let allowed = &routes.allowed_origins;
        if !allowed.is_empty() && !allowed.iter().any(|o| o.as_bytes() == origin) {
            return Err(Refusal::ForbiddenOrigin);
        }
    }
    let since = match query_param(head.query(), "since") {
        Some(value) => Some(Position::parse(&value).map_err(|_| Refusal::InvalidPosition)?),
        None => None,
    };
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

/// `/room/{name}/messages`, which takes a POST with a body.
fn route_messages(method: &str, name: &str) -> Result<Request, Refusal> {
    if !is_valid_room_name(name) {
        return Err(Refusal::InvalidRoomName);
    }
    if method != "POST" {
        return Err(Refusal::MethodNotAllowed(Allow::Post));
    }
    Ok(Request::WithBody(BodyRequest::PostMessage {
        room: name.to_string(),
    }))
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
                room: "rust".into()
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
