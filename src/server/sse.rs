//! Server-sent events (the WHATWG HTML standard, section 9.2): how a room's
//! JSON objects are written as events on a `text/event-stream`.
//!
//! An event is a few `field: value` lines and a blank line. wschat writes
//! `id: EPOCH:OFFSET` on each room message (what `EventSource` sends back
//! as `Last-Event-ID` when it reconnects) and one `data:` line per line of
//! the object; the objects of [`crate::server::json`] never hold a raw CR
//! or LF (strings escape them), so each event has one `data:` line. A
//! comment line (`: ping`) is the heartbeat: clients ignore it, and
//! proxies see a stream that is not idle.

use std::io::Write as _;

/// The heartbeat: a comment line, then the blank line that ends it.
pub const HEARTBEAT: &[u8] = b": ping\n\n";

/// Where an event sits in its room: its `id` field, `EPOCH:OFFSET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId<'a> {
    /// The room's epoch.
    pub epoch: &'a str,
    /// The offset of the message (or, on a welcome, of the last message
    /// the client is to be considered as having).
    pub offset: u64,
}

/// Appends an event carrying `data` (with `id` first, if given) to `out`.
/// Each line of `data` becomes a `data:` line, so that no byte of it can
/// end the event early; a CR, an LF or a CRLF ends a line, as the standard
/// reads them.
pub fn event(id: Option<EventId<'_>>, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + 48);
    if let Some(id) = id {
        // Writing to a Vec cannot fail.
        let _ = writeln!(out, "id: {}:{}", id.epoch, id.offset);
    }
    let mut rest = data;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..end]);
        out.push(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_of(id: Option<EventId<'_>>, data: &[u8]) -> String {
        let mut out = Vec::new();
        event(id, data, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Reads an event stream the way the standard's parser does: the
    /// `data` of each event (lines joined by LF) and its last `id`.
    fn parse(stream: &str) -> Vec<(Option<String>, String)> {
        let mut events = Vec::new();
        let (mut id, mut data): (Option<String>, Option<String>) = (None, None);
        for line in stream.split('\n') {
            if line.is_empty() {
                if let Some(d) = data.take() {
                    events.push((id.clone(), d));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => id = Some(value),
                "data" => {
                    data = Some(match data {
                        Some(d) => format!("{d}\n{value}"),
                        None => value,
                    })
                }
                _ => {}
            }
        }
        events
    }

    #[test]
    fn a_message_event_has_its_id_and_one_data_line() {
        let id = EventId {
            epoch: "k3x",
            offset: 42,
        };
        let text = event_of(Some(id), br#"{"type":"message","offset":42}"#);
        assert_eq!(
            text,
            "id: k3x:42\ndata: {\"type\":\"message\",\"offset\":42}\n\n"
        );
        assert_eq!(
            parse(&text),
            [(
                Some("k3x:42".to_string()),
                r#"{"type":"message","offset":42}"#.to_string()
            )]
        );
    }

    #[test]
    fn line_breaks_in_data_never_end_the_event_early() {
        for data in ["a\nb", "a\r\nb", "a\rb", "\n", "a\n\nb", ""] {
            let text = event_of(None, data.as_bytes());
            let events = parse(&text.replace("\r\n", "\n").replace('\r', "\n"));
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(events, [(None, expected)], "{data:?} as {text:?}");
            assert!(text.ends_with("\n\n"));
        }
    }

    #[test]
    fn the_heartbeat_is_a_comment_that_clients_skip() {
        assert!(HEARTBEAT.starts_with(b":"));
        let stream = format!(
            "{}{}",
            std::str::from_utf8(HEARTBEAT).unwrap(),
            event_of(None, b"x")
        );
        assert_eq!(parse(&stream), [(None, "x".to_string())]);
    }
}
