//! Cluster mode, with a real `redis-server` and real `wschat` processes.
//!
//! Each test starts its own Redis on a free loopback port (no persistence)
//! and two or three `wschat --redis …` processes, all killed on drop. Tests
//! that need Redis print why they are skipped when `redis-server` is not
//! installed, unless `WSCHAT_REQUIRE_REDIS` is set (CI sets it).

mod cluster_support;

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cluster_support::*;

/// Longest wait for an instance to (re)connect to Redis.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// Starts `n` instances on `redis` with `extra` flags, all connected.
fn cluster(redis: &Redis, n: usize, extra: &[&str]) -> Vec<Instance> {
    let url = redis.url();
    let instances: Vec<Instance> = (0..n)
        .map(|_| {
            let mut args = vec!["--redis", url.as_str()];
            args.extend_from_slice(extra);
            Instance::start(&args)
        })
        .collect();
    for instance in &instances {
        wait_health(instance, "ok", CONNECT_LIMIT);
    }
    instances
}

/// Reads `count` text messages within `limit`.
fn read_texts(client: &mut Client, count: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        match client.next_before(deadline) {
            Some((TEXT, payload)) => got.push(String::from_utf8(payload).unwrap()),
            Some((op, _)) => panic!("unexpected opcode {op}"),
            None => panic!(
                "{} of {count} messages within {limit:?}; last: {:?}",
                got.len(),
                got.last()
            ),
        }
    }
    got
}

