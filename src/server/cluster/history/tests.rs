//! Read replies checked, and the completeness of a recovery.

use super::*;
use crate::server::cluster::resp;
use crate::server::cluster::resp::wire::bulk;

const MAX: usize = 100;

fn entry(offset: u64, payload: &[u8]) -> FetchedEntry {
    FetchedEntry {
        offset,
        time_ms: 1_700_000_000_000 + offset,
        sender: 7,
        opcode: OpCode::Text,
        payload: payload.to_vec(),
    }
}

fn history(epoch: &str, head: u64, offsets: impl IntoIterator<Item = u64>) -> FetchedHistory {
    FetchedHistory {
        epoch: epoch.to_string(),
        head,
        entries: offsets.into_iter().map(|o| entry(o, b"m")).collect(),
    }
}

/// RESP of a stream entry as XRANGE returns it.
fn entry_resp(id: &[u8], fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = b"*2\r\n".to_vec();
    out.extend(bulk(id));
    out.extend(format!("*{}\r\n", fields.len() * 2).as_bytes());
    for (name, value) in fields {
        out.extend(bulk(name));
        out.extend(bulk(value));
    }
    out
}

fn good_entry(offset: u64, payload: &[u8]) -> Vec<u8> {
    let id = format!("{offset}-0");
    let time = (1_700_000_000_000 + offset).to_string();
    entry_resp(
        id.as_bytes(),
        &[
            (b"sender", b"7"),
            (b"opcode", b"text"),
            (b"time", time.as_bytes()),
            (b"payload", payload),
        ],
    )
}

/// RESP of a read script's reply.
fn reply(epoch: &[u8], head: i64, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"*3\r\n".to_vec();
    out.extend(bulk(epoch));
    out.extend(format!(":{head}\r\n*{}\r\n", entries.len()).as_bytes());
    for e in entries {
        out.extend(e);
    }
    out
}

fn parse_bytes(bytes: &[u8]) -> Result<Parsed, &'static str> {
    let decoded = resp::decode(bytes).unwrap().expect("a whole frame");
    assert_eq!(decoded.used, bytes.len());
    parse(&decoded.frame, bytes, MAX)
}

#[test]
fn a_reply_reads_as_the_history() {
    let bytes = reply(b"e1", 3, &[good_entry(2, b"two"), good_entry(3, b"three")]);
    let parsed = parse_bytes(&bytes).unwrap();
    assert_eq!(parsed.dropped, []);
    assert_eq!(
        parsed.history,
        FetchedHistory {
            epoch: "e1".into(),
            head: 3,
            entries: vec![entry(2, b"two"), entry(3, b"three")],
        }
    );
    let empty = parse_bytes(&reply(b"e1", 0, &[])).unwrap();
    assert_eq!(empty.history, history("e1", 0, []));
}

#[test]
fn fields_in_any_order_and_binary_payloads() {
    let payload = [0, b'\r', b'\n', 0xff];
    let e = entry_resp(
        b"1-0",
        &[
            (b"payload", &payload),
            (b"time", b"5"),
            (b"opcode", b"binary"),
            (b"sender", b"18446744073709551615"),
        ],
    );
    let parsed = parse_bytes(&reply(b"e", 1, &[e])).unwrap();
    let got = &parsed.history.entries[0];
    assert_eq!(got.sender, u64::MAX);
    assert_eq!((got.opcode, got.time_ms), (OpCode::Binary, 5));
    assert_eq!(got.payload, payload);
}

#[test]
fn entries_that_cannot_be_delivered_are_left_out_and_said_why() {
    let with = |fields: &[(&[u8], &[u8])]| entry_resp(b"2-0", fields);
    // Every field there, one of them wrong.
    let all = |sender: &[u8], opcode: &[u8], time: &[u8]| {
        with(&[
            (b"sender", sender),
            (b"opcode", opcode),
            (b"time", time),
            (b"payload", b""),
        ])
    };
    let cases: Vec<(Vec<u8>, Dropped)> = vec![
        (good_entry(2, &[b'x'; MAX + 1]), Dropped::Oversize),
        (good_entry(2, b"\xff"), Dropped::BadEntry("text not UTF-8")),
        (
            with(&[(b"sender", b"7"), (b"opcode", b"text"), (b"time", b"1")]),
            Dropped::BadEntry("no payload"),
        ),
        (all(b"07", b"text", b"1"), Dropped::BadEntry("bad sender")),
        (all(b"7", b"ping", b"1"), Dropped::BadEntry("bad opcode")),
        (all(b"7", b"text", b"-1"), Dropped::BadEntry("bad time")),
        (
            with(&[(b"sender", b"7"), (b"sender", b"8"), (b"payload", b"")]),
            Dropped::BadEntry("a field twice"),
        ),
        (
            with(&[(b"sender", b"7"), (b"extra", b"8")]),
            Dropped::BadEntry("an unknown field"),
        ),
    ];
    for (bad, why) in cases {
        let bytes = reply(b"e", 3, &[good_entry(1, b"a"), bad, good_entry(3, b"c")]);
        let parsed = parse_bytes(&bytes).unwrap();
        assert_eq!(parsed.dropped, [why]);
        let offsets: Vec<u64> = parsed.history.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [1, 3], "{why}");
        assert!(!parsed.history.is_complete_since("e", 0), "the gap shows");
    }
    // An odd number of field items.
    let mut odd = b"*2\r\n$3\r\n2-0\r\n*3\r\n".to_vec();
    odd.extend(bulk(b"sender"));
    odd.extend(bulk(b"7"));
    odd.extend(bulk(b"opcode"));
    let parsed = parse_bytes(&reply(b"e", 2, &[odd])).unwrap();
    assert_eq!(
        parsed.dropped,
        [Dropped::BadEntry("a field without a value")]
    );
}

