//! Room history in Redis, against a real `redis-server`: relays driven
//! from a small mio loop here, through the library's public API.
//!
//! Each test starts its own Redis on a free loopback port (no persistence)
//! and one or two [`Relay`]s on one `Poll`. Skipped, with a line saying
//! why, when `redis-server` is not installed, unless
//! `WSCHAT_REQUIRE_REDIS` is set.

mod support;

use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use support::{redis_or_skip, Daemon, RawClient, Redis};
use wschat::protocol::OpCode;
use wschat::server::relay::{Fetch, FetchId, Fetched, FetchedHistory, Relay, Route};
use wschat::server::timer::Clock;
use wschat::Config;

/// Longest wait for anything from Redis.
const LIMIT: Duration = Duration::from_secs(10);

/// A message as one relay delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    room: String,
    sender: u64,
    payload: Vec<u8>,
    epoch: String,
    offset: u64,
    time_ms: u64,
}

/// One instance's relay and what it delivered and fetched.
struct Node {
    relay: Relay,
    seen: Vec<Seen>,
    fetched: Vec<Fetched>,
}

/// Relays on one poll, as reactors would drive them.
struct Cluster {
    poll: Poll,
    events: Events,
    clock: Clock,
    nodes: Vec<Node>,
}

impl Cluster {
    /// `n` relays on `redis`, with `history_size` and `history_ttl`, both
    /// links of each ready.
    fn start(redis: &Redis, n: usize, history_size: usize, history_ttl: Duration) -> Cluster {
        let poll = Poll::new().unwrap();
        let clock = Clock::new();
        let config = Config {
            redis: Some(redis.url().parse().unwrap()),
            history_size,
            history_ttl,
            ..Config::default()
        }
        .validate()
        .unwrap();
        let nodes = (0..n)
            .map(|i| {
                let tokens = [Token(2 * i), Token(2 * i + 1)];
                let relay = Relay::start(&config, poll.registry(), tokens, clock.now()).unwrap();
                Node {
                    relay,
                    seen: Vec::new(),
                    fetched: Vec::new(),
                }
            })
            .collect();
        let mut cluster = Cluster {
            poll,
            events: Events::with_capacity(64),
            clock,
            nodes,
        };
        cluster.until("both links of every relay are ready", |c| {
            c.nodes.iter().all(|n| n.relay.health() == "ok")
        });
        for node in &mut cluster.nodes {
            assert!(node.relay.take_reconnected(), "told that it is up");
        }
        cluster
    }

    /// One turn of the loop.
    fn turn(&mut self) {
        let timeout = self
            .nodes
            .iter()
            .filter_map(|n| n.relay.poll_timeout())
            .min()
            .map(|at| self.clock.until(at).min(Duration::from_millis(20)));
        self.poll
            .poll(
                &mut self.events,
                timeout.or(Some(Duration::from_millis(20))),
            )
            .unwrap();
        let now = self.clock.tick();
        for node in &mut self.nodes {
            for event in self.events.iter() {
                node.relay.handle_event(event, now);
                node.take();
            }
            node.relay.handle_timeout(now);
            node.take();
        }
    }

    /// Turns until `done`, for at most [`LIMIT`].
    fn until(&mut self, what: &str, done: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !done(self) {
            assert!(Instant::now() < deadline, "gave up waiting until {what}");
            self.turn();
        }
    }

    /// Publishes a text message from node `i`; Redis must take it.
    fn publish(&mut self, i: usize, room: &str, sender: u64, text: &str, time_ms: u64) {
        let now = self.clock.now();
        let route =
            self.nodes[i]
                .relay
                .publish(room, sender, OpCode::Text, text.as_bytes(), time_ms, now);
        assert_eq!(route, Route::Relayed, "{text}");
    }

    /// Fetches from node `i` and waits for the answer.
    fn fetch(&mut self, i: usize, room: &str, want: Fetch) -> FetchedHistory {
        let now = self.clock.now();
        let id = self.nodes[i].relay.fetch(room, want, now).expect("up");
        self.until("the fetch is answered", |c| {
            c.nodes[i].fetched.iter().any(|f| f.id == id)
        });
        let at = self.nodes[i].fetched.iter().position(|f| f.id == id);
        let fetched = self.nodes[i].fetched.remove(at.unwrap());
        assert_eq!(fetched.room, room);
        fetched.result.expect("a history")
    }

