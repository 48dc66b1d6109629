//! Cluster mode, with a real `redis-server` and real `wschat` processes.
//!
//! Each test starts its own Redis on a free loopback port (no persistence)
//! and two or three `wschat --redis …` processes, all killed on drop. Tests
//! that need Redis print why they are skipped when `redis-server` is not
//! installed, unless `WSCHAT_REQUIRE_REDIS` is set (CI sets it).

mod support;

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::{
    free_port, health, op, redis_or_skip, redis_server_path, Daemon, Metrics, RawClient, Redis,
};

/// Longest wait for an instance to (re)connect to Redis.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);
/// Longest wait for one message to reach a client. Longer than
/// `support::IO_TIMEOUT`: a message goes through Redis and back, and the
/// tests run up to three debug-build instances and `redis-server` at once.
const DELIVERY_LIMIT: Duration = Duration::from_secs(10);

/// Starts `n` instances on `redis` with `extra` flags, all connected.
fn cluster(redis: &Redis, n: usize, extra: &[&str]) -> Vec<Daemon> {
    let url = redis.url();
    let instances: Vec<Daemon> = (0..n)
        .map(|_| {
            let mut args = vec!["--redis", url.as_str()];
            args.extend_from_slice(extra);
            Daemon::start(&args)
        })
        .collect();
    for instance in &instances {
        instance.wait_health("ok", CONNECT_LIMIT);
    }
    instances
}

/// Reads `count` text messages within `limit`.
fn read_texts(client: &mut RawClient, count: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        match client.next_data_before(deadline) {
            Some((op::TEXT, payload)) => got.push(String::from_utf8(payload).unwrap()),
            Some((opcode, _)) => panic!("unexpected opcode {opcode}"),
            None => panic!(
                "{} of {count} messages within {limit:?}; last: {:?}",
                got.len(),
                got.last()
            ),
        }
    }
    got
}

/// The id in `from{id}:{text}`, checking the text.
fn sender_of(message: &str, text: &str) -> u64 {
    let (from, rest) = message
        .split_once(':')
        .unwrap_or_else(|| panic!("no ':' in {message:?}"));
    assert_eq!(rest, text, "in {message:?}");
    from.strip_prefix("from")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no from{{id}} in {message:?}"))
}

/// Sends `text` and reads its echo `from{id}:{text}` (the next message
/// must be it); returns the id.
fn hello(client: &mut RawClient, text: &str) -> u64 {
    client.send_text(text);
    sender_of(&client.next_text(DELIVERY_LIMIT), text)
}

#[test]
fn without_redis_nothing_changes() {
    let server = Daemon::try_start(&[], "debug").unwrap();
    let mut a = RawClient::connect(server.addr(), "/");
    let mut b = RawClient::connect(server.addr(), "/");
    let _other = RawClient::connect(server.addr(), "/room/side");
    assert_eq!(hello(&mut a, "one"), 1, "ids are 1, 2, 3, … without Redis");
    assert_eq!(sender_of(&b.next_text(DELIVERY_LIMIT), "one"), 1);
    assert_eq!(hello(&mut b, "two"), 2);
    assert_eq!(health(server.addr()), "ok");
    let page = Metrics::fetch(server.addr()).text;
    assert!(
        page.contains("wschat_room_connections{room=\"lobby\"} 2\n"),
        "{page}"
    );
    assert!(
        page.contains("wschat_room_connections{room=\"side\"} 1\n"),
        "{page}"
    );
    assert!(!page.contains("redis"), "{page}");
    assert!(!page.contains("wschat_cluster"), "{page}");
    let log = server.log().join("\n");
    assert!(!log.to_lowercase().contains("redis"), "{log}");
}

