//! SSE streams, long polling, polling and posting (issue 14): each a
//! member of the same rooms as WebSocket clients, over real sockets, with
//! `ureq` as the HTTP client (see `support::web`).

mod support;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::web::{agent, poll, post, post_text, Sse};
use support::{start_server, test_config, Metrics, RawClient};

const WAIT: Duration = Duration::from_secs(10);
const V1: (&str, &str) = ("Sec-WebSocket-Protocol", "wschat.v1");

/// A `wschat.v1` WebSocket client and its welcome.
fn json_ws(addr: SocketAddr, path: &str) -> (RawClient, Value) {
    let mut client = RawClient::connect_with_headers(addr, path, &[V1]);
    let welcome = next_json(&mut client);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

fn next_json(client: &mut RawClient) -> Value {
    serde_json::from_str(&client.next_text(WAIT)).unwrap()
}

/// The next JSON object of `kind` (`message`, `join`, `leave`), others
/// skipped.
fn next_of(client: &mut RawClient, kind: &str) -> Value {
    loop {
        let v = next_json(client);
        if v["type"] == kind {
            return v;
        }
    }
}

/// An SSE stream of the room at `path` (`/room/{name}`, a query allowed),
/// its welcome, and its session token.
fn stream(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Sse, Value, String) {
    let events = match path.split_once('?') {
        Some((room, query)) => format!("{room}/events?{query}"),
        None => format!("{path}/events"),
    };
    let mut sse = Sse::open(addr, &events, headers);
    let (_, welcome) = sse.next_json();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let session = welcome["session"].as_str().expect("a session").to_string();
    (sse, welcome, session)
}

/// `(offset, from, text)` of a message object.
fn entry(m: &Value) -> (u64, u64, String) {
    (
        m["offset"].as_u64().unwrap(),
        m["from"].as_u64().unwrap(),
        m["text"].as_str().unwrap_or_default().to_string(),
    )
}

/// The message objects of a poll answer.
fn messages(answer: &Value) -> Vec<Value> {
    answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "message")
        .cloned()
        .collect()
}

#[test]
fn every_transport_sees_the_same_messages_in_the_same_order() {
    let server = start_server(test_config());
    let addr = server.addr();
    let http = agent();
    let chat = ("Sec-WebSocket-Protocol", "chat");
    let mut classic = RawClient::connect_with_headers(addr, "/room/all", &[chat]);
    let (mut json, _) = json_ws(addr, "/room/all");
    let (mut sse, sse_welcome, sse_session) = stream(addr, "/room/all", &[]);
    let first = poll(&http, addr, "all", "timeout=0", None);
    assert_eq!(first.status, 200, "{}", first.text);
    let poll_session = first.json["session"].as_str().unwrap().to_string();
    let poll_id = first.json["id"].as_u64().unwrap();
    for i in 0..5 {
        classic.send_text(&format!("c{i}"));
        json.send_text(&format!("j{i}"));
        post_text(&http, addr, "all", &sse_session, &format!("s{i}"));
        post_text(&http, addr, "all", &poll_session, &format!("p{i}"));
    }
    let total = 20;
    let from_json: Vec<_> = (0..total)
        .map(|_| entry(&next_of(&mut json, "message")))
        .collect();
    let epoch = sse_welcome["epoch"].as_str().unwrap();
    let from_sse: Vec<_> = (0..total)
        .map(|_| {
            let (id, m) = sse.next_message();
            assert_eq!(id, format!("{epoch}:{}", m["offset"]), "the event id");
            entry(&m)
        })
        .collect();
    let mut from_poll = Vec::new();
    let mut next = first.json["next"].as_str().unwrap().to_string();
    while from_poll.len() < total {
        let query = format!("since={next}&timeout=5");
        let answer = poll(&http, addr, "all", &query, Some(&poll_session));
        assert_eq!(answer.json["recovered"], true, "{}", answer.text);
        assert_eq!(answer.json["id"], poll_id, "the same member");
        from_poll.extend(messages(&answer.json).iter().map(entry));
        next = answer.json["next"].as_str().unwrap().to_string();
    }
    let from_classic: Vec<(u64, String)> = (0..total)
        .map(|_| {
            let text = classic.next_text(WAIT);
            let (from, text) = text.strip_prefix("from").unwrap().split_once(':').unwrap();
            (from.parse().unwrap(), text.to_string())
        })
        .collect();
    let offsets: Vec<u64> = from_json.iter().map(|e| e.0).collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<u64>>());
    assert_eq!(from_sse, from_json);
    assert_eq!(from_poll, from_json);
    let as_classic: Vec<(u64, String)> = from_json.iter().map(|e| (e.1, e.2.clone())).collect();
    assert_eq!(from_classic, as_classic);
    // Posts are the session's member's: the SSE stream's id, the poller's.
    let sse_id = sse_welcome["id"].as_u64().unwrap();
    for (_, from, text) in &from_json {
        match &text[..1] {
            "s" => assert_eq!(*from, sse_id, "{text}"),
            "p" => assert_eq!(*from, poll_id, "{text}"),
            _ => assert!(*from != sse_id && *from != poll_id, "{text}"),
        }
    }
}