#[test]
fn without_redis_nothing_changes() {
    let server = Instance::try_start(&[], "debug").unwrap();
    let mut a = Client::connect(server.addr(), "/");
    let mut b = Client::connect(server.addr(), "/");
    let _other = Client::connect(server.addr(), "/room/side");
    assert_eq!(a.hello("one"), 1, "ids are 1, 2, 3, … without Redis");
    assert_eq!(sender_of(&b.expect_text(IO_TIMEOUT), "one"), 1);
    assert_eq!(b.hello("two"), 2);
    assert_eq!(health(server.addr()), "ok");
    let (_, page) = get(server.addr(), "/metrics");
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
    let first = Instance::start(&args);
    let port = first.addr().to_string();
    let args = with_redis(&["--reuse-port", "--listen", &port]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = Instance::start(&args);
    assert_eq!(second.addr(), first.addr());
    // Without the flag, the port is taken.
    let refused = Instance::try_start(&["--listen", &port], "info");
    let err = refused
        .err()
        .expect("a third instance without --reuse-port bound the port");
    assert!(err.to_lowercase().contains("in use"), "{err}");

    if redis.is_none() {
        redis_or_skip("reuse_port_lets_two_instances_bind_one_port (cross-instance half)");
        return;
    }
    wait_health(&first, "ok", CONNECT_LIMIT);
    wait_health(&second, "ok", CONNECT_LIMIT);
    // The kernel spreads connections over both listeners; each instance
    // takes ids from its own block, so two blocks show two instances.
    let mut clients: Vec<Client> = (0..20)
        .map(|_| Client::connect(first.addr(), "/room/shared"))
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
    let mut clients: Vec<Client> = instances
        .iter()
        .flat_map(|i| (0..PER_INSTANCE).map(|_| Client::connect(i.addr(), "/room/order")))
        .collect();
    // A lobby member on each instance hears nothing of the room.
    let mut lobby: Vec<Client> = instances
        .iter()
        .map(|i| Client::connect(i.addr(), "/"))
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
    let results: Vec<(Client, Vec<String>)> =
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
    let mut clients: Vec<Client> = results.into_iter().map(|(c, _)| c).collect();
    let bytes: Vec<u8> = (0..=255).collect();
    clients[0].send_binary(&bytes);
    for client in &mut clients {
        let (op, payload) = client
            .next_before(Instant::now() + IO_TIMEOUT)
            .expect("the binary message");
        assert_eq!(op, BINARY);
        let colon = payload.iter().position(|&b| b == b':').unwrap();
        assert!(payload.starts_with(b"from"));
        assert_eq!(&payload[colon + 1..], &bytes[..]);
    }
    for client in &mut lobby {
        client.expect_silence(Duration::from_millis(300));
    }
    for instance in &instances {
        let received = metric(instance.addr(), "wschat_cluster_received_total").unwrap();
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
    let clients: Vec<Client> = (0..INSTANCES * CLIENTS)
        .map(|c| Client::connect(instances[c % INSTANCES].addr(), "/room/big"))
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
                        let Some((_, payload)) = client.next_before(deadline) else {
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
            metric(addr, "wschat_cluster_publish_dropped_total"),
            Some(0.0)
        );
        assert_eq!(metric(addr, "wschat_redis_malformed_total"), Some(0.0));
        assert_eq!(
            metric(addr, "wschat_cluster_received_total"),
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
    let mut a1 = Client::connect(a.addr(), "/");
    let mut a2 = Client::connect(a.addr(), "/");
    let mut b1 = Client::connect(b.addr(), "/");
    let id_a1 = a1.hello("before");
    for c in [&mut a2, &mut b1] {
        assert_eq!(sender_of(&c.expect_text(IO_TIMEOUT), "before"), id_a1);
    }

    redis.kill();
    wait_health(a, "degraded", Duration::from_secs(15));
    wait_health(b, "degraded", Duration::from_secs(15));
    assert_eq!(metric(a.addr(), "wschat_redis_up"), Some(0.0));
    // Local chat goes on; the other instance does not hear it.
    assert_eq!(a1.hello("during"), id_a1);
    assert_eq!(sender_of(&a2.expect_text(IO_TIMEOUT), "during"), id_a1);
    b1.expect_silence(Duration::from_millis(500));
    // Several reconnect attempts later, the outage is still logged once.
    std::thread::sleep(Duration::from_secs(3));
    for instance in [a, b] {
        let warnings = instance.log_lines_with("unreachable");
        assert_eq!(warnings.len(), 1, "{:#?}", instance.log());
    }

    redis.restart();
    wait_health(a, "ok", CONNECT_LIMIT);
    wait_health(b, "ok", CONNECT_LIMIT);
    assert_eq!(metric(b.addr(), "wschat_redis_up"), Some(1.0));
    let id_b1 = b1.hello("after");
    for c in [&mut a1, &mut a2] {
        assert_eq!(sender_of(&c.expect_text(IO_TIMEOUT), "after"), id_b1);
    }
    // New connections after the restart still get ids never seen before.
    let mut a3 = Client::connect(a.addr(), "/");
    let id_a3 = a3.hello("new");
    assert!(![id_a1, id_b1].contains(&id_a3));
    for instance in [a, b] {
        assert_eq!(instance.log_lines_with("unreachable").len(), 1);
        assert!(!instance
            .log_lines_with("connected; room messages go through Redis")
            .is_empty());
        assert_eq!(
            metric(instance.addr(), "wschat_redis_outages_total"),
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
    let a = Instance::start(&["--redis", &url]);
    wait_health(&a, "degraded", Duration::from_secs(10));
    let mut a1 = Client::connect(a.addr(), "/");
    let mut a2 = Client::connect(a.addr(), "/");
    let fallback_id = a1.hello("alone");
    assert!(
        fallback_id > 1 << 52,
        "without Redis, ids come from the local range: {fallback_id}"
    );
    assert_eq!(sender_of(&a2.expect_text(IO_TIMEOUT), "alone"), fallback_id);

    let _redis = Redis::start_on(&exe, port);
    wait_health(&a, "ok", CONNECT_LIMIT);
    let b = Instance::start(&["--redis", &url]);
    wait_health(&b, "ok", CONNECT_LIMIT);
    let mut b1 = Client::connect(b.addr(), "/");
    let id_b1 = b1.hello("joined");
    assert!(id_b1 < 1 << 52, "ids from Redis: {id_b1}");
    for c in [&mut a1, &mut a2] {
        assert_eq!(sender_of(&c.expect_text(IO_TIMEOUT), "joined"), id_b1);
    }
    let mut a3 = Client::connect(a.addr(), "/");
    let id_a3 = a3.hello("from-a");
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
    let mut client = Client::connect(addr, "/");
    let publish = |channel: &str, message: &[u8]| {
        let reply = redis.command(&[b"PUBLISH", channel.as_bytes(), message]);
        assert_eq!(reply, b":1\r\n", "one subscriber");
    };
    publish("wschat:room:lobby", b"plain text, not our format");
    publish("wschat:room:lobby", b"\x11\x07\xff\xfe not UTF-8");
    publish("wschat:room:lobby", b"\x11\x80");
    publish("wschat:room:bad/name", b"\x11\x07hello");
    let mut oversize = vec![0x12, 0x07];
    oversize.extend([b'x'; 101]);
    publish("wschat:room:lobby", &oversize);
    let mut fits = vec![0x12, 0x07];
    fits.extend([b'x'; 100]);
    publish("wschat:room:lobby", &fits);
    publish("wschat:room:lobby", b"\x11\x2ahello");
    // Only the two good messages arrive, in order.
    let (op, payload) = client.next_before(Instant::now() + IO_TIMEOUT).unwrap();
    assert_eq!(op, BINARY);
    assert_eq!(payload, [b"from7:".as_slice(), &[b'x'; 100]].concat());
    assert_eq!(client.expect_text(IO_TIMEOUT), "from42:hello");
    assert_eq!(metric(addr, "wschat_redis_malformed_total"), Some(4.0));
    assert_eq!(metric(addr, "wschat_redis_oversize_total"), Some(1.0));
    assert_eq!(metric(addr, "wschat_cluster_received_total"), Some(2.0));
    assert!(instances[0].is_running());
    assert_eq!(health(addr), "ok");
    // And local chat still goes through Redis.
    let id = client.hello("still here");
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
    let mut a1 = Client::connect(a.addr(), "/");
    let mut a2 = Client::connect(a.addr(), "/");
    let id = a1.hello("first");
    assert_eq!(sender_of(&a2.expect_text(IO_TIMEOUT), "first"), id);

    redis.signal("STOP");
    // Published, never answered: after the reply timeout the instance gives
    // the link up and delivers locally.
    a1.send_text("into the void");
    wait_health(a, "degraded", Duration::from_secs(15));
    let stalled = Instant::now();
    a1.send_text("local");
    for c in [&mut a1, &mut a2] {
        assert_eq!(sender_of(&c.expect_text(IO_TIMEOUT), "local"), id);
    }
    assert!(
        stalled.elapsed() < Duration::from_secs(5),
        "local delivery waited {:?}",
        stalled.elapsed()
    );
    assert!(metric(a.addr(), "wschat_cluster_publish_lost_total").unwrap() >= 1.0);

    redis.signal("CONT");
    wait_health(a, "ok", CONNECT_LIMIT);
    a1.send_text("back");
    // Redis may still run the PUBLISH it had buffered from the given-up
    // link (it reaches whoever is subscribed by then); nothing else comes.
    for c in [&mut a1, &mut a2] {
        let mut next = c.expect_text(IO_TIMEOUT);
        if next.ends_with(":into the void") {
            next = c.expect_text(IO_TIMEOUT);
        }
        assert_eq!(sender_of(&next, "back"), id);
    }
}