#[test]
fn reuse_port_lets_two_instances_bind_one_port() {
    let redis = redis_server_path().map(|exe| Redis::start(&exe));
    let url = redis.as_ref().map(Redis::url);
    let with_redis = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(url) = &url {
            all.extend(["--redis".to_string(), url.clone()]);
        }
        all
    };
    let args = with_redis(&["--reuse-port"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = Daemon::start(&args);
    let port = first.addr().to_string();
    let args = with_redis(&["--reuse-port", "--listen", &port]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = Daemon::start(&args);
    assert_eq!(second.addr(), first.addr());
    // Without the flag, the port is taken.
    let refused = Daemon::try_start(&["--listen", &port], "info");
    let err = refused
        .err()
        .expect("a third instance without --reuse-port bound the port");
    assert!(err.to_lowercase().contains("in use"), "{err}");

    if redis.is_none() {
        redis_or_skip("reuse_port_lets_two_instances_bind_one_port (cross-instance half)");
        return;
    }
    first.wait_health("ok", CONNECT_LIMIT);
    second.wait_health("ok", CONNECT_LIMIT);
    // The kernel spreads connections over both listeners; each instance
    // takes ids from its own block, so two blocks show two instances.
    let mut clients: Vec<RawClient> = (0..20)
        .map(|_| RawClient::connect(first.addr(), "/room/shared"))
        .collect();
    let mut ids = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send_text(&format!("hi{i}"));
    }
    for client in &mut clients {
        let got = read_texts(client, 20, Duration::from_secs(20));
        ids = got
            .iter()
            .map(|m| m.split(':').next().unwrap().to_string())
            .collect();
    }
    let blocks: HashSet<u64> = ids
        .iter()
        .map(|id| (id.trim_start_matches("from").parse::<u64>().unwrap() - 1) / 1000)
        .collect();
    assert!(
        blocks.len() >= 2,
        "all 20 connections went to one instance? ids {ids:?}"
    );
}

#[test]
fn clients_on_different_instances_see_one_order() {
    let Some(exe) = redis_or_skip("clients_on_different_instances_see_one_order") else {
        return;
    };
    let redis = Redis::start(&exe);
    let instances = cluster(&redis, 3, &[]);
    const PER_INSTANCE: usize = 3;
    const MESSAGES: usize = 20;
    let mut clients: Vec<RawClient> = instances
        .iter()
        .flat_map(|i| (0..PER_INSTANCE).map(|_| RawClient::connect(i.addr(), "/room/order")))
        .collect();
    // A lobby member on each instance hears nothing of the room.
    let mut lobby: Vec<RawClient> = instances
        .iter()
        .map(|i| RawClient::connect(i.addr(), "/"))
        .collect();
    let total = clients.len() * MESSAGES;
    let barrier = Arc::new(Barrier::new(clients.len()));
    let threads: Vec<_> = clients
        .drain(..)
        .enumerate()
        .map(|(c, mut client)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for m in 0..MESSAGES {
                    client.send_text(&format!("c{c}-m{m}"));
                }
                let got = read_texts(&mut client, total, Duration::from_secs(30));
                (client, got)
            })
        })
        .collect();
    let results: Vec<(RawClient, Vec<String>)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let first = &results[0].1;
    for (c, (_, got)) in results.iter().enumerate() {
        assert_eq!(got, first, "client {c} saw another order");
    }
    // Each sender's messages in the order sent, none twice.
    let distinct: HashSet<&str> = first.iter().map(|m| m.split_once(':').unwrap().1).collect();
    assert_eq!(distinct.len(), total);
    for c in 0..PER_INSTANCE * instances.len() {
        let seq: Vec<&str> = first
            .iter()
            .map(|m| m.split_once(':').unwrap().1)
            .filter(|m| m.starts_with(&format!("c{c}-")))
            .collect();
        let want: Vec<String> = (0..MESSAGES).map(|m| format!("c{c}-m{m}")).collect();
        assert_eq!(seq, want);
    }
    // Binary messages cross instances unchanged.
    let mut clients: Vec<RawClient> = results.into_iter().map(|(c, _)| c).collect();
    let bytes: Vec<u8> = (0..=255).collect();
    clients[0].send_binary(&bytes);
    for client in &mut clients {
        let (opcode, payload) = client
            .next_data_before(Instant::now() + DELIVERY_LIMIT)
            .expect("the binary message");
        assert_eq!(opcode, op::BINARY);
        let colon = payload.iter().position(|&b| b == b':').unwrap();
        assert!(payload.starts_with(b"from"));
        assert_eq!(&payload[colon + 1..], &bytes[..]);
    }
    for client in &mut lobby {
        client.expect_no_message_within(Duration::from_millis(300));
    }
    for instance in &instances {
        let received = Metrics::fetch(instance.addr())
            .get("wschat_cluster_received_total")
            .unwrap();
        assert_eq!(
            received as usize,
            total + 1,
            "every instance hears every message"
        );
    }
}

