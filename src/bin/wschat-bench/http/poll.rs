//! A poll's answer as the load tool reads it (README, "Without WebSocket"):
//! `{"epoch":…,"recovered":…,"next":"EPOCH:OFFSET","messages":[…],
//! "session":…,"id":N,"members":N}`.
//!
//! Unlike a single `wschat.v1` object (see `v1`), a key cannot be searched
//! for here: the `join` and `leave` objects inside `messages` have `id` and
//! `members` too. So the top level is walked key by key, each value
//! skipped by its syntax (strings with their escapes, nested objects and
//! arrays), and `messages` is handed out one object at a time for
//! [`crate::v1::parse`].

use crate::v1::Malformed;

/// What a poll answer says, borrowed from its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer<'a> {
    /// The room's epoch.
    pub epoch: &'a str,
    /// Whether the messages are every one after the poll's `since`.
    pub recovered: bool,
    /// The `next` position, as sent (`EPOCH:OFFSET`), for the next poll.
    pub next: &'a str,
    /// Its offset.
    pub next_offset: u64,
    /// The poller's session token.
    pub session: &'a str,
    /// The poller's member id.
    pub id: u64,
    /// The room's members, the poller included.
    pub members: u64,
    /// The inside of the `messages` array.
    messages: &'a [u8],
}

impl<'a> Answer<'a> {
    /// The objects of `messages`, in order, each as its bytes.
    pub fn messages(&self) -> Items<'a> {
        Items {
            rest: self.messages,
            broken: false,
        }
    }
}

/// The elements of a JSON array, one slice each; an element that cannot
/// be delimited, or no comma after one, is an error and the end.
#[derive(Debug, Clone)]
pub struct Items<'a> {
    rest: &'a [u8],
    /// What follows the last element given out is not a comma.
    broken: bool,
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<&'a [u8], Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if std::mem::take(&mut self.broken) {
            return Some(Err(Malformed("no comma between messages")));
        }
        let start = skip_space(self.rest, 0);
        if start == self.rest.len() {
            return None;
        }
        let Some(end) = skip_value(self.rest, start) else {
            self.rest = &[];
            return Some(Err(Malformed("bad element in messages")));
        };
        let item = &self.rest[start..end];
        let after = skip_space(self.rest, end);
        match self.rest.get(after) {
            Some(b',') => self.rest = &self.rest[after + 1..],
            None => self.rest = &[],
            Some(_) => {
                self.rest = &[];
                self.broken = true;
            }
        }
        Some(Ok(item))
    }
}

/// Reads a poll answer's body.
pub fn parse<'a>(body: &'a [u8]) -> Result<Answer<'a>, Malformed> {
    let mut at = skip_space(body, 0);
    if body.get(at) != Some(&b'{') {
        return Err(Malformed("poll answer is not an object"));
    }
    at += 1;
    let mut fields: [Option<&[u8]>; 7] = [None; 7];
    const KEYS: [&[u8]; 7] = [
        b"epoch",
        b"recovered",
        b"next",
        b"messages",
        b"session",
        b"id",
        b"members",
    ];
    loop {
        at = skip_space(body, at);
        match body.get(at) {
            Some(b'}') => break,
            Some(b'"') => {}
            _ => return Err(Malformed("poll answer: expected a key")),
        }
        let key_end = skip_value(body, at).ok_or(Malformed("poll answer: bad key"))?;
        let key = &body[at + 1..key_end - 1];
        at = skip_space(body, key_end);
        if body.get(at) != Some(&b':') {
            return Err(Malformed("poll answer: no colon"));
        }
        let start = skip_space(body, at + 1);
        let end = skip_value(body, start).ok_or(Malformed("poll answer: bad value"))?;
        if let Some(i) = KEYS.iter().position(|k| *k == key) {
            fields[i] = Some(&body[start..end]);
        }
        at = skip_space(body, end);
        match body.get(at) {
            Some(b',') => at += 1,
            Some(b'}') => break,
            _ => return Err(Malformed("poll answer: no comma")),
        }
    }
    let [epoch, recovered, next, messages, session, id, members] = fields;
    let text = |v: Option<&'a [u8]>, what| v.and_then(plain_string).ok_or(Malformed(what));
    let epoch = text(epoch, "poll answer without epoch")?;
    let next = text(next, "poll answer without next")?;
    let session = text(session, "poll answer without session")?;
    let recovered = match recovered {
        Some(b"true") => true,
        Some(b"false") => false,
        _ => return Err(Malformed("poll answer without recovered")),
    };
    let (next_epoch, next_offset) = next
        .rsplit_once(':')
        .and_then(|(e, o)| Some((e, o.parse::<u64>().ok()?)))
        .ok_or(Malformed("next is not EPOCH:OFFSET"))?;
    if next_epoch != epoch {
        return Err(Malformed("next is under another epoch"));
    }
    let number = |v: Option<&[u8]>, what| {
        std::str::from_utf8(v.ok_or(Malformed(what))?)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(Malformed(what))
    };
    let messages = messages
        .and_then(|m| m.strip_prefix(b"[")?.strip_suffix(b"]"))
        .ok_or(Malformed("poll answer without a messages array"))?;
    Ok(Answer {
        epoch,
        recovered,
        next,
        next_offset,
        session,
        id: number(id, "poll answer without id")?,
        members: number(members, "poll answer without members")?,
        messages,
    })
}

