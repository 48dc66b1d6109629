//! Session tokens: what an SSE or polling member shows (in the request
//! header `Wschat-Session`) to post as itself and to go on polling.
//!
//! A token is 40 lowercase hex digits: 8 name the session's slot in the
//! table (a selector, no secret), 32 are 16 bytes from the system's
//! random source (the secret). The table finds the slot without looking
//! at the secret, then compares the secret in constant time (every byte,
//! no early exit), so that how long a refusal takes says nothing about
//! how much of a guess was right. A slot used again gets a fresh secret,
//! so an old token never names its successor.

use std::fmt;

/// Bytes of randomness in a token.
pub const SECRET_BYTES: usize = 16;

/// Characters of a token as written: 8 hex digits of the slot, 32 of
/// the secret.
pub const TOKEN_CHARS: usize = 8 + 2 * SECRET_BYTES;

/// A session token, parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The session's slot in the table.
    pub slot: u32,
    /// The random part.
    pub secret: [u8; SECRET_BYTES],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Logs never show a secret.
        write!(f, "Token({:08x}, ..)", self.slot)
    }
}

impl Token {
    /// A new token for slot `slot`, with a secret from the system's random
    /// source; `None` if there is no randomness to be had (no session is
    /// then made: a guessable token is worse than none).
    pub fn new(slot: u32) -> Option<Token> {
        let mut secret = [0; SECRET_BYTES];
        getrandom::getrandom(&mut secret).ok()?;
        Some(Token { slot, secret })
    }

    /// Reads a token as a client sent it: exactly [`TOKEN_CHARS`] hex
    /// digits (either case), surrounding whitespace ignored; anything else
    /// is no token.
    pub fn parse(text: &[u8]) -> Option<Token> {
        let text = text.trim_ascii();
        if text.len() != TOKEN_CHARS {
            return None;
        }
        let mut bytes = [0u8; 4 + SECRET_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        let (slot, secret) = bytes.split_at(4);
        Some(Token {
            slot: u32::from_be_bytes(slot.try_into().ok()?),
            secret: secret.try_into().ok()?,
        })
    }

    /// The token as it is handed to the client.
    pub fn to_text(&self) -> String {
        let mut text = format!("{:08x}", self.slot);
        for b in self.secret {
            text.push_str(&format!("{b:02x}"));
        }
        text
    }

    /// Whether this token's secret is `secret`, compared in constant time.
    pub fn proves(&self, secret: &[u8; SECRET_BYTES]) -> bool {
        let diff = self
            .secret
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // black_box keeps the comparison from being turned into a branch
        // per byte by the optimiser.
        std::hint::black_box(diff) == 0
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_written() {
        let token = Token::new(0x1234_abcd).unwrap();
        let text = token.to_text();
        assert_eq!(text.len(), TOKEN_CHARS);
        assert!(text.starts_with("1234abcd"));
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(Token::parse(text.as_bytes()), Some(token));
        assert_eq!(
            Token::parse(format!(" {} ", text.to_uppercase()).as_bytes()),
            Some(token)
        );
        assert!(
            !format!("{token:?}").contains(&text[8..]),
            "no secret in logs"
        );
    }

    #[test]
    fn secrets_are_random_and_compared_whole() {
        let a = Token::new(1).unwrap();
        let b = Token::new(1).unwrap();
        assert_ne!(a.secret, b.secret, "16 random bytes twice alike");
        assert!(a.proves(&a.secret));
        assert!(!a.proves(&b.secret));
        let mut last_byte_off = a.secret;
        last_byte_off[SECRET_BYTES - 1] ^= 1;
        assert!(!a.proves(&last_byte_off));
    }

    #[test]
    fn anything_but_40_hex_digits_is_no_token() {
        let good = "0000000100112233445566778899aabbccddeeff";
        assert!(Token::parse(good.as_bytes()).is_some());
        for bad in [
            "",
            &good[1..],
            &format!("{good}0"),
            &good.replace('a', "g"),
            &good.replace('0', "-"),
            "0000000100112233445566778899aabbccddeeé",
        ] {
            assert_eq!(Token::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
