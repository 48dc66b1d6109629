//! A `text/event-stream` read as it arrives (the WHATWG HTML standard,
//! section 9.2.6, "Interpreting an event stream").
//!
//! TCP splits a stream anywhere: in the middle of a field name, of a UTF-8
//! sequence, or between the CR and the LF of one line end. The parser
//! keeps the unfinished line and whether the last byte was a CR, so that
//! any split gives the very events the whole stream gives. Lines end with
//! CRLF, LF or CR; an event ends with a blank line; `data` lines are joined
//! with LF; a line starting with `:` is a comment; `id` sets the last event
//! id (unless it holds a NUL); a leading byte order mark is dropped; an
//! unfinished event at the end of the stream is never dispatched.

/// One dispatched event, borrowed from the parser until the next byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event` field, or empty (a `message` event).
    pub kind: &'a [u8],
    /// The `data` lines joined with LF.
    pub data: &'a [u8],
    /// The last event id as it stands at this event (ids persist across
    /// events, as `EventSource.lastEventId` does).
    pub last_id: &'a [u8],
    /// Whether this event had an `id` field of its own.
    pub has_id: bool,
}

/// The UTF-8 byte order mark, dropped from the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An event-stream parser fed with whatever bytes arrive.
#[derive(Debug, Default)]
pub struct Parser {
    /// The line begun in an earlier chunk, not yet ended.
    line: Vec<u8>,
    /// The last byte fed was a CR: an LF first in the next chunk belongs
    /// to the same line end.
    after_cr: bool,
    /// A line has been read (the byte order mark can only start the first).
    started: bool,
    /// `data` of the event being read, each line followed by LF.
    data: Vec<u8>,
    /// `event` of the event being read.
    kind: Vec<u8>,
    /// The last event id buffer.
    last_id: Vec<u8>,
    /// The event being read had an `id` field.
    has_id: bool,
    /// Comment lines seen (heartbeats).
    pub comments: u64,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Reads `bytes`, the next piece of the stream, handing every event
    /// it completes to `on_event`.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        if bytes.is_empty() {
            // Nothing to tell whether an LF follows a CR: that waits too.
            return;
        }
        if std::mem::take(&mut self.after_cr) {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            if self.line.is_empty() {
                self.take_line(&bytes[..end], &mut on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..end]);
                self.take_line(&line, &mut on_event);
                line.clear();
                self.line = line;
            }
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            if bytes[end] == b'\r' && end + 1 == bytes.len() {
                self.after_cr = true;
            }
            bytes = &bytes[end + if crlf { 2 } else { 1 }..];
        }
        self.line.extend_from_slice(bytes);
    }

    /// Takes in one whole line (without its end).
    fn take_line(&mut self, mut line: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if !std::mem::replace(&mut self.started, true) {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.kind.clear();
                self.kind.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
                self.has_id = true;
            }
            // `retry` and unknown fields change nothing an event carries.
            _ => {}
        }
    }

    /// A blank line: the event read so far is dispatched if it has data.
    fn dispatch(&mut self, on_event: &mut impl FnMut(Event<'_>)) {
        let has_id = std::mem::take(&mut self.has_id);
        if !self.data.is_empty() {
            let data = &self.data[..self.data.len() - 1];
            on_event(Event {
                kind: &self.kind,
                data,
                last_id: &self.last_id,
                has_id,
            });
        }
        self.data.clear();
        self.kind.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of `chunks` fed in order: (kind, data, last id, has id).
    fn events(chunks: &[&[u8]]) -> Vec<(String, String, String, bool)> {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |e| {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                out.push((text(e.kind), text(e.data), text(e.last_id), e.has_id));
            });
        }
        out
    }

    /// A stream with what wschat sends and what the standard allows.
    const STREAM: &[u8] = b"\xEF\xBB\xBFid: k3x:41\r\n\
        data: {\"type\":\"welcome\",\"offset\":41}\r\n\r\n\
        : ping\n\n\
        data: {\"type\":\"join\",\"id\":8}\r\r\
        id: k3x:42\n\
        data:first\n\
        data\n\
        data:  two spaces\n\
        event: custom\n\
        retry: 10\n\
        unknown: x\n\n\
        id: bad\0id\n\
        data: after a bad id\n\n\
        data: \xC3\xA9t\xC3\xA9\n\n\
        id: no data\n\n\
        data: unfinished";

    fn whole() -> Vec<(String, String, String, bool)> {
        let own = |kind: &str, data: &str, id: &str, has: bool| {
            (kind.to_string(), data.to_string(), id.to_string(), has)
        };
        vec![
            own("", r#"{"type":"welcome","offset":41}"#, "k3x:41", true),
            own("", r#"{"type":"join","id":8}"#, "k3x:41", false),
            own("custom", "first\n\n two spaces", "k3x:42", true),
            own("", "after a bad id", "k3x:42", false),
            own("", "été", "k3x:42", false),
        ]
    }

    #[test]
    fn a_whole_stream_gives_its_events() {
        let mut parser = Parser::new();
        let mut n = 0;
        parser.feed(STREAM, |_| n += 1);
        assert_eq!(events(&[STREAM]), whole());
        assert_eq!((n, parser.comments), (5, 1));
    }

    #[test]
    fn any_split_in_two_gives_the_same_events() {
        for at in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(at);
            assert_eq!(events(&[a, b]), whole(), "split at {at}");
        }
    }

    #[test]
    fn splits_everywhere_give_the_same_events() {
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(events(&bytes), whole());
        for size in 2..7 {
            let chunks: Vec<&[u8]> = STREAM.chunks(size).collect();
            assert_eq!(events(&chunks), whole(), "chunks of {size}");
        }
    }

    #[test]
    fn what_the_server_writes_reads_back_at_any_split() {
        use wschat::server::sse::{event, EventId, HEARTBEAT};
        let mut bytes = Vec::new();
        let objects = [
            r#"{"type":"welcome","id":7,"epoch":"k3x","offset":41,"session":"00a"}"#,
            r#"{"type":"join","id":8,"members":4}"#,
            r#"{"type":"message","offset":42,"from":7,"time":1,"text":"line\nbreak"}"#,
        ];
        let ids = [Some(41), None, Some(42)];
        for (object, offset) in objects.iter().zip(ids) {
            let id = offset.map(|offset| EventId {
                epoch: "k3x",
                offset,
            });
            event(id, object.as_bytes(), &mut bytes);
            bytes.extend_from_slice(HEARTBEAT);
        }
        let expected: Vec<(String, String)> = objects
            .iter()
            .zip(["k3x:41", "k3x:41", "k3x:42"])
            .map(|(o, id)| (o.to_string(), id.to_string()))
            .collect();
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            let got: Vec<(String, String)> = events(&[a, b])
                .into_iter()
                .map(|(_, data, id, _)| (data, id))
                .collect();
            assert_eq!(got, expected, "split at {at}");
        }
    }

    #[test]
    fn a_cr_at_the_end_of_a_chunk_ends_one_line_only() {
        // CR | LF: one line end; CR | CR: two (a blank line, so dispatch).
        let crlf = events(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(crlf.len(), 1);
        assert_eq!(crlf[0].1, "a\nb");
        let cr_cr = events(&[b"data: a\r", b"", b"\r", b"data: b\n\n"]);
        let data: Vec<&str> = cr_cr.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(data, ["a", "b"]);
    }

    #[test]
    fn a_bom_is_dropped_only_at_the_start() {
        let split = events(&[b"\xEF", b"\xBB\xBFdata: x\n\n"]);
        assert_eq!(split[0].1, "x");
        let later = events(&[b"data: x\n\n\xEF\xBB\xBFdata: y\n\n"]);
        assert_eq!(later.len(), 1, "a BOM later makes an unknown field");
    }
}
