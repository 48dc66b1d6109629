//! The link driven with RESP bytes on virtual time: no socket, no clock.

use std::time::Duration;

use super::config::FRAME_OVERHEAD;
use super::*;
use crate::protocol::frame::OpCode;
use crate::server::cluster::history::Fetch;
use crate::server::cluster::message::{self, Malformed};
pub(super) use crate::server::cluster::resp::wire::{bulk, cmd, evalsha_read};
use crate::server::cluster::scripts::Script;

pub(super) const MAX: usize = 100;

/// The instant `n` milliseconds into the test.
pub(super) fn t(n: u64) -> Time {
    Time::from_millis(n)
}

/// `n` milliseconds.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const SUBSCRIBED: &[u8] = b"*3\r\n$10\r\npsubscribe\r\n$13\r\nwschat:room:*\r\n:1\r\n";

pub(super) fn config(role: Role) -> LinkConfig {
    LinkConfig {
        role,
        db: 0,
        max_message_size: MAX,
        queue_limit: 1 << 20,
        history_size: 3,
        history_ttl: Duration::from_secs(600),
    }
}

/// What the publisher's handshake sends before its last command.
pub(super) fn script_loads() -> Vec<u8> {
    let mut out = Vec::new();
    for script in Script::ALL {
        out.extend(cmd([b"SCRIPT", b"LOAD", script.source().as_bytes()]));
    }
    out
}

/// The replies to [`script_loads`].
pub(super) fn scripts_loaded() -> Vec<u8> {
    Script::ALL
        .iter()
        .flat_map(|s| bulk(s.sha1().as_bytes()))
        .collect()
}

/// A link connected at 1, its handshake queued.
pub(super) fn connected(config: LinkConfig, reserve: Option<u64>) -> Link {
    let mut link = Link::new(config, t(0));
    link.connecting(t(0));
    link.connected(t(1), reserve);
    link
}

/// A link whose handshake was sent at 1 and answered at 2.
pub(super) fn ready(role: Role) -> Link {
    let mut link = connected(config(role), None);
    sent(&mut link, t(1));
    let reply = match role {
        Role::Publisher => [scripts_loaded(), b"+PONG\r\n".to_vec()].concat(),
        Role::Subscriber => SUBSCRIBED.to_vec(),
    };
    link.receive(&reply, t(2));
    assert_eq!(drain(&mut link), [event(LinkEvent::Ready)]);
    link
}

/// What the link writes at `now`.
pub(super) fn sent(link: &mut Link, now: Time) -> Vec<u8> {
    let mut out = Vec::new();
    assert_eq!(link.poll_transmit(&mut out, now).unwrap(), Flush::Done);
    out
}

/// What came out of a link, owned so that it can be compared.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Out {
    Event(LinkEvent),
    Message {
        room: String,
        sender: u64,
        opcode: OpCode,
        payload: Vec<u8>,
        stamp: (String, u64, u64),
    },
}

pub(super) fn event(e: LinkEvent) -> Out {
    Out::Event(e)
}

/// A message as [`chat`] stamps it.
fn msg(room: &str, sender: u64, opcode: OpCode, payload: &[u8]) -> Out {
    Out::Message {
        room: room.to_string(),
        sender,
        opcode,
        payload: payload.to_vec(),
        stamp: (EPOCH.to_string(), OFFSET, TIME),
    }
}

pub(super) fn drain(link: &mut Link) -> Vec<Out> {
    let mut out = Vec::new();
    while let Some(e) = link.poll_event() {
        if e != LinkEvent::Message {
            out.push(Out::Event(e));
            continue;
        }
        let m = link.message().expect("Message comes with a message");
        let stamp = m.stamp.expect("messages from Redis are stamped");
        out.push(Out::Message {
            room: m.room.to_string(),
            sender: m.sender,
            opcode: m.opcode,
            payload: m.payload.to_vec(),
            stamp: (stamp.epoch.to_string(), stamp.offset, stamp.time_ms),
        });
    }
    out
}

