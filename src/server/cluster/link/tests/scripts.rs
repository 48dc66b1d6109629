//! The publisher's scripts: loaded at connect, run by `EVALSHA`, loaded
//! again and resent after `NOSCRIPT`; fetch replies read at every split.

use super::*;
use crate::server::cluster::history::{FetchError, FetchedEntry, FetchedHistory};

const NOSCRIPT: &[u8] = b"-NOSCRIPT No matching script. Please use EVAL.\r\n";

fn publish_sha() -> Vec<u8> {
    bulk(Script::Publish.sha1().as_bytes())
}

/// A read script's reply with entries of `(offset, payload)`, text from 7.
fn read_reply(epoch: &str, head: u64, entries: &[(u64, &[u8])]) -> Vec<u8> {
    let mut out = format!(
        "*3\r\n${}\r\n{epoch}\r\n:{head}\r\n*{}\r\n",
        epoch.len(),
        entries.len()
    )
    .into_bytes();
    for (offset, payload) in entries {
        out.extend(b"*2\r\n");
        out.extend(bulk(format!("{offset}-0").as_bytes()));
        out.extend(b"*8\r\n");
        for part in [
            &b"sender"[..],
            b"7",
            b"opcode",
            b"text",
            b"time",
            b"1000",
            b"payload",
            payload,
        ] {
            out.extend(bulk(part));
        }
    }
    out
}

fn entry(offset: u64, payload: &[u8]) -> FetchedEntry {
    FetchedEntry {
        offset,
        time_ms: 1000,
        sender: 7,
        opcode: OpCode::Text,
        payload: payload.to_vec(),
    }
}

fn fetched(id: u64, result: Result<FetchedHistory, FetchError>) -> Out {
    event(LinkEvent::Fetched { id, result })
}

#[test]
fn the_scripts_are_loaded_at_connect_and_their_hashes_checked() {
    let mut link = connected(config(Role::Publisher), None);
    let handshake = sent(&mut link, t(1));
    assert!(handshake.starts_with(&script_loads()), "SCRIPT LOAD first");
    // Redis answers another hash: not the script we sent.
    link.receive(&bulk(&[b'0'; 40]), t(2));
    let failed = LinkError::UnexpectedReply(Command::ScriptLoad(Script::Publish));
    let expected = [
        event(LinkEvent::Unanswered(Command::ScriptLoad(Script::Read))),
        event(LinkEvent::Unanswered(Command::Ping)),
        event(LinkEvent::Failed(failed)),
    ];
    assert_eq!(drain(&mut link), expected);
    // Or an error: Redis without scripting cannot serve.
    let mut link = connected(config(Role::Publisher), None);
    link.receive(b"-ERR unknown command 'SCRIPT'\r\n", t(2));
    let failed = LinkError::ErrorReply {
        command: Some(Command::ScriptLoad(Script::Publish)),
        message: "ERR unknown command 'SCRIPT'".into(),
    };
    assert_eq!(
        drain(&mut link).last(),
        Some(&event(LinkEvent::Failed(failed)))
    );
}

#[test]
fn each_publish_is_one_evalsha() {
    let mut link = ready(Role::Publisher);
    link.publish("a", 1, OpCode::Text, b"one", TIME).unwrap();
    link.publish("b.c", 1 << 40, OpCode::Binary, &[0, 255], TIME)
        .unwrap();
    let expected = [
        evalsha_publish("a", 1, OpCode::Text, b"one"),
        evalsha_publish("b.c", 1 << 40, OpCode::Binary, &[0, 255]),
    ]
    .concat();
    assert_eq!(sent(&mut link, t(3)), expected);
    link.receive(b":1\r\n:7\r\n", t(4));
    assert_eq!(drain(&mut link), []);
    assert_eq!(link.retained_bytes, 0);
}