#[test]
fn an_sse_client_recovers_with_last_event_id_or_since() {
    let server = start_server(test_config());
    let addr = server.addr();
    let mut sender = RawClient::connect(addr, "/room/r");
    let (mut sse, welcome, _) = stream(addr, "/room/r", &[]);
    let epoch = welcome["epoch"].as_str().unwrap().to_string();
    assert_eq!(welcome["recovered"], false);
    sender.send_text("one");
    let (id, _) = sse.next_message();
    assert_eq!(id, format!("{epoch}:1"));
    drop(sse);
    for text in ["two", "three"] {
        sender.send_text(text);
        sender.next_text(WAIT);
    }
    // EventSource's reconnect: Last-Event-ID.
    let (mut back, w, _) = stream(addr, "/room/r", &[("Last-Event-ID", &id)]);
    assert_eq!(
        (w["recovered"].as_bool(), w["epoch"].as_str()),
        (Some(true), Some(&epoch[..]))
    );
    let texts: Vec<String> = (0..2).map(|_| entry(&back.next_message().1).2).collect();
    assert_eq!(texts, ["two", "three"]);
    sender.send_text("four");
    assert_eq!(back.next_message().0, format!("{epoch}:4"), "then live");
    // A page that builds its URL: since.
    let (mut again, w, _) = stream(addr, &format!("/room/r?since={epoch}:2"), &[]);
    assert_eq!(w["recovered"], true);
    assert_eq!(again.next_message().1["offset"], 3);
    // Last-Event-ID is newer than the URL it reconnects to.
    let last = format!("{epoch}:3");
    let path = format!("/room/r?since={epoch}:0");
    let (mut newer, _, _) = stream(addr, &path, &[("Last-Event-ID", &last)]);
    assert_eq!(newer.next_message().1["offset"], 4);
    // Another epoch: everything kept, and recovered:false.
    let (mut other, w, _) = stream(addr, "/room/r", &[("Last-Event-ID", "elsewhere:9")]);
    assert_eq!(w["recovered"], false);
    assert_eq!(other.next_message().1["offset"], 1);
    let bad = Sse::try_open(addr, "/room/r/events", &[("Last-Event-ID", "nope")]);
    assert_eq!(bad.status, 400);
}

#[test]
fn a_welcome_carries_the_position_a_reconnect_resumes_from() {
    let server = start_server(wschat::Config {
        history_on_join: 2,
        ..test_config()
    });
    let addr = server.addr();
    let mut sender = RawClient::connect(addr, "/room/w");
    for i in 1..=5 {
        sender.send_text(&format!("m{i}"));
        sender.next_text(WAIT);
    }
    let mut sse = Sse::open(addr, "/room/w/events", &[]);
    let welcome = sse.next_event();
    let epoch: Value = serde_json::from_str(&welcome.data).unwrap();
    let epoch = epoch["epoch"].as_str().unwrap().to_string();
    // The last two are replayed: a drop before them resumes before them.
    assert_eq!(welcome.id, Some(format!("{epoch}:3")));
    assert_eq!(sse.next_message().1["offset"], 4);
}

