//! History across a cluster: one numbering per room on every instance,
//! recovery on any instance, rolling restarts that lose no message, and a
//! Redis that forgets (issue 13, "Across a cluster" and "Proof").
//!
//! Real `redis-server`, real `wschat` binaries, clients over real sockets
//! (WebSocket, and SSE and polling through `ureq`).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::web::{agent, poll, Sse};
use support::{op, redis_or_skip, RawClient, Redis};

const CONNECT_LIMIT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(10);
const V1: (&str, &str) = ("Sec-WebSocket-Protocol", "wschat.v1");

/// What one `wschat.v1` receiver holds: its position and every offset
/// received under the epoch it ends in.
#[derive(Debug, Default)]
struct Held {
    epoch: String,
    offsets: Vec<u64>,
    welcomes: Vec<Value>,
    reconnects: usize,
}

/// A receiver that follows the room across instances: when its instance
/// goes, it reconnects to one of `alive` with `since`.
fn receiver(
    alive: Arc<Mutex<Vec<SocketAddr>>>,
    first: SocketAddr,
    room: &'static str,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Held> {
    thread::spawn(move || {
        let mut held = Held::default();
        let mut addr = first;
        let give_up = Instant::now() + Duration::from_secs(90);
        'connect: while Instant::now() < give_up {
            let path = match held.offsets.last() {
                Some(last) => format!("/room/{room}?since={}:{last}", held.epoch),
                None if !held.epoch.is_empty() => format!("/room/{room}?since={}:0", held.epoch),
                None => format!("/room/{room}"),
            };
            let Ok(stream) = std::net::TcpStream::connect(addr) else {
                addr = pick(&alive, addr);
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            let mut client = RawClient::from_stream(stream);
            match client.try_upgrade(&path, &[V1]) {
                Ok(r) if r.status == 101 => {}
                _ => {
                    addr = pick(&alive, addr);
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            loop {
                if stop.load(Ordering::SeqCst) {
                    return held;
                }
                match client.next_frame(Duration::from_millis(200)) {
                    Ok((op::TEXT, payload)) => {
                        let v: Value = serde_json::from_slice(&payload).unwrap();
                        match v["type"].as_str() {
                            Some("welcome") => {
                                let epoch = v["epoch"].as_str().unwrap().to_string();
                                if epoch != held.epoch {
                                    held.epoch = epoch;
                                    held.offsets.clear();
                                }
                                held.welcomes.push(v);
                            }
                            Some("message") => held.offsets.push(v["offset"].as_u64().unwrap()),
                            _ => {}
                        }
                    }
                    Ok((op::CLOSE, _)) => {
                        held.reconnects += 1;
                        addr = pick(&alive, addr);
                        continue 'connect;
                    }
                    Ok(_) => {}
                    Err(support::ReadError::Timeout) => {}
                    Err(_) => {
                        held.reconnects += 1;
                        addr = pick(&alive, addr);
                        continue 'connect;
                    }
                }
            }
        }
        held
    })
}

/// Another instance than `gone` from the live list (or `gone` if alone).
fn pick(alive: &Mutex<Vec<SocketAddr>>, gone: SocketAddr) -> SocketAddr {
    let alive = alive.lock().unwrap();
    alive
        .iter()
        .copied()
        .find(|a| *a != gone)
        .or(alive.first().copied())
        .unwrap_or(gone)
}

/// A classic sender: `rate` messages per second to `addr` (moving to
/// another live instance when its own goes) until `stop`. Returns how many
/// it sent.
fn sender(
    alive: Arc<Mutex<Vec<SocketAddr>>>,
    first: SocketAddr,
    room: &'static str,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut addr = first;
        let mut sent = 0;
        while !stop.load(Ordering::SeqCst) {
            let Ok(stream) = std::net::TcpStream::connect(addr) else {
                addr = pick(&alive, addr);
                thread::sleep(Duration::from_millis(50));
                continue;
            };
            let mut client = RawClient::from_stream(stream);
            if !matches!(client.try_upgrade(&format!("/room/{room}"), &[]), Ok(r) if r.status == 101)
            {
                addr = pick(&alive, addr);
                continue;
            }
            while !stop.load(Ordering::SeqCst) {
                if !alive.lock().unwrap().contains(&addr) {
                    break;
                }
                if client
                    .try_send_raw(&support::client_frame(true, op::TEXT, b"tick"))
                    .is_err()
                {
                    break;
                }
                sent += 1;
                // Drain echoes so the sender is never a slow consumer.
                while client.next_frame(Duration::from_millis(1)).is_ok() {}
                thread::sleep(Duration::from_millis(20));
            }
            addr = pick(&alive, addr);
        }
        sent
    })
}

