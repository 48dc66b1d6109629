//! Frame header decode and encode (RFC 6455 section 5.2).
//!
//! Owns the wire layout of one frame header: FIN, RSV1-3, opcode, MASK,
//! the 7/16/64-bit payload length and the masking key. It never keeps state
//! across frames (that is `session`'s job) and never judges whether a frame
//! is allowed in context: it only rejects what no endpoint may ever send in
//! a header (reserved opcodes, a 64-bit length with its top bit set).

use super::error::ProtocolError;

/// Largest header: 2 fixed bytes, 8 bytes of extended length, 4 of mask.
pub const MAX_HEADER_BYTES: usize = 14;

/// Largest payload of a control frame (section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The frame type, from the low four bits of the first byte (section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: UTF-8 text.
    Text,
    /// 0x2: arbitrary bytes.
    Binary,
    /// 0x8: starts or answers the closing handshake.
    Close,
    /// 0x9: asks the peer for a Pong.
    Ping,
    /// 0xA: answers a Ping (or a unidirectional heartbeat).
    Pong,
}

impl OpCode {
    /// Decodes the opcode nibble. Opcodes 0x3-0x7 and 0xB-0xF are reserved
    /// ("MUST _Fail the WebSocket Connection_", section 5.2).
    pub fn from_bits(bits: u8) -> Result<OpCode, ProtocolError> {
        match bits {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            other => Err(ProtocolError::ReservedOpCode(other)),
        }
    }

    /// The opcode nibble as sent on the wire.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Control frames are Close, Ping and Pong (section 5.5).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// One decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1 (the permessage-deflate "compressed" bit when negotiated).
    pub rsv1: bool,
    /// RSV2, reserved.
    pub rsv2: bool,
    /// RSV3, reserved.
    pub rsv3: bool,
    /// Frame type.
    pub opcode: OpCode,
    /// Masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// An unmasked header for a server frame with RSV bits clear.
    pub fn new(fin: bool, opcode: OpCode, payload_len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// How many bytes this header takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the header with the shortest length encoding (section 5.2:
    /// "the minimal number of bytes MUST be used to encode the length").
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut bytes = [0; MAX_HEADER_BYTES];
        let len = self.encode_into(&mut bytes);
        out.extend_from_slice(&bytes[..len]);
    }

    /// Writes the header into `out` (which fits any header) and returns its
    /// length, for callers that keep headers inline rather than in a `Vec`.
    pub fn encode_into(&self, out: &mut [u8; MAX_HEADER_BYTES]) -> usize {
        let mut b0 = self.opcode.bits();
        if self.fin {
            b0 |= 0x80;
        }
        if self.rsv1 {
            b0 |= 0x40;
        }
        if self.rsv2 {
            b0 |= 0x20;
        }
        if self.rsv3 {
            b0 |= 0x10;
        }
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out[0] = b0;
        let mut len = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(mask) = self.mask {
            out[len..len + 4].copy_from_slice(&mask);
            len += 4;
        }
        len
    }
}

/// Decodes one header from the start of `buf`.
///
/// `Ok(None)` means the header is not complete yet: nothing is consumed and
/// the caller waits for more bytes. `Ok(Some((header, n)))` gives the header
/// and its length in bytes. Only rules that hold for every frame of any
/// endpoint are checked here.
pub fn decode_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    let opcode = OpCode::from_bits(b0 & 0x0F)?;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut pos) = match b1 & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            // Section 5.2: "the most significant bit MUST be 0".
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthTopBitSet);
            }
            (len, 10)
        }
        len => (u64::from(len), 2),
    };
    let mask = if masked {
        let Some(bytes) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        pos += 4;
        Some([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        None
    };
    let header = FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        rsv2: b0 & 0x20 != 0,
        rsv3: b0 & 0x10 != 0,
        opcode,
        mask,
        payload_len,
    };
    Ok(Some((header, pos)))
}

/// Appends a complete unmasked server frame: header, then `parts` in order.
///
/// Taking the payload in parts lets a broadcast write `from{id}:` and the
/// message straight into one buffer without building the joined payload.
pub fn encode_frame(fin: bool, opcode: OpCode, rsv1: bool, parts: &[&[u8]], out: &mut Vec<u8>) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut header = FrameHeader::new(fin, opcode, len as u64);
    header.rsv1 = rsv1;
    out.reserve(header.encoded_len() + len);
    header.encode(out);
    for part in parts {
        out.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    // RFC 6455 section 5.7 examples.
    #[test]
    fn rfc_unmasked_hello() {
        let bytes = hex("81 05 48 65 6c 6c 6f");
        let (h, n) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(n, 2);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.mask, None);
        assert_eq!(h.payload_len, 5);
        let mut out = Vec::new();
        encode_frame(true, OpCode::Text, false, &[b"Hello"], &mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn rfc_masked_hello() {
        let bytes = hex("81 85 37 fa 21 3d 7f 9f 4d 51 58");
        let (h, n) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, bytes[..6]);
    }

    #[test]
    fn rfc_fragmented_hello() {
        let first = hex("01 03 48 65 6c");
        let second = hex("80 02 6c 6f");
        let (h1, _) = decode_header(&first).unwrap().unwrap();
        let (h2, _) = decode_header(&second).unwrap().unwrap();
        assert!(!h1.fin && h1.opcode == OpCode::Text);
        assert!(h2.fin && h2.opcode == OpCode::Continuation);
    }

    #[test]
    fn rfc_ping_and_pong() {
        let ping = hex("89 05 48 65 6c 6c 6f");
        let (h, _) = decode_header(&ping).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Ping);
        let pong = hex("8a 85 37 fa 21 3d 7f 9f 4d 51 58");
        let (h, _) = decode_header(&pong).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Pong);
        assert!(h.mask.is_some());
    }

    #[test]
    fn rfc_256_bytes_uses_16_bit_length() {
        let mut out = Vec::new();
        FrameHeader::new(true, OpCode::Binary, 256).encode(&mut out);
        assert_eq!(out, hex("82 7E 01 00"));
        let (h, n) = decode_header(&out).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
    }

    #[test]
    fn rfc_64_kib_uses_64_bit_length() {
        let mut out = Vec::new();
        FrameHeader::new(true, OpCode::Binary, 65536).encode(&mut out);
        assert_eq!(out, hex("82 7F 00 00 00 00 00 01 00 00"));
        let (h, n) = decode_header(&out).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn shortest_length_encoding_at_boundaries() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let h = FrameHeader::new(true, OpCode::Binary, len);
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(out.len(), header_len, "len {len}");
            assert_eq!(h.encoded_len(), header_len);
        }
    }

    #[test]
    fn partial_headers_need_more_bytes() {
        let full = hex("82 FF 00 00 00 00 00 01 00 00 01 02 03 04");
        for cut in 0..full.len() {
            assert_eq!(decode_header(&full[..cut]).unwrap(), None, "cut {cut}");
        }
        let (h, n) = decode_header(&full).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (65536, 14));
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for bits in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                decode_header(&[0x80 | bits, 0x80]),
                Err(ProtocolError::ReservedOpCode(bits))
            );
        }
    }

    #[test]
    fn length_with_top_bit_set_is_rejected() {
        let bytes = hex("82 7F 80 00 00 00 00 00 00 00");
        assert_eq!(decode_header(&bytes), Err(ProtocolError::LengthTopBitSet));
    }

    #[test]
    fn rsv_bits_are_reported() {
        let (h, _) = decode_header(&[0xF1, 0x00]).unwrap().unwrap();
        assert!(h.rsv1 && h.rsv2 && h.rsv3);
    }
}