#[test]
fn a_long_poll_is_woken_by_a_message_and_polling_answers_at_once() {
    let server = start_server(test_config());
    let addr = server.addr();
    let http = agent();
    let mut sender = RawClient::connect(addr, "/room/lp");
    let first = poll(&http, addr, "lp", "timeout=0", None);
    let session = first.json["session"].as_str().unwrap().to_string();
    let next = first.json["next"].as_str().unwrap().to_string();
    // Nothing new, timeout=0: answered at once, empty, recovered.
    let started = Instant::now();
    let now = poll(
        &http,
        addr,
        "lp",
        &format!("since={next}&timeout=0"),
        Some(&session),
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        (now.json["recovered"].as_bool(), now.json["next"].as_str()),
        (Some(true), Some(&next[..]))
    );
    assert_eq!(now.json["messages"], serde_json::json!([]));
    let held = {
        let (session, next) = (session.clone(), next.clone());
        thread::spawn(move || {
            let started = Instant::now();
            let query = format!("since={next}&timeout=10");
            let answer = poll(&agent(), addr, "lp", &query, Some(&session));
            (answer, started.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(300));
    sender.send_text("wake");
    let (answer, took) = held.join().unwrap();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let got = messages(&answer.json);
    assert_eq!(got.len(), 1, "{}", answer.text);
    assert_eq!(got[0]["text"], "wake");
    let epoch = answer.json["epoch"].as_str().unwrap();
    assert_eq!(answer.json["next"], format!("{epoch}:{}", got[0]["offset"]));
    assert_eq!(answer.json["session"], session.as_str());
}

#[test]
fn a_long_poll_with_nothing_new_times_out_empty() {
    let server = start_server(wschat::Config {
        idle_timeout: Duration::from_secs(1),
        ..test_config()
    });
    let addr = server.addr();
    let http = agent();
    let first = poll(&http, addr, "quiet", "", None);
    let session = first.json["session"].as_str().unwrap();
    let next = first.json["next"].as_str().unwrap();
    let started = Instant::now();
    let answer = poll(
        &http,
        addr,
        "quiet",
        &format!("since={next}&timeout=0.5"),
        Some(session),
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json["messages"], serde_json::json!([]));
    assert_eq!(answer.json["recovered"], true);
    assert_eq!(answer.json["next"], next);
    // A timeout past --idle-timeout is cut to it.
    let started = Instant::now();
    let answer = poll(
        &http,
        addr,
        "quiet",
        &format!("since={next}&timeout=30"),
        Some(session),
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(answer.status, 200);
    assert_eq!(
        poll(&http, addr, "quiet", "timeout=later", None).status,
        400
    );
}

#[test]
fn a_poller_recovers_like_a_websocket_client() {
    let server = start_server(wschat::Config {
        history_size: 3,
        ..test_config()
    });
    let addr = server.addr();
    let http = agent();
    let mut sender = RawClient::connect(addr, "/room/pr");
    for i in 1..=6 {
        sender.send_text(&format!("m{i}"));
        sender.next_text(WAIT);
    }
    let first = poll(&http, addr, "pr", "timeout=0", None);
    let epoch = first.json["epoch"].as_str().unwrap().to_string();
    let offsets = |a: &Value| {
        messages(a)
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(&first.json), [4, 5, 6], "the recent history");
    assert_eq!(first.json["next"], format!("{epoch}:6"));
    let session = first.json["session"].as_str().unwrap();
    let exact = poll(
        &http,
        addr,
        "pr",
        &format!("since={epoch}:4&timeout=0"),
        Some(session),
    );
    assert_eq!(
        (exact.json["recovered"].as_bool(), offsets(&exact.json)),
        (Some(true), vec![5, 6])
    );
    let trimmed = poll(
        &http,
        addr,
        "pr",
        &format!("since={epoch}:1&timeout=0"),
        Some(session),
    );
    assert_eq!(trimmed.json["recovered"], false, "2 and 3 were trimmed");
    assert_eq!(offsets(&trimmed.json), [4, 5, 6]);
    let other = poll(
        &http,
        addr,
        "pr",
        "since=elsewhere:2&timeout=5",
        Some(session),
    );
    assert_eq!(other.json["recovered"], false, "answered at once");
    assert_eq!(offsets(&other.json), [4, 5, 6]);
    assert_eq!(poll(&http, addr, "pr", "since=nope", None).status, 400);
}

#[test]
fn posts_are_the_sessions_member_and_nobody_elses() {
    let server = start_server(test_config());
    let addr = server.addr();
    let http = agent();
    let (mut watcher, _) = json_ws(addr, "/room/a");
    let (sse, welcome, token) = stream(addr, "/room/a", &[]);
    let other_room = poll(&http, addr, "b", "timeout=0", None);
    let other_token = other_room.json["session"].as_str().unwrap();
    post_text(&http, addr, "a", &token, "mine");
    let m = next_of(&mut watcher, "message");
    assert_eq!(
        (m["from"].clone(), m["text"].clone()),
        (welcome["id"].clone(), "mine".into())
    );
    let text = Some("text/plain; charset=utf-8");
    let forged = format!("{}{}", &token[..8], "0".repeat(32));
    for session in [None, Some("nope"), Some(&forged[..]), Some(other_token)] {
        let (status, body) = post(&http, addr, "a", session, text, b"x");
        assert_eq!(
            (status, body.as_str()),
            (401, "missing or invalid Wschat-Session\n"),
            "{session:?}"
        );
    }
    // The stream's session ends with the stream.
    drop(sse);
    let gone = support::wait_for(WAIT, || {
        let (status, _) = post(&http, addr, "a", Some(&token), text, b"late");
        (status == 401).then_some(())
    });
    assert!(gone.is_some(), "the token outlived its stream");
    let metrics = Metrics::fetch(addr);
    assert!(metrics.value("wschat_handshake_failures_total{reason=\"session\"}") >= 4.0);
}

#[test]
fn a_post_is_text_in_utf8_or_binary_and_nothing_else() {
    let server = start_server(test_config());
    let addr = server.addr();
    let http = agent();
    let (mut watcher, _) = json_ws(addr, "/room/t");
    let (_sse, _, token) = stream(addr, "/room/t", &[]);
    let session = Some(token.as_str());
    let (status, _) = post(
        &http,
        addr,
        "t",
        session,
        Some("application/octet-stream"),
        &[0, 1, 255],
    );
    assert_eq!(status, 204);
    assert_eq!(next_of(&mut watcher, "message")["binary"], "AAH/");
    let (status, _) = post(
        &http,
        addr,
        "t",
        session,
        Some("text/plain"),
        "é".as_bytes(),
    );
    assert_eq!(status, 204, "text/plain alone is taken as UTF-8");
    assert_eq!(next_of(&mut watcher, "message")["text"], "é");
    for content_type in [
        None,
        Some("application/json"),
        Some("text/plain; charset=iso-8859-1"),
    ] {
        let (status, body) = post(&http, addr, "t", session, content_type, b"x");
        assert_eq!(status, 415, "{content_type:?}");
        assert!(body.contains("text/plain; charset=utf-8"), "{body}");
    }
    let (status, body) = post(
        &http,
        addr,
        "t",
        session,
        Some("text/plain; charset=utf-8"),
        &[0xff, 0xfe],
    );
    assert_eq!(
        (status, body.as_str()),
        (400, "a text/plain message must be UTF-8\n")
    );
    watcher.expect_no_message_within(Duration::from_millis(200));
}

#[test]
fn posts_are_rate_limited_per_member_with_429() {
    let server = start_server(wschat::Config {
        max_messages_per_second: Some(2.0),
        ..test_config()
    });
    let addr = server.addr();
    let http = agent();
    let (_sse, _, token) = stream(addr, "/room/rate", &[]);
    let (_other, _, other) = stream(addr, "/room/rate", &[]);
    let text = Some("text/plain; charset=utf-8");
    let statuses: Vec<u16> = (0..4)
        .map(|_| post(&http, addr, "rate", Some(&token), text, b"x").0)
        .collect();
    assert_eq!(&statuses[..2], [204, 204], "a burst of 2");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let (status, _) = post(&http, addr, "rate", Some(&other), text, b"x");
    assert_eq!(status, 204, "another member's own bucket");
    let metrics = Metrics::fetch(addr);
    assert!(metrics.value("wschat_handshake_failures_total{reason=\"rate\"}") >= 1.0);
}

#[test]
fn the_allowed_origins_cover_every_endpoint() {
    let server = start_server(wschat::Config {
        allowed_origins: vec!["https://chat.example".into()],
        ..test_config()
    });
    let addr = server.addr();
    let http = agent();
    let evil = ("Origin", "https://evil.example");
    let good = ("Origin", "https://chat.example");
    assert_eq!(Sse::try_open(addr, "/room/o/events", &[evil]).status, 403);
    let (_sse, _, token) = stream(addr, "/room/o", &[good]);
    let get = |origin: (&str, &str)| {
        let mut response = http
            .get(support::web::url(addr, "/room/o/poll?timeout=0"))
            .header(origin.0, origin.1)
            .call()
            .unwrap();
        let _ = response.body_mut().read_to_string();
        response.status().as_u16()
    };
    assert_eq!((get(evil), get(good)), (403, 200));
    let post_from = |origin: (&str, &str)| {
        http.post(support::web::url(addr, "/room/o/messages"))
            .header(origin.0, origin.1)
            .header("Wschat-Session", &token)
            .header("Content-Type", "text/plain; charset=utf-8")
            .send(&b"hi"[..])
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post_from(evil), 403, "a cross-site post");
    assert_eq!(post_from(good), 204);
}

#[test]
fn head_of_the_endpoints_is_answered_without_a_member() {
    let server = start_server(test_config());
    let addr = server.addr();
    let mut client = RawClient::connect_tcp(addr);
    client.send_raw(b"HEAD /room/h/events HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = client.read_http_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        head.header("content-length"),
        None,
        "a GET's length is unknown"
    );
    assert_eq!(head.header("connection"), Some("keep-alive"));
    client.send_raw(b"HEAD /room/h/poll?timeout=5 HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = client.read_http_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/json"));
    client.send_raw(b"HEAD /room/h/messages HTTP/1.1\r\nHost: x\r\n\r\n");
    let allowed = client.read_http_head();
    assert_eq!(
        (allowed.status, allowed.header("allow")),
        (405, Some("POST"))
    );
    let page = client.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(page.status, 200, "the connection goes on");
    let metrics = Metrics::fetch(addr);
    assert_eq!(metrics.value("wschat_members{transport=\"sse\"}"), 0.0);
    assert_eq!(metrics.value("wschat_members{transport=\"poll\"}"), 0.0);
    assert_eq!(metrics.value("wschat_rooms"), 0.0);
}

#[test]
fn metrics_count_members_and_deliveries_by_transport() {
    let server = start_server(test_config());
    let addr = server.addr();
    let http = agent();
    let (mut ws, _) = json_ws(addr, "/room/m");
    let (mut sse, _, token) = stream(addr, "/room/m", &[]);
    let first = poll(&http, addr, "m", "timeout=0", None);
    let metrics = Metrics::fetch(addr);
    for transport in ["websocket", "sse", "poll"] {
        let series = format!("wschat_members{{transport=\"{transport}\"}}");
        assert_eq!(metrics.require(&series), 1.0, "{series}");
    }
    post_text(&http, addr, "m", &token, "counted");
    next_of(&mut ws, "message");
    sse.next_message();
    let query = format!("since={}&timeout=5", first.json["next"].as_str().unwrap());
    let session = first.json["session"].as_str().unwrap();
    assert_eq!(
        messages(&poll(&http, addr, "m", &query, Some(session)).json).len(),
        1
    );
    let metrics = Metrics::fetch(addr);
    for transport in ["websocket", "sse", "poll"] {
        let series = format!("wschat_deliveries_total{{transport=\"{transport}\"}}");
        assert_eq!(metrics.require(&series), 1.0, "{series}");
    }
}

#[test]
fn per_address_limits_count_streams_and_polls() {
    let server = start_server(wschat::Config {
        max_connections_per_ip: Some(1),
        ..test_config()
    });
    let addr = server.addr();
    let (_sse, _, _) = stream(addr, "/room/ip", &[]);
    let request = b"GET /room/ip/poll?timeout=0 HTTP/1.1\r\nHost: x\r\n\r\n";
    let raw = support::http_exchange(addr, request, WAIT).unwrap();
    let refused = support::Response::parse(&raw).unwrap();
    assert_eq!(refused.status, 429, "{refused:?}");
}

#[test]
fn pollers_are_at_most_max_connections() {
    let server = start_server(wschat::Config {
        max_connections: 2,
        ..test_config()
    });
    let addr = server.addr();
    let http = agent();
    let statuses: Vec<u16> = (0..3)
        .map(|_| poll(&http, addr, "few", "timeout=0", None).status)
        .collect();
    assert_eq!(statuses, [200, 200, 503]);
    let metrics = Metrics::fetch(addr);
    assert_eq!(metrics.value("wschat_members{transport=\"poll\"}"), 2.0);
}
