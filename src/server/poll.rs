//! Long polling and polling: what a poll may ask for, and its answer.
//!
//! A poll names a position (`since=EPOCH:OFFSET`, as a WebSocket client
//! coming back does) and how long it may wait (`timeout=SECS`, at most
//! [`MAX_POLL_TIMEOUT`]). Its answer is one JSON object: the room's epoch,
//! whether the messages are everything after the position (`recovered`),
//! the position to poll from next, the messages (the very objects a
//! `wschat.v1` WebSocket client receives, from the room's history) with
//! the presence changes among them, the session token and the member id.

use std::io::Write as _;
use std::rc::Rc;
use std::time::Duration;

use super::sessions::poller::Presence;

/// The longest a poll is held (a longer `timeout` is cut to this): long
/// enough to save requests, short enough for proxies' idle timeouts.
pub const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a `timeout` value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTimeout;

/// Reads `timeout=SECS`: a non-negative number of seconds (decimals
/// allowed), cut to [`MAX_POLL_TIMEOUT`].
pub fn parse_timeout(text: &str) -> Result<Duration, BadTimeout> {
    let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let secs: f64 = text.parse().map_err(|_| BadTimeout)?;
    if !plain || !secs.is_finite() {
        return Err(BadTimeout);
    }
    Ok(Duration::from_secs_f64(
        secs.min(MAX_POLL_TIMEOUT.as_secs_f64()),
    ))
}

/// Everything a poll answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<'a> {
    /// The room's epoch.
    pub epoch: &'a str,
    /// The messages are every one after the poll's position.
    pub recovered: bool,
    /// The offset to poll from next (under `epoch`).
    pub next: u64,
    /// The poller's session token.
    pub session: &'a str,
    /// The poller's member id.
    pub id: u64,
    /// Members of the room, the poller included.
    pub members: usize,
}

/// Puts presence changes among messages: each after the messages up to
/// the offset it happened after. Both lists are oldest first.
pub fn merge(messages: Vec<(u64, Rc<[u8]>)>, presence: Vec<Presence>) -> Vec<Rc<[u8]>> {
    let mut items = Vec::with_capacity(messages.len() + presence.len());
    let mut presence = presence.into_iter().peekable();
    for (offset, message) in messages {
        while let Some(p) = presence.next_if(|p| p.0 < offset) {
            items.push(p.1);
        }
        items.push(message);
    }
    items.extend(presence.map(|p| p.1));
    items
}

/// Writes the answer: `{"epoch":…,"recovered":…,"next":"EPOCH:OFFSET",
/// "messages":[…],"session":"…","id":N,"members":N}`. The epoch and the
/// token are letters and digits, and the items JSON objects already.
pub fn write_answer(answer: &Answer<'_>, items: &[Rc<[u8]>], out: &mut Vec<u8>) {
    let bytes: usize = items.iter().map(|i| i.len() + 1).sum();
    out.reserve(160 + bytes);
    let _ = write!(
        out,
        "{{\"epoch\":\"{epoch}\",\"recovered\":{},\"next\":\"{epoch}:{}\",\"messages\":[",
        answer.recovered,
        answer.next,
        epoch = answer.epoch,
    );
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    let _ = write!(
        out,
        "],\"session\":\"{}\",\"id\":{},\"members\":{}}}",
        answer.session, answer.id, answer.members
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(text: &str) -> Rc<[u8]> {
        Rc::from(text.as_bytes())
    }

    #[test]
    fn timeouts_are_plain_seconds_cut_to_the_maximum() {
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_timeout("3600"), Ok(MAX_POLL_TIMEOUT));
        for bad in ["", "-1", "1e3", "inf", "NaN", "abc", "1,5", " 1"] {
            assert_eq!(parse_timeout(bad), Err(BadTimeout), "{bad:?}");
        }
    }

    #[test]
    fn presence_sits_after_the_messages_it_followed() {
        let messages = vec![(5, item("m5")), (6, item("m6")), (7, item("m7"))];
        let presence = vec![(4, item("p4")), (6, item("p6")), (9, item("p9"))];
        let items = merge(messages, presence);
        let texts: Vec<&[u8]> = items.iter().map(|i| &i[..]).collect();
        assert_eq!(
            texts,
            [&b"p4"[..], b"m5", b"m6", b"p6", b"m7", b"p9"],
            "p6 happened when 6 was the newest"
        );
    }

    #[test]
    fn the_answer_is_one_json_object_with_the_documented_fields() {
        let answer = Answer {
            epoch: "k3x",
            recovered: true,
            next: 42,
            session: "00000001ab",
            id: 7,
            members: 3,
        };
        let items = [
            item(r#"{"type":"message","offset":42,"from":1,"time":5,"text":"a"}"#),
            item(r#"{"type":"join","id":8,"members":3}"#),
        ];
        let mut out = Vec::new();
        write_answer(&answer, &items, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["epoch"], "k3x");
        assert_eq!(v["recovered"], true);
        assert_eq!(v["next"], "k3x:42");
        assert_eq!(v["session"], "00000001ab");
        assert_eq!(
            (v["id"].as_u64(), v["members"].as_u64()),
            (Some(7), Some(3))
        );
        assert_eq!(v["messages"][0]["offset"], 42);
        assert_eq!(v["messages"][1]["type"], "join");
        let mut empty = Vec::new();
        write_answer(&answer, &[], &mut empty);
        let v: serde_json::Value = serde_json::from_slice(&empty).unwrap();
        assert_eq!(v["messages"], serde_json::json!([]));
    }
}