#[test]
fn three_instances_hundred_clients_fifty_messages_nothing_lost() {
    let Some(exe) = redis_or_skip("three_instances_hundred_clients_fifty_messages_nothing_lost")
    else {
        return;
    };
    const INSTANCES: usize = 3;
    const CLIENTS: usize = 100;
    const MESSAGES: usize = 50;
    const TOTAL: usize = INSTANCES * CLIENTS * MESSAGES;
    let redis = Redis::start(&exe);
    let instances = cluster(&redis, INSTANCES, &[]);
    let started = Instant::now();
    let clients: Vec<RawClient> = (0..INSTANCES * CLIENTS)
        .map(|c| RawClient::connect(instances[c % INSTANCES].addr(), "/room/big"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let barrier = Arc::new(Barrier::new(clients.len()));
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let barrier = barrier.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    for m in 0..MESSAGES {
                        client.send_text(&format!("c{c}-m{m}"));
                    }
                    // Count, check each sender's order, and hash the whole
                    // sequence: equal hashes mean one order for everyone.
                    let mut next = vec![0usize; INSTANCES * CLIENTS];
                    let mut hasher = DefaultHasher::new();
                    let mut count = 0;
                    while count < TOTAL {
                        let Some((_, payload)) = client.next_data_before(deadline) else {
                            return Err(format!("client {c}: {count} of {TOTAL} messages"));
                        };
                        let text = std::str::from_utf8(&payload).unwrap();
                        let body = text.split_once(':').unwrap().1;
                        let (sender, seq) = body[1..].split_once("-m").unwrap();
                        let (sender, seq): (usize, usize) =
                            (sender.parse().unwrap(), seq.parse().unwrap());
                        if next[sender] != seq {
                            return Err(format!(
                                "client {c}: from c{sender} got m{seq}, expected m{}",
                                next[sender]
                            ));
                        }
                        next[sender] += 1;
                        text.hash(&mut hasher);
                        count += 1;
                    }
                    Ok(hasher.finish())
                })
                .unwrap()
        })
        .collect();
    let hashes: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert!(
        hashes.iter().all(|&h| h == hashes[0]),
        "clients saw different orders"
    );
    eprintln!(
        "{} clients received {TOTAL} messages each in {:?}",
        hashes.len(),
        started.elapsed()
    );
    for instance in &instances {
        let addr = instance.addr();
        assert_eq!(
            Metrics::fetch(addr).get("wschat_cluster_publish_dropped_total"),
            Some(0.0)
        );
        assert_eq!(
            Metrics::fetch(addr).get("wschat_redis_malformed_total"),
            Some(0.0)
        );
        assert_eq!(
            Metrics::fetch(addr).get("wschat_cluster_received_total"),
            Some(TOTAL as f64)
        );
    }
}

