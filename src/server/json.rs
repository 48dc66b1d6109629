//! The `wschat.v1` protocol's JSON objects, written by hand.
//!
//! A client that offers the subprotocol `wschat.v1` receives these objects
//! as text frames instead of the classic `from{id}:{message}`. The field
//! names are a contract (the README documents them): fields may be added,
//! none renamed. Each object is written once per message into a buffer and
//! then framed and shared like the classic frame, so the only cost per
//! receiver is a pointer; the writer here is a few `extend_from_slice`s,
//! with no intermediate tree and no allocation beyond the output.

use std::io::Write as _;

use base64::Engine as _;

use crate::protocol::OpCode;

/// The subprotocol name a client offers to speak JSON.
pub const SUBPROTOCOL: &str = "wschat.v1";

/// Where a message sits in its room: the room's epoch and the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp<'a> {
    /// The room's epoch: changes whenever the room's history was lost.
    pub epoch: &'a str,
    /// 1, 2, 3, ... in the room, never reused within an epoch.
    pub offset: u64,
    /// When the message was accepted, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// A room message as a JSON object:
/// `{"type":"message","offset":42,"from":7,"time":...,"text":"hello"}`,
/// or `"binary":"<base64>"` instead of `"text"` for a binary message.
pub fn message(stamp: &Stamp<'_>, sender: u64, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(80 + payload.len() + payload.len() / 8);
    let _ = write!(
        out,
        "{{\"type\":\"message\",\"offset\":{},\"from\":{sender},\"time\":{},",
        stamp.offset, stamp.time_ms
    );
    if opcode == OpCode::Binary {
        out.extend_from_slice(b"\"binary\":\"");
        let start = out.len();
        let len = base64::encoded_len(payload.len(), true).unwrap_or(0);
        out.resize(start + len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(payload, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.extend_from_slice(b"\"}");
    } else {
        out.extend_from_slice(b"\"text\":");
        string(payload, out);
        out.push(b'}');
    }
}

/// What a member is told first on joining a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome<'a> {
    /// The member's connection id (`from` of its messages).
    pub id: u64,
    /// The room's name.
    pub room: &'a str,
    /// The room's epoch.
    pub epoch: &'a str,
    /// The room's last offset when the member joined: what is replayed
    /// follows up to it, live messages come after it.
    pub offset: u64,
    /// Members of the room, this one included.
    pub members: usize,
    /// Whether the member asked for a position (`since`) and gets every
    /// message after it.
    pub recovered: bool,
}

/// `{"type":"welcome","id":7,"room":"lobby","epoch":"...","offset":41,
/// "members":3,"recovered":true}`.
pub fn welcome(w: &Welcome<'_>, out: &mut Vec<u8>) {
    welcome_with_session(w, None, out);
}

/// The welcome, with `"session":"<token>"` last when a session is given
/// (an SSE member's, for its posts).
pub fn welcome_with_session(w: &Welcome<'_>, session: Option<&str>, out: &mut Vec<u8>) {
    let _ = write!(out, "{{\"type\":\"welcome\",\"id\":{},\"room\":", w.id);
    string(w.room.as_bytes(), out);
    out.extend_from_slice(b",\"epoch\":");
    string(w.epoch.as_bytes(), out);
    let _ = write!(
        out,
        ",\"offset\":{},\"members\":{},\"recovered\":{}",
        w.offset, w.members, w.recovered
    );
    if let Some(session) = session {
        out.extend_from_slice(b",\"session\":");
        string(session.as_bytes(), out);
    }
    out.push(b'}');
}

/// A member came or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// `{"type":"join","id":8,"members":4}`.
    Join,
    /// `{"type":"leave","id":8,"members":3}`.
    Leave,
}

/// The JSON object of a presence change of member `id`, `members` now.
pub fn presence(kind: Presence, id: u64, members: usize, out: &mut Vec<u8>) {
    let kind = match kind {
        Presence::Join => "join",
        Presence::Leave => "leave",
    };
    let _ = write!(
        out,
        "{{\"type\":\"{kind}\",\"id\":{id},\"members\":{members}}}"
    );
}

/// Appends `text` (UTF-8, as a text message's payload is) as a JSON
/// string: quotes, backslashes and control characters escaped (RFC 8259
/// section 7); every other character passes through as is.
fn string(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp<'static> = Stamp {
        epoch: "e1",
        offset: 42,
        time_ms: 1_764_489_600_123,
    };

    fn text_of(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_text_message_has_the_documented_fields() {
        let json = text_of(|out| message(&STAMP, 7, OpCode::Text, b"hello", out));
        assert_eq!(
            json,
            r#"{"type":"message","offset":42,"from":7,"time":1764489600123,"text":"hello"}"#
        );
    }

    #[test]
    fn text_is_escaped_and_parses_back() {
        let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \0 é 😀 </script>";
        let json = text_of(|out| message(&STAMP, 1, OpCode::Text, tricky.as_bytes(), out));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["text"], tricky);
        assert_eq!(value["offset"], 42);
    }

    #[test]
    fn binary_travels_as_base64() {
        let bytes = [0u8, 1, 2, 255, 254, b'"'];
        let json = text_of(|out| message(&STAMP, 3, OpCode::Binary, &bytes, out));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value["binary"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, bytes);
        assert!(value.get("text").is_none());
        let empty = text_of(|out| message(&STAMP, 3, OpCode::Binary, b"", out));
        assert!(empty.ends_with(r#""binary":""}"#), "{empty}");
    }

    #[test]
    fn welcome_and_presence() {
        let w = Welcome {
            id: 7,
            room: "lobby",
            epoch: "abc123",
            offset: 41,
            members: 3,
            recovered: true,
        };
        assert_eq!(
            text_of(|out| welcome(&w, out)),
            r#"{"type":"welcome","id":7,"room":"lobby","epoch":"abc123","offset":41,"members":3,"recovered":true}"#
        );
        assert_eq!(
            text_of(|out| presence(Presence::Join, 8, 4, out)),
            r#"{"type":"join","id":8,"members":4}"#
        );
        assert_eq!(
            text_of(|out| presence(Presence::Leave, 8, 3, out)),
            r#"{"type":"leave","id":8,"members":3}"#
        );
    }
}
