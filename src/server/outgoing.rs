//! One message on its way out, framed at most once per form.
//!
//! A broadcast goes to receivers that negotiated permessage-deflate and to
//! receivers that did not. `Outgoing` builds the plain frame the first time
//! a receiver needs it, and the compressed frame (one deflate call with the
//! loop's shared deflater) the first time a receiver needs that; every
//! other receiver gets a clone of the same `Rc<[u8]>`. Receivers with a
//! compression context of their own (`--compression dedicated`) compress
//! for themselves.
//!
//! Each shared form is a [`Form`] with a slot of its own: the classic
//! `from{id}:` frame and the `wschat.v1` JSON frame, each plain or
//! compressed; the server-sent event of the JSON object (SSE members); and
//! the bare JSON object (what a poll answer is made of). The forms built
//! are kept by the room's history ([`Outgoing::into_forms`]) and handed
//! back for a replay or a poll ([`Outgoing::replay`]), so neither builds
//! anything twice.
//!
//! What the server says of its own (a welcome, a presence change) is one
//! JSON object too, which a [`Notice`] puts in the form of each format, each
//! built once for all the members that speak it.

use std::rc::Rc;

use super::json::{self, Stamp};
use super::sse::{self, EventId};
use crate::protocol::deflate::Deflater;
use crate::protocol::extension::Deflate;
use crate::protocol::frame::{encode_frame, FrameHeader, OpCode};

/// A form a message is sent in, shared by every receiver that takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// An uncompressed WebSocket frame.
    Frame,
    /// A WebSocket frame compressed by the loop's shared deflater, without
    /// context takeover and with a 15-bit window (RSV1 set).
    DeflatedFrame,
    /// The `wschat.v1` JSON object of a room message, as a text frame.
    JsonFrame,
    /// [`Form::JsonFrame`] compressed like [`Form::DeflatedFrame`].
    DeflatedJsonFrame,
    /// The JSON object as a server-sent event, `id: EPOCH:OFFSET` first.
    SseEvent,
    /// The JSON object alone, as a poll answer lists it.
    JsonObject,
}

/// How many forms there are (the slots of [`Outgoing`]'s cache).
const FORMS: usize = 6;

/// Each form of one message, where built.
pub type Forms = [Option<Rc<[u8]>>; FORMS];

/// Which protocol a receiver speaks in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `from{id}:{message}`, as the client sent it (subprotocol `chat` or none).
    #[default]
    Classic,
    /// `wschat.v1`: JSON objects with offsets, as WebSocket text frames.
    Json,
    /// The same objects as server-sent events (`GET /room/{name}/events`).
    Sse,
    /// The same objects, collected into poll answers
    /// (`GET /room/{name}/poll`).
    Poll,
}

impl Format {
    /// Whether the member speaks the JSON objects (in whichever form),
    /// and so is told of presence and welcomed.
    pub fn is_json(self) -> bool {
        self != Format::Classic
    }
}

/// The JSON side of a room message: who sent it and where it sits.
#[derive(Debug, Clone, Copy)]
struct Stamped<'a> {
    sender: u64,
    stamp: Stamp<'a>,
}

/// A message to frame: `prefix` then `payload`, as one text or binary frame.
#[derive(Debug)]
pub struct Outgoing<'a> {
    opcode: OpCode,
    prefix: &'a [u8],
    payload: &'a [u8],
    /// Messages shorter than this are never compressed.
    min_compress: usize,
    /// Sender and position, for the JSON forms (room messages only).
    stamped: Option<Stamped<'a>>,
    /// Each form, once built.
    built: Forms,
    deflater: &'a mut Deflater,
    scratch: &'a mut Vec<u8>,
}

