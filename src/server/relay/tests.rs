//! The relay alone, and in cluster mode against a stand-in for Redis on a
//! loopback socket that answers what a test tells it to.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::*;
use crate::server::cluster::ids::FALLBACK_BASE;
use crate::server::cluster::message;
use crate::server::cluster::resp::wire::{bulk, cmd, evalsha_read};
use crate::server::cluster::scripts::Script;
use crate::server::timer::Clock;

const TOKENS: [Token; 2] = [Token(1), Token(2)];

fn config(redis: Option<&str>) -> Config {
    Config {
        redis: redis.map(|url| url.parse().unwrap()),
        max_backpressure: 16,
        ..Config::default()
    }
}

#[test]
fn alone_ids_count_up_and_every_message_is_delivered_here() {
    let poll = Poll::new().unwrap();
    let mut relay = Relay::start(&config(None), poll.registry(), TOKENS, Time::START).unwrap();
    assert!(matches!(relay, Relay::Local { .. }));
    assert_eq!(
        [relay.next_id(), relay.next_id(), relay.next_id()],
        [1, 2, 3]
    );
    let route = relay.publish("lobby", 1, OpCode::Text, b"hi", 5, Time::START);
    assert_eq!(route, Route::DeliverHere);
    assert_eq!(relay.fetch("lobby", Fetch::Last(5), Time::START), None);
    assert!(relay.poll_fetched().is_none());
    assert!(!relay.take_reconnected());
    assert_eq!(relay.health(), "ok");
    relay.handle_timeout(Time::from_millis(1));
    assert_eq!(relay.poll_timeout(), None);
    assert!(relay.poll_message().is_none());
    let mut page = String::new();
    relay.render_metrics(&mut page);
    assert_eq!(page, "", "no cluster series alone");
}

#[test]
fn a_cluster_without_redis_delivers_here() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let poll = Poll::new().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let mut relay =
        Relay::start(&config(Some(&url)), poll.registry(), TOKENS, Time::START).unwrap();
    assert_eq!(relay.health(), "degraded");
    let route = relay.publish("lobby", 1, OpCode::Text, b"hi", 5, Time::START);
    assert_eq!(route, Route::DeliverHere);
    assert_eq!(relay.fetch("lobby", Fetch::Last(5), Time::START), None);
    assert!(!relay.take_reconnected());
    assert!(relay.next_id() > FALLBACK_BASE, "ids from the local range");
    assert!(relay.poll_timeout().is_some(), "it keeps trying");
}

/// A stamp's epoch, offset and time.
type OwnedStamp = (String, u64, u64);

/// The relay, its poll, and both ends of the two links.
struct Rig {
    listener: TcpListener,
    poll: Poll,
    events: Events,
    clock: Clock,
    relay: Relay,
    publisher: Peer,
    subscriber: Peer,
    /// Room messages delivered so far: room, sender, payload, and the
    /// stamp's epoch, offset and time.
    delivered: Vec<(String, u64, Vec<u8>, OwnedStamp)>,
    /// Fetches answered so far.
    fetched: Vec<Fetched>,
}

/// Redis's end of one link.
struct Peer {
    stream: TcpStream,
    received: Vec<u8>,
}

impl Peer {
    fn read_available(&mut self) {
        let mut buf = [0; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                // A test's own shutdown with bytes unread resets.
                Err(e)
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::ConnectionReset) =>
                {
                    return
                }
                Err(e) => panic!("fake redis: {e}"),
            }
        }
    }
}

