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
//! compressed. A receiver that takes a message in another form (a later
//! transport's event, say) adds a variant and its encoding, and still gets
//! it built once per message. The forms built are kept by the room's
//! history ([`Outgoing::into_forms`]) and handed back for a replay
//! ([`Outgoing::replay`]), so replaying a message builds nothing twice.

use std::rc::Rc;

use super::json::{self, Stamp};
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
}

/// How many forms there are (the slots of [`Outgoing`]'s cache).
const FORMS: usize = 4;

/// Each form of one message, where built.
pub type Forms = [Option<Rc<[u8]>>; FORMS];

/// Which protocol a receiver speaks in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `from{id}:{message}`, as the client sent it (subprotocol `chat` or none).
    #[default]
    Classic,
    /// `wschat.v1`: JSON objects with offsets.
    Json,
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
        let json = matches!(form, Form::JsonFrame | Form::DeflatedJsonFrame);
        let (opcode, parts) = content(
            self.opcode,
            self.prefix,
            self.payload,
            self.stamped.filter(|_| json),
            &mut object,
        );
        match form {
            Form::Frame | Form::JsonFrame => {
                encode_frame(true, opcode, false, &parts, self.scratch)
            }
            Form::DeflatedFrame | Form::DeflatedJsonFrame => {
                compressed_frame(opcode, &parts, self.deflater, true, self.scratch)
            }
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
    /// room position (an echo) has only the classic forms.
    pub fn frame_for(
        &mut self,
        format: Format,
        deflate: Option<Deflate>,
        own: Option<&mut Deflater>,
    ) -> Rc<[u8]> {
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
