//! Close codes and close frame payloads (RFC 6455 sections 5.5.1 and 7.4).

use super::error::ProtocolError;
use super::utf8;

/// A close status code (section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1007: a payload is inconsistent with its type (bad UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: the peer broke a policy (rate, backpressure).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: an internal error of the server.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether an endpoint may put this code on the wire (section 7.4).
    ///
    /// Allowed: 1000-1003, 1007-1014 (1012-1014 were registered with IANA
    /// after the RFC), and 3000-4999 for libraries and applications. 1004 is
    /// reserved; 1005, 1006 and 1015 exist only to be reported locally.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Parses a received close payload: empty, or a 2-byte code then a UTF-8 reason.
///
/// Returns the code (or `None` for an empty payload, which means 1005 "no
/// status received") and checks the reason's UTF-8 (section 5.5.1).
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseCode>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseBodyTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            if !utf8::is_valid(reason) {
                return Err(ProtocolError::InvalidUtf8);
            }
            Ok(Some(code))
        }
    }
}

/// Appends the payload of a close frame: the code, then the reason.
pub fn encode_close_payload(code: CloseCode, reason: &str, out: &mut Vec<u8>) {
    debug_assert!(reason.len() <= 123, "close reason over 123 bytes");
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_follow_section_7_4() {
        let sendable: Vec<u16> = (0..=5000u16)
            .filter(|c| CloseCode(*c).is_sendable())
            .collect();
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert!(sendable.contains(&code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!sendable.contains(&code), "{code}");
        }
    }

    #[test]
    fn empty_payload_has_no_code() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
    }

    #[test]
    fn one_byte_payload_is_an_error() {
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(ProtocolError::CloseBodyTooShort)
        );
    }

    #[test]
    fn code_and_reason() {
        let mut p = Vec::new();
        encode_close_payload(CloseCode::NORMAL, "bye", &mut p);
        assert_eq!(p, [0x03, 0xE8, b'b', b'y', b'e']);
        assert_eq!(parse_close_payload(&p), Ok(Some(CloseCode::NORMAL)));
    }

    #[test]
    fn forbidden_codes_are_errors() {
        for code in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let p = code.to_be_bytes();
            assert_eq!(
                parse_close_payload(&p),
                Err(ProtocolError::InvalidCloseCode(code))
            );
        }
    }

    #[test]
    fn reason_must_be_utf8() {
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xCE, 0xBA, 0xE1, 0xBD]),
            Err(ProtocolError::InvalidUtf8)
        );
    }
}
