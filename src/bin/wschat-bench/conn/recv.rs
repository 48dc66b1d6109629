//! The receive side of a connection: bytes read and not yet decoded.

use std::io::{self, Read};

/// Receive buffer to start with: enough for a handshake and small frames,
/// and small enough that 20000 idle connections stay cheap.
const INITIAL_RECV: usize = 8 * 1024;

/// A full read doubles the buffer up to this, so a busy connection drains
/// its socket in few syscalls.
const MAX_RECV_STEP: usize = 256 * 1024;

/// Received bytes not yet decoded, in one growable buffer.
///
/// Bytes live in `buf[start..end]`; the space after `end` is read into
/// directly, and consumed bytes are only moved when room runs out.
#[derive(Debug)]
pub struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    /// An empty buffer of [`INITIAL_RECV`] bytes.
    pub(super) fn new() -> RecvBuf {
        RecvBuf {
            buf: vec![0; INITIAL_RECV],
            start: 0,
            end: 0,
        }
    }

    /// The bytes received and not yet consumed.
    pub(super) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops `n` bytes from the front.
    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for at least `total` unconsumed bytes and one more read.
    pub(super) fn reserve(&mut self, total: usize) {
        if self.start > 0 && (self.end == self.buf.len() || self.start + total > self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let wanted = total.max(self.end + 1);
        if wanted > self.buf.len() {
            let grown = wanted
                .max(self.buf.len() * 2)
                .min(wanted.max(MAX_RECV_STEP));
            self.buf.resize(grown, 0);
        }
    }

    /// One `read` into the free space: the bytes read (`0` is end of
    /// stream) and whether they filled all of it (more may be waiting).
    pub(super) fn read_from(&mut self, r: &mut impl Read) -> io::Result<(usize, bool)> {
        self.reserve(0);
        let free = self.buf.len() - self.end;
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        if n == free && self.buf.len() < MAX_RECV_STEP {
            // The read filled the buffer: more is likely waiting, read bigger.
            let doubled = (self.buf.len() * 2).min(MAX_RECV_STEP);
            self.buf.resize(doubled, 0);
        }
        Ok((n, n == free))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_buffer_grows_for_a_large_frame_and_compacts() {
        let mut rx = RecvBuf::new();
        let mut src: &[u8] = &[1u8; 100];
        assert_eq!(rx.read_from(&mut src).unwrap(), (100, false));
        rx.consume(60);
        rx.reserve(100_000);
        assert_eq!(rx.data(), &[1u8; 40][..]);
        assert!(rx.buf.len() >= 100_000);
        rx.consume(40);
        assert!(rx.data().is_empty());
    }
}