#[test]
fn killing_redis_keeps_local_chat_and_restarting_it_restores_the_cluster() {
    let Some(exe) =
        redis_or_skip("killing_redis_keeps_local_chat_and_restarting_it_restores_the_cluster")
    else {
        return;
    };
    let mut redis = Redis::start(&exe);
    let instances = cluster(&redis, 2, &[]);
    let (a, b) = (&instances[0], &instances[1]);
    let mut a1 = RawClient::connect(a.addr(), "/");
    let mut a2 = RawClient::connect(a.addr(), "/");
    let mut b1 = RawClient::connect(b.addr(), "/");
    let id_a1 = hello(&mut a1, "before");
    for c in [&mut a2, &mut b1] {
        assert_eq!(sender_of(&c.next_text(DELIVERY_LIMIT), "before"), id_a1);
    }

    redis.kill();
    a.wait_health("degraded", Duration::from_secs(15));
    b.wait_health("degraded", Duration::from_secs(15));
    assert_eq!(Metrics::fetch(a.addr()).get("wschat_redis_up"), Some(0.0));
    // Local chat goes on; the other instance does not hear it.
    assert_eq!(hello(&mut a1, "during"), id_a1);
    assert_eq!(sender_of(&a2.next_text(DELIVERY_LIMIT), "during"), id_a1);
    b1.expect_no_message_within(Duration::from_millis(500));
    // Several reconnect attempts later, the outage is still logged once.
    std::thread::sleep(Duration::from_secs(3));
    for instance in [a, b] {
        let warnings = instance.log_lines_with("unreachable");
        assert_eq!(warnings.len(), 1, "{:#?}", instance.log());
    }

    redis.restart();
    a.wait_health("ok", CONNECT_LIMIT);
    b.wait_health("ok", CONNECT_LIMIT);
    assert_eq!(Metrics::fetch(b.addr()).get("wschat_redis_up"), Some(1.0));
    let id_b1 = hello(&mut b1, "after");
    for c in [&mut a1, &mut a2] {
        assert_eq!(sender_of(&c.next_text(DELIVERY_LIMIT), "after"), id_b1);
    }
    // New connections after the restart still get ids never seen before.
    let mut a3 = RawClient::connect(a.addr(), "/");
    let id_a3 = hello(&mut a3, "new");
    assert!(![id_a1, id_b1].contains(&id_a3));
    for instance in [a, b] {
        assert_eq!(instance.log_lines_with("unreachable").len(), 1);
        assert!(!instance
            .log_lines_with("connected; room messages go through Redis")
            .is_empty());
        assert_eq!(
            Metrics::fetch(instance.addr()).get("wschat_redis_outages_total"),
            Some(1.0)
        );
    }
}

#[test]
fn redis_down_at_start_serves_locally_then_joins_the_cluster() {
    let Some(exe) = redis_or_skip("redis_down_at_start_serves_locally_then_joins_the_cluster")
    else {
        return;
    };
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let a = Daemon::start(&["--redis", &url]);
    a.wait_health("degraded", Duration::from_secs(10));
    let mut a1 = RawClient::connect(a.addr(), "/");
    let mut a2 = RawClient::connect(a.addr(), "/");
    let fallback_id = hello(&mut a1, "alone");
    assert!(
        fallback_id > 1 << 52,
        "without Redis, ids come from the local range: {fallback_id}"
    );
    assert_eq!(
        sender_of(&a2.next_text(DELIVERY_LIMIT), "alone"),
        fallback_id
    );

    let _redis = Redis::start_on(&exe, port);
    a.wait_health("ok", CONNECT_LIMIT);
    let b = Daemon::start(&["--redis", &url]);
    b.wait_health("ok", CONNECT_LIMIT);
    let mut b1 = RawClient::connect(b.addr(), "/");
    let id_b1 = hello(&mut b1, "joined");
    assert!(id_b1 < 1 << 52, "ids from Redis: {id_b1}");
    for c in [&mut a1, &mut a2] {
        assert_eq!(sender_of(&c.next_text(DELIVERY_LIMIT), "joined"), id_b1);
    }
    let mut a3 = RawClient::connect(a.addr(), "/");
    let id_a3 = hello(&mut a3, "from-a");
    assert!(id_a3 < 1 << 52 && id_a3 != id_b1, "{id_a3} vs {id_b1}");
    assert_eq!(a.log_lines_with("unreachable").len(), 1, "{:#?}", a.log());
}

