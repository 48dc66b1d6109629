//! The WebSocket state machine after the 101 (RFC 6455 sections 5-7).
//!
//! A [`Session`] takes the bytes a client sent and returns [`Event`]s in the
//! order they happened: complete messages, frames the protocol itself must
//! answer with (Pong, Close), and nothing else. It consumes data frames as
//! their bytes arrive, so a connection only ever keeps an unfinished frame
//! header (or an unfinished control frame, at most 139 bytes) between reads,
//! and a text message fails with 1007 at the first invalid byte.
//!
//! [`Session::fail`] is the only place a close code for a protocol error is
//! chosen (via [`ProtocolError::close_code`]).

mod closing;

use std::num::NonZeroU64;
use std::ops::Range;

use super::deflate::Inflater;
use super::error::ProtocolError;
use super::frame::{decode_header, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD};
use super::mask::apply_mask;
use super::utf8::{self, Utf8Validator};

/// Where the bytes of a received message are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Reassembled (or inflated) into a buffer of its own.
    Owned(Vec<u8>),
    /// Unmasked in place: these bytes of the buffer the events came from
    /// (the one passed to [`Session::receive`]), valid until it changes.
    InPlace(Range<usize>),
}

impl Payload {
    /// The payload's bytes; `buf` is the buffer passed to
    /// [`Session::receive`] along with this event.
    pub fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            Payload::Owned(bytes) => bytes,
            Payload::InPlace(range) => &buf[range.clone()],
        }
    }
}

/// What a session asks its connection to do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete text or binary message, unmasked and (for text) valid UTF-8.
    Message {
        /// [`OpCode::Text`] or [`OpCode::Binary`].
        opcode: OpCode,
        /// The payload.
        payload: Payload,
    },
    /// A control frame to send as is (a Pong).
    Send(Vec<u8>),
    /// A Close frame to send; nothing may be sent after it.
    Close {
        /// The encoded close frame.
        frame: Vec<u8>,
        /// The protocol error that caused it, if any.
        error: Option<ProtocolError>,
    },
}

/// Settings a session needs on every call; shared by all sessions of a loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message (and frame) payload accepted, in bytes.
    pub max_message_size: usize,
    /// Largest payload of a single-frame message left in the caller's
    /// buffer ([`Payload::InPlace`]) when the whole frame is there, rather
    /// than copied into a buffer of its own: no allocation, and the one copy
    /// left is the one the caller makes (into a write queue, into a
    /// broadcast frame). A caller sizes it by its reads, so that any frame
    /// one read brings whole stays in place.
    pub in_place_max: usize,
}

/// What a session needs on every call besides the bytes; shared by the
/// sessions of a loop.
#[derive(Debug)]
pub struct Input<'a> {
    /// Limits of every session.
    pub limits: Limits,
    /// Inflates compressed messages (the loop's, or the connection's own).
    pub inflater: &'a mut Inflater,
    /// Empty buffers to start new messages in, so that a busy loop reuses
    /// memory instead of allocating (and paging in) a buffer per message.
    pub spare: &'a mut Vec<Vec<u8>>,
}

/// Where the closing handshake stands (section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseState {
    /// Messages flow both ways.
    Open,
    /// We sent a Close and wait for the peer's; data frames are dropped.
    CloseSent,
    /// Both Close frames have been exchanged.
    Closed,
    /// We failed the connection; everything that arrives is discarded.
    Failed,
}

/// A data frame whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct PartialFrame {
    /// Never zero: a finished frame is `None` (which also keeps
    /// `Option<PartialFrame>` as small as the frame itself).
    remaining: NonZeroU64,
    mask: [u8; 4],
    /// Payload bytes already unmasked, modulo 4 (the mask key position).
    mask_offset: u8,
    fin: bool,
}

/// Whether (and how) permessage-deflate was negotiated for incoming data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inflate {
    /// RSV1 is a protocol error.
    Off,
    /// RSV1 marks a compressed message; the inflater is reset after each
    /// message (`client_no_context_takeover`) or keeps its context.
    On {
        /// Reset the inflater after every message.
        reset: bool,
    },
}