    /// Waits until node `i` delivered `n` messages.
    fn until_seen(&mut self, i: usize, n: usize) {
        self.until("the messages are delivered", |c| c.nodes[i].seen.len() >= n);
        assert_eq!(self.nodes[i].seen.len(), n, "no more than sent");
    }

    fn metric(&self, i: usize, name: &str) -> f64 {
        let mut page = String::new();
        self.nodes[i].relay.render_metrics(&mut page);
        let line = page.lines().find(|l| l.starts_with(&format!("{name} ")));
        let line = line.unwrap_or_else(|| panic!("{name} in {page}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

impl Node {
    fn take(&mut self) {
        while let Some(m) = self.relay.poll_message() {
            let stamp = m.stamp.expect("a message from Redis has a stamp");
            self.seen.push(Seen {
                room: m.room.to_string(),
                sender: m.sender,
                payload: m.payload.to_vec(),
                epoch: stamp.epoch.to_string(),
                offset: stamp.offset,
                time_ms: stamp.time_ms,
            });
        }
        while let Some(f) = self.relay.poll_fetched() {
            self.fetched.push(f);
        }
    }
}

fn offsets(history: &FetchedHistory) -> Vec<u64> {
    history.entries.iter().map(|e| e.offset).collect()
}

fn payloads(history: &FetchedHistory) -> Vec<String> {
    let text = |e: &wschat::server::relay::FetchedEntry| String::from_utf8(e.payload.clone());
    history.entries.iter().map(|e| text(e).unwrap()).collect()
}

/// A Redis reply's integer.
fn integer(reply: &[u8]) -> i64 {
    let text = std::str::from_utf8(reply).unwrap();
    text.trim_end()
        .strip_prefix(':')
        .unwrap_or_else(|| panic!("not an integer: {text:?}"))
        .parse()
        .unwrap()
}

const TTL: Duration = Duration::from_secs(600);

#[test]
fn two_relays_publishing_to_one_room_see_one_numbering() {
    let Some(exe) = redis_or_skip("two_relays_publishing_to_one_room_see_one_numbering") else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut cluster = Cluster::start(&redis, 2, 100, TTL);
    let senders = [
        cluster.nodes[0].relay.next_id(),
        cluster.nodes[1].relay.next_id(),
    ];
    // Interleaved: in one turn, and across turns.
    for m in 0..20u64 {
        for (i, &sender) in senders.iter().enumerate() {
            let text = format!("n{i}-m{m}");
            cluster.publish(i, "shared", sender, &text, 1_700_000_000_000 + m);
        }
        if m % 3 == 0 {
            cluster.turn();
        }
    }
    cluster.until_seen(0, 40);
    cluster.until_seen(1, 40);
    let (a, b) = (cluster.nodes[0].seen.clone(), &cluster.nodes[1].seen);
    assert_eq!(&a, b, "one order and one numbering on both");
    let epoch = &a[0].epoch;
    assert!((12..=22).contains(&epoch.len()), "{epoch}");
    assert!(epoch.bytes().all(|b| b.is_ascii_alphanumeric()));
    for (at, seen) in a.iter().enumerate() {
        assert_eq!(&seen.epoch, epoch);
        assert_eq!(seen.offset, at as u64 + 1, "offsets 1, 2, 3, …");
        assert_eq!(seen.room, "shared");
        let text = std::str::from_utf8(&seen.payload).unwrap();
        let m: u64 = text.split_once("-m").unwrap().1.parse().unwrap();
        assert_eq!(seen.time_ms, 1_700_000_000_000 + m, "the publisher's time");
    }
    // Each sender's messages in the order sent.
    for (i, &sender) in senders.iter().enumerate() {
        let texts: Vec<String> = a
            .iter()
            .filter(|s| s.sender == sender)
            .map(|s| String::from_utf8(s.payload.clone()).unwrap())
            .collect();
        let want: Vec<String> = (0..20).map(|m| format!("n{i}-m{m}")).collect();
        assert_eq!(texts, want);
    }
    // Another room has its own numbering.
    cluster.publish(1, "other", senders[1], "first", 1);
    cluster.until_seen(0, 41);
    let last = cluster.nodes[0].seen.last().unwrap();
    assert_eq!((last.room.as_str(), last.offset), ("other", 1));
    assert_ne!(&last.epoch, epoch);
}

#[test]
fn fetches_return_what_followed_or_the_last_n() {
    let Some(exe) = redis_or_skip("fetches_return_what_followed_or_the_last_n") else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut cluster = Cluster::start(&redis, 2, 100, TTL);
    // A room never used: the fetch makes its epoch, which its first
    // message then carries.
    let fresh = cluster.fetch(1, "lobby", Fetch::Last(10));
    assert_eq!((fresh.head, fresh.entries.len()), (0, 0));
    let sender = cluster.nodes[0].relay.next_id();
    for m in 1..=10 {
        cluster.publish(0, "lobby", sender, &format!("m{m}"), 1000 + m);
    }
    cluster.until_seen(1, 10);
    let epoch = cluster.nodes[1].seen[0].epoch.clone();
    assert_eq!(epoch, fresh.epoch, "the epoch told before is the one used");

    let since = |offset| Fetch::Since {
        epoch: epoch.clone(),
        offset,
    };
    let after4 = cluster.fetch(1, "lobby", since(4));
    assert_eq!((after4.epoch.as_str(), after4.head), (epoch.as_str(), 10));
    assert_eq!(offsets(&after4), [5, 6, 7, 8, 9, 10]);
    assert_eq!(payloads(&after4), ["m5", "m6", "m7", "m8", "m9", "m10"]);
    let entry = &after4.entries[0];
    assert_eq!(
        (entry.sender, entry.time_ms, entry.opcode),
        (sender, 1005, OpCode::Text)
    );
    assert!(after4.is_complete_since(&epoch, 4));
    // Up to date: nothing missing.
    let current = cluster.fetch(0, "lobby", since(10));
    assert!(current.entries.is_empty());
    assert!(current.is_complete_since(&epoch, 10));
    // From the start of the epoch.
    let all = cluster.fetch(0, "lobby", since(0));
    assert_eq!(offsets(&all), (1..=10).collect::<Vec<_>>());
    assert!(all.is_complete_since(&epoch, 0));
    // The last n.
    let last3 = cluster.fetch(0, "lobby", Fetch::Last(3));
    assert_eq!(payloads(&last3), ["m8", "m9", "m10"]);
    // Another epoch: the newest kept, and not a complete recovery.
    let stale = Fetch::Since {
        epoch: "0000000000a1".into(),
        offset: 4,
    };
    let other = cluster.fetch(0, "lobby", stale);
    assert_eq!(other.epoch, epoch);
    assert_eq!(offsets(&other), (1..=10).collect::<Vec<_>>());
    assert!(!other.is_complete_since("0000000000a1", 4));
    // Binary payloads come back as they were sent.
    let bytes: Vec<u8> = (0..=255).collect();
    let now = cluster.clock.now();
    let route = cluster.nodes[0]
        .relay
        .publish("lobby", sender, OpCode::Binary, &bytes, 7, now);
    assert_eq!(route, Route::Relayed);
    let last = cluster.fetch(1, "lobby", Fetch::Last(1));
    assert_eq!(last.entries[0].opcode, OpCode::Binary);
    assert_eq!(last.entries[0].payload, bytes);
    assert_eq!(last.entries[0].offset, 11);
}

#[test]
fn maxlen_trims_and_a_since_before_the_trim_is_incomplete() {
    let Some(exe) = redis_or_skip("maxlen_trims_and_a_since_before_the_trim_is_incomplete") else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut cluster = Cluster::start(&redis, 1, 10, TTL);
    for m in 1..=250 {
        cluster.publish(0, "busy", 1, &format!("m{m}"), m);
    }
    let last = cluster.fetch(0, "busy", Fetch::Last(1000));
    assert_eq!(last.head, 250);
    assert_eq!(
        offsets(&last),
        (241..=250).collect::<Vec<_>>(),
        "at most --history-size"
    );
    let epoch = last.epoch.clone();
    // MAXLEN ~ trims whole nodes: about the size is kept, not all 250.
    let kept = integer(&redis.command(&[b"XLEN", b"wschat:history:busy"]));
    assert!((10..250).contains(&kept), "{kept} entries kept");
    let since = |offset| Fetch::Since {
        epoch: epoch.clone(),
        offset,
    };
    let behind = cluster.fetch(0, "busy", since(5));
    assert!(
        !behind.is_complete_since(&epoch, 5),
        "trimmed: detectably incomplete"
    );
    assert_eq!(
        offsets(&behind),
        (241..=250).collect::<Vec<_>>(),
        "the newest"
    );
    let recent = cluster.fetch(0, "busy", since(245));
    assert_eq!(offsets(&recent), [246, 247, 248, 249, 250]);
    assert!(recent.is_complete_since(&epoch, 245));
    cluster.until_seen(0, 250);
}

#[test]
fn history_size_zero_numbers_messages_and_keeps_none() {
    let Some(exe) = redis_or_skip("history_size_zero_numbers_messages_and_keeps_none") else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut cluster = Cluster::start(&redis, 1, 0, TTL);
    for m in 1..=3 {
        cluster.publish(0, "quiet", 1, &format!("m{m}"), m);
    }
    cluster.until_seen(0, 3);
    let offsets_seen: Vec<u64> = cluster.nodes[0].seen.iter().map(|s| s.offset).collect();
    assert_eq!(offsets_seen, [1, 2, 3]);
    let history = cluster.fetch(0, "quiet", Fetch::Last(10));
    assert_eq!((history.head, history.entries.len()), (3, 0));
    assert_eq!(history.epoch, cluster.nodes[0].seen[0].epoch);
    let exists = redis.command(&[b"EXISTS", b"wschat:history:quiet"]);
    assert_eq!(integer(&exists), 0, "no stream");
}

#[test]
fn keys_expire_entries_first_and_the_epoch_stays() {
    let Some(exe) = redis_or_skip("keys_expire_entries_first_and_the_epoch_stays") else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut cluster = Cluster::start(&redis, 1, 100, Duration::from_millis(700));
    for m in 1..=3 {
        cluster.publish(0, "brief", 1, &format!("m{m}"), m);
    }
    let before = cluster.fetch(0, "brief", Fetch::Last(10));
    assert_eq!(before.entries.len(), 3);
    let pttl = |key: &[u8]| integer(&redis.command(&[b"PTTL", key]));
    let stream_ttl = pttl(b"wschat:history:brief");
    assert!((1..=700).contains(&stream_ttl), "{stream_ttl}");
    let meta_ttl = pttl(b"wschat:meta:brief");
    assert!(meta_ttl > 86_000_000, "a day at least: {meta_ttl}");
    std::thread::sleep(Duration::from_millis(900));
    // The entries are gone; the room keeps its epoch and its head.
    let after = cluster.fetch(0, "brief", Fetch::Last(10));
    assert_eq!(
        (after.epoch.as_str(), after.head),
        (before.epoch.as_str(), 3)
    );
    assert!(after.entries.is_empty());
    // A read refreshes the meta's TTL too.
    redis.command(&[b"PEXPIRE", b"wschat:meta:brief", b"60000"]);
    let since = |offset| Fetch::Since {
        epoch: before.epoch.clone(),
        offset,
    };
    let behind = cluster.fetch(0, "brief", since(1));
    assert!(pttl(b"wschat:meta:brief") > 86_000_000);
    assert!(
        !behind.is_complete_since(&before.epoch, 1),
        "expired: incomplete"
    );
    let current = cluster.fetch(0, "brief", since(3));
    assert!(
        current.is_complete_since(&before.epoch, 3),
        "nothing was missed"
    );
    // And numbering goes on in the same epoch.
    cluster.publish(0, "brief", 1, "m4", 4);
    cluster.until_seen(0, 4);
    let seen = cluster.nodes[0].seen.last().unwrap();
    assert_eq!(
        (seen.epoch.as_str(), seen.offset),
        (before.epoch.as_str(), 4)
    );
}

#[test]
fn flushall_starts_a_new_epoch() {
    let Some(exe) = redis_or_skip("flushall_starts_a_new_epoch") else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut cluster = Cluster::start(&redis, 2, 100, TTL);
    for m in 1..=3 {
        cluster.publish(0, "lobby", 1, &format!("m{m}"), m);
    }
    cluster.until_seen(1, 3);
    let old = cluster.nodes[1].seen[0].epoch.clone();
    assert_eq!(redis.command(&[b"FLUSHALL"]), b"+OK\r\n");
    cluster.publish(1, "lobby", 2, "after", 4);
    cluster.until_seen(0, 4);
    let seen = cluster.nodes[0].seen.last().unwrap().clone();
    assert_ne!(seen.epoch, old, "a new epoch");
    assert_eq!(seen.offset, 1, "counting from 1 again");
    let since_old = Fetch::Since {
        epoch: old.clone(),
        offset: 3,
    };
    let history = cluster.fetch(0, "lobby", since_old);
    assert_eq!(
        (history.epoch.as_str(), history.head),
        (seen.epoch.as_str(), 1)
    );
    assert_eq!(payloads(&history), ["after"]);
    assert!(!history.is_complete_since(&old, 3));
}

#[test]
fn a_restarted_redis_without_persistence_starts_a_new_epoch() {
    let Some(exe) = redis_or_skip("a_restarted_redis_without_persistence_starts_a_new_epoch")
    else {
        return;
    };
    let mut redis = Redis::start(&exe);
    let mut cluster = Cluster::start(&redis, 1, 100, TTL);
    cluster.publish(0, "lobby", 1, "before", 1);
    cluster.until_seen(0, 1);
    let old = cluster.nodes[0].seen[0].epoch.clone();
    // A fetch in flight when Redis dies is answered all the same.
    let now = cluster.clock.now();
    let id: FetchId = cluster.nodes[0]
        .relay
        .fetch("lobby", Fetch::Last(1), now)
        .unwrap();
    redis.kill();
    cluster.until("degraded", |c| c.nodes[0].relay.health() == "degraded");
    cluster.until("the fetch is answered", |c| !c.nodes[0].fetched.is_empty());
    let answer = cluster.nodes[0].fetched.remove(0);
    assert_eq!(answer.id, id);
    // Answered before Redis died, or with an error: either way, answered.
    if let Ok(history) = answer.result {
        assert_eq!(history.epoch, old);
    }
    assert!(!cluster.nodes[0].relay.take_reconnected());
    let now = cluster.clock.now();
    assert_eq!(
        cluster.nodes[0].relay.fetch("lobby", Fetch::Last(1), now),
        None
    );
    let route = cluster.nodes[0]
        .relay
        .publish("lobby", 1, OpCode::Text, b"local", 2, now);
    assert_eq!(
        route,
        Route::DeliverHere,
        "degraded: numbered by the reactor"
    );

    redis.restart();
    cluster.until("up again", |c| c.nodes[0].relay.health() == "ok");
    assert!(cluster.nodes[0].relay.take_reconnected(), "told once");
    assert!(!cluster.nodes[0].relay.take_reconnected());
    cluster.publish(0, "lobby", 1, "after", 3);
    cluster.until_seen(0, 2);
    let seen = cluster.nodes[0].seen.last().unwrap();
    assert_ne!(seen.epoch, old);
    assert_eq!(seen.offset, 1);
}

#[test]
fn a_script_flush_loses_no_message() {
    let Some(exe) = redis_or_skip("a_script_flush_loses_no_message") else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut cluster = Cluster::start(&redis, 2, 100, TTL);
    for m in 1..=5 {
        cluster.publish(0, "lobby", 1, &format!("m{m}"), m);
    }
    cluster.until_seen(1, 5);
    assert_eq!(redis.command(&[b"SCRIPT", b"FLUSH"]), b"+OK\r\n");
    // Both relays lose their scripts; each message is numbered once.
    for m in 6..=25 {
        cluster.publish(m as usize % 2, "lobby", 1, &format!("m{m}"), m);
    }
    cluster.until_seen(0, 25);
    cluster.until_seen(1, 25);
    let history = cluster.fetch(1, "lobby", Fetch::Last(100));
    assert_eq!(cluster.nodes[0].seen, cluster.nodes[1].seen);
    let numbered: Vec<u64> = cluster.nodes[0].seen.iter().map(|s| s.offset).collect();
    assert_eq!(numbered, (1..=25).collect::<Vec<_>>());
    let mut texts: Vec<String> = cluster.nodes[0]
        .seen
        .iter()
        .map(|s| String::from_utf8(s.payload.clone()).unwrap())
        .collect();
    texts.sort();
    let mut want: Vec<String> = (1..=25).map(|m| format!("m{m}")).collect();
    want.sort();
    assert_eq!(texts, want, "every message once");
    assert_eq!(history.head, 25);
    assert!(history.is_complete_since(&history.epoch, 0));
    let reloads = cluster.metric(0, "wschat_redis_script_reloads_total")
        + cluster.metric(1, "wschat_redis_script_reloads_total");
    assert!(reloads >= 2.0, "{reloads}");
    for i in 0..2 {
        assert_eq!(cluster.metric(i, "wschat_cluster_publish_lost_total"), 0.0);
    }
}

#[test]
fn a_lost_meta_starts_a_new_epoch_over_the_old_entries() {
    let Some(exe) = redis_or_skip("a_lost_meta_starts_a_new_epoch_over_the_old_entries") else {
        return;
    };
    let redis = Redis::start(&exe);
    let mut cluster = Cluster::start(&redis, 1, 100, TTL);
    for m in 1..=3 {
        cluster.publish(0, "lobby", 1, &format!("m{m}"), m);
    }
    cluster.until_seen(0, 3);
    let old = cluster.nodes[0].seen[0].epoch.clone();
    // Evicted, or deleted by hand: the entries outlive their numbering.
    let deleted = redis.command(&[b"DEL", b"wschat:meta:lobby"]);
    assert_eq!(integer(&deleted), 1);
    cluster.publish(0, "lobby", 1, "again", 4);
    cluster.until_seen(0, 4);
    let seen = cluster.nodes[0].seen.last().unwrap().clone();
    assert_ne!(seen.epoch, old);
    assert_eq!(seen.offset, 1, "offset 1 again: the old entries went");
    let history = cluster.fetch(0, "lobby", Fetch::Last(10));
    assert_eq!(payloads(&history), ["again"]);
    assert_eq!(cluster.metric(0, "wschat_cluster_publish_lost_total"), 0.0);
}

#[test]
fn the_daemon_hands_its_history_flags_to_redis() {
    let Some(exe) = redis_or_skip("the_daemon_hands_its_history_flags_to_redis") else {
        return;
    };
    let redis = Redis::start(&exe);
    let url = redis.url();
    let kept = Daemon::start(&[
        "--redis",
        &url,
        "--history-size",
        "5",
        "--history-ttl",
        "30",
    ]);
    let off = Daemon::start(&["--redis", &url, "--history-size", "0"]);
    for daemon in [&kept, &off] {
        daemon.wait_health("ok", LIMIT * 2);
    }
    let mut a = RawClient::connect(kept.addr(), "/room/kept");
    let mut b = RawClient::connect(off.addr(), "/room/off");
    for (client, text) in [(&mut a, "one"), (&mut b, "two")] {
        client.send_text(text);
        let echo = client.next_text(LIMIT);
        assert!(
            echo.starts_with("from") && echo.ends_with(&format!(":{text}")),
            "{echo}"
        );
    }
    let reply = |args: &[&[u8]]| integer(&redis.command(args));
    assert_eq!(reply(&[b"XLEN", b"wschat:history:kept"]), 1);
    let ttl = reply(&[b"PTTL", b"wschat:history:kept"]);
    assert!((25_000..=30_000).contains(&ttl), "--history-ttl 30: {ttl}");
    assert_eq!(
        reply(&[b"EXISTS", b"wschat:history:off"]),
        0,
        "--history-size 0"
    );
    assert_eq!(
        reply(&[b"EXISTS", b"wschat:meta:off"]),
        1,
        "numbered all the same"
    );
    let refused = Daemon::try_start(&["--history-ttl", "0"], "info");
    let err = refused.err().expect("a zero TTL is refused");
    assert!(err.contains("history_ttl"), "{err}");
}
