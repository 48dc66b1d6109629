//! The relay alone, and in cluster mode against a stand-in for Redis on a
//! loopback socket that answers what a test tells it to.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::*;
use crate::server::cluster::ids::FALLBACK_BASE;
use crate::server::cluster::{message, resp};
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
    let route = relay.publish("lobby", 1, OpCode::Text, b"hi", Time::START);
    assert_eq!(route, Route::DeliverHere);
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
    let route = relay.publish("lobby", 1, OpCode::Text, b"hi", Time::START);
    assert_eq!(route, Route::DeliverHere);
    assert!(relay.next_id() > FALLBACK_BASE, "ids from the local range");
    assert!(relay.poll_timeout().is_some(), "it keeps trying");
}

/// The relay, its poll, and both ends of the two links.
struct Rig {
    poll: Poll,
    events: Events,
    clock: Clock,
    relay: Relay,
    publisher: Peer,
    subscriber: Peer,
    /// Room messages delivered so far: room, sender, payload.
    delivered: Vec<(String, u64, Vec<u8>)>,
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
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("fake redis: {e}"),
            }
        }
    }
}

impl Rig {
    /// Starts a relay against a fake Redis and accepts its two links.
    fn start() -> Rig {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let poll = Poll::new().unwrap();
        let clock = Clock::new();
        let relay =
            Relay::start(&config(Some(&url)), poll.registry(), TOKENS, clock.now()).unwrap();
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
            poll,
            events: Events::with_capacity(16),
            clock,
            relay,
            publisher: a,
            subscriber: b,
            delivered: Vec::new(),
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
        let delivered = &mut self.delivered;
        let mut take = |relay: &mut Relay| {
            while let Some(m) = relay.poll_message() {
                delivered.push((m.room.to_string(), m.sender, m.payload.to_vec()));
            }
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

fn cmd<const N: usize>(args: [&[u8]; N]) -> Vec<u8> {
    let mut out = Vec::new();
    resp::command(args, &mut out);
    out
}

#[test]
fn a_ready_cluster_relays_until_its_queue_is_full_or_redis_is_gone() {
    let mut rig = Rig::start();
    assert_eq!(rig.relay.health(), "degraded", "until both links are ready");
    assert_eq!(
        rig.subscriber.received,
        cmd([b"PSUBSCRIBE", b"wschat:room:*"])
    );
    assert_eq!(
        rig.publisher.received,
        cmd([b"INCRBY", b"wschat:ids", b"1000"])
    );
    rig.publisher.received.clear();
    rig.publisher.stream.write_all(b":1000\r\n").unwrap();
    let subscribed = b"*3\r\n$10\r\npsubscribe\r\n$13\r\nwschat:room:*\r\n:1\r\n";
    rig.subscriber.stream.write_all(subscribed).unwrap();
    rig.turn_until(|rig| rig.relay.health() == "ok");
    assert_eq!(rig.relay.next_id(), 1, "the first id of the block");
    // A spare block is asked for at once.
    let incrby = cmd([b"INCRBY", b"wschat:ids", b"1000"]);
    rig.turn_until(|rig| rig.publisher.received.len() >= incrby.len());
    assert_eq!(rig.publisher.received, incrby);
    rig.publisher.received.clear();
    rig.publisher.stream.write_all(b":2000\r\n").unwrap();

    // Published, not delivered here; the bound is on the backlog.
    let now = rig.clock.now();
    let route = rig.relay.publish("lobby", 7, OpCode::Text, b"hi", now);
    assert_eq!(route, Route::Relayed);
    let route = rig.relay.publish("lobby", 7, OpCode::Text, b"again", now);
    assert_eq!(route, Route::DeliverHere, "the queue holds the first");
    let publish = cmd([b"PUBLISH", b"wschat:room:lobby", b"\x11\x07hi"]);
    rig.turn_until(|rig| rig.publisher.received.len() >= publish.len());
    assert_eq!(rig.publisher.received, publish);

    // It comes back through the subscription.
    let mut payload = Vec::new();
    message::encode(7, OpCode::Text, b"hi", &mut payload);
    let mut push =
        b"*4\r\n$8\r\npmessage\r\n$13\r\nwschat:room:*\r\n$17\r\nwschat:room:lobby\r\n$4\r\n"
            .to_vec();
    push.extend(&payload);
    push.extend(b"\r\n");
    rig.subscriber.stream.write_all(&push).unwrap();
    rig.turn_until(|rig| !rig.delivered.is_empty());
    assert_eq!(rig.delivered, [("lobby".to_string(), 7, b"hi".to_vec())]);
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

    // Redis goes away with the PUBLISH unanswered: degraded, delivered here.
    rig.publisher
        .stream
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    rig.turn_until(|rig| rig.relay.health() == "degraded");
    let route = rig
        .relay
        .publish("lobby", 7, OpCode::Text, b"local", rig.clock.now());
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
