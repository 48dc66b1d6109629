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
//! Each shared form is a [`Form`] with a slot of its own: a receiver that
//! takes a message in another form (a later transport's event, say) adds
//! a variant and its encoding, and still gets it built once per message.

use std::rc::Rc;

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
}

/// How many forms there are (the slots of [`Outgoing`]'s cache).
const FORMS: usize = 2;

/// A message to frame: `prefix` then `payload`, as one text or binary frame.
#[derive(Debug)]
pub struct Outgoing<'a> {
    opcode: OpCode,
    prefix: &'a [u8],
    payload: &'a [u8],
    /// Messages shorter than this are never compressed.
    min_compress: usize,
    /// Each form, once built.
    built: [Option<Rc<[u8]>>; FORMS],
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
            built: [None, None],
            deflater,
            scratch,
        }
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
        let parts = [self.prefix, self.payload];
        match form {
            Form::Frame => encode_frame(true, self.opcode, false, &parts, self.scratch),
            Form::DeflatedFrame => {
                compressed_frame(self.opcode, &parts, self.deflater, true, self.scratch)
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

    /// The frame for a receiver with the agreement `deflate` (if any):
    /// compressed when the agreement allows it and the message is long
    /// enough, else plain. `own` is the receiver's own deflater, if it
    /// keeps a compression context.
    pub fn frame_for(&mut self, deflate: Option<Deflate>, own: Option<&mut Deflater>) -> Rc<[u8]> {
        match deflate {
            Some(d) if d.can_compress() && self.len() >= self.min_compress => match own {
                Some(own) => {
                    let mut frame = Vec::new();
                    compressed_frame(
                        self.opcode,
                        &[self.prefix, self.payload],
                        own,
                        d.server_no_context_takeover,
                        &mut frame,
                    );
                    Rc::from(frame)
                }
                None if d.server_max_window_bits == 15 => self.form(Form::DeflatedFrame),
                // The shared deflater uses a 15-bit window: too wide here.
                None => self.plain(),
            },
            _ => self.plain(),
        }
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
        let c1 = out.frame_for(Some(SHARED), None);
        let p1 = out.frame_for(None, None);
        let c2 = out.frame_for(Some(SHARED), None);
        let p2 = out.frame_for(None, None);
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
        assert_eq!(out.frame_for(Some(SHARED), None)[0], 0x81, "RSV1 clear");
        let long = [b'x'; 100];
        let mut out = Outgoing::new(OpCode::Binary, b"", &long, 64, &mut deflater, &mut scratch);
        let narrow = Deflate {
            server_max_window_bits: 10,
            ..SHARED
        };
        assert_eq!(out.frame_for(Some(narrow), None)[0], 0x82);
        let mut own = Deflater::new(10);
        assert_eq!(
            out.frame_for(Some(narrow), Some(&mut own))[0],
            0xC2,
            "RSV1 set"
        );
    }
}