/// Asserts that `bytes`, split in two at every offset and fed one byte at
/// a time, make `make()`'s link give `expected`.
pub(super) fn assert_every_split(make: impl Fn() -> Link, bytes: &[u8], expected: &[Out]) {
    for cut in 0..=bytes.len() {
        let mut link = make();
        link.receive(&bytes[..cut], t(3));
        let mut out = drain(&mut link);
        link.receive(&bytes[cut..], t(3));
        out.extend(drain(&mut link));
        assert_eq!(out, expected, "cut at {cut}");
    }
    let mut link = make();
    let mut out = Vec::new();
    for byte in bytes {
        link.receive(std::slice::from_ref(byte), t(3));
        out.extend(drain(&mut link));
    }
    assert_eq!(out, expected, "one byte at a time");
}

/// A `pmessage` push as Redis sends it.
fn pmessage(channel: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = format!("*4\r\n$8\r\npmessage\r\n$13\r\n{PATTERN}\r\n").into_bytes();
    for part in [channel, payload] {
        out.extend(format!("${}\r\n", part.len()).as_bytes());
        out.extend(part);
        out.extend(b"\r\n");
    }
    out
}

const EPOCH: &str = "0hon59y07ji1";
const OFFSET: u64 = 300;
pub(super) const TIME: u64 = 1_700_000_000_123;

/// A chat message in the channel format, stamped as [`msg`] expects.
fn chat(sender: u64, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let m = message::Message {
        sender,
        opcode,
        time_ms: TIME,
        offset: OFFSET,
        epoch: EPOCH,
        payload,
    };
    message::encode(&m, &mut out);
    out
}

#[test]
fn subscriber_handshake_subscribes_and_the_confirmation_makes_it_ready() {
    let make = || {
        let mut link = connected(config(Role::Subscriber), Some(1000));
        assert!(link.is_connected() && !link.is_ready());
        assert_eq!(
            sent(&mut link, t(1)),
            b"*2\r\n$10\r\nPSUBSCRIBE\r\n$13\r\nwschat:room:*\r\n"
        );
        link
    };
    assert_every_split(make, SUBSCRIBED, &[event(LinkEvent::Ready)]);
    assert!(ready(Role::Subscriber).is_ready());
}

#[test]
fn publisher_handshake_selects_the_database_and_reserves_ids() {
    let make = || {
        let mut link = connected(
            LinkConfig {
                db: 3,
                ..config(Role::Publisher)
            },
            Some(1000),
        );
        let expected = [
            &b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"[..],
            &script_loads(),
            b"*3\r\n$6\r\nINCRBY\r\n$10\r\nwschat:ids\r\n$4\r\n1000\r\n",
        ]
        .concat();
        assert_eq!(sent(&mut link, t(1)), expected);
        link
    };
    let reserved = LinkEvent::IdsReserved {
        end: 1000,
        delta: 1000,
    };
    let expected = [event(reserved), event(LinkEvent::Ready)];
    let replies = [&b"+OK\r\n"[..], &scripts_loaded(), b":1000\r\n"].concat();
    assert_every_split(make, &replies, &expected);
    // Without a block to ask for, the handshake ends with PING.
    let make = || {
        let mut link = connected(config(Role::Publisher), None);
        let expected = [script_loads(), b"*1\r\n$4\r\nPING\r\n".to_vec()].concat();
        assert_eq!(sent(&mut link, t(1)), expected);
        link
    };
    let replies = [scripts_loaded(), b"+PONG\r\n".to_vec()].concat();
    assert_every_split(make, &replies, &[event(LinkEvent::Ready)]);
}