#[test]
fn noscript_loads_the_script_again_and_resends_in_order() {
    let mut link = ready(Role::Publisher);
    let m = |n: u8| [b'm', b'0' + n];
    for n in 1..=2 {
        link.publish("lobby", 7, OpCode::Text, &m(n), TIME).unwrap();
    }
    sent(&mut link, t(3));
    // Redis lost its scripts (SCRIPT FLUSH): the first is refused.
    link.receive(NOSCRIPT, t(4));
    assert_eq!(
        drain(&mut link),
        [event(LinkEvent::ScriptMissing(Script::Publish))]
    );
    // A message sent now waits for the second's answer, sent before it.
    link.publish("lobby", 7, OpCode::Text, &m(3), TIME).unwrap();
    link.receive(NOSCRIPT, t(4));
    assert_eq!(drain(&mut link), [], "one reload for both");
    let load = cmd([b"SCRIPT", b"LOAD", Script::Publish.source().as_bytes()]);
    let expected = [
        load,
        evalsha_publish("lobby", 7, OpCode::Text, &m(1)),
        evalsha_publish("lobby", 7, OpCode::Text, &m(2)),
        evalsha_publish("lobby", 7, OpCode::Text, &m(3)),
    ]
    .concat();
    assert!(sent(&mut link, t(5)) == expected, "in the order sent");
    // Loaded: every message is answered, none reported lost.
    link.receive(
        &[publish_sha(), b":1\r\n:2\r\n:3\r\n".to_vec()].concat(),
        t(6),
    );
    assert_eq!(drain(&mut link), []);
    assert_eq!(link.retained_bytes, 0);
    assert!(link.is_ready());
}

#[test]
fn a_message_refused_noscript_again_and_again_is_refused_at_last() {
    let mut link = ready(Role::Publisher);
    link.publish("lobby", 7, OpCode::Text, b"m", TIME).unwrap();
    sent(&mut link, t(3));
    for _ in 1..MAX_TRIES {
        link.receive(NOSCRIPT, t(4));
        assert_eq!(
            drain(&mut link),
            [event(LinkEvent::ScriptMissing(Script::Publish))]
        );
        sent(&mut link, t(4));
        link.receive(&publish_sha(), t(4));
    }
    link.receive(NOSCRIPT, t(5));
    let refused = LinkEvent::Refused {
        command: Command::Publish,
        message: "NOSCRIPT No matching script. Please use EVAL.".into(),
    };
    assert_eq!(drain(&mut link), [event(refused)]);
    assert_eq!(sent(&mut link, t(5)), b"", "nothing more to send");
    assert_eq!(link.retained_bytes, 0);
}

#[test]
fn a_failure_during_a_reload_leaves_nothing_unanswered() {
    let mut link = ready(Role::Publisher);
    link.fetch(1, "lobby", &Fetch::Last(1)).unwrap();
    link.publish("lobby", 7, OpCode::Text, b"m", TIME).unwrap();
    sent(&mut link, t(3));
    link.receive(NOSCRIPT, t(4));
    assert_eq!(
        drain(&mut link),
        [event(LinkEvent::ScriptMissing(Script::Read))]
    );
    // Held until the publish sent before the reload is answered.
    link.fetch(2, "lobby", &Fetch::Last(1)).unwrap();
    link.closed(LinkError::Closed);
    let unanswered = |c| event(LinkEvent::Unanswered(c));
    let expected = [
        unanswered(Command::Publish),
        unanswered(Command::ScriptLoad(Script::Read)),
        unanswered(Command::Fetch { id: 1 }),
        unanswered(Command::Fetch { id: 2 }),
        event(LinkEvent::Failed(LinkError::Closed)),
    ];
    assert_eq!(drain(&mut link), expected);
    assert_eq!(link.retained_bytes, 0);
}

#[test]
fn fetches_run_the_read_script() {
    let mut link = ready(Role::Publisher);
    let since = Fetch::Since {
        epoch: "0hon59y07ji1".into(),
        offset: 41,
    };
    link.fetch(1, "lobby", &since).unwrap();
    link.fetch(2, "lobby", &Fetch::Last(20)).unwrap();
    // An epoch no script makes cannot match: it is sent empty.
    let bad = Fetch::Since {
        epoch: "x".repeat(10_000),
        offset: 1,
    };
    link.fetch(3, "side", &bad).unwrap();
    let expected = [
        evalsha_read("lobby", "3", "since", "0hon59y07ji1", "41"),
        evalsha_read("lobby", "3", "last", "", "20"),
        evalsha_read("side", "3", "since", "", "1"),
    ]
    .concat();
    assert_eq!(sent(&mut link, t(3)), expected);
}

