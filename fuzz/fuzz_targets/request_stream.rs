//! The request path of a kept-alive connection, bodies included: bytes as
//! a stream of pipelined requests fed to a real `Connection` (over a
//! loopback socket it never reads), each complete head parsed, framed and
//! routed as the reactor does, each body read whole, each poll held (the
//! requests behind it waiting, unread) until it is answered. Never
//! panics, holds no more than one head or one body (within the limit),
//! and finds the same requests and bodies however the stream is split
//! into reads.
#![no_main]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wschat::protocol::deflate::Inflater;
use wschat::protocol::handshake::parse_head;
use wschat::protocol::http1::{body_framing, BodyFraming};
use wschat::protocol::session::Limits;
use wschat::server::connection::{
    AfterResponse, Connection, HeldPoll, PendingBody, Received, Shared,
};
use wschat::server::http_policy::body_length;
use wschat::server::router::{route, Request, Routes};
use wschat::server::timer::Time;
use wschat::server::transport::Transport;
use wschat::server::write_queue::ByteGauge;
use wschat::Config;

const MAX_HEAD: usize = 1024;
const MAX_BODY: usize = 512;

/// What the stream turned out to hold, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A request answered from its head: its method and target.
    Answered(String),
    /// A body read whole, for the request named.
    Body(String, Vec<u8>),
    /// A held poll answered, with what waited behind it (bytes kept).
    PollAnswered,
    /// The exchange ended here (a refusal that closes, or an upgrade),
    /// with why.
    Ended(String),
}

/// A connection over a loopback socket; its peer is dropped, which no
/// call here notices (nothing is flushed or read).
fn connection() -> Connection {
    static LISTENER: OnceLock<TcpListener> = OnceLock::new();
    let listener = LISTENER.get_or_init(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, peer): (TcpStream, SocketAddr) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let transport = Transport::tcp(mio::net::TcpStream::from_std(server));
    let start = Time::from_millis(0);
    Connection::new(transport, peer, ByteGauge::new(), start, start)
}

/// Acts on the head `data` as the reactor does; `false` when the exchange
/// ends there.
fn on_head(conn: &mut Connection, data: &[u8], routes: &Routes, seen: &mut Vec<Seen>) -> bool {
    let head = match parse_head(data) {
        Ok(head) => head,
        Err(e) => return end(seen, e.to_string()),
    };
    let name = format!("{} {}", head.method, head.target);
    let framing = match body_framing(&head) {
        Ok(BodyFraming::Coded) => return end(seen, "transfer coding".into()),
        Ok(framing) => framing,
        Err(e) => return end(seen, e.to_string()),
    };
    let now = Time::from_millis(0);
    match route(&head, routes) {
        Ok(Request::WithBody(request)) => match body_length(framing, MAX_BODY) {
            Ok(length) => {
                conn.expect_body(PendingBody::new(
                    request,
                    length,
                    AfterResponse::NextRequest,
                ));
                seen.push(Seen::Answered(name));
                true
            }
            Err(refusal) => end(seen, refusal.to_string()),
        },
        Ok(Request::Upgrade { .. }) => end(seen, format!("upgrade {name}")),
        Ok(Request::Events { .. }) if !framing.has_body() && head.method == "GET" => {
            end(seen, format!("stream {name}"))
        }
        Ok(Request::Poll(_)) if !framing.has_body() && head.method == "GET" => {
            let poll = HeldPoll::new(0, None, now, AfterResponse::NextRequest);
            conn.hold_poll(poll, now);
            seen.push(Seen::Answered(name));
            true
        }
        Err(refusal) if !refusal.keeps_connection() || head.wants_upgrade() => {
            end(seen, refusal.to_string())
        }
        Ok(_) | Err(_) if framing.has_body() => end(seen, format!("unread body {name}")),
        Ok(_) | Err(_) => {
            let _ = conn.respond(b"answer".to_vec(), AfterResponse::NextRequest, now);
            seen.push(Seen::Answered(name));
            true
        }
    }
}

fn end(seen: &mut Vec<Seen>, why: String) -> bool {
    seen.push(Seen::Ended(why));
    false
}

/// Feeds `data` in reads of `step` bytes, keeping unused bytes the way the
/// reactor does; returns what it saw.
fn run(data: &[u8], step: usize, routes: &Routes) -> Vec<Seen> {
    let mut conn = connection();
    let mut inflater = Inflater::new();
    let mut spare = Vec::new();
    let mut seen = Vec::new();
    let mut carried: Vec<u8> = Vec::new();
    for piece in data.chunks(step.max(1)) {
        carried.extend_from_slice(piece);
        let mut used = 0;
        while used < carried.len() {
            let mut shared = Shared {
                max_head_bytes: MAX_HEAD,
                proxy_protocol: false,
                limits: Limits {
                    max_message_size: MAX_BODY,
                    in_place_max: 64 * 1024,
                },
                inflater: &mut inflater,
                spare: &mut spare,
            };
            let rest = &mut carried[used..];
            match conn.receive(rest, &mut shared, &mut Vec::new()) {
                Received::Partial => break,
                Received::Head(end) => {
                    if !on_head(&mut conn, &rest[..end], routes, &mut seen) {
                        return seen;
                    }
                    used += end;
                }
                Received::Body(pending) => {
                    let body = rest[..pending.length].to_vec();
                    let name = match seen.last() {
                        Some(Seen::Answered(name)) => name.clone(),
                        _ => panic!("a body without its head: {seen:?}"),
                    };
                    seen.push(Seen::Body(name, body));
                    let now = Time::from_millis(0);
                    let _ = conn.respond(b"401".to_vec(), pending.after, now);
                    used += pending.length;
                }
                Received::Waiting => {
                    // Nothing behind a held poll is used until it is
                    // answered; then the next request is read.
                    assert!(conn.take_poll().is_some(), "waiting without a poll");
                    let now = Time::from_millis(0);
                    let _ = conn.respond(b"poll".to_vec(), AfterResponse::NextRequest, now);
                    seen.push(Seen::PollAnswered);
                }
                other => {
                    seen.push(Seen::Ended(format!("{other:?}")));
                    return seen;
                }
            }
        }
        carried.drain(..used);
        // Only the unfinished head or body is kept, each within its limit.
        assert!(
            carried.len() <= MAX_HEAD.max(MAX_BODY) + step,
            "kept {}",
            carried.len()
        );
        assert!(conn.buffered_bytes() <= MAX_BODY);
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let routes = Routes::from_config(&Config::default());
    let whole = run(rest, rest.len().max(1), &routes);
    let pieces = run(rest, usize::from(step % 32) + 1, &routes);
    // Where the exchange ends may differ (one byte tells a TLS ClientHello
    // from a request line, and reads of one byte show it alone), but not
    // what came before: the same requests, the same bodies.
    let before_end = |seen: &[Seen]| {
        seen.iter()
            .take_while(|s| !matches!(s, Seen::Ended(_)))
            .count()
    };
    let (a, b) = (before_end(&whole), before_end(&pieces));
    assert_eq!(whole[..a], pieces[..b], "{whole:?}\n{pieces:?}");
});
