//! Incremental UTF-8 validation (RFC 6455 section 8.1).
//!
//! A text message may arrive split anywhere, even inside a code point, and
//! the connection must fail as soon as an invalid sequence is seen, not at
//! the end of the message. `std::str::from_utf8` already tells the two cases
//! apart: `error_len() == None` is "valid so far, incomplete at the end".
//! We keep at most 3 unfinished bytes between chunks.

/// Validates a stream of bytes chunk by chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The bytes fed so far cannot be the start of valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Utf8Validator {
        Utf8Validator {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Feeds the next chunk. Fails as soon as the bytes so far cannot be a
    /// prefix of valid UTF-8.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        // Finish a code point left open by the previous chunk, byte by byte.
        while self.pending_len > 0 {
            let Some((&b, rest)) = chunk.split_first() else {
                return Ok(());
            };
            self.pending[usize::from(self.pending_len)] = b;
            self.pending_len += 1;
            chunk = rest;
            match std::str::from_utf8(&self.pending[..usize::from(self.pending_len)]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {}
            }
        }
        // Most text is ASCII, and `is_ascii` checks it a word at a time
        // inline, where `from_utf8` costs a call even for a few bytes.
        if chunk.is_ascii() {
            return Ok(());
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the message: valid only if no code point is left unfinished.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        *self = Utf8Validator::new();
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

/// Whether a whole byte string is valid UTF-8.
pub fn is_valid(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> bool {
        let mut v = Utf8Validator::new();
        v.feed(bytes).is_ok() && v.finish().is_ok()
    }

    #[test]
    fn valid_text_split_at_every_offset() {
        let text = "κόσμε Hello-µ@ßöäüàá-UTF-8!! 𝄞".as_bytes();
        for cut in 0..=text.len() {
            let mut v = Utf8Validator::new();
            v.feed(&text[..cut]).unwrap();
            v.feed(&text[cut..]).unwrap();
            v.finish().unwrap();
        }
        let mut v = Utf8Validator::new();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn fails_fast_inside_a_chunk() {
        // Autobahn 6.4.1: "κόσμε" then 0xF4 0x90 (beyond U+10FFFF): invalid at
        // once, before the rest of the message arrives.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(v.feed(&[0xF4, 0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn fails_fast_byte_by_byte() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xF4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_sequence_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xE2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    #[test]
    fn rejects_surrogates_overlongs_and_out_of_range() {
        for bad in [
            &[0xED, 0xA0, 0x80][..],
            &[0xC0, 0xAF],
            &[0xE0, 0x80, 0xAF],
            &[0xF8, 0x88, 0x80, 0x80, 0x80],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0xFE],
            &[0x80],
        ] {
            assert!(!whole(bad), "{bad:02x?}");
        }
    }

    #[test]
    fn agrees_with_std_on_every_split() {
        let samples: [&[u8]; 4] = [
            "héllo wörld ☃".as_bytes(),
            &[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xED, 0xA0, 0x80],
            &[0xF0, 0x9F, 0x98, 0x80, 0xF0, 0x9F],
            b"plain ascii",
        ];
        for s in samples {
            let expected = is_valid(s);
            for cut in 0..=s.len() {
                let mut v = Utf8Validator::new();
                let ok =
                    v.feed(&s[..cut]).is_ok() && v.feed(&s[cut..]).is_ok() && v.finish().is_ok();
                assert_eq!(ok, expected, "{s:02x?} cut {cut}");
            }
        }
    }
}
