//! SSE streams and polls as HTTP exchanges (issue 14): pipelining and
//! keep-alive with held polls, request bodies of posts, heartbeats, slow
//! and stalled readers, presence of pollers, and shutdown.

mod support;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::web::{agent, poll, post_text, Sse};
use support::{start_server, tcp_connect_small_rcvbuf, test_config, Metrics, RawClient, Response};

const WAIT: Duration = Duration::from_secs(10);
const V1: (&str, &str) = ("Sec-WebSocket-Protocol", "wschat.v1");

fn next_json(client: &mut RawClient) -> Value {
    serde_json::from_str(&client.next_text(WAIT)).unwrap()
}

/// A poller's first answer: its session token and the position after it.
fn first_poll(addr: SocketAddr, room: &str) -> (String, String) {
    let first = poll(&agent(), addr, room, "timeout=0", None);
    assert_eq!(first.status, 200, "{}", first.text);
    let session = first.json["session"].as_str().unwrap().to_string();
    (session, first.json["next"].as_str().unwrap().to_string())
}

fn body_json(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap()
}

#[test]
fn requests_pipelined_behind_a_held_poll_wait_for_its_answer() {
    let server = start_server(test_config());
    let addr = server.addr();
    let mut sender = RawClient::connect(addr, "/room/pipe");
    let (session, next) = first_poll(addr, "pipe");
    let mut client = RawClient::connect_tcp(addr);
    // Two polls at once, then a plain request, in one write.
    let at_once = format!(
        "GET /room/pipe/poll?since={next}&timeout=0 HTTP/1.1\r\nHost: x\r\nWschat-Session: {session}\r\n\r\n"
    );
    let held = format!(
        "GET /room/pipe/poll?since={next}&timeout=0.6 HTTP/1.1\r\nHost: x\r\nWschat-Session: {session}\r\n\r\n"
    );
    let started = Instant::now();
    client.send_raw(format!("{at_once}{held}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let first = client.read_response();
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), Some("keep-alive"));
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "answered at once"
    );
    let second = client.read_response();
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "held to its timeout"
    );
    assert_eq!(body_json(&second)["messages"], serde_json::json!([]));
    let third = client.read_response();
    assert_eq!(
        (third.status, third.body.as_slice()),
        (200, &b"ok"[..]),
        "then in order"
    );
    // A held poll woken by a message, the next request behind it.
    let held = format!(
        "GET /room/pipe/poll?since={next}&timeout=10 HTTP/1.1\r\nHost: x\r\nWschat-Session: {session}\r\n\r\n"
    );
    client.send_raw(
        format!("{held}GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    thread::sleep(Duration::from_millis(200));
    sender.send_text("now");
    let woken = client.read_response();
    assert_eq!(body_json(&woken)["messages"][0]["text"], "now");
    assert_eq!(client.read_response().status, 200);
    client.expect_eof();
}

#[test]
fn a_held_poll_is_answered_to_a_client_that_sent_fin_then_closed() {
    let server = start_server(test_config());
    let addr = server.addr();
    let (session, next) = first_poll(addr, "fin");
    let mut client = RawClient::connect_tcp(addr);
    client.send_raw(
        format!("GET /room/fin/poll?since={next}&timeout=0.3 HTTP/1.1\r\nWschat-Session: {session}\r\n\r\n")
            .as_bytes(),
    );
    client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let raw = client.read_until_eof(WAIT);
    let answer = Response::parse(&raw).unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
}

#[test]
fn post_bodies_keep_their_rules_with_a_valid_session() {
    let server = start_server(wschat::Config {
        max_message_size: 1024,
        handshake_timeout: Duration::from_millis(500),
        ..test_config()
    });
    let addr = server.addr();
    let (_sse_reader, token) = {
        let mut sse = Sse::open(addr, "/room/body/events", &[]);
        let (_, welcome) = sse.next_json();
        let token = welcome["session"].as_str().unwrap().to_string();
        (sse, token)
    };
    let head = |extra: &str| {
        format!(
            "POST /room/body/messages HTTP/1.1\r\nHost: x\r\nWschat-Session: {token}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n{extra}\r\n"
        )
    };
    let exchange = |request: String| {
        let raw = support::http_exchange(addr, request.as_bytes(), WAIT).unwrap();
        Response::parse(&raw).unwrap()
    };
    assert_eq!(exchange(head("Content-Length: 1025\r\n")).status, 413);
    assert_eq!(exchange(format!("{}hello", head(""))).status, 411);
    let chunked = format!(
        "{}5\r\nhello\r\n0\r\n\r\n",
        head("Transfer-Encoding: chunked\r\n")
    );
    assert_eq!(exchange(chunked).status, 411);
    let slow = exchange(format!("{}12345", head("Content-Length: 10\r\n")));
    assert_eq!(
        (slow.status, slow.text().as_str()),
        (408, "request body not complete in time\n")
    );
    let mut client = RawClient::connect_tcp(addr);
    client.send_raw(format!("{}hello", head("Content-Length: 5\r\n")).as_bytes());
    let accepted = client.read_http_head();
    assert_eq!(accepted.status, 204);
    assert_eq!(accepted.header("content-length"), None, "a 204 has none");
    assert_eq!(
        client.request(b"GET /healthz HTTP/1.1\r\n\r\n").status,
        200,
        "kept alive"
    );
}

#[test]
fn an_sse_stream_sends_heartbeats_and_presence() {
    let server = start_server(wschat::Config {
        ping_interval: Duration::from_millis(200),
        ..test_config()
    });
    let addr = server.addr();
    let mut sse = Sse::open(addr, "/room/beat/events", &[]);
    assert_eq!(sse.header("cache-control"), Some("no-cache"));
    assert_eq!(sse.header("content-length"), None);
    let (_, welcome) = sse.next_json();
    let (joiner, w) = {
        let mut c = RawClient::connect_with_headers(addr, "/room/beat", &[V1]);
        let w = next_json(&mut c);
        (c, w)
    };
    let (_, joined) = sse.next_json();
    assert_eq!(
        (joined["type"].as_str(), joined["id"].clone()),
        (Some("join"), w["id"].clone())
    );
    assert_eq!(joined["members"], 2);
    drop(joiner);
    let (id, left) = sse.next_json();
    assert_eq!(
        (id, left["type"].as_str()),
        (None, Some("leave")),
        "presence has no id"
    );
    // Heartbeats: a comment every ping interval, and nothing else.
    let mut beats = 0;
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        assert_eq!(sse.next_line().as_deref(), Some(": ping"));
        assert_eq!(sse.next_line().as_deref(), Some(""));
        beats += 1;
    }
    assert!(beats >= 2, "{beats} heartbeats");
    assert!(welcome["id"].as_u64().is_some());
}

