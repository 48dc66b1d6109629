//! Compressing and inflating message payloads (RFC 7692 sections 7.2.1-2).
//!
//! Raw deflate through `flate2` (zlib-rs backend, which honours window
//! sizes below 15 bits). A compressed payload is the deflate stream of the
//! message flushed with a sync flush, minus the final `00 00 ff ff`; the
//! receiver appends those four bytes again before inflating.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::ProtocolError;

/// The end of a sync flush, removed by the sender and restored by the receiver.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Output grows in steps of this size, so a bomb is caught within one step.
const STEP_BYTES: usize = 64 * 1024;

/// A raw deflate compressor for outgoing messages.
#[derive(Debug)]
pub struct Deflater {
    inner: Compress,
    calls: u64,
}

impl Deflater {
    /// A compressor with a window of `2^window_bits` bytes (9-15).
    pub fn new(window_bits: u8) -> Deflater {
        Deflater {
            inner: Compress::new_with_window_bits(Compression::default(), false, window_bits),
            calls: 0,
        }
    }

    /// Messages compressed so far (one per call of [`Deflater::compress`]).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Appends the compressed payload of the message made of `parts`.
    /// With `reset`, no context is kept for the next message.
    pub fn compress(&mut self, parts: &[&[u8]], reset: bool, out: &mut Vec<u8>) {
        self.calls += 1;
        let start = out.len();
        for (i, part) in parts.iter().enumerate() {
            let flush = if i + 1 == parts.len() {
                FlushCompress::Sync
            } else {
                FlushCompress::None
            };
            self.run(part, flush, out);
        }
        if parts.is_empty() {
            self.run(&[], FlushCompress::Sync, out);
        }
        // A sync flush always ends with the empty stored block 00 00 ff ff.
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.len() == start {
            // RFC 7692 section 7.2.3.6: an empty message is one 0x00 byte.
            out.push(0x00);
        }
        if reset {
            self.inner.reset();
        }
    }

    fn run(&mut self, mut input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) {
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(input.len() / 2 + 64);
            }
            let in_before = self.inner.total_in();
            let out_before = out.len();
            // Compressing into a Vec with room cannot fail: errors only come
            // from a misused stream state, which this loop never produces.
            let _ = self.inner.compress_vec(input, out, flush);
            let used = (self.inner.total_in() - in_before) as usize;
            input = &input[used..];
            let filled = out.len() == out.capacity();
            if input.is_empty() && !filled {
                return;
            }
            if used == 0 && out.len() == out_before && !filled {
                return;
            }
        }
    }
}

/// A raw deflate inflater for incoming messages (always a 15-bit window,
/// which reads data compressed with any smaller window).
#[derive(Debug)]
pub struct Inflater {
    inner: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    /// A fresh inflater.
    pub fn new() -> Inflater {
        Inflater {
            inner: Decompress::new_with_window_bits(false, 15),
        }
    }

    /// Inflates one message's compressed payload into `out`, giving every
    /// new piece of output to `check` as it is produced, and stops with
    /// [`ProtocolError::MessageTooLarge`] as soon as `out` would pass `max`
    /// bytes. With `reset`, no context is kept for the next message.
    pub fn inflate(
        &mut self,
        input: &[u8],
        max: usize,
        reset: bool,
        out: &mut Vec<u8>,
        mut check: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let result = self
            .run(input, max, out, &mut check)
            .and_then(|()| self.run(&TAIL, max, out, &mut check));
        if reset || result.is_err() {
            self.inner.reset(false);
        }
        result
    }

