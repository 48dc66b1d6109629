//! The `wschat.v1` objects as the load tool reads them: the few fields it
//! needs, found by their keys, without a JSON parser.
//!
//! At a million deliveries a second the tool is CPU-bound, and every
//! receiver reads every object; a full parse (a tree, every string
//! unescaped) would cost more than the rest of a delivery. wschat writes
//! flat, compact objects whose field names are a contract, so a field is
//! found by searching for `"key":`, which cannot occur inside a string
//! value: a quote there is escaped, and what follows a string value is a
//! comma or a brace, never a colon. Strings are taken raw and unescaped only
//! when they hold a backslash, which the tool's own messages never do.
//!
//! The objects are those of the README ("History and the `wschat.v1`
//! protocol"): `welcome`, `message`, `join` and `leave`. A type this
//! reader does not know is [`Object::Other`], since types may be added.

use std::borrow::Cow;
use std::fmt;

/// A server object the reader could not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wschat.v1: {}", self.0)
    }
}

/// One object, with the fields the broadcast scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object<'a> {
    /// `{"type":"welcome",...}`: the first object of a connection.
    Welcome(Welcome<'a>),
    /// `{"type":"message",...}`: a room message.
    Message(Message<'a>),
    /// `{"type":"join",...}` or `{"type":"leave",...}`.
    Presence,
    /// An object of a type this reader does not know.
    Other,
}

/// Where the member stands when it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome<'a> {
    /// The room's epoch (letters and digits).
    pub epoch: &'a str,
    /// The room's newest offset at the moment of joining.
    pub offset: u64,
    /// Whether everything after the position asked for will follow.
    pub recovered: bool,
}

/// A room message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Its offset in the room.
    pub offset: u64,
    /// What was sent.
    pub body: Body<'a>,
}

/// The content of a room message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// `"text":"..."`, as a raw JSON string.
    Text(JsonStr<'a>),
    /// `"binary":"<base64>"`: never one of the tool's own messages, so
    /// it is not decoded.
    Binary,
}

/// The contents of a JSON string between its quotes, escapes unresolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonStr<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    /// The string's value: borrowed when it has no escape (no work
    /// beyond a UTF-8 check), decoded when it has. `None` for an invalid
    /// escape or invalid UTF-8.
    pub fn value(&self) -> Option<Cow<'a, str>> {
        if !self.escaped {
            return std::str::from_utf8(self.raw).ok().map(Cow::Borrowed);
        }
        unescape(self.raw).map(Cow::Owned)
    }
}

/// How wschat starts every message object: where the fast path begins.
const MESSAGE_HEAD: &[u8] = b"{\"type\":\"message\",\"offset\":";

/// Reads one object (a text message's payload).
pub fn parse(data: &[u8]) -> Result<Object<'_>, Malformed> {
    if let Some(rest) = data.strip_prefix(MESSAGE_HEAD) {
        // The way wschat writes a message, type and offset first: no
        // search for either, and the body is searched for after them.
        return message(number(rest), rest);
    }
    if data.first() != Some(&b'{') {
        return Err(Malformed("not an object"));
    }
    let kind = field(data, b"type")
        .and_then(string)
        .ok_or(Malformed("no type"))?;
    match kind.raw {
        b"message" => message(field(data, b"offset").and_then(number), data),
        b"welcome" => {
            let epoch = field(data, b"epoch")
                .and_then(string)
                .and_then(|s| std::str::from_utf8(s.raw).ok().filter(|_| !s.escaped))
                .ok_or(Malformed("welcome without epoch"))?;
            let offset = field(data, b"offset")
                .and_then(number)
                .ok_or(Malformed("welcome without offset"))?;
            let recovered = field(data, b"recovered")
                .and_then(boolean)
                .ok_or(Malformed("welcome without recovered"))?;
            Ok(Object::Welcome(Welcome {
                epoch,
                offset,
                recovered,
            }))
        }
        b"join" | b"leave" => Ok(Object::Presence),
        _ => Ok(Object::Other),
    }
}

/// A message object with `offset` (if it was found), whose body is in
/// `data`.
fn message(offset: Option<u64>, data: &[u8]) -> Result<Object<'_>, Malformed> {
    let offset = offset.ok_or(Malformed("message without offset"))?;
    let body = if let Some(text) = field(data, b"text") {
        Body::Text(string(text).ok_or(Malformed("text is not a string"))?)
    } else if field(data, b"binary").is_some() {
        Body::Binary
    } else {
        return Err(Malformed("message without text or binary"));
    };
    Ok(Object::Message(Message { offset, body }))
}

/// What follows `"key":` in `data` (the value and everything after it).
///
/// Looks at the colons only, fewer than the quotes, and checks the key
/// before each.
fn field<'a>(data: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(i) = data[from..].iter().position(|&b| b == b':') {
        let colon = from + i;
        let name = colon.checked_sub(key.len() + 2);
        if let Some(name) = name {
            if data[name] == b'"' && data[colon - 1] == b'"' && &data[name + 1..colon - 1] == key {
                return Some(&data[colon + 1..]);
            }
        }
        from = colon + 1;
    }
    None
}

/// The string at the start of `value`, up to its closing quote.
fn string(value: &[u8]) -> Option<JsonStr<'_>> {
    let body = value.strip_prefix(b"\"")?;
    let mut escaped = false;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                return Some(JsonStr {
                    raw: &body[..i],
                    escaped,
                })
            }
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// The unsigned integer at the start of `value`.
fn number(value: &[u8]) -> Option<u64> {
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &value[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// The boolean at the start of `value`.
fn boolean(value: &[u8]) -> Option<bool> {
    if value.starts_with(b"true") {
        Some(true)
    } else if value.starts_with(b"false") {
        Some(false)
    } else {
        None
    }
}

/// Decodes the escapes of RFC 8259 section 7, surrogate pairs included.
fn unescape(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let simple = match *raw.get(i)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let (c, used) = unicode_escape(&raw[i + 1..])?;
                i += 1 + used;
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
            _ => return None,
        };
        out.push(simple);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The character of a `\u` escape whose hex digits start `rest` (a high
/// surrogate takes the `\uDC00`-`\uDFFF` escape after it), and the bytes
/// used after the `u`.
fn unicode_escape(rest: &[u8]) -> Option<(char, usize)> {
    let unit = |at: usize| -> Option<u32> {
        let hex = std::str::from_utf8(rest.get(at..at + 4)?).ok()?;
        u32::from_str_radix(hex, 16).ok()
    };
    let first = unit(0)?;
    if !(0xD800..0xDC00).contains(&first) {
        return char::from_u32(first).map(|c| (c, 4));
    }
    if rest.get(4..6)? != b"\\u" {
        return None;
    }
    let second = unit(6)?;
    if !(0xDC00..0xE000).contains(&second) {
        return None;
    }
    let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
    char::from_u32(c).map(|c| (c, 10))
}

#[cfg(test)]
mod tests;