/// Every receiver holds exactly 1..=head under one epoch, in order.
fn assert_complete(held: &[Held]) {
    let head = held
        .iter()
        .flat_map(|h| h.offsets.last())
        .max()
        .copied()
        .unwrap_or(0);
    assert!(head > 0, "no message went through");
    let epoch = &held[0].epoch;
    for (i, h) in held.iter().enumerate() {
        assert_eq!(&h.epoch, epoch, "receiver {i}: one epoch");
        let expected: Vec<u64> = (1..=head).collect();
        if h.offsets != expected {
            let missing: Vec<u64> = expected
                .iter()
                .filter(|o| !h.offsets.contains(o))
                .copied()
                .collect();
            panic!(
                "receiver {i} ({} reconnects): {} offsets, head {head}; missing {missing:?}; first {:?}",
                h.reconnects,
                h.offsets.len(),
                &h.offsets[..h.offsets.len().min(10)]
            );
        }
    }
}

#[test]
fn a_rolling_restart_of_both_instances_loses_no_message() {
    let Some(exe) = redis_or_skip("a_rolling_restart_of_both_instances_loses_no_message") else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut a = redis.instance(CONNECT_LIMIT);
    let mut b = redis.instance(CONNECT_LIMIT);
    let alive = Arc::new(Mutex::new(vec![a.addr(), b.addr()]));
    let stop_senders = Arc::new(AtomicBool::new(false));
    let stop_receivers = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = (0..6)
        .map(|i| {
            let first = if i % 2 == 0 { a.addr() } else { b.addr() };
            receiver(alive.clone(), first, "roll", stop_receivers.clone())
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let senders: Vec<_> = [a.addr(), b.addr()]
        .into_iter()
        .map(|first| sender(alive.clone(), first, "roll", stop_senders.clone()))
        .collect();
    let mut retired = Vec::new();
    for round in 0..2 {
        thread::sleep(Duration::from_millis(1500));
        let old = if round == 0 { &mut a } else { &mut b };
        alive.lock().unwrap().retain(|addr| *addr != old.addr());
        old.signal("-TERM");
        assert!(
            old.wait_exit(Duration::from_secs(10)).is_some(),
            "instance did not stop"
        );
        let fresh = redis.instance(CONNECT_LIMIT);
        alive.lock().unwrap().push(fresh.addr());
        retired.push(old.log_tail());
        *old = fresh;
    }
    thread::sleep(Duration::from_millis(1500));
    stop_senders.store(true, Ordering::SeqCst);
    let sent: usize = senders.into_iter().map(|s| s.join().unwrap()).sum();
    // Let the last messages arrive, then stop the receivers.
    thread::sleep(Duration::from_secs(2));
    stop_receivers.store(true, Ordering::SeqCst);
    let held: Vec<Held> = receivers.into_iter().map(|r| r.join().unwrap()).collect();
    eprintln!(
        "rolling restart: {sent} sent; receivers hold {:?} offsets after {:?} reconnects",
        held.iter().map(|h| h.offsets.len()).collect::<Vec<_>>(),
        held.iter().map(|h| h.reconnects).collect::<Vec<_>>()
    );
    assert!(
        held.iter().all(|h| h.reconnects >= 1),
        "every receiver moved at least once"
    );
    assert_complete(&held);
    let logs = format!("{}\n{}\n{}", retired.join("\n"), a.log_tail(), b.log_tail());
    for h in &held {
        for w in &h.welcomes[1..] {
            assert_eq!(w["recovered"], true, "{w}\n{logs}");
        }
    }
}

#[test]
fn a_redis_that_forgets_changes_the_epoch_and_clients_learn_recovered_false() {
    let Some(exe) =
        redis_or_skip("a_redis_that_forgets_changes_the_epoch_and_clients_learn_recovered_false")
    else {
        return;
    };
    let mut redis = Redis::start(&exe);
    let a = redis.instance(CONNECT_LIMIT);
    let b = redis.instance(CONNECT_LIMIT);
    let mut on_a = RawClient::connect_with_headers(a.addr(), "/room/f", &[V1]);
    let first: Value = serde_json::from_str(&on_a.next_text(WAIT)).unwrap();
    let mut sender = RawClient::connect(b.addr(), "/room/f");
    sender.send_text("before");
    let before = next_message(&mut on_a);
    assert_eq!(before["offset"], 1);
    let old_epoch = first["epoch"].as_str().unwrap().to_string();
    assert!(!old_epoch.is_empty());
    // Redis restarts without persistence: the room's stream and numbering
    // are gone.
    redis.restart();
    a.wait_health("ok", CONNECT_LIMIT);
    b.wait_health("ok", CONNECT_LIMIT);
    let deadline = Instant::now() + WAIT;
    let mut rewelcome = None;
    while rewelcome.is_none() && Instant::now() < deadline {
        sender.send_text("after");
        let until = Instant::now() + Duration::from_millis(500);
        while let Some((_, payload)) = on_a.next_data_before(until) {
            let v: Value = serde_json::from_slice(&payload).unwrap();
            if v["type"] == "welcome" && v["epoch"] != old_epoch.as_str() {
                rewelcome = Some(v);
                break;
            }
        }
    }
    let rewelcome = rewelcome.expect("a new welcome under a new epoch");
    assert_eq!(rewelcome["recovered"], false);
    // A client that comes back with the old position is told so too.
    let path = format!("/room/f?since={old_epoch}:1");
    let mut back = RawClient::connect_with_headers(b.addr(), &path, &[V1]);
    let w: Value = serde_json::from_str(&back.next_text(WAIT)).unwrap();
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["recovered"], false);
    assert_ne!(w["epoch"], old_epoch.as_str());
}

#[test]
fn a_client_recovers_on_another_instance_from_redis() {
    let Some(exe) = redis_or_skip("a_client_recovers_on_another_instance_from_redis") else {
        return;
    };
    let redis = Redis::start(&exe);
    let a = redis.instance(CONNECT_LIMIT);
    let b = redis.instance(CONNECT_LIMIT);
    let mut on_a = RawClient::connect_with_headers(a.addr(), "/room/x", &[V1]);
    let welcome: Value = serde_json::from_str(&on_a.next_text(WAIT)).unwrap();
    let epoch = welcome["epoch"].as_str().unwrap().to_string();
    let mut sender = RawClient::connect(a.addr(), "/room/x");
    sender.send_text("m1");
    assert_eq!(next_message(&mut on_a)["offset"], 1);
    drop(on_a);
    for text in ["m2", "m3", "m4"] {
        sender.send_text(text);
        sender.next_text(WAIT);
    }
    // Instance b has never had this room: what followed 1 comes from Redis.
    let mut on_b =
        RawClient::connect_with_headers(b.addr(), &format!("/room/x?since={epoch}:1"), &[V1]);
    let w: Value = serde_json::from_str(&on_b.next_text(WAIT)).unwrap();
    assert_eq!(
        (w["epoch"].as_str(), w["recovered"].as_bool()),
        (Some(epoch.as_str()), Some(true)),
        "{w}"
    );
    let texts: Vec<String> = (0..3)
        .map(|_| {
            next_message(&mut on_b)["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts, ["m2", "m3", "m4"]);
    sender.send_text("m5");
    assert_eq!(next_message(&mut on_b)["offset"], 5, "then live, no gap");
    // A newcomer on b without a position gets the recent history from Redis.
    let mut newcomer = RawClient::connect_with_headers(b.addr(), "/room/x", &[V1]);
    let w: Value = serde_json::from_str(&newcomer.next_text(WAIT)).unwrap();
    assert_eq!(w["offset"], 5);
    assert_eq!(next_message(&mut newcomer)["offset"], 1);
}

fn next_message(client: &mut RawClient) -> Value {
    loop {
        let v: Value = serde_json::from_str(&client.next_text(WAIT)).unwrap();
        if v["type"] == "message" {
            return v;
        }
    }
}

#[test]
fn sse_streams_and_pollers_recover_on_another_instance_from_redis() {
    let Some(exe) = redis_or_skip("sse_streams_and_pollers_recover_on_another_instance_from_redis")
    else {
        return;
    };
    let redis = Redis::start(&exe);
    let a = redis.instance(CONNECT_LIMIT);
    let b = redis.instance(CONNECT_LIMIT);
    let mut sender = RawClient::connect(a.addr(), "/room/t");
    let mut on_a = RawClient::connect_with_headers(a.addr(), "/room/t", &[V1]);
    let welcome: Value = serde_json::from_str(&on_a.next_text(WAIT)).unwrap();
    let epoch = welcome["epoch"].as_str().unwrap().to_string();
    for text in ["m1", "m2", "m3"] {
        sender.send_text(text);
        sender.next_text(WAIT);
    }
    // Instance b has never had the room: a first poll's history is Redis's.
    let last = format!("{epoch}:1");
    let http = agent();
    let first = poll(
        &http,
        b.addr(),
        "t",
        &format!("since={last}&timeout=0"),
        None,
    );
    assert_eq!(first.json["recovered"], true, "{}", first.text);
    let offsets: Vec<u64> = first.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "message")
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3]);
    assert_eq!(first.json["next"], format!("{epoch}:3"));
    // An SSE stream on b, from the same position.
    let mut sse = Sse::open(b.addr(), "/room/t/events", &[("Last-Event-ID", &last)]);
    let (_, w) = sse.next_json();
    assert_eq!(
        (w["epoch"].as_str(), w["recovered"].as_bool()),
        (Some(epoch.as_str()), Some(true)),
        "{w}"
    );
    let texts: Vec<String> = (0..2)
        .map(|_| sse.next_message().1["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["m2", "m3"]);
    // Then live, through Redis, to both.
    let session = first.json["session"].as_str().unwrap().to_string();
    let on_b = b.addr();
    // The stream's arrival is news to the poller.
    let query = format!("since={epoch}:3&timeout=0");
    let news = poll(&http, on_b, "t", &query, Some(&session));
    assert_eq!(news.json["messages"][0]["type"], "join", "{}", news.text);
    let held = thread::spawn(move || {
        let query = format!("since={epoch}:3&timeout=10");
        poll(&agent(), on_b, "t", &query, Some(&session))
    });
    thread::sleep(Duration::from_millis(200));
    sender.send_text("m4");
    assert_eq!(sse.next_message().1["offset"], 4);
    let answer = held.join().unwrap();
    assert_eq!(answer.json["messages"][0]["text"], "m4", "{}", answer.text);
}