#[test]
fn malformed_and_oversize_messages_from_redis_are_dropped_and_counted() {
    let Some(exe) =
        redis_or_skip("malformed_and_oversize_messages_from_redis_are_dropped_and_counted")
    else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut instances = cluster(&redis, 1, &["--max-message-size", "100"]);
    let addr = instances[0].addr();
    let mut client = RawClient::connect(addr, "/");
    let publish = |channel: &str, message: &[u8]| {
        let reply = redis.command(&[b"PUBLISH", channel.as_bytes(), message]);
        assert_eq!(reply, b":1\r\n", "one subscriber");
    };
    // The channel format (src/server/cluster/message.rs): kind, sender,
    // time, offset, epoch length and epoch, payload. Each message its own
    // offset, as Redis numbers them (an offset a client has is not sent
    // to it again).
    let offsets = std::cell::Cell::new(0u8);
    let message = |kind: u8, sender: u8, payload: &[u8]| {
        offsets.set(offsets.get() + 1);
        [
            &[kind, sender, 0x01, offsets.get(), 0x02, b'e', b'1'][..],
            payload,
        ]
        .concat()
    };
    publish("wschat:room:lobby", b"plain text, not our format");
    publish(
        "wschat:room:lobby",
        &message(0x21, 0x07, b"\xff\xfe not UTF-8"),
    );
    publish("wschat:room:lobby", b"\x21\x80");
    publish("wschat:room:bad/name", &message(0x21, 0x07, b"hello"));
    publish("wschat:room:lobby", &message(0x22, 0x07, &[b'x'; 101]));
    publish("wschat:room:lobby", &message(0x22, 0x07, &[b'x'; 100]));
    publish("wschat:room:lobby", &message(0x21, 0x2a, b"hello"));
    // Only the two good messages arrive, in order.
    let (opcode, payload) = client
        .next_data_before(Instant::now() + DELIVERY_LIMIT)
        .unwrap();
    assert_eq!(opcode, op::BINARY);
    assert_eq!(payload, [b"from7:".as_slice(), &[b'x'; 100]].concat());
    assert_eq!(client.next_text(DELIVERY_LIMIT), "from42:hello");
    assert_eq!(
        Metrics::fetch(addr).get("wschat_redis_malformed_total"),
        Some(4.0)
    );
    assert_eq!(
        Metrics::fetch(addr).get("wschat_redis_oversize_total"),
        Some(1.0)
    );
    assert_eq!(
        Metrics::fetch(addr).get("wschat_cluster_received_total"),
        Some(2.0)
    );
    instances[0].assert_alive();
    assert_eq!(health(addr), "ok");
    // And local chat still goes through Redis.
    let id = hello(&mut client, "still here");
    assert!(id < 1 << 52);
}

#[test]
fn a_stuck_redis_does_not_stall_local_clients() {
    let Some(exe) = redis_or_skip("a_stuck_redis_does_not_stall_local_clients") else {
        return;
    };
    let redis = Redis::start(&exe);
    let instances = cluster(&redis, 1, &[]);
    let a = &instances[0];
    let mut a1 = RawClient::connect(a.addr(), "/");
    let mut a2 = RawClient::connect(a.addr(), "/");
    let id = hello(&mut a1, "first");
    assert_eq!(sender_of(&a2.next_text(DELIVERY_LIMIT), "first"), id);

    redis.signal("STOP");
    // Published, never answered: after the reply timeout the instance gives
    // the link up and delivers locally.
    a1.send_text("into the void");
    a.wait_health("degraded", Duration::from_secs(15));
    let stalled = Instant::now();
    a1.send_text("local");
    for c in [&mut a1, &mut a2] {
        assert_eq!(sender_of(&c.next_text(DELIVERY_LIMIT), "local"), id);
    }
    assert!(
        stalled.elapsed() < Duration::from_secs(5),
        "local delivery waited {:?}",
        stalled.elapsed()
    );
    assert!(
        Metrics::fetch(a.addr())
            .get("wschat_cluster_publish_lost_total")
            .unwrap()
            >= 1.0
    );

    redis.signal("CONT");
    a.wait_health("ok", CONNECT_LIMIT);
    a1.send_text("back");
    // Redis may still run the PUBLISH it had buffered from the given-up
    // link (it reaches whoever is subscribed by then); nothing else comes.
    for c in [&mut a1, &mut a2] {
        let mut next = c.next_text(DELIVERY_LIMIT);
        if next.ends_with(":into the void") {
            next = c.next_text(DELIVERY_LIMIT);
        }
        assert_eq!(sender_of(&next, "back"), id);
    }
}