impl Rig {
    /// Starts a relay against a fake Redis, with the test settings
    /// changed by `adjust`, and accepts its two links.
    fn start_with(adjust: impl FnOnce(&mut Config)) -> Rig {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let poll = Poll::new().unwrap();
        let clock = Clock::new();
        let mut config = config(Some(&url));
        adjust(&mut config);
        let relay = Relay::start(&config, poll.registry(), TOKENS, clock.now()).unwrap();
        let accept = || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_nonblocking(true).unwrap();
            Peer {
                stream,
                received: Vec::new(),
            }
        };
        let (a, b) = (accept(), accept());
        let mut rig = Rig {
            listener,
            poll,
            events: Events::with_capacity(16),
            clock,
            relay,
            publisher: a,
            subscriber: b,
            delivered: Vec::new(),
            fetched: Vec::new(),
        };
        rig.turn_until(|rig| {
            !rig.publisher.received.is_empty() && !rig.subscriber.received.is_empty()
        });
        if rig
            .publisher
            .received
            .starts_with(b"*2\r\n$10\r\nPSUBSCRIBE")
        {
            std::mem::swap(&mut rig.publisher, &mut rig.subscriber);
        }
        rig
    }

    /// One turn of a reactor, and of the fake Redis.
    fn turn(&mut self) {
        let timeout = Some(Duration::from_millis(10));
        self.poll.poll(&mut self.events, timeout).unwrap();
        self.clock.tick();
        let (delivered, fetched) = (&mut self.delivered, &mut self.fetched);
        let mut take = |relay: &mut Relay| {
            while let Some(m) = relay.poll_message() {
                let stamp = m.stamp.expect("stamped by Redis");
                let stamp = (stamp.epoch.to_string(), stamp.offset, stamp.time_ms);
                delivered.push((m.room.to_string(), m.sender, m.payload.to_vec(), stamp));
            }
            fetched.extend(std::iter::from_fn(|| relay.poll_fetched()));
        };
        for event in self.events.iter() {
            self.relay.handle_event(event, self.clock.now());
            take(&mut self.relay);
        }
        self.relay.handle_timeout(self.clock.now());
        take(&mut self.relay);
        self.publisher.read_available();
        self.subscriber.read_available();
    }

    fn turn_until(&mut self, done: impl Fn(&Rig) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(self) {
            assert!(Instant::now() < deadline, "gave up waiting");
            self.turn();
        }
    }

    fn metric(&self, name: &str) -> String {
        let mut page = String::new();
        self.relay.render_metrics(&mut page);
        let line = page.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.unwrap_or_else(|| panic!("{name} in {page}"))
            .to_string()
    }
}

/// What the publisher's handshake sends: the two scripts, then `last`.
fn handshake(last: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for script in Script::ALL {
        out.extend(cmd([b"SCRIPT", b"LOAD", script.source().as_bytes()]));
    }
    out.extend(last);
    out
}

/// Redis's answers to the script loads.
fn scripts_loaded() -> Vec<u8> {
    Script::ALL
        .iter()
        .flat_map(|s| bulk(s.sha1().as_bytes()))
        .collect()
}

const SUBSCRIBED: &[u8] = b"*3\r\n$10\r\npsubscribe\r\n$13\r\nwschat:room:*\r\n:1\r\n";

/// The publish script for a message of `lobby` at time 5, with the
/// default history settings.
fn evalsha_publish(sender: u64, payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    message::encode_head(sender, OpCode::Text, 5, &mut head);
    cmd([
        b"EVALSHA",
        Script::Publish.sha1().as_bytes(),
        b"3",
        b"wschat:meta:lobby",
        b"wschat:history:lobby",
        b"wschat:epochs",
        b"wschat:room:lobby",
        b"100",
        b"600000",
        b"86400000",
        &head,
        sender.to_string().as_bytes(),
        b"text",
        b"5",
        payload,
    ])
}

/// A `pmessage` of `lobby` as the publish script makes it.
fn stamped(sender: u64, payload: &[u8], offset: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let m = message::Message {
        sender,
        opcode: OpCode::Text,
        time_ms: 5,
        offset,
        epoch: "e1",
        payload,
    };
    message::encode(&m, &mut bytes);
    let mut push =
        b"*4\r\n$8\r\npmessage\r\n$13\r\nwschat:room:*\r\n$17\r\nwschat:room:lobby\r\n".to_vec();
    push.extend(bulk(&bytes));
    push
}

impl Rig {
    /// A relay whose links are both ready, ids reserved up to 1000.
    fn ready() -> Rig {
        Rig::ready_with(|_| {})
    }