/// Opens an SSE stream of `room` on a socket that never reads.
fn sleeper(addr: SocketAddr, room: &str) -> RawClient {
    let mut client = RawClient::from_stream(tcp_connect_small_rcvbuf(addr, 4096));
    client.send_raw(format!("GET /room/{room}/events HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    client
}

#[test]
fn a_slow_sse_reader_is_cut_while_the_others_keep_receiving() {
    let server = start_server(wschat::Config {
        max_backpressure: 64 * 1024,
        ..test_config()
    });
    let addr = server.addr();
    let mut slow = sleeper(addr, "slow");
    let mut fast = Sse::open(addr, "/room/slow/events", &[]);
    // The sender reads each of its messages back: a WebSocket receiver.
    let mut sender = RawClient::connect(addr, "/room/slow");
    // More than the kernel's socket buffers hold for the slow one.
    let text = "s".repeat(16_000);
    let total = 600;
    let reader = thread::spawn(move || {
        assert_eq!(fast.next_json().1["type"], "welcome");
        (0..total)
            .map(|_| fast.next_message().1["offset"].as_u64().unwrap())
            .collect::<Vec<u64>>()
    });
    for _ in 0..total {
        sender.send_text(&text);
        sender.next_text(WAIT);
    }
    assert_eq!(reader.join().unwrap(), (1..=total).collect::<Vec<u64>>());
    let metrics = Metrics::fetch(addr);
    assert_eq!(metrics.value("wschat_slow_consumer_disconnects_total"), 1.0);
    // The slow one finds its stream ended after whole events.
    let raw = slow.read_until_eof(WAIT);
    assert!(raw.ends_with(b"\n\n"), "cut between events");
}

#[test]
fn an_sse_reader_that_takes_nothing_for_the_idle_timeout_is_closed() {
    let server = start_server(wschat::Config {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(600),
        close_timeout: Duration::from_millis(300),
        max_backpressure: 64 << 20,
        ..test_config()
    });
    let addr = server.addr();
    let _stalled = sleeper(addr, "stall");
    let mut sender = RawClient::connect(addr, "/room/stall");
    // More than the socket buffers hold, less than --max-backpressure.
    let text = "z".repeat(16_000);
    for _ in 0..600 {
        sender.send_text(&text);
        sender.next_text(WAIT);
    }
    let closed = support::wait_for(WAIT, || {
        let metrics = Metrics::fetch(addr);
        (metrics.value("wschat_members{transport=\"sse\"}") == 0.0).then_some(metrics)
    })
    .expect("the stalled stream is closed");
    // (The sender, silent once done and not answering pings, may time
    // out too.)
    assert!(closed.value("wschat_timeouts_total") >= 1.0);
    assert_eq!(closed.value("wschat_slow_consumer_disconnects_total"), 0.0);
}

#[test]
fn pollers_join_get_presence_and_leave_after_the_grace_period() {
    let grace = Duration::from_millis(400);
    let server = start_server(wschat::Config {
        poll_grace: grace,
        ..test_config()
    });
    let addr = server.addr();
    let (mut ws, _) = {
        let mut c = RawClient::connect_with_headers(addr, "/room/grace", &[V1]);
        let w = next_json(&mut c);
        (c, w)
    };
    let first = poll(&agent(), addr, "grace", "timeout=0", None);
    let id = first.json["id"].clone();
    assert_eq!(first.json["members"], 2);
    let joined = next_json(&mut ws);
    assert_eq!(
        (
            joined["type"].as_str(),
            joined["id"].clone(),
            joined["members"].as_u64()
        ),
        (Some("join"), id.clone(), Some(2))
    );
    let session = first.json["session"].as_str().unwrap().to_string();
    let mut next = first.json["next"].as_str().unwrap().to_string();
    // Polling within the grace period keeps it a member, and it hears of
    // others coming and going.
    let mut other = RawClient::connect_with_headers(addr, "/room/grace", &[V1]);
    let other_id = next_json(&mut other)["id"].clone();
    let mut presence = Vec::new();
    for _ in 0..4 {
        thread::sleep(grace / 2);
        let query = format!("since={next}&timeout=0");
        let answer = poll(&agent(), addr, "grace", &query, Some(&session));
        assert_eq!(answer.json["id"], id, "the same member");
        next = answer.json["next"].as_str().unwrap().to_string();
        presence.extend(answer.json["messages"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(presence.len(), 1, "{presence:?}");
    assert_eq!(
        (presence[0]["type"].as_str(), presence[0]["id"].clone()),
        (Some("join"), other_id)
    );
    assert_eq!(next_json(&mut ws)["type"], "join", "the other one");
    let stopped = Instant::now();
    let left = next_json(&mut ws);
    let after = stopped.elapsed();
    assert_eq!(
        (left["type"].as_str(), left["id"].clone()),
        (Some("leave"), id)
    );
    assert!(
        after >= grace / 2 && after < WAIT,
        "left {after:?} after its last poll"
    );
    assert_eq!(left["members"], 2);
    // Its token is no good any more: a poll with it is a new member.
    let again = poll(&agent(), addr, "grace", "timeout=0", Some(&session));
    assert_ne!(again.json["id"], left["id"]);
    assert_ne!(again.json["session"], session.as_str());
}

#[test]
fn shutdown_ends_streams_and_answers_held_polls() {
    let server = start_server(test_config());
    let addr = server.addr();
    let mut sse = Sse::open(addr, "/room/bye/events", &[]);
    let (session, next) = first_poll(addr, "bye");
    let held = thread::spawn(move || {
        let query = format!("since={next}&timeout=30");
        poll(&agent(), addr, "bye", &query, Some(&session))
    });
    thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    server.handle().shutdown();
    let answer = held.join().unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.connection, "close");
    assert_eq!(answer.json["messages"], serde_json::json!([]));
    // The welcome and the poller's join, then the end of the stream.
    let rest = sse.rest();
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    server.stop().expect("a clean stop");
}

#[test]
fn a_poller_that_polls_again_elsewhere_supersedes_its_held_poll() {
    let server = start_server(test_config());
    let addr = server.addr();
    // Here before the poller, so that no presence change wakes its polls.
    let mut sender = RawClient::connect(addr, "/room/twice");
    let (session, next) = first_poll(addr, "twice");
    let older = {
        let (session, next) = (session.clone(), next.clone());
        thread::spawn(move || {
            let query = format!("since={next}&timeout=20");
            let started = Instant::now();
            (
                poll(&agent(), addr, "twice", &query, Some(&session)),
                started.elapsed(),
            )
        })
    };
    thread::sleep(Duration::from_millis(300));
    let newer = {
        let session = session.clone();
        thread::spawn(move || {
            let query = format!("since={next}&timeout=20");
            poll(&agent(), addr, "twice", &query, Some(&session))
        })
    };
    let (answer, took) = older.join().unwrap();
    assert!(
        took < Duration::from_secs(5),
        "answered when superseded: {took:?}"
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json["messages"], serde_json::json!([]));
    sender.send_text("for the newer");
    assert_eq!(
        newer.join().unwrap().json["messages"][0]["text"],
        "for the newer"
    );
    post_text(&agent(), addr, "twice", &session, "still a member");
}