/// The per-connection WebSocket protocol state, without any socket.
#[derive(Debug)]
pub struct Session {
    state: CloseState,
    inflate: Inflate,
    /// The message being assembled is compressed (RSV1 on its first frame).
    compressed: bool,
    frame: Option<PartialFrame>,
    /// The opcode of the message being assembled, if one is open.
    message_opcode: Option<OpCode>,
    /// The message so far (compressed bytes, for a compressed message).
    message: Vec<u8>,
    utf8: Utf8Validator,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Event {
    /// The same event with an in-place payload copied out of `buf`, for a
    /// caller that keeps events after the buffer changes.
    pub fn into_owned(self, buf: &[u8]) -> Event {
        match self {
            Event::Message {
                opcode,
                payload: payload @ Payload::InPlace(_),
            } => Event::Message {
                opcode,
                payload: Payload::Owned(payload.bytes(buf).to_vec()),
            },
            other => other,
        }
    }
}

impl Session {
    /// A session right after the 101 response, without extensions.
    pub fn new() -> Session {
        Session::with_inflate(Inflate::Off)
    }

    /// A session whose client may send compressed messages.
    pub fn with_inflate(inflate: Inflate) -> Session {
        Session {
            state: CloseState::Open,
            inflate,
            compressed: false,
            frame: None,
            message_opcode: None,
            message: Vec::new(),
            utf8: Utf8Validator::new(),
        }
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> CloseState {
        self.state
    }

    /// Bytes held for the message being received (compressed bytes for a
    /// compressed message); 0 between messages.
    pub fn buffered_bytes(&self) -> usize {
        self.message.len()
    }

    /// Consumes what it can of `buf` (unmasking in place) and returns how
    /// many bytes it used. The rest, at most an unfinished header or control
    /// frame, must be passed again with more bytes appended. Messages with a
    /// [`Payload::InPlace`] refer to `buf`.
    pub fn receive(
        &mut self,
        buf: &mut [u8],
        input: &mut Input<'_>,
        events: &mut Vec<Event>,
    ) -> usize {
        let mut pos = 0;
        loop {
            if self.state == CloseState::Failed || self.state == CloseState::Closed {
                // Section 7.1.7 / 1.4: after the close, input is discarded.
                return buf.len();
            }
            let result = match self.frame {
                Some(frame) => self.receive_payload(frame, &mut buf[pos..], input, events),
                None => self.receive_frame_start(buf, pos, input, events),
            };
            match result {
                Ok(0) => return pos,
                Ok(used) => pos += used,
                Err(err) => {
                    // After our own Close there is nothing more to send:
                    // a broken peer is then only ignored.
                    if let Some(close) = self.fail(err) {
                        events.push(close);
                    }
                    self.state = CloseState::Failed;
                    return buf.len();
                }
            }
        }
    }

    /// Decodes the header at `buf[at..]`; a control frame is handled whole,
    /// as is a small single-frame message already complete in `buf`; any
    /// other data frame's payload is left to [`Session::receive_payload`].
    /// Returns bytes used.
    fn receive_frame_start(
        &mut self,
        whole: &mut [u8],
        at: usize,
        input: &mut Input<'_>,
        events: &mut Vec<Event>,
    ) -> Result<usize, ProtocolError> {
        let buf = &mut whole[at..];
        let Some((header, header_len)) = decode_header(buf)? else {
            return Ok(0);
        };
        let mask = self.check_header(&header, &input.limits)?;
        if header.opcode.is_control() {
            // At most 125 bytes (checked above), so buffering it whole is cheap.
            let total = header_len + header.payload_len as usize;
            let Some(frame) = buf.get_mut(header_len..total) else {
                return Ok(0);
            };
            apply_mask(frame, mask, 0);
            self.on_control(header.opcode, frame, events)?;
            return Ok(total);
        }
        let limit = input.limits.in_place_max;
        let start = at + header_len;
        if let Some(end) = self.take_in_place(&header, mask, whole, start, limit, events)? {
            return Ok(end - at);
        }
        if header.opcode != OpCode::Continuation {
            self.message_opcode = Some(header.opcode);
            self.compressed = header.rsv1;
        }
        match NonZeroU64::new(header.payload_len) {
            None => self.end_frame(header.fin, input, events)?,
            Some(remaining) => {
                // One allocation for a typical frame instead of a dozen
                // doublings; never more than 64 KiB ahead of the bytes, so
                // an announced length alone reserves little.
                if self.state == CloseState::Open {
                    if self.message.capacity() == 0 {
                        self.message = input.spare.pop().unwrap_or_default();
                    }
                    let ahead = header.payload_len.min(64 * 1024) as usize;
                    self.message.reserve(ahead);
                }
                self.frame = Some(PartialFrame {
                    remaining,
                    mask,
                    mask_offset: 0,
                    fin: header.fin,
                })
            }
        }
        Ok(header_len)
    }

    /// Takes a whole single-frame message whose payload starts at
    /// `whole[start..]` if it is complete there, unmasked where it lies
    /// ([`Payload::InPlace`]); returns where it ends, or `None` if the
    /// message does not qualify.
    fn take_in_place(
        &self,
        header: &FrameHeader,
        mask: [u8; 4],
        whole: &mut [u8],
        start: usize,
        in_place_max: usize,
        events: &mut Vec<Event>,
    ) -> Result<Option<usize>, ProtocolError> {
        let len = header.payload_len as usize; // at most the message size limit
        let single = header.fin && header.opcode != OpCode::Continuation && !header.rsv1;
        if !single || self.state != CloseState::Open || len > in_place_max {
            return Ok(None);
        }
        let Some(payload) = whole.get_mut(start..start + len) else {
            return Ok(None);
        };
        apply_mask(payload, mask, 0);
        if header.opcode == OpCode::Text && !utf8::is_valid(payload) {
            return Err(ProtocolError::InvalidUtf8);
        }
        events.push(Event::Message {
            opcode: header.opcode,
            payload: Payload::InPlace(start..start + len),
        });
        Ok(Some(start + len))
    }

    /// Checks the rules a header must follow in this session's state and
    /// returns the masking key.
    fn check_header(&self, h: &FrameHeader, limits: &Limits) -> Result<[u8; 4], ProtocolError> {
        // Section 5.1: "a server MUST close the connection upon receiving a
        // frame that is not masked".
        let mask = h.mask.ok_or(ProtocolError::UnmaskedFrame)?;
        if h.rsv2 || h.rsv3 || (h.rsv1 && self.inflate == Inflate::Off) {
            return Err(ProtocolError::ReservedBitsSet);
        }
        // RFC 7692 section 6.1: RSV1 only on the first frame of a data message.
        if h.rsv1 && (h.opcode.is_control() || h.opcode == OpCode::Continuation) {
            return Err(ProtocolError::CompressedControlOrContinuation);
        }
        if h.opcode.is_control() {
            // Section 5.5: "All control frames MUST have a payload length of
            // 125 bytes or less and MUST NOT be fragmented."
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            return Ok(mask);
        }
        match (h.opcode, self.message_opcode) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::MissingContinuation)
            }
            _ => {}
        }
        let total = (self.message.len() as u64).saturating_add(h.payload_len);
        if total > limits.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge);
        }
        Ok(mask)
    }

    /// Takes as much of the current data frame's payload as `buf` holds.
    fn receive_payload(
        &mut self,
        frame: PartialFrame,
        buf: &mut [u8],
        input: &mut Input<'_>,
        events: &mut Vec<Event>,
    ) -> Result<usize, ProtocolError> {
        let take = buf
            .len()
            .min(usize::try_from(frame.remaining.get()).unwrap_or(usize::MAX));
        if take == 0 {
            return Ok(0);
        }
        let chunk = &mut buf[..take];
        apply_mask(chunk, frame.mask, usize::from(frame.mask_offset));
        if self.message_opcode == Some(OpCode::Text) && !self.compressed {
            self.utf8
                .feed(chunk)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if self.state == CloseState::Open {
            self.message.extend_from_slice(chunk);
        }
        match NonZeroU64::new(frame.remaining.get() - take as u64) {
            None => {
                self.frame = None;
                self.end_frame(frame.fin, input, events)?;
            }
            Some(remaining) => {
                self.frame = Some(PartialFrame {
                    remaining,
                    mask_offset: ((usize::from(frame.mask_offset) + take) % 4) as u8,
                    ..frame
                })
            }
        }
        Ok(take)
    }

    fn end_frame(
        &mut self,
        fin: bool,
        input: &mut Input<'_>,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        if !fin {
            return Ok(());
        }
        let opcode = self
            .message_opcode
            .take()
            .expect("a data frame always belongs to an open message");
        if std::mem::take(&mut self.compressed) && self.state == CloseState::Open {
            self.message = self.inflate_message(opcode, input)?;
        }
        if opcode == OpCode::Text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let payload = std::mem::take(&mut self.message);
        // After our own Close, data is read (to find the peer's Close) but dropped.
        if self.state == CloseState::Open {
            events.push(Event::Message {
                opcode,
                payload: Payload::Owned(payload),
            });
        }
        Ok(())
    }

    /// Inflates the compressed message, checking text as it comes out.
    fn inflate_message(
        &mut self,
        opcode: OpCode,
        input: &mut Input<'_>,
    ) -> Result<Vec<u8>, ProtocolError> {
        let reset = matches!(self.inflate, Inflate::On { reset: true });
        let compressed = std::mem::take(&mut self.message);
        let utf8 = &mut self.utf8;
        let mut plain = Vec::new();
        let result = input.inflater.inflate(
            &compressed,
            input.limits.max_message_size,
            reset,
            &mut plain,
            |piece| {
                if opcode == OpCode::Text {
                    utf8.feed(piece).map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                Ok(())
            },
        );
        result.map(|()| plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::close::CloseCode;

    const LIMITS: Limits = Limits {
        max_message_size: 1024,
        in_place_max: 64 * 1024,
    };
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// An input with the test limits and no spare buffers; the spare list
    /// is leaked, which is fine in a test.
    fn input(inflater: &mut Inflater) -> Input<'_> {
        Input {
            limits: LIMITS,
            inflater,
            spare: Box::leak(Box::default()),
        }
    }

    fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut h = FrameHeader::new(fin, opcode, payload.len() as u64);
        h.mask = Some(MASK);
        let mut out = Vec::new();
        h.encode(&mut out);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], MASK, 0);
        out
    }

    fn feed(session: &mut Session, bytes: &[u8]) -> Vec<Event> {
        let mut buf = bytes.to_vec();
        let mut events = Vec::new();
        let used = session.receive(&mut buf, &mut input(&mut Inflater::new()), &mut events);
        assert_eq!(used, buf.len(), "all bytes of complete frames are used");
        events.into_iter().map(|e| e.into_owned(&buf)).collect()
    }

    fn message(opcode: OpCode, bytes: &[u8]) -> Event {
        Event::Message {
            opcode,
            payload: Payload::Owned(bytes.to_vec()),
        }
    }

    fn close_code(events: &[Event]) -> Option<u16> {
        events.iter().find_map(|e| match e {
            Event::Close { frame, .. } if frame.len() >= 4 => {
                Some(u16::from_be_bytes([frame[2], frame[3]]))
            }
            _ => None,
        })
    }

    #[test]
    fn rfc_masked_hello_is_a_text_message() {
        let mut s = Session::new();
        let events = feed(
            &mut s,
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
        );
        assert_eq!(events, [message(OpCode::Text, b"Hello")]);
    }

    /// Events straight from one `receive` call, payloads as they came.
    fn raw_events(session: &mut Session, buf: &mut [u8]) -> (usize, Vec<Event>) {
        let mut events = Vec::new();
        let used = session.receive(buf, &mut input(&mut Inflater::new()), &mut events);
        (used, events)
    }

    #[test]
    fn whole_small_frames_stay_in_place_unmasked() {
        let mut bytes = client_frame(true, OpCode::Text, b"Hello");
        bytes.extend(client_frame(true, OpCode::Binary, &[1, 2, 3]));
        let mut s = Session::new();
        let (used, events) = raw_events(&mut s, &mut bytes);
        assert_eq!(used, bytes.len());
        // Two 2-byte headers and two 4-byte keys before each payload.
        assert_eq!(
            events,
            [
                Event::Message {
                    opcode: OpCode::Text,
                    payload: Payload::InPlace(6..11)
                },
                Event::Message {
                    opcode: OpCode::Binary,
                    payload: Payload::InPlace(17..20)
                },
            ]
        );
        assert_eq!(&bytes[6..11], b"Hello");
        assert_eq!(&bytes[17..20], [1, 2, 3]);
    }

    #[test]
    fn split_fragmented_or_large_frames_get_a_buffer_of_their_own() {
        let big = vec![b'x'; LIMITS.in_place_max + 1];
        let limits = Limits {
            max_message_size: LIMITS.in_place_max + 1,
            ..LIMITS
        };
        let mut split = client_frame(true, OpCode::Text, b"Hello");
        let tail = split.split_off(8);
        let mut fragmented = client_frame(false, OpCode::Text, b"Hel");
        fragmented.extend(client_frame(true, OpCode::Continuation, b"lo"));
        for (name, parts, want) in [
            ("split", vec![split, tail], &b"Hello"[..]),
            ("fragmented", vec![fragmented], b"Hello"),
            ("large", vec![client_frame(true, OpCode::Text, &big)], &big),
        ] {
            let mut s = Session::new();
            let mut events = Vec::new();
            for mut part in parts {
                let mut inflater = Inflater::new();
                let mut input = Input {
                    limits,
                    ..input(&mut inflater)
                };
                let used = s.receive(&mut part, &mut input, &mut events);
                assert_eq!(used, part.len(), "{name}");
            }
            assert_eq!(events, [message(OpCode::Text, want)], "{name}");
        }
    }

    #[test]
    fn invalid_utf8_in_a_whole_small_frame_closes_1007() {
        let mut s = Session::new();
        let events = feed(&mut s, &client_frame(true, OpCode::Text, &[b'a', 0xFF]));
        assert_eq!(close_code(&events), Some(1007));
    }

    #[test]
    fn server_receives_unmasked_frame_closes_1002() {
        let mut s = Session::new();
        let events = feed(&mut s, &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
        assert_eq!(close_code(&events), Some(1002));
        assert_eq!(s.state(), CloseState::Failed);
    }

    #[test]
    fn server_receives_fragments_with_ping_between() {
        let mut s = Session::new();
        let mut bytes = client_frame(false, OpCode::Text, b"Hel");
        bytes.extend(client_frame(true, OpCode::Ping, b"p"));
        bytes.extend(client_frame(true, OpCode::Continuation, b"lo"));
        let events = feed(&mut s, &bytes);
        assert_eq!(
            events,
            [
                Event::Send(vec![0x8A, 0x01, b'p']),
                message(OpCode::Text, b"Hello")
            ]
        );
    }

    #[test]
    fn server_receives_continuation_without_start_closes_1002() {
        let mut s = Session::new();
        let events = feed(&mut s, &client_frame(true, OpCode::Continuation, b"x"));
        assert_eq!(close_code(&events), Some(1002));
    }

    #[test]
    fn server_receives_new_message_mid_fragment_closes_1002() {
        let mut s = Session::new();
        let mut bytes = client_frame(false, OpCode::Text, b"a");
        bytes.extend(client_frame(true, OpCode::Text, b"b"));
        assert_eq!(close_code(&feed(&mut s, &bytes)), Some(1002));
    }

    #[test]
    fn server_receives_fragmented_or_long_control_closes_1002() {
        let mut s = Session::new();
        assert_eq!(
            close_code(&feed(&mut s, &client_frame(false, OpCode::Ping, b""))),
            Some(1002)
        );
        let mut s = Session::new();
        assert_eq!(
            close_code(&feed(&mut s, &client_frame(true, OpCode::Ping, &[0; 126]))),
            Some(1002)
        );
    }

    #[test]
    fn server_receives_rsv_bits_closes_1002() {
        let mut s = Session::new();
        let mut bytes = client_frame(true, OpCode::Text, b"x");
        bytes[0] |= 0x20;
        assert_eq!(close_code(&feed(&mut s, &bytes)), Some(1002));
    }

    #[test]
    fn server_receives_invalid_utf8_mid_frame_closes_1007_at_once() {
        let mut s = Session::new();
        // Header announces 20 bytes; only the first 6 (with the bad byte) arrive.
        let mut payload = b"ab".to_vec();
        payload.extend([0xF4, 0x90, 0x80, 0x80]);
        payload.extend([b'c'; 14]);
        let bytes = client_frame(true, OpCode::Text, &payload);
        let mut buf = bytes[..2 + 4 + 6].to_vec();
        let mut events = Vec::new();
        s.receive(&mut buf, &mut input(&mut Inflater::new()), &mut events);
        assert_eq!(close_code(&events), Some(1007));
    }

    #[test]
    fn server_receives_oversize_header_closes_1009_before_payload() {
        let mut s = Session::new();
        let mut h = FrameHeader::new(true, OpCode::Binary, 2048);
        h.mask = Some(MASK);
        let mut bytes = Vec::new();
        h.encode(&mut bytes);
        assert_eq!(close_code(&feed(&mut s, &bytes)), Some(1009));
    }

    #[test]
    fn server_receives_oversize_reassembly_closes_1009() {
        let mut s = Session::new();
        let mut bytes = client_frame(false, OpCode::Binary, &[0; 600]);
        bytes.extend(client_frame(true, OpCode::Continuation, &[0; 600]));
        assert_eq!(close_code(&feed(&mut s, &bytes)), Some(1009));
    }

    #[test]
    fn close_is_echoed_and_later_input_discarded() {
        let mut s = Session::new();
        let mut bytes = client_frame(true, OpCode::Close, &[0x03, 0xE8, b'o', b'k']);
        bytes.extend(client_frame(true, OpCode::Text, b"late"));
        let events = feed(&mut s, &bytes);
        assert_eq!(
            events,
            [Event::Close {
                frame: vec![0x88, 0x02, 0x03, 0xE8],
                error: None
            }]
        );
        assert_eq!(s.state(), CloseState::Closed);
    }

    #[test]
    fn empty_close_gets_empty_close() {
        let mut s = Session::new();
        let events = feed(&mut s, &client_frame(true, OpCode::Close, b""));
        assert_eq!(
            events,
            [Event::Close {
                frame: vec![0x88, 0x00],
                error: None
            }]
        );
    }

    #[test]
    fn invalid_close_payloads_close_1002_or_1007() {
        for (payload, code) in [
            (&[0x03][..], 1002),
            (&[0x03, 0xED], 1002),
            (&[0x03, 0xE8, 0xFF], 1007),
        ] {
            let mut s = Session::new();
            let events = feed(&mut s, &client_frame(true, OpCode::Close, payload));
            assert_eq!(close_code(&events), Some(code), "{payload:02x?}");
        }
    }

    #[test]
    fn our_close_then_peer_close_completes_without_reply() {
        let mut s = Session::new();
        assert!(s.close(CloseCode::GOING_AWAY, "").is_some());
        assert!(s.close(CloseCode::GOING_AWAY, "").is_none());
        let mut bytes = client_frame(true, OpCode::Text, b"dropped");
        bytes.extend(client_frame(true, OpCode::Ping, b""));
        bytes.extend(client_frame(true, OpCode::Close, &[0x03, 0xE9]));
        assert_eq!(feed(&mut s, &bytes), []);
        assert_eq!(s.state(), CloseState::Closed);
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let mut stream = client_frame(false, OpCode::Text, "κόσ".as_bytes());
        stream.extend(client_frame(true, OpCode::Ping, b"ping"));
        stream.extend(client_frame(true, OpCode::Continuation, "με".as_bytes()));
        stream.extend(client_frame(true, OpCode::Binary, &[1, 2, 3]));
        stream.extend(client_frame(true, OpCode::Close, &[0x03, 0xE8]));
        let whole = feed(&mut Session::new(), &stream);
        for cut in 0..stream.len() {
            let mut s = Session::new();
            let mut events = Vec::new();
            let mut first = stream[..cut].to_vec();
            let mut inflater = Inflater::new();
            let used = s.receive(&mut first, &mut input(&mut inflater), &mut events);
            let mut owned: Vec<Event> = events.drain(..).map(|e| e.into_owned(&first)).collect();
            // The unused tail is untouched (still masked) and passed again.
            let mut carried = stream[used..].to_vec();
            let used2 = s.receive(&mut carried, &mut input(&mut inflater), &mut events);
            assert_eq!(used2, carried.len());
            owned.extend(events.drain(..).map(|e| e.into_owned(&carried)));
            assert_eq!(owned, whole, "cut {cut}");
        }
    }
}