    /// [`Rig::ready`] with settings changed by `adjust`.
    fn ready_with(adjust: impl FnOnce(&mut Config)) -> Rig {
        let mut rig = Rig::start_with(adjust);
        assert_eq!(rig.relay.health(), "degraded", "until both links are ready");
        assert_eq!(
            rig.subscriber.received,
            cmd([b"PSUBSCRIBE", b"wschat:room:*"])
        );
        assert_eq!(
            rig.publisher.received,
            handshake(&cmd([b"INCRBY", b"wschat:ids", b"1000"]))
        );
        rig.publisher.received.clear();
        let replies = [scripts_loaded(), b":1000\r\n".to_vec()].concat();
        rig.publisher.stream.write_all(&replies).unwrap();
        rig.subscriber.stream.write_all(SUBSCRIBED).unwrap();
        rig.turn_until(|rig| rig.relay.health() == "ok");
        assert!(rig.relay.take_reconnected(), "up, the first time too");
        assert!(!rig.relay.take_reconnected(), "once");
        rig
    }
}

#[test]
fn a_ready_cluster_relays_until_its_queue_is_full_or_redis_is_gone() {
    let mut rig = Rig::ready();
    assert_eq!(rig.relay.next_id(), 1, "the first id of the block");
    // A spare block is asked for at once.
    let incrby = cmd([b"INCRBY", b"wschat:ids", b"1000"]);
    rig.turn_until(|rig| rig.publisher.received.len() >= incrby.len());
    assert_eq!(rig.publisher.received, incrby);
    rig.publisher.received.clear();
    rig.publisher.stream.write_all(b":2000\r\n").unwrap();

    // Published, not delivered here; the bound is on the backlog.
    let now = rig.clock.now();
    let route = rig.relay.publish("lobby", 7, OpCode::Text, b"hi", 5, now);
    assert_eq!(route, Route::Relayed);
    let route = rig
        .relay
        .publish("lobby", 7, OpCode::Text, b"again", 5, now);
    assert_eq!(route, Route::DeliverHere, "the queue holds the first");
    let publish = evalsha_publish(7, b"hi");
    rig.turn_until(|rig| rig.publisher.received.len() >= publish.len());
    assert_eq!(rig.publisher.received, publish);

    // It comes back through the subscription, with its stamp.
    rig.publisher.stream.write_all(b":1\r\n").unwrap();
    rig.subscriber
        .stream
        .write_all(&stamped(7, b"hi", 1))
        .unwrap();
    rig.turn_until(|rig| !rig.delivered.is_empty());
    let stamp = ("e1".to_string(), 1, 5);
    assert_eq!(
        rig.delivered,
        [("lobby".to_string(), 7, b"hi".to_vec(), stamp)]
    );
    assert_eq!(
        rig.metric("wschat_cluster_published_total"),
        "wschat_cluster_published_total 1"
    );
    assert_eq!(
        rig.metric("wschat_cluster_received_total"),
        "wschat_cluster_received_total 1"
    );
    assert_eq!(
        rig.metric("wschat_cluster_publish_dropped_total"),
        "wschat_cluster_publish_dropped_total 1"
    );

    // Redis goes away with a message unanswered: degraded, delivered here.
    rig.publisher.received.clear();
    let now = rig.clock.now();
    let route = rig.relay.publish("lobby", 7, OpCode::Text, b"lost", 5, now);
    assert_eq!(route, Route::Relayed);
    rig.turn_until(|rig| !rig.publisher.received.is_empty());
    rig.publisher
        .stream
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    rig.turn_until(|rig| rig.relay.health() == "degraded");
    let route = rig
        .relay
        .publish("lobby", 7, OpCode::Text, b"local", 5, rig.clock.now());
    assert_eq!(route, Route::DeliverHere);
    assert_eq!(
        rig.metric("wschat_cluster_publish_lost_total"),
        "wschat_cluster_publish_lost_total 1"
    );
    assert_eq!(
        rig.metric("wschat_redis_outages_total"),
        "wschat_redis_outages_total 1"
    );
    assert_eq!(rig.metric("wschat_redis_up"), "wschat_redis_up 0");
}