impl<'a> Outgoing<'a> {
    /// A message; `deflater` is the loop's shared one, `scratch` a reused buffer.
    pub fn new(
        opcode: OpCode,
        prefix: &'a [u8],
        payload: &'a [u8],
        min_compress: usize,
        deflater: &'a mut Deflater,
        scratch: &'a mut Vec<u8>,
    ) -> Outgoing<'a> {
        Outgoing {
            opcode,
            prefix,
            payload,
            min_compress,
            stamped: None,
            built: Default::default(),
            deflater,
            scratch,
        }
    }

    /// The same message with its room position, so that it can also be
    /// sent in the JSON forms.
    pub fn stamped(mut self, sender: u64, stamp: Stamp<'a>) -> Outgoing<'a> {
        self.stamped = Some(Stamped { sender, stamp });
        self
    }

    /// A message kept by a room's history, with the forms built so far.
    pub fn replay(self, built: Forms) -> Outgoing<'a> {
        Outgoing { built, ..self }
    }

    /// The message's offset in its room, if it has one.
    pub fn offset(&self) -> Option<u64> {
        self.stamped.map(|s| s.stamp.offset)
    }

    /// The forms built, for the history to keep.
    pub fn into_forms(self) -> Forms {
        self.built
    }

    /// Length of the message (prefix included) before compression.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.payload.len()
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message in `form`, built on first use and shared after.
    pub fn form(&mut self, form: Form) -> Rc<[u8]> {
        let slot = form as usize;
        if let Some(bytes) = &self.built[slot] {
            return bytes.clone();
        }
        self.scratch.clear();
        let mut object = Vec::new();
        let json = !matches!(form, Form::Frame | Form::DeflatedFrame);
        let stamped = self.stamped.filter(|_| json);
        let (opcode, parts) = content(self.opcode, self.prefix, self.payload, stamped, &mut object);
        match form {
            Form::Frame | Form::JsonFrame => {
                encode_frame(true, opcode, false, &parts, self.scratch)
            }
            Form::DeflatedFrame | Form::DeflatedJsonFrame => {
                compressed_frame(opcode, &parts, self.deflater, true, self.scratch)
            }
            Form::SseEvent => {
                let id = stamped.map(|s| EventId {
                    epoch: s.stamp.epoch,
                    offset: s.stamp.offset,
                });
                sse::event(id, &parts.concat(), self.scratch);
            }
            Form::JsonObject => self.scratch.extend(parts.concat()),
        }
        let bytes: Rc<[u8]> = Rc::from(&self.scratch[..]);
        self.built[slot] = Some(bytes.clone());
        bytes
    }

    /// The uncompressed frame, built on first use.
    pub fn plain(&mut self) -> Rc<[u8]> {
        self.form(Form::Frame)
    }

    /// The frame for a receiver that speaks `format` with the agreement
    /// `deflate` (if any): compressed when the agreement allows it and the
    /// message is long enough, else plain. `own` is the receiver's own
    /// deflater, if it keeps a compression context. A message without a
    /// room position (an echo) has only the classic forms. SSE and poll
    /// members take their own forms, never compressed.
    pub fn frame_for(
        &mut self,
        format: Format,
        deflate: Option<Deflate>,
        own: Option<&mut Deflater>,
    ) -> Rc<[u8]> {
        match format {
            Format::Sse => return self.form(Form::SseEvent),
            Format::Poll => return self.form(Form::JsonObject),
            Format::Classic | Format::Json => {}
        }
        let json = format == Format::Json && self.stamped.is_some();
        let (plain, deflated) = if json {
            (Form::JsonFrame, Form::DeflatedJsonFrame)
        } else {
            (Form::Frame, Form::DeflatedFrame)
        };
        match deflate {
            Some(d) if d.can_compress() && self.len() >= self.min_compress => match own {
                Some(own) => {
                    let mut object = Vec::new();
                    let stamped = self.stamped.filter(|_| json);
                    let (opcode, parts) =
                        content(self.opcode, self.prefix, self.payload, stamped, &mut object);
                    let mut frame = Vec::new();
                    compressed_frame(
                        opcode,
                        &parts,
                        own,
                        d.server_no_context_takeover,
                        &mut frame,
                    );
                    Rc::from(frame)
                }
                None if d.server_max_window_bits == 15 => self.form(deflated),
                // The shared deflater uses a 15-bit window: too wide here.
                None => self.form(plain),
            },
            _ => self.form(plain),
        }
    }
}