#[test]
fn replies_of_another_shape_are_refused() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b":1\r\n".to_vec(), "not an array"),
        (b"*2\r\n$1\r\ne\r\n:1\r\n".to_vec(), "not three parts"),
        (reply(b"", 1, &[]), "bad epoch"),
        (reply(b"a-b", 1, &[]), "bad epoch"),
        (reply(&[b'a'; 33], 1, &[]), "bad epoch"),
        (reply(b"e", -1, &[]), "negative head"),
        (b"*3\r\n$1\r\ne\r\n$1\r\n1\r\n*0\r\n".to_vec(), "bad head"),
        (
            b"*3\r\n$1\r\ne\r\n:1\r\n:0\r\n".to_vec(),
            "entries not an array",
        ),
        (
            reply(b"e", 1, &[b":1\r\n".to_vec()]),
            "an entry not an array",
        ),
        (
            reply(b"e", 1, &[b"*1\r\n$3\r\n1-0\r\n".to_vec()]),
            "an entry not an id and fields",
        ),
        (
            reply(
                b"e",
                9,
                &[good_entry(1, b"")[..4]
                    .iter()
                    .chain(b"$3\r\n1-1\r\n*0\r\n")
                    .copied()
                    .collect()],
            ),
            "bad entry id",
        ),
        (reply(b"e", 9, &[entry_resp(b"0-0", &[])]), "bad entry id"),
        (reply(b"e", 9, &[entry_resp(b"x-0", &[])]), "bad entry id"),
        (
            reply(b"e", 9, &[good_entry(2, b""), good_entry(2, b"")]),
            "entry ids out of order or past the head",
        ),
        (
            reply(b"e", 9, &[good_entry(3, b""), good_entry(2, b"")]),
            "entry ids out of order or past the head",
        ),
        (
            reply(b"e", 2, &[good_entry(3, b"")]),
            "entry ids out of order or past the head",
        ),
    ];
    for (bytes, why) in cases {
        assert_eq!(
            parse_bytes(&bytes),
            Err(why),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn a_recovery_is_complete_only_when_nothing_is_missing() {
    // Everything after 3 up to the head.
    assert!(history("e", 5, [4, 5]).is_complete_since("e", 3));
    // Nothing happened since.
    assert!(history("e", 5, []).is_complete_since("e", 5));
    // From the start of the epoch.
    assert!(history("e", 2, [1, 2]).is_complete_since("e", 0));
    // Another epoch: the history was lost.
    assert!(!history("f", 5, [4, 5]).is_complete_since("e", 3));
    // Trimmed or expired: the first entries are gone.
    assert!(!history("e", 5, [5]).is_complete_since("e", 3));
    assert!(!history("e", 5, []).is_complete_since("e", 3));
    // Cut at the history size: the newest are there, not all.
    assert!(!history("e", 9, [8, 9]).is_complete_since("e", 3));
    // A gap inside (an entry left out on the way).
    assert!(!history("e", 6, [4, 6]).is_complete_since("e", 3));
    assert!(!history("e", 5, [4, 4]).is_complete_since("e", 3));
    // An offset past the head: not from this history.
    assert!(!history("e", 5, []).is_complete_since("e", 6));
}

#[test]
fn decimals_are_as_redis_writes_them() {
    assert_eq!(decimal(b"0"), Some(0));
    assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
    for bad in [
        &b""[..],
        b"01",
        b"+1",
        b"-1",
        b"1 ",
        b"18446744073709551616",
        b"1e3",
    ] {
        assert_eq!(decimal(bad), None, "{bad:?}");
    }
    assert_eq!(offset_of(b"12-0"), Some(12));
    assert_eq!(offset_of(b"12-1"), None);
    assert_eq!(offset_of(b"0-0"), None);
}