#[test]
fn messages_come_out_whole_and_in_order_at_every_split() {
    let mut stream = pmessage(b"wschat:room:lobby", &chat(7, OpCode::Text, b"hello"));
    let binary = [0, b'\r', b'\n', 0xff];
    stream.extend(pmessage(
        b"wschat:room:side",
        &chat(300, OpCode::Binary, &binary),
    ));
    // The SUBSCRIBE form, which Redis sends for plain channels.
    let plain = chat(1 << 52, OpCode::Text, "é".as_bytes());
    stream.extend(b"*3\r\n$7\r\nmessage\r\n$17\r\nwschat:room:lobby\r\n");
    stream.extend(format!("${}\r\n", plain.len()).as_bytes());
    stream.extend(&plain);
    stream.extend(b"\r\n");
    let expected = [
        msg("lobby", 7, OpCode::Text, b"hello"),
        msg("side", 300, OpCode::Binary, &binary),
        msg("lobby", 1 << 52, OpCode::Text, "é".as_bytes()),
    ];
    assert_every_split(|| ready(Role::Subscriber), &stream, &expected);
}

#[test]
fn malformed_messages_are_dropped_and_the_link_goes_on() {
    let lobby = b"wschat:room:lobby";
    let good = chat(42, OpCode::Text, b"hello");
    let mut stream = pmessage(lobby, b"plain text, not our format");
    stream.extend(pmessage(
        lobby,
        &chat(7, OpCode::Text, b"\xff\xfe not UTF-8"),
    ));
    stream.extend(pmessage(lobby, b"\x21\x80"));
    stream.extend(pmessage(lobby, b"\x11\x07version 1"));
    stream.extend(pmessage(lobby, b"\x21\x07\x01\x01\x03a-bhello"));
    stream.extend(pmessage(b"wschat:room:bad/name", &good));
    stream.extend(pmessage(b"elsewhere:lobby", &good));
    stream.extend(b":5\r\n*0\r\n");
    stream.extend(pmessage(lobby, &good));
    let dropped = |d| event(LinkEvent::Dropped(d));
    let expected = [
        dropped(Dropped::Malformed(Malformed::Kind(b'p'))),
        dropped(Dropped::Malformed(Malformed::Utf8)),
        dropped(Dropped::Malformed(Malformed::Sender)),
        dropped(Dropped::Malformed(Malformed::Kind(0x11))),
        dropped(Dropped::Malformed(Malformed::Epoch)),
        dropped(Dropped::NoRoom),
        dropped(Dropped::NoRoom),
        dropped(Dropped::UnexpectedFrame),
        dropped(Dropped::UnexpectedFrame),
        msg("lobby", 42, OpCode::Text, b"hello"),
    ];
    assert_every_split(|| ready(Role::Subscriber), &stream, &expected);
}

#[test]
fn oversize_messages_are_dropped_and_an_oversize_frame_fails_the_link() {
    let lobby = b"wschat:room:lobby";
    let mut stream = pmessage(lobby, &chat(7, OpCode::Binary, &[b'x'; MAX + 1]));
    stream.extend(pmessage(lobby, &chat(7, OpCode::Binary, &[b'x'; 3 * MAX])));
    stream.extend(pmessage(lobby, &chat(7, OpCode::Binary, &[b'x'; MAX])));
    let expected = [
        event(LinkEvent::Dropped(Dropped::Oversize)),
        event(LinkEvent::Dropped(Dropped::Oversize)),
        msg("lobby", 7, OpCode::Binary, &[b'x'; MAX]),
    ];
    assert_every_split(|| ready(Role::Subscriber), &stream, &expected);

    // A frame that cannot be a message we would deliver is not waited for.
    let huge = pmessage(lobby, &[b'x'; 5000]);
    let max = MAX + FRAME_OVERHEAD;
    let mut link = ready(Role::Subscriber);
    link.receive(&huge[..max], t(3));
    assert_eq!(drain(&mut link), []);
    link.receive(&huge[max..max + 1], t(3));
    let failed = LinkError::OversizedFrame {
        buffered: max + 1,
        max,
    };
    assert_eq!(drain(&mut link), [event(LinkEvent::Failed(failed))]);
    assert!(!link.is_connected());
}