/// A JSON string value without escapes, as text (epochs, positions and
/// tokens are letters, digits and a colon).
fn plain_string(value: &[u8]) -> Option<&str> {
    let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        return None;
    }
    std::str::from_utf8(inner).ok()
}

/// The index of the first byte at or after `at` that is not JSON
/// whitespace.
fn skip_space(data: &[u8], mut at: usize) -> usize {
    while data
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// The index just after the JSON value that starts at `at`: a string,
/// an object or array (with everything nested in it), or a number or
/// literal. `None` when it does not end.
fn skip_value(data: &[u8], at: usize) -> Option<usize> {
    match data.get(at)? {
        b'"' => string_end(data, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < data.len() {
                match data[i] {
                    b'"' => {
                        i = string_end(data, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = data[at..]
                .iter()
                .take_while(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            (len > 0).then_some(at + len)
        }
    }
}

/// The index just after the string whose opening quote is at `at`.
fn string_end(data: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < data.len() {
        match data[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{self, Object};

    const ANSWER: &[u8] = br#"{"epoch":"k3x","recovered":true,"next":"k3x:44","messages":[{"type":"message","offset":43,"from":7,"time":1,"text":"a \"}]\" b"},{"type":"join","id":8,"members":4},{"type":"message","offset":44,"from":7,"time":2,"text":"c"}],"session":"0000000b91d0","id":9,"members":4}"#;

    #[test]
    fn reads_the_documented_fields_past_the_objects_inside() {
        let a = parse(ANSWER).unwrap();
        assert_eq!((a.epoch, a.recovered, a.next), ("k3x", true, "k3x:44"));
        assert_eq!(a.next_offset, 44);
        assert_eq!((a.session, a.id, a.members), ("0000000b91d0", 9, 4));
        let objects: Vec<Object<'_>> = a
            .messages()
            .map(|m| v1::parse(m.unwrap()).unwrap())
            .collect();
        assert_eq!(objects.len(), 3);
        assert!(matches!(objects[0], Object::Message(m) if m.offset == 43));
        assert_eq!(objects[1], Object::Presence);
        assert!(matches!(objects[2], Object::Message(m) if m.offset == 44));
    }

    #[test]
    fn what_the_server_writes_reads_back() {
        // The server's own writer, with spacing the reader must not mind.
        use std::rc::Rc;
        use wschat::server::poll::{write_answer, Answer as Written};
        let written = Written {
            epoch: "e9",
            recovered: false,
            next: 3,
            session: "00000001ab",
            id: 2,
            members: 5,
        };
        let items: Vec<Rc<[u8]>> = vec![Rc::from(&br#"{"type":"leave","id":1,"members":5}"#[..])];
        let mut body = Vec::new();
        write_answer(&written, &items, &mut body);
        let a = parse(&body).unwrap();
        assert_eq!((a.epoch, a.recovered, a.next_offset), ("e9", false, 3));
        assert_eq!(a.messages().count(), 1);
        let mut empty = Vec::new();
        write_answer(&written, &[], &mut empty);
        assert_eq!(parse(&empty).unwrap().messages().count(), 0);
        let spaced = br#" { "epoch" : "e" , "recovered" : true , "next" : "e:1" , "messages" : [ { "type" : "join" } , {"type":"leave"} ] , "session" : "s" , "id" : 1 , "members" : 2 } "#;
        let a = parse(spaced).unwrap();
        assert_eq!(a.messages().count(), 2);
        assert_eq!(a.members, 2);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let bad: &[&[u8]] = &[
            b"[]",
            b"{\"epoch\":\"e\"}",
            br#"{"epoch":"e","recovered":1,"next":"e:1","messages":[],"session":"s","id":1,"members":1}"#,
            br#"{"epoch":"e","recovered":true,"next":"f:1","messages":[],"session":"s","id":1,"members":1}"#,
            br#"{"epoch":"e","recovered":true,"next":"e1","messages":[],"session":"s","id":1,"members":1}"#,
            br#"{"epoch":"e","recovered":true,"next":"e:1","messages":{},"session":"s","id":1,"members":1}"#,
            br#"{"epoch":"e","recovered":true,"next":"e:1","messages":[],"session":"s","id":1,"members":1"#,
            br#"{"epoch":"e","recovered":true,"next":"e:1","messages":[{"a":"}],"session":"s","id":1,"members":1}"#,
        ];
        for body in bad {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let a = parse(br#"{"epoch":"e","recovered":true,"next":"e:1","messages":[{} {}],"session":"s","id":1,"members":1}"#).unwrap();
        let items: Vec<_> = a.messages().collect();
        assert_eq!(items.len(), 2);
        assert!(items[1].is_err());
    }
}