    fn run(
        &mut self,
        mut input: &[u8],
        max: usize,
        out: &mut Vec<u8>,
        check: &mut impl FnMut(&[u8]) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        loop {
            if out.capacity() == out.len() {
                // Never more room than the limit plus one byte: a bomb
                // fills that and is refused, whatever it would expand to.
                let room = STEP_BYTES.min(max + 1 - out.len().min(max));
                out.reserve_exact(room.max(1));
            }
            let in_before = self.inner.total_in();
            let out_before = out.len();
            let status = self
                .inner
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::CorruptCompression)?;
            let used = (self.inner.total_in() - in_before) as usize;
            input = &input[used..];
            check(&out[out_before..])?;
            if out.len() > max {
                return Err(ProtocolError::MessageTooLarge);
            }
            let filled = out.len() == out.capacity();
            if status == Status::StreamEnd {
                // The client ended the stream (BFINAL): start a new one.
                self.inner.reset(false);
                return Ok(());
            }
            if input.is_empty() && !filled {
                return Ok(());
            }
            if used == 0 && out.len() == out_before && !filled {
                // No progress with input left: the data is not deflate.
                return Err(ProtocolError::CorruptCompression);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(parts: &[&[u8]], window: u8) -> Vec<u8> {
        let mut d = Deflater::new(window);
        let mut compressed = Vec::new();
        d.compress(parts, true, &mut compressed);
        let mut out = Vec::new();
        Inflater::new()
            .inflate(&compressed, 1 << 20, true, &mut out, |_| Ok(()))
            .unwrap();
        out
    }

    #[test]
    fn rfc_7692_hello_example() {
        // Section 7.2.3.1: "Hello" compressed without context takeover.
        let mut out = Vec::new();
        Deflater::new(15).compress(&[b"Hello"], true, &mut out);
        let mut plain = Vec::new();
        Inflater::new()
            .inflate(
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
                100,
                true,
                &mut plain,
                |_| Ok(()),
            )
            .unwrap();
        assert_eq!(plain, b"Hello");
        assert!(!out.ends_with(&TAIL));
        let mut again = Vec::new();
        Inflater::new()
            .inflate(&out, 100, true, &mut again, |_| Ok(()))
            .unwrap();
        assert_eq!(again, b"Hello");
    }

    #[test]
    fn parts_and_windows_round_trip() {
        let text = "from7:".repeat(500);
        for window in 9..=15 {
            assert_eq!(
                roundtrip(&[b"from7:", text.as_bytes()], window),
                [b"from7:".as_slice(), text.as_bytes()].concat()
            );
        }
        assert_eq!(roundtrip(&[], 15), b"");
    }

    #[test]
    fn context_takeover_spans_messages() {
        let mut d = Deflater::new(15);
        let mut i = Inflater::new();
        for _ in 0..3 {
            let mut c = Vec::new();
            d.compress(&[b"the same words again and again"], false, &mut c);
            let mut out = Vec::new();
            i.inflate(&c, 1000, false, &mut out, |_| Ok(())).unwrap();
            assert_eq!(out, b"the same words again and again");
        }
        assert_eq!(d.calls(), 3);
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut c = Vec::new();
        Deflater::new(15).compress(&[&zeros], true, &mut c);
        assert!(c.len() < 20_000, "a few KB expand to 10 MiB");
        let mut out = Vec::new();
        let err = Inflater::new().inflate(&c, 1 << 20, true, &mut out, |_| Ok(()));
        assert_eq!(err, Err(ProtocolError::MessageTooLarge));
        assert!(
            out.capacity() <= (1 << 20) + 1,
            "never allocated past the limit"
        );
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut out = Vec::new();
        let err =
            Inflater::new().inflate(&[0xFF, 0xFF, 0xFF, 0xFF], 100, true, &mut out, |_| Ok(()));
        assert_eq!(err, Err(ProtocolError::CorruptCompression));
    }

    #[test]
    fn check_sees_output_as_it_is_produced() {
        let mut c = Vec::new();
        Deflater::new(15).compress(&[&[b'a'; 200_000]], true, &mut c);
        let mut pieces = 0;
        let mut out = Vec::new();
        Inflater::new()
            .inflate(&c, 1 << 20, true, &mut out, |p| {
                pieces += usize::from(!p.is_empty());
                Ok(())
            })
            .unwrap();
        assert!(pieces >= 2, "streamed in steps, not at the end");
        assert_eq!(out.len(), 200_000);
    }
}