#[test]
fn an_idle_link_pings_and_a_missing_reply_times_out() {
    let mut link = ready(Role::Publisher);
    assert_eq!(link.poll_timeout(), Some(t(2) + HEARTBEAT));
    link.handle_timeout(t(1) + HEARTBEAT);
    assert!(!link.wants_write(), "not yet");
    let at = t(2) + HEARTBEAT;
    link.handle_timeout(at);
    assert_eq!(
        link.poll_timeout(),
        None,
        "the timer starts when it is sent"
    );
    assert_eq!(sent(&mut link, at + ms(1)), b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(link.poll_timeout(), Some(at + ms(1) + REPLY_TIMEOUT));
    link.handle_timeout(at + REPLY_TIMEOUT);
    assert_eq!(drain(&mut link), []);
    // The reply comes in time: the next heartbeat counts from it.
    link.receive(b"+PONG\r\n", at + ms(10));
    assert_eq!(drain(&mut link), []);
    assert_eq!(link.poll_timeout(), Some(at + ms(10) + HEARTBEAT));
    // The next one goes unanswered.
    let at = at + ms(10) + HEARTBEAT;
    link.handle_timeout(at);
    sent(&mut link, at);
    link.handle_timeout(at + REPLY_TIMEOUT);
    assert_eq!(
        drain(&mut link),
        [
            event(LinkEvent::Unanswered(Command::Ping)),
            event(LinkEvent::Failed(LinkError::ReplyTimeout))
        ]
    );
    assert!(!link.is_connected());
    assert_eq!(link.poll_timeout(), None);
}

#[test]
fn messages_keep_a_waiting_subscriber_alive() {
    let mut link = ready(Role::Subscriber);
    let at = t(2) + HEARTBEAT;
    link.handle_timeout(at);
    assert_eq!(sent(&mut link, at), b"*1\r\n$4\r\nPING\r\n");
    // Messages queued before the reply show that Redis is alive.
    let later = at - ms(1) + REPLY_TIMEOUT;
    link.receive(
        &pmessage(b"wschat:room:a", &chat(1, OpCode::Text, b"")),
        later,
    );
    assert_eq!(drain(&mut link), [msg("a", 1, OpCode::Text, b"")]);
    assert_eq!(link.poll_timeout(), Some(later + REPLY_TIMEOUT));
    link.handle_timeout(at + REPLY_TIMEOUT);
    assert!(link.is_ready());
    link.receive(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", later + ms(1));
    assert_eq!(drain(&mut link), []);
    assert_eq!(link.poll_timeout(), Some(later + ms(1) + HEARTBEAT));
}

#[test]
fn a_connect_that_takes_too_long_fails() {
    let mut link = Link::new(config(Role::Publisher), t(0));
    assert_eq!(link.poll_timeout(), None);
    link.connecting(t(10));
    assert_eq!(link.poll_timeout(), Some(t(10) + CONNECT_TIMEOUT));
    link.handle_timeout(t(9) + CONNECT_TIMEOUT);
    assert!(link.is_connecting());
    link.handle_timeout(t(10) + CONNECT_TIMEOUT);
    let failed = LinkEvent::Failed(LinkError::ConnectTimeout);
    assert_eq!(drain(&mut link), [event(failed)]);
    // Idle: a second report of the same end is ignored.
    link.closed(LinkError::Closed);
    assert_eq!(drain(&mut link), []);
    link.connecting(t(5000));
    assert!(link.is_connecting());
}

#[test]
fn id_blocks_are_reserved_and_a_refusal_keeps_the_link() {
    let mut link = ready(Role::Publisher);
    link.reserve_ids(1000);
    assert_eq!(
        sent(&mut link, t(3)),
        cmd([b"INCRBY", b"wschat:ids", b"1000"])
    );
    link.reserve_ids(1000);
    link.reserve_ids(6000);
    link.receive(b":3000\r\n-WRONGTYPE not a counter\r\n:-5\r\n", t(4));
    let incrby = |delta| Command::IncrBy { delta };
    let refused = LinkEvent::Refused {
        command: incrby(1000),
        message: "WRONGTYPE not a counter".into(),
    };
    let expected = [
        event(LinkEvent::IdsReserved {
            end: 3000,
            delta: 1000,
        }),
        event(refused),
        event(LinkEvent::IdsReserved {
            end: 0,
            delta: 6000,
        }),
    ];
    assert_eq!(drain(&mut link), expected);
    assert!(link.is_ready());
}

#[test]
fn a_refused_handshake_fails_the_link() {
    let mut link = connected(config(Role::Publisher), Some(1000));
    link.receive(&scripts_loaded(), t(2));
    link.receive(b"-WRONGTYPE not a counter\r\n", t(2));
    let failed = LinkError::ErrorReply {
        command: Some(Command::IncrBy { delta: 1000 }),
        message: "WRONGTYPE not a counter".into(),
    };
    assert_eq!(drain(&mut link), [event(LinkEvent::Failed(failed))]);
    let mut link = connected(config(Role::Subscriber), None);
    link.receive(b"-NOAUTH Authentication required.\r\n", t(2));
    let failed = LinkError::ErrorReply {
        command: Some(Command::PSubscribe),
        message: "NOAUTH Authentication required.".into(),
    };
    assert_eq!(drain(&mut link), [event(LinkEvent::Failed(failed))]);
}

/// The `EVALSHA` of the publish script for one message, argument by
/// argument as `scripts/publish.lua` reads them.
pub(super) fn evalsha_publish(room: &str, sender: u64, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    message::encode_head(sender, opcode, TIME, &mut head);
    let opcode = if opcode == OpCode::Text {
        "text"
    } else {
        "binary"
    };
    cmd([
        b"EVALSHA",
        Script::Publish.sha1().as_bytes(),
        b"3",
        format!("wschat:meta:{room}").as_bytes(),
        format!("wschat:history:{room}").as_bytes(),
        b"wschat:epochs",
        format!("wschat:room:{room}").as_bytes(),
        b"3",
        b"600000",
        b"86400000",
        &head,
        sender.to_string().as_bytes(),
        opcode.as_bytes(),
        TIME.to_string().as_bytes(),
        payload,
    ])
}

#[test]
fn publish_runs_the_publish_script_and_hears_its_replies() {
    let mut link = ready(Role::Publisher);
    link.publish("lobby", 7, OpCode::Text, b"hi", TIME).unwrap();
    assert_eq!(
        sent(&mut link, t(3)),
        evalsha_publish("lobby", 7, OpCode::Text, b"hi")
    );
    link.publish("lobby", 7, OpCode::Binary, b"", TIME).unwrap();
    link.receive(b":1\r\n-WRONGTYPE no\r\n", t(4));
    let refused = LinkEvent::Refused {
        command: Command::Publish,
        message: "WRONGTYPE no".into(),
    };
    assert_eq!(drain(&mut link), [event(refused)]);
    assert!(link.is_ready());
    assert_eq!(link.retained_bytes, 0, "nothing kept once answered");
    link.receive(b":1\r\n", t(5));
    let failed = LinkEvent::Failed(LinkError::UnsolicitedReply);
    assert_eq!(drain(&mut link), [event(failed)]);
    assert_eq!(
        link.publish("lobby", 7, OpCode::Text, b"hi", TIME),
        Err(NotQueued::NotReady)
    );

    let mut link = ready(Role::Publisher);
    link.publish("lobby", 7, OpCode::Text, b"hi", TIME).unwrap();
    link.receive(b"$3\r\nabc\r\n", t(3));
    let failed = LinkError::UnexpectedReply(Command::Publish);
    assert_eq!(drain(&mut link), [event(LinkEvent::Failed(failed))]);
}

#[test]
fn the_publish_queue_is_bounded_by_its_backlog() {
    let limit = 300;
    let mut link = connected(
        LinkConfig {
            queue_limit: limit,
            ..config(Role::Publisher)
        },
        None,
    );
    sent(&mut link, t(1));
    link.receive(&[scripts_loaded(), b"+PONG\r\n".to_vec()].concat(), t(2));
    drain(&mut link);
    // One large message still goes into an empty queue.
    assert_eq!(
        link.publish("a", 1, OpCode::Binary, &[0; 400], TIME),
        Ok(())
    );
    assert_eq!(
        link.publish("a", 1, OpCode::Text, b"x", TIME),
        Err(NotQueued::QueueFull)
    );
    sent(&mut link, t(3));
    assert_eq!(link.publish("a", 1, OpCode::Text, b"x", TIME), Ok(()));
    // Sent but unconfirmed, messages are kept for a resend, up to a bound
    // of their own.
    let mut accepted = 2;
    sent(&mut link, t(3));
    while link.publish("a", 1, OpCode::Text, b"x", TIME).is_ok() {
        sent(&mut link, t(3));
        accepted += 1;
    }
    let one = evalsha_publish("a", 1, OpCode::Text, b"x").len();
    let bound = limit * RETAINED_FACTOR;
    assert!(link.retained_bytes <= bound, "{}", link.retained_bytes);
    assert!(
        link.retained_bytes + one > bound,
        "{} {one}",
        link.retained_bytes
    );
    // Confirmations make room again.
    link.receive(":1\r\n".repeat(accepted).as_bytes(), t(4));
    assert_eq!(drain(&mut link), []);
    assert_eq!(link.retained_bytes, 0);
    assert_eq!(link.publish("a", 1, OpCode::Text, b"x", TIME), Ok(()));
}

#[test]
fn a_failure_reports_the_unanswered_commands_first() {
    let mut link = ready(Role::Publisher);
    for _ in 0..3 {
        link.publish("lobby", 1, OpCode::Text, b"m", TIME).unwrap();
    }
    sent(&mut link, t(3));
    link.reserve_ids(1000);
    link.fetch(5, "lobby", &Fetch::Last(2)).unwrap();
    link.closed(LinkError::Closed);
    let unanswered = |c| event(LinkEvent::Unanswered(c));
    let expected = [
        unanswered(Command::Publish),
        unanswered(Command::Publish),
        unanswered(Command::Publish),
        unanswered(Command::IncrBy { delta: 1000 }),
        unanswered(Command::Fetch { id: 5 }),
        event(LinkEvent::Failed(LinkError::Closed)),
    ];
    assert_eq!(drain(&mut link), expected);
    assert!(!link.wants_write(), "what was queued went with it");
    assert_eq!(link.retained_bytes, 0, "and what was kept");
    assert_eq!(sent(&mut link, t(4)), b"");
    assert_eq!(link.poll_timeout(), None);
}

#[test]
fn bytes_that_are_not_resp_fail_the_link_after_what_came_before() {
    let mut stream = pmessage(b"wschat:room:a", &chat(1, OpCode::Text, b"ok"));
    stream.extend(b"hello\r\n");
    let mut link = ready(Role::Subscriber);
    link.receive(&stream, t(3));
    let failed = LinkError::NotResp { first_byte: b'h' };
    let expected = [
        msg("a", 1, OpCode::Text, b"ok"),
        event(LinkEvent::Failed(failed)),
    ];
    assert_eq!(drain(&mut link), expected);
}

#[test]
fn an_error_to_no_command_fails_the_subscriber() {
    let mut link = ready(Role::Subscriber);
    link.receive(b"-ERR out of the blue\r\n", t(3));
    let failed = LinkError::ErrorReply {
        command: None,
        message: "ERR out of the blue".into(),
    };
    assert_eq!(drain(&mut link), [event(LinkEvent::Failed(failed))]);
}

#[test]
fn read_from_reads_into_the_link_in_place() {
    let mut link = ready(Role::Subscriber);
    let bytes = pmessage(b"wschat:room:a", &chat(9, OpCode::Binary, b"\x00\x01"));
    let mut source = &bytes[..];
    assert_eq!(link.read_from(&mut source, t(3)).unwrap(), bytes.len());
    assert_eq!(drain(&mut link), [msg("a", 9, OpCode::Binary, b"\x00\x01")]);
    assert_eq!(
        link.read_from(&mut source, t(4)).unwrap(),
        0,
        "end of stream"
    );
    assert_eq!(link.poll_timeout(), Some(t(3) + HEARTBEAT));
}

mod scripts;