/// The opcode and payload parts of a frame: the JSON object (written into
/// `object`) when `stamped` is given, else the classic prefix and payload.
fn content<'b>(
    opcode: OpCode,
    prefix: &'b [u8],
    payload: &'b [u8],
    stamped: Option<Stamped<'_>>,
    object: &'b mut Vec<u8>,
) -> (OpCode, [&'b [u8]; 2]) {
    match stamped {
        Some(s) => {
            json::message(&s.stamp, s.sender, opcode, payload, object);
            (OpCode::Text, [&object[..], &[]])
        }
        None => (opcode, [prefix, payload]),
    }
}

/// A JSON object the server sends of its own (a welcome, a presence
/// change), in the form of each format that speaks JSON, each built on
/// first use and shared after.
#[derive(Debug)]
pub struct Notice<'a> {
    object: &'a [u8],
    /// The `id` of its server-sent event, if it carries one.
    event_id: Option<EventId<'a>>,
    /// The text frame, the event and the bare object, once built.
    built: [Option<Rc<[u8]>>; 3],
}

impl<'a> Notice<'a> {
    /// `object` (a JSON object); as an event, it carries `event_id`.
    pub fn new(object: &'a [u8], event_id: Option<EventId<'a>>) -> Notice<'a> {
        Notice {
            object,
            event_id,
            built: Default::default(),
        }
    }

    /// The object in the form `format` takes; `None` for classic members,
    /// who are sent no such objects.
    pub fn for_format(&mut self, format: Format) -> Option<Rc<[u8]>> {
        let slot = match format {
            Format::Classic => return None,
            Format::Json => 0,
            Format::Sse => 1,
            Format::Poll => 2,
        };
        if let Some(bytes) = &self.built[slot] {
            return Some(bytes.clone());
        }
        let mut out = Vec::new();
        match format {
            Format::Json => encode_frame(true, OpCode::Text, false, &[self.object], &mut out),
            Format::Sse => sse::event(self.event_id, self.object, &mut out),
            _ => out.extend_from_slice(self.object),
        }
        let bytes: Rc<[u8]> = Rc::from(out);
        self.built[slot] = Some(bytes.clone());
        Some(bytes)
    }
}