#[test]
fn fetch_replies_are_read_at_every_split() {
    let make = || {
        let mut link = ready(Role::Publisher);
        link.fetch(1, "lobby", &Fetch::Last(3)).unwrap();
        link.publish("lobby", 7, OpCode::Text, b"m", TIME).unwrap();
        link.fetch(2, "lobby", &Fetch::Last(3)).unwrap();
        link.fetch(3, "lobby", &Fetch::Last(3)).unwrap();
        link.fetch(4, "lobby", &Fetch::Last(3)).unwrap();
        link.fetch(5, "lobby", &Fetch::Last(3)).unwrap();
        sent(&mut link, t(3));
        link
    };
    let payload: &[u8] = b"a\r\nb";
    let stream = [
        read_reply("e1", 5, &[(4, b"four"), (5, payload)]),
        b":6\r\n".to_vec(),
        read_reply("e1", 6, &[]),
        b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n".to_vec(),
        // Replies of another shape: the link goes on.
        b"*2\r\n$2\r\ne1\r\n:1\r\n".to_vec(),
        b":1\r\n".to_vec(),
    ]
    .concat();
    let expected = [
        fetched(
            1,
            Ok(FetchedHistory {
                epoch: "e1".into(),
                head: 5,
                entries: vec![entry(4, b"four"), entry(5, payload)],
            }),
        ),
        fetched(
            2,
            Ok(FetchedHistory {
                epoch: "e1".into(),
                head: 6,
                entries: vec![],
            }),
        ),
        fetched(
            3,
            Err(FetchError::Refused(
                "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
            )),
        ),
        event(LinkEvent::Dropped(Dropped::BadHistory("not three parts"))),
        fetched(4, Err(FetchError::Malformed("not three parts"))),
        event(LinkEvent::Dropped(Dropped::BadHistory("not an array"))),
        fetched(5, Err(FetchError::Malformed("not an array"))),
    ];
    assert_every_split(make, &stream, &expected);

    let mut link = make();
    let with_bad_entry = read_reply("e1", 2, &[(1, b"\xff"), (2, b"ok")]);
    link.receive(&with_bad_entry, t(4));
    let expected = [
        event(LinkEvent::Dropped(Dropped::BadEntry("text not UTF-8"))),
        fetched(
            1,
            Ok(FetchedHistory {
                epoch: "e1".into(),
                head: 2,
                entries: vec![entry(2, b"ok")],
            }),
        ),
    ];
    assert_eq!(drain(&mut link), expected);
    assert!(link.is_ready());
}

#[test]
fn a_history_reply_may_be_larger_than_a_message_but_not_without_bound() {
    // History size entries of the largest message fit.
    let config = LinkConfig {
        history_size: 20,
        ..config(Role::Publisher)
    };
    let ready = || {
        let mut link = connected(config, None);
        sent(&mut link, t(1));
        link.receive(&[scripts_loaded(), b"+PONG\r\n".to_vec()].concat(), t(2));
        drain(&mut link);
        link
    };
    let big = [b'x'; MAX];
    let entries: Vec<(u64, &[u8])> = (1..=20).map(|o| (o, &big[..])).collect();
    let reply = read_reply("e", 20, &entries);
    assert!(reply.len() > MAX + FRAME_OVERHEAD);
    let mut link = ready();
    link.fetch(1, "lobby", &Fetch::Last(20)).unwrap();
    link.receive(&reply, t(3));
    let got = drain(&mut link);
    let one_fetch = |got: &[Out]| match got {
        [Out::Event(LinkEvent::Fetched {
            id: 1,
            result: Ok(h),
        })] => h.entries.len(),
        _ => 0,
    };
    assert_eq!(one_fetch(&got), 20);
    // Past what history size entries can take, the link gives up.
    let max = config.max_frame();
    let mut link = ready();
    link.fetch(1, "lobby", &Fetch::Last(3)).unwrap();
    let huge = read_reply("e", 1, &[(1, &vec![b'x'; max])]);
    link.receive(&huge[..max + 1], t(3));
    let failed = LinkError::OversizedFrame {
        buffered: max + 1,
        max,
    };
    assert_eq!(
        drain(&mut link),
        [
            event(LinkEvent::Unanswered(Command::Fetch { id: 1 })),
            event(LinkEvent::Failed(failed))
        ]
    );
}