#[test]
fn fetches_are_answered_in_order_and_a_lost_link_answers_them_all() {
    let mut rig = Rig::ready();
    rig.turn_until(|rig| !rig.publisher.received.is_empty());
    rig.publisher.received.clear();
    rig.publisher.stream.write_all(b":2000\r\n").unwrap();
    let now = rig.clock.now();
    let since = Fetch::Since {
        epoch: "e1".into(),
        offset: 1,
    };
    let a = rig.relay.fetch("lobby", since, now).unwrap();
    let b = rig.relay.fetch("side", Fetch::Last(2), now).unwrap();
    assert_ne!(a, b);
    let expected = [
        evalsha_read("lobby", "100", "since", "e1", "1"),
        evalsha_read("side", "100", "last", "", "2"),
    ]
    .concat();
    rig.turn_until(|rig| rig.publisher.received.len() >= expected.len());
    assert_eq!(rig.publisher.received, expected);
    rig.publisher.received.clear();

    // The first answered: the history of its room.
    let entry = [
        &b"*2\r\n$3\r\n2-0\r\n*8\r\n"[..],
        &bulk(b"sender"),
        &bulk(b"9"),
        &bulk(b"opcode"),
        &bulk(b"text"),
        &bulk(b"time"),
        &bulk(b"77"),
        &bulk(b"payload"),
        &bulk(b"two"),
    ]
    .concat();
    let reply = [&b"*3\r\n$2\r\ne1\r\n:2\r\n*1\r\n"[..], &entry].concat();
    rig.publisher.stream.write_all(&reply).unwrap();
    rig.turn_until(|rig| !rig.fetched.is_empty());
    let history = FetchedHistory {
        epoch: "e1".into(),
        head: 2,
        entries: vec![FetchedEntry {
            offset: 2,
            time_ms: 77,
            sender: 9,
            opcode: OpCode::Text,
            payload: b"two".to_vec(),
        }],
    };
    assert!(history.is_complete_since("e1", 1));
    let first = Fetched {
        id: a,
        room: "lobby".into(),
        result: Ok(history),
    };
    assert_eq!(rig.fetched, [first]);
    rig.fetched.clear();

    // A third asked, then the link is lost: both awaited are answered.
    let c = rig
        .relay
        .fetch("lobby", Fetch::Last(1), rig.clock.now())
        .unwrap();
    rig.publisher
        .stream
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    rig.turn_until(|rig| rig.fetched.len() == 2);
    let lost = |id, room: &str| Fetched {
        id,
        room: room.into(),
        result: Err(FetchError::LinkDown),
    };
    assert_eq!(rig.fetched, [lost(b, "side"), lost(c, "lobby")]);
    assert_eq!(rig.relay.health(), "degraded");
    assert_eq!(
        rig.relay.fetch("lobby", Fetch::Last(1), rig.clock.now()),
        None
    );
    assert_eq!(
        rig.metric("wschat_cluster_fetches_total"),
        "wschat_cluster_fetches_total 1"
    );
    assert_eq!(
        rig.metric("wschat_cluster_fetch_errors_total"),
        "wschat_cluster_fetch_errors_total 2"
    );

    // Redis is back: the reactor hears of it once.
    assert!(!rig.relay.take_reconnected());
    rig.listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let stream = loop {
        match rig.listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no reconnect");
                rig.turn();
            }
            Err(e) => panic!("{e}"),
        }
    };
    stream.set_nonblocking(true).unwrap();
    rig.publisher = Peer {
        stream,
        received: Vec::new(),
    };
    rig.turn_until(|rig| rig.publisher.received.ends_with(b"PING\r\n"));
    let replies = [scripts_loaded(), b"+PONG\r\n".to_vec()].concat();
    rig.publisher.stream.write_all(&replies).unwrap();
    rig.turn_until(|rig| rig.relay.health() == "ok");
    assert!(rig.relay.take_reconnected());
    assert!(!rig.relay.take_reconnected());
}

#[test]
fn a_burst_of_publishes_leaves_before_the_turn_ends() {
    let mut rig = Rig::ready_with(|config| config.max_backpressure = 1 << 20);
    rig.turn_until(|rig| !rig.publisher.received.is_empty());
    rig.publisher.received.clear();
    // Many clients' messages read in one turn: about 130 KiB of script
    // calls, with no end of turn in between.
    let payload = [b'x'; 1024];
    let now = rig.clock.now();
    for _ in 0..100 {
        let route = rig
            .relay
            .publish("lobby", 7, OpCode::Text, &payload, 5, now);
        assert_eq!(route, Route::Relayed);
    }
    let queued: usize = rig
        .metric("wschat_cluster_publish_queue_bytes")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        queued < 64 * 1024,
        "{queued} bytes wait for the end of the turn"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.publisher.received.len() < 64 * 1024 {
        assert!(Instant::now() < deadline, "nothing was written");
        rig.publisher.read_available();
    }
}