/// Appends a compressed frame (RSV1 set) carrying `parts`.
pub fn compressed_frame(
    opcode: OpCode,
    parts: &[&[u8]],
    deflater: &mut Deflater,
    reset: bool,
    out: &mut Vec<u8>,
) {
    let mut payload = Vec::new();
    deflater.compress(parts, reset, &mut payload);
    let mut header = FrameHeader::new(true, opcode, payload.len() as u64);
    header.rsv1 = true;
    header.encode(out);
    out.extend_from_slice(&payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::Inflater;
    use crate::protocol::frame::decode_header;

    const SHARED: Deflate = Deflate {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
    };

    fn inflate(frame: &[u8]) -> Vec<u8> {
        let (h, n) = decode_header(frame).unwrap().unwrap();
        assert!(h.rsv1);
        let mut out = Vec::new();
        Inflater::new()
            .inflate(&frame[n..], 1 << 20, true, &mut out, |_| Ok(()))
            .unwrap();
        out
    }

    #[test]
    fn each_form_is_built_once_and_shared() {
        let mut deflater = Deflater::new(15);
        let mut scratch = Vec::new();
        let text = "a chat message that is long enough to be worth compressing".repeat(4);
        let mut out = Outgoing::new(
            OpCode::Text,
            b"from3:",
            text.as_bytes(),
            64,
            &mut deflater,
            &mut scratch,
        );
        let c1 = out.frame_for(Format::Classic, Some(SHARED), None);
        let p1 = out.frame_for(Format::Classic, None, None);
        let c2 = out.frame_for(Format::Classic, Some(SHARED), None);
        let p2 = out.frame_for(Format::Classic, None, None);
        assert!(Rc::ptr_eq(&c1, &c2) && Rc::ptr_eq(&p1, &p2));
        assert_eq!(inflate(&c1), format!("from3:{text}").as_bytes());
        assert_eq!(&p1[4..], format!("from3:{text}").as_bytes());
        drop(out);
        assert_eq!(deflater.calls(), 1, "one deflate call for all receivers");
    }

    #[test]
    fn the_event_and_the_bare_object_are_built_once_from_the_json_object() {
        let mut deflater = Deflater::new(15);
        let mut scratch = Vec::new();
        let stamp = Stamp {
            epoch: "e1",
            offset: 42,
            time_ms: 5,
        };
        let mut out = Outgoing::new(
            OpCode::Text,
            b"from3:",
            b"hi\nthere",
            64,
            &mut deflater,
            &mut scratch,
        )
        .stamped(3, stamp);
        let object = r#"{"type":"message","offset":42,"from":3,"time":5,"text":"hi\nthere"}"#;
        let event = out.frame_for(Format::Sse, Some(SHARED), None);
        assert_eq!(
            std::str::from_utf8(&event).unwrap(),
            format!("id: e1:42\ndata: {object}\n\n")
        );
        let bare = out.frame_for(Format::Poll, None, None);
        assert_eq!(&bare[..], object.as_bytes());
        assert!(Rc::ptr_eq(&event, &out.frame_for(Format::Sse, None, None)));
        assert!(Rc::ptr_eq(&bare, &out.form(Form::JsonObject)));
        let forms = out.into_forms();
        assert!(forms[Form::SseEvent as usize].is_some(), "kept by history");
        assert!(forms[Form::Frame as usize].is_none(), "nothing else built");
    }

    #[test]
    fn a_notice_is_built_once_per_format() {
        let object = br#"{"type":"join","id":8,"members":4}"#;
        let id = EventId {
            epoch: "e",
            offset: 3,
        };
        let mut notice = Notice::new(object, Some(id));
        assert_eq!(notice.for_format(Format::Classic), None);
        let frame = notice.for_format(Format::Json).unwrap();
        assert_eq!(&frame[..2], &[0x81, object.len() as u8]);
        assert_eq!(&frame[2..], object);
        let event = notice.for_format(Format::Sse).unwrap();
        assert!(event.starts_with(b"id: e:3\ndata: {"));
        assert_eq!(&notice.for_format(Format::Poll).unwrap()[..], object);
        assert!(Rc::ptr_eq(&event, &notice.for_format(Format::Sse).unwrap()));
    }

    #[test]
    fn short_messages_and_narrow_windows_go_plain() {
        let mut deflater = Deflater::new(15);
        let mut scratch = Vec::new();
        let mut out = Outgoing::new(
            OpCode::Text,
            b"from1:",
            b"hi",
            64,
            &mut deflater,
            &mut scratch,
        );
        assert_eq!(
            out.frame_for(Format::Classic, Some(SHARED), None)[0],
            0x81,
            "RSV1 clear"
        );
        let long = [b'x'; 100];
        let mut out = Outgoing::new(OpCode::Binary, b"", &long, 64, &mut deflater, &mut scratch);
        let narrow = Deflate {
            server_max_window_bits: 10,
            ..SHARED
        };
        assert_eq!(out.frame_for(Format::Classic, Some(narrow), None)[0], 0x82);
        let mut own = Deflater::new(10);
        assert_eq!(
            out.frame_for(Format::Classic, Some(narrow), Some(&mut own))[0],
            0xC2,
            "RSV1 set"
        );
    }
}
