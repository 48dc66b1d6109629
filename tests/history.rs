//! Room history, the `wschat.v1` JSON protocol and recovery after a
//! reconnect, single instance, over real sockets (issue 13).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::{
    handshake_request, http_exchange, op, random_key, start_server, tcp_connect_small_rcvbuf,
    test_config, Metrics, RawClient, Response,
};

const WAIT: Duration = Duration::from_secs(10);
const V1: (&str, &str) = ("Sec-WebSocket-Protocol", "wschat.v1");

/// A `wschat.v1` client and its welcome.
fn join(addr: SocketAddr, path: &str) -> (RawClient, Value) {
    let mut client = RawClient::connect_with_headers(addr, path, &[V1]);
    let head = client.handshake_response().unwrap().clone();
    assert_eq!(head.header("sec-websocket-protocol"), Some("wschat.v1"));
    let welcome = next_json(&mut client);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

fn next_json(client: &mut RawClient) -> Value {
    let text = client.next_text(WAIT);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The next `message` object, skipping presence.
fn next_message(client: &mut RawClient) -> Value {
    loop {
        let v = next_json(client);
        if v["type"] == "message" {
            return v;
        }
        assert!(v["type"] == "join" || v["type"] == "leave", "{v}");
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn since(welcome: &Value, offset: u64) -> String {
    format!("since={}:{offset}", welcome["epoch"].as_str().unwrap())
}

#[test]
fn a_json_client_is_welcomed_and_gets_messages_with_offsets() {
    let server = start_server(test_config());
    let (mut a, welcome) = join(server.addr(), "/room/json");
    assert_eq!(welcome["room"], "json");
    assert_eq!(welcome["offset"], 0);
    assert_eq!(welcome["members"], 1);
    assert_eq!(welcome["recovered"], false);
    let epoch = welcome["epoch"].as_str().unwrap();
    assert!(!epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_alphanumeric()));
    let id = welcome["id"].as_u64().unwrap();
    let before = wall_ms();
    a.send_text("hello \"world\"\n");
    let m = next_message(&mut a);
    assert_eq!(m["offset"], 1);
    assert_eq!(m["from"], id);
    assert_eq!(m["text"], "hello \"world\"\n");
    let time = m["time"].as_u64().unwrap();
    assert!(time >= before - 1000 && time <= wall_ms() + 1000, "{time}");
    a.send_binary(&[0, 1, 2, 255]);
    let m = next_message(&mut a);
    assert_eq!(
        (m["offset"].as_u64(), m["binary"].as_str()),
        (Some(2), Some("AAEC/w=="))
    );
    assert!(m.get("text").is_none());
}

#[test]
fn classic_and_json_members_share_a_room_and_json_ones_see_presence() {
    let server = start_server(test_config());
    let (mut json, welcome) = join(server.addr(), "/room/mixed");
    let json_id = welcome["id"].as_u64().unwrap();
    let mut classic = RawClient::connect_with_headers(
        server.addr(),
        "/room/mixed",
        &[("Sec-WebSocket-Protocol", "chat")],
    );
    let joined = next_json(&mut json);
    assert_eq!(joined["type"], "join");
    assert_eq!(joined["members"], 2);
    let classic_id = joined["id"].as_u64().unwrap();
    classic.send_text("hi");
    assert_eq!(
        classic.next_text(WAIT),
        format!("from{classic_id}:hi"),
        "classic unchanged"
    );
    let m = next_message(&mut json);
    assert_eq!(
        (m["from"].as_u64(), m["text"].as_str()),
        (Some(classic_id), Some("hi"))
    );
    json.send_text("yo");
    assert_eq!(classic.next_text(WAIT), format!("from{json_id}:yo"));
    assert_eq!(next_message(&mut json)["offset"], 2);
    drop(classic);
    let left = next_json(&mut json);
    assert_eq!(
        (left["type"].as_str(), left["id"].as_u64()),
        (Some("leave"), Some(classic_id))
    );
    assert_eq!(left["members"], 1);
}

#[test]
fn a_new_json_member_gets_the_recent_history_then_live_messages() {
    let server = start_server(wschat::Config {
        history_on_join: 3,
        ..test_config()
    });
    let mut sender = RawClient::connect(server.addr(), "/room/h");
    for i in 1..=5 {
        sender.send_text(&format!("m{i}"));
        sender.next_text(WAIT);
    }
    let (mut late, welcome) = join(server.addr(), "/room/h");
    assert_eq!(welcome["offset"], 5);
    assert_eq!(welcome["members"], 2);
    for i in 3..=5 {
        assert_eq!(next_message(&mut late)["text"], format!("m{i}"));
    }
    sender.send_text("m6");
    let m = next_message(&mut late);
    assert_eq!(
        (m["offset"].as_u64(), m["text"].as_str()),
        (Some(6), Some("m6"))
    );
}

#[test]
fn a_reconnect_with_since_gets_exactly_what_it_missed() {
    let server = start_server(test_config());
    let mut sender = RawClient::connect(server.addr(), "/room/r");
    let (mut a, welcome) = join(server.addr(), "/room/r");
    sender.send_text("one");
    assert_eq!(next_message(&mut a)["offset"], 1);
    drop(a);
    for text in ["two", "three"] {
        sender.send_text(text);
    }
    let path = format!("/room/r?{}", since(&welcome, 1));
    let (mut back, again) = join(server.addr(), &path);
    assert_eq!(again["recovered"], true);
    assert_eq!(again["epoch"], welcome["epoch"]);
    let replayed: Vec<_> = (0..2).map(|_| next_message(&mut back)).collect();
    assert_eq!(replayed[0]["offset"], 2);
    assert_eq!(replayed[0]["text"], "two");
    assert_eq!(replayed[1]["offset"], 3);
    sender.send_text("four");
    assert_eq!(
        next_message(&mut back)["offset"],
        4,
        "live after the replay, no duplicate"
    );
    // A position at the head: nothing to replay, and nothing missing.
    let (mut current, at_head) = join(server.addr(), &format!("/room/r?{}", since(&welcome, 4)));
    assert_eq!(at_head["recovered"], true);
    sender.send_text("five");
    assert_eq!(next_message(&mut current)["offset"], 5);
}

#[test]
fn trimmed_history_or_another_epoch_says_recovered_false() {
    let server = start_server(wschat::Config {
        history_size: 3,
        ..test_config()
    });
    let (mut a, welcome) = join(server.addr(), "/room/t");
    for i in 1..=6 {
        a.send_text(&format!("m{i}"));
        next_message(&mut a);
    }
    let (mut b, w) = join(server.addr(), &format!("/room/t?{}", since(&welcome, 1)));
    assert_eq!(w["recovered"], false, "2 and 3 were trimmed");
    let got: Vec<u64> = (0..3)
        .map(|_| next_message(&mut b)["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [4, 5, 6], "what history still has");
    let (mut c, w) = join(server.addr(), "/room/t?since=otherepoch:2");
    assert_eq!(w["recovered"], false);
    assert_eq!(next_message(&mut c)["offset"], 4);
    let (_, w) = join(server.addr(), &format!("/room/t?{}", since(&welcome, 99)));
    assert_eq!(w["recovered"], false, "an offset never given out");
}

#[test]
fn the_age_limit_forgets_messages_and_then_the_room() {
    let server = start_server(wschat::Config {
        history_ttl: Duration::from_millis(300),
        ..test_config()
    });
    let (mut a, welcome) = join(server.addr(), "/room/ttl");
    a.send_text("soon gone");
    next_message(&mut a);
    drop(a);
    std::thread::sleep(Duration::from_millis(600));
    let (mut b, w) = join(server.addr(), &format!("/room/ttl?{}", since(&welcome, 0)));
    assert_eq!(w["recovered"], false);
    assert_ne!(
        w["epoch"], welcome["epoch"],
        "the room was forgotten: a new numbering"
    );
    assert_eq!(w["offset"], 0);
    b.send_text("fresh");
    assert_eq!(next_message(&mut b)["offset"], 1);
}

#[test]
fn the_byte_budget_evicts_the_oldest_messages_first() {
    let server = start_server(wschat::Config {
        history_memory: 20_000,
        ..test_config()
    });
    let mut sender = RawClient::connect(server.addr(), "/room/budget");
    let big = "x".repeat(4000);
    for _ in 0..10 {
        sender.send_text(&big);
        sender.next_text(WAIT);
    }
    let (mut late, w) = join(server.addr(), "/room/budget?since=nope:0");
    assert_eq!(w["offset"], 10);
    let first = next_message(&mut late)["offset"].as_u64().unwrap();
    assert!(
        (6..=9).contains(&first),
        "only the newest few fit 20000 bytes: {first}"
    );
    let metrics = Metrics::fetch(server.addr());
    let bytes = metrics.value("wschat_history_bytes");
    assert!(bytes > 0.0 && bytes <= 20_000.0, "{bytes}");
}

#[test]
fn a_replay_larger_than_the_queue_bound_is_paced_and_joins_the_live_stream_in_order() {
    let server = start_server(wschat::Config {
        max_backpressure: 16 * 1024,
        history_size: 1000,
        ..test_config()
    });
    let mut sender = RawClient::connect(server.addr(), "/room/big");
    let text = "y".repeat(1000);
    for _ in 0..400 {
        sender.send_text(&text);
        sender.next_text(WAIT);
    }
    let (mut late, w) = join(server.addr(), "/room/big?since=x:0");
    assert_eq!(w["offset"], 400);
    // Live messages arrive while the replay is being paced.
    for _ in 0..50 {
        sender.send_text("live");
    }
    let mut seen = Vec::new();
    while seen.len() < 450 {
        seen.push(next_message(&mut late)["offset"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (1..=450).collect();
    assert_eq!(seen, expected, "each offset once, in order");
}

#[test]
fn a_slow_consumer_cut_with_1008_recovers_every_message_exactly_once() {
    let server = start_server(wschat::Config {
        max_backpressure: 64 * 1024,
        history_size: 5000,
        history_memory: 256 << 20,
        ..test_config()
    });
    let mut slow = RawClient::from_stream(tcp_connect_small_rcvbuf(server.addr(), 4096));
    slow.handshake("/room/slow", &[V1]);
    let welcome = next_json(&mut slow);
    // The slow client does not read; the sender floods until it is cut.
    let mut sender = RawClient::connect(server.addr(), "/room/slow");
    // More than the kernel's socket buffers can hold for it.
    let text = "z".repeat(16_000);
    let total = 800u64;
    for _ in 0..total {
        sender.send_text(&text);
        sender.next_text(WAIT);
    }
    // Read what the slow one got before its cut, up to the 1008 close.
    let mut got = BTreeMap::new();
    let mut last = 0;
    loop {
        match slow.next_frame(WAIT) {
            Ok((op::TEXT, payload)) => {
                let v: Value = serde_json::from_slice(&payload).unwrap();
                if v["type"] == "message" {
                    let offset = v["offset"].as_u64().unwrap();
                    assert!(got.insert(offset, ()).is_none());
                    last = offset;
                }
            }
            Ok((op::CLOSE, payload)) => {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("no 1008: {e}"),
        }
    }
    assert!(last < total, "it was cut before the end");
    let path = format!("/room/slow?{}", since(&welcome, last));
    let (mut back, w) = join(server.addr(), &path);
    assert_eq!(w["recovered"], true);
    while last < total {
        let offset = next_message(&mut back)["offset"].as_u64().unwrap();
        assert_eq!(offset, last + 1, "in order, no gap, no duplicate");
        last = offset;
    }
}

#[test]
fn a_malformed_since_is_refused_with_400() {
    let server = start_server(test_config());
    let host = server.addr().to_string();
    let request = handshake_request(&host, "/room/x?since=no-colon", &random_key(), &[V1]);
    let raw = http_exchange(server.addr(), &request, WAIT).unwrap();
    let response = Response::parse(&raw).unwrap();
    assert_eq!(response.status, 400);
    let body = String::from_utf8_lossy(&response.body);
    assert!(body.contains("since"), "{body}");
}

#[test]
fn history_off_still_numbers_messages_but_keeps_none() {
    let server = start_server(wschat::Config {
        history_size: 0,
        ..test_config()
    });
    let (mut a, welcome) = join(server.addr(), "/room/off");
    a.send_text("x");
    assert_eq!(next_message(&mut a)["offset"], 1);
    let (_b, w) = join(server.addr(), &format!("/room/off?{}", since(&welcome, 0)));
    assert_eq!(w["recovered"], false);
    assert_eq!(
        Metrics::fetch(server.addr()).value("wschat_history_messages"),
        0.0
    );
}
