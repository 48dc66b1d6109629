//! A connection's bounded queue of bytes to send.
//!
//! Chunks are either shared (`Rc<[u8]>`: one broadcast frame referenced by
//! every receiver's queue, never copied) or owned (this connection's own
//! frames: echoes, pongs, closes, HTTP responses). Small owned frames are
//! appended to the owned chunk at the tail, so a burst of echoes leaves in
//! one buffer. Writes use `write_vectored` over the first chunks, so many
//! queued frames go out in one system call. The byte bound itself is
//! enforced by the caller, which knows the policy (close, pause or drop).
//!
//! Every queue of a server counts its bytes into one shared [`ByteGauge`]
//! as they are queued, written, discarded or dropped with the queue, so the
//! server's total (for `--max-outbound-memory`) is kept where bytes move
//! and nowhere else.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

use crate::protocol::frame::{encode_frame, FrameHeader, OpCode, MAX_HEADER_BYTES};

/// Owned tail chunks grow by appending up to this size, then a new one
/// starts: a read's worth of echoed frames leaves as one contiguous slice.
/// (Many slices, each a header and a payload at odd offsets, are slower for
/// the kernel to copy than the same bytes in one piece.)
const COALESCE_BYTES: usize = 64 * 1024 + 64;

/// The largest chunk a queue holds: frames of messages up to 1 GiB.
pub const MAX_CHUNK_BYTES: usize = (1 << 30) + 16;

/// Payloads from this size on are moved into the queue rather than copied.
const MOVE_PAYLOAD_BYTES: usize = 4 * 1024;

/// Most chunks handed to one `write_vectored` call.
const MAX_IOVECS: usize = 64;

#[derive(Debug)]
enum Chunk {
    /// A broadcast frame, shared with other queues.
    Shared(Rc<[u8]>),
    /// This connection's own frames, small ones appended together.
    Owned(Vec<u8>),
    /// A message payload moved in whole; its buffer is reused once sent.
    Payload(Vec<u8>),
    /// The header of the payload behind it, kept inline: no allocation.
    Header([u8; MAX_HEADER_BYTES], u8),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(b) => b,
            Chunk::Owned(b) | Chunk::Payload(b) => b,
            Chunk::Header(bytes, len) => &bytes[..usize::from(*len)],
        }
    }
}

/// Message-sized buffers kept for reuse, so that a busy loop does not
/// allocate (and page in) a fresh buffer for every message: the allocator
/// would otherwise hand memory back to the kernel and fault it in again
/// with every burst. Bounded in count and in each buffer's size.
#[derive(Debug, Default)]
pub struct BufferPool {
    bufs: Vec<Vec<u8>>,
    limit: usize,
}

impl BufferPool {
    /// A pool keeping at most `limit` buffers.
    pub fn new(limit: usize) -> BufferPool {
        BufferPool {
            bufs: Vec::new(),
            limit,
        }
    }

    /// Keeps `buf` if it is worth keeping and there is room.
    pub fn put(&mut self, mut buf: Vec<u8>) {
        let useful = (MOVE_PAYLOAD_BYTES..=MAX_POOLED_BYTES).contains(&buf.capacity());
        if useful && self.bufs.len() < self.limit {
            buf.clear();
            self.bufs.push(buf);
        }
    }

    /// The kept buffers, for a session to start new messages in.
    pub fn buffers(&mut self) -> &mut Vec<Vec<u8>> {
        &mut self.bufs
    }
}

/// Buffers larger than this are freed rather than kept.
const MAX_POOLED_BYTES: usize = 256 * 1024;

/// The bytes held by a group of queues together (all connections of a
/// server), kept up to date by the queues themselves.
#[derive(Debug, Clone, Default)]
pub struct ByteGauge(Rc<Cell<usize>>);

impl ByteGauge {
    /// A gauge at zero.
    pub fn new() -> ByteGauge {
        ByteGauge::default()
    }

    /// Bytes held now.
    pub fn get(&self) -> usize {
        self.0.get()
    }

    pub(crate) fn add(&self, n: usize) {
        self.0.set(self.0.get() + n);
    }

    pub(crate) fn sub(&self, n: usize) {
        self.0.set(self.0.get() - n);
    }
}

/// How a flush ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued was written.
    Done,
    /// The socket would block; wait for the next writable event.
    Blocked,
}

/// Bytes waiting to be written to one socket, in order.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    /// (`u32` keeps every connection 8 bytes smaller; a frame is at most
    /// `MAX_CHUNK_BYTES`, which the configuration enforces.)
    front_written: u32,
    queued: usize,
    sealed: bool,
    /// Where this queue's bytes are counted with its siblings'.
    gauge: Option<ByteGauge>,
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.sub(self.queued);
        }
    }
}

impl WriteQueue {
    /// An empty queue counted by no gauge; allocates nothing until the
    /// first push.
    pub fn new() -> WriteQueue {
        WriteQueue::default()
    }

    /// An empty queue whose bytes count into `gauge`.
    pub fn with_gauge(gauge: ByteGauge) -> WriteQueue {
        WriteQueue {
            chunks: VecDeque::new(),
            front_written: 0,
            queued: 0,
            sealed: false,
            gauge: Some(gauge),
        }
    }

    fn grow(&mut self, n: usize) {
        self.queued += n;
        if let Some(gauge) = &self.gauge {
            gauge.add(n);
        }
    }

    fn shrink(&mut self, n: usize) {
        self.queued -= n;
        if let Some(gauge) = &self.gauge {
            gauge.sub(n);
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Whether the last bytes (a Close frame or an HTTP response) are queued.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Refuses every later push: nothing may follow a Close frame.
    pub fn seal(&mut self) {
        self.sealed = true;
    }

    /// Queues a shared frame without copying it. Returns the bytes queued:
    /// 0 once the queue is sealed.
    pub fn push_shared(&mut self, frame: Rc<[u8]>) -> usize {
        let len = frame.len();
        if self.sealed || len == 0 {
            return 0;
        }
        self.grow(len);
        self.chunks.push_back(Chunk::Shared(frame));
        len
    }

    /// Queues bytes this connection alone sends; returns the bytes queued.
    pub fn push_owned(&mut self, bytes: Vec<u8>) -> usize {
        let len = bytes.len();
        if self.sealed || len == 0 {
            return 0;
        }
        self.grow(len);
        if let Some(tail) = self.owned_tail(len) {
            tail.extend_from_slice(&bytes);
        } else {
            self.chunks.push_back(Chunk::Owned(bytes));
        }
        len
    }

    /// Drops every byte not yet started on the wire and returns how many.
    /// A frame already partly written is kept whole, so the peer still
    /// sees a valid stream (used before a policy Close to a slow reader).
    pub fn discard_unsent(&mut self) -> usize {
        let keep = usize::from(self.front_written > 0).min(self.chunks.len());
        let dropped: usize = self.chunks.drain(keep..).map(|c| c.bytes().len()).sum();
        self.shrink(dropped);
        dropped
    }

    /// Encodes one unmasked frame straight into the queue; returns the
    /// bytes queued.
    pub fn push_frame(&mut self, opcode: OpCode, payload: &[u8]) -> usize {
        if self.sealed {
            return 0;
        }
        let len =
            FrameHeader::new(true, opcode, payload.len() as u64).encoded_len() + payload.len();
        self.grow(len);
        if let Some(tail) = self.owned_tail(len) {
            encode_frame(true, opcode, false, &[payload], tail);
        } else {
            // A large frame starts a tail with room for the ones likely to
            // follow it; a small one starts small, so a pong costs no 64 KiB.
            let room = if len >= MOVE_PAYLOAD_BYTES {
                COALESCE_BYTES
            } else {
                256
            };
            let mut chunk = Vec::with_capacity(len.max(room));
            encode_frame(true, opcode, false, &[payload], &mut chunk);
            self.chunks.push_back(Chunk::Owned(chunk));
        }
        len
    }

    /// Queues one unmasked frame whose payload is already an owned buffer:
    /// a large payload becomes a chunk of its own (moved, not copied) behind
    /// its header; a small one is copied into the tail like
    /// [`WriteQueue::push_frame`] and its buffer given to `pool`. Returns
    /// the bytes queued.
    pub fn push_frame_vec(
        &mut self,
        opcode: OpCode,
        payload: Vec<u8>,
        pool: &mut BufferPool,
    ) -> usize {
        if self.sealed || payload.len() < MOVE_PAYLOAD_BYTES {
            let queued = self.push_frame(opcode, &payload);
            pool.put(payload);
            return queued;
        }
        let header = FrameHeader::new(true, opcode, payload.len() as u64);
        let len = header.encoded_len() + payload.len();
        match self.owned_tail(header.encoded_len()) {
            Some(tail) => header.encode(tail),
            None => {
                let mut bytes = [0; MAX_HEADER_BYTES];
                let len = header.encode_into(&mut bytes);
                self.chunks.push_back(Chunk::Header(bytes, len as u8));
            }
        }
        self.chunks.push_back(Chunk::Payload(payload));
        self.grow(len);
        len
    }

    /// The owned chunk at the tail, if `extra` more bytes may go into it.
    fn owned_tail(&mut self, extra: usize) -> Option<&mut Vec<u8>> {
        match self.chunks.back_mut() {
            Some(Chunk::Owned(tail)) if tail.len() + extra <= COALESCE_BYTES => Some(tail),
            _ => None,
        }
    }

    /// Writes as much as `w` takes, in as few calls as it allows.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<Flush> {
        self.write_to_pooled(w, &mut BufferPool::default())
    }

    /// Like [`WriteQueue::write_to`], giving the buffers of owned chunks
    /// that are fully written back to `pool`.
    pub fn write_to_pooled<W: Write>(
        &mut self,
        w: &mut W,
        pool: &mut BufferPool,
    ) -> io::Result<Flush> {
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                let bytes = chunk.bytes();
                slices[i] = IoSlice::new(if i == 0 {
                    &bytes[self.front_written as usize..]
                } else {
                    bytes
                });
                count += 1;
            }
            let written = match w.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.advance(written, pool);
        }
        self.release_idle_memory();
        Ok(Flush::Done)
    }

    fn advance(&mut self, mut written: usize, pool: &mut BufferPool) {
        self.shrink(written);
        while let Some(front) = self.chunks.front() {
            let left = front.bytes().len() - self.front_written as usize;
            if written < left {
                // `written < left`, and `left` is one chunk's length.
                self.front_written += written as u32;
                return;
            }
            written -= left;
            self.front_written = 0;
            if let Some(Chunk::Payload(buf)) = self.chunks.pop_front() {
                pool.put(buf);
            }
        }
    }

    /// An idle connection keeps no buffer beyond a small ring of chunk slots.
    fn release_idle_memory(&mut self) {
        if self.chunks.capacity() > 8 {
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts a scripted number of bytes per call, then blocks.
    struct Throttled {
        out: Vec<u8>,
        budget: Vec<usize>,
        calls: usize,
    }

    impl Write for Throttled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let Some(mut budget) = self.budget.pop() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(budget);
                self.out.extend_from_slice(&b[..take]);
                budget -= take;
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut q = WriteQueue::new();
        let shared: Rc<[u8]> = Rc::from(&b"shared-frame"[..]);
        q.push_shared(shared.clone());
        q.push_owned(b"owned".to_vec());
        q.push_shared(shared);
        let total = q.queued_bytes();
        let mut w = Throttled {
            out: Vec::new(),
            budget: vec![100, 7, 3],
            calls: 0,
        };
        assert_eq!(q.write_to(&mut w).unwrap(), Flush::Done);
        assert_eq!(w.out, b"shared-frameownedshared-frame");
        assert_eq!(w.out.len(), total);
        assert!(q.is_empty());
    }

    #[test]
    fn would_block_keeps_the_rest() {
        let mut q = WriteQueue::new();
        q.push_owned(b"0123456789".to_vec());
        let mut w = Throttled {
            out: Vec::new(),
            budget: vec![4],
            calls: 0,
        };
        assert_eq!(q.write_to(&mut w).unwrap(), Flush::Blocked);
        assert_eq!(q.queued_bytes(), 6);
        w.budget = vec![100];
        assert_eq!(q.write_to(&mut w).unwrap(), Flush::Done);
        assert_eq!(w.out, b"0123456789");
    }

    #[test]
    fn many_frames_leave_in_one_call() {
        let mut q = WriteQueue::new();
        let frame: Rc<[u8]> = Rc::from(&[0x81, 0x01, b'x'][..]);
        for _ in 0..10 {
            q.push_shared(frame.clone());
            q.push_frame(OpCode::Text, b"echo");
        }
        let mut w = Throttled {
            out: Vec::new(),
            budget: vec![usize::MAX],
            calls: 0,
        };
        q.write_to(&mut w).unwrap();
        assert_eq!(w.calls, 1);
        assert_eq!(w.out.len(), 10 * 3 + 10 * 6);
    }

    #[test]
    fn small_owned_frames_share_one_chunk() {
        let mut q = WriteQueue::new();
        for _ in 0..100 {
            q.push_frame(OpCode::Binary, &[7; 16]);
        }
        assert_eq!(q.chunks.len(), 1);
        assert_eq!(q.queued_bytes(), 100 * 18);
    }

    #[test]
    fn a_reads_worth_of_16k_frames_is_one_contiguous_chunk() {
        let mut q = WriteQueue::new();
        for _ in 0..4 {
            q.push_frame(OpCode::Binary, &[7; 16 * 1024]);
        }
        assert_eq!(q.chunks.len(), 1, "headers and payloads in one slice");
        assert_eq!(q.queued_bytes(), 4 * (4 + 16 * 1024));
        q.push_frame(OpCode::Text, b"ping");
        assert_eq!(q.chunks.len(), 1, "room left for small frames after");
    }

    #[test]
    fn large_payloads_move_small_ones_coalesce() {
        let mut q = WriteQueue::new();
        let mut pool = BufferPool::new(4);
        let mut small = Vec::with_capacity(8192);
        small.extend_from_slice(&[1; 10]);
        assert_eq!(q.push_frame_vec(OpCode::Binary, small, &mut pool), 12);
        assert!(
            pool.buffers().pop().is_some(),
            "the copied payload's buffer is kept"
        );
        let big = vec![2u8; 20_000];
        let at = big.as_ptr();
        assert_eq!(q.push_frame_vec(OpCode::Binary, big, &mut pool), 4 + 20_000);
        assert_eq!(q.chunks.len(), 2, "header joined the small frame's chunk");
        assert!(
            std::ptr::eq(q.chunks[1].bytes().as_ptr(), at),
            "moved, not copied"
        );
        let mut w = Throttled {
            out: Vec::new(),
            budget: vec![usize::MAX],
            calls: 0,
        };
        q.write_to(&mut w).unwrap();
        assert_eq!(
            &w.out[..16],
            &[0x82, 10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0x82, 126, 0x4E, 0x20]
        );
        assert_eq!(w.out.len(), 12 + 4 + 20_000);
    }

    #[test]
    fn written_owned_buffers_return_to_the_pool() {
        let mut q = WriteQueue::new();
        let mut pool = BufferPool::new(4);
        q.push_frame_vec(OpCode::Binary, vec![1; 8192], &mut pool);
        q.push_frame(OpCode::Text, b"small");
        let mut w = Throttled {
            out: Vec::new(),
            budget: vec![usize::MAX],
            calls: 0,
        };
        q.write_to_pooled(&mut w, &mut pool).unwrap();
        let buf = pool
            .buffers()
            .pop()
            .expect("the 8 KiB payload buffer came back");
        assert!(buf.is_empty() && buf.capacity() >= 8192);
        assert!(pool.buffers().pop().is_none(), "small chunks are not kept");
    }

    #[test]
    fn nothing_follows_a_seal() {
        let mut q = WriteQueue::new();
        assert_eq!(q.push_owned(vec![0x88, 0x00]), 2);
        q.seal();
        assert_eq!(q.push_owned(b"late".to_vec()), 0);
        assert_eq!(q.push_shared(Rc::from(&b"late"[..])), 0);
        assert_eq!(q.push_frame(OpCode::Text, b"late"), 0);
        assert_eq!(q.queued_bytes(), 2);
    }

    #[test]
    fn discarding_keeps_a_partly_written_frame() {
        let mut q = WriteQueue::new();
        let frame: Rc<[u8]> = Rc::from(&b"0123456789"[..]);
        for _ in 0..3 {
            q.push_shared(frame.clone());
        }
        let mut w = Throttled {
            out: Vec::new(),
            budget: vec![4],
            calls: 0,
        };
        assert_eq!(q.write_to(&mut w).unwrap(), Flush::Blocked);
        assert_eq!(q.discard_unsent(), 20);
        assert_eq!(q.queued_bytes(), 6);
        w.budget = vec![100];
        q.write_to(&mut w).unwrap();
        assert_eq!(w.out, b"0123456789");
        let mut idle = WriteQueue::new();
        idle.push_shared(frame);
        assert_eq!(idle.discard_unsent(), 10);
        assert!(idle.is_empty());
    }

    #[test]
    fn the_gauge_follows_every_byte() {
        let gauge = ByteGauge::new();
        let mut a = WriteQueue::with_gauge(gauge.clone());
        let mut b = WriteQueue::with_gauge(gauge.clone());
        a.push_shared(Rc::from(&b"0123456789"[..]));
        a.push_frame(OpCode::Text, b"hi");
        b.push_owned(b"xyz".to_vec());
        assert_eq!(gauge.get(), 10 + 4 + 3);
        let mut w = Throttled {
            out: Vec::new(),
            budget: vec![6],
            calls: 0,
        };
        assert_eq!(a.write_to(&mut w).unwrap(), Flush::Blocked);
        assert_eq!(gauge.get(), 8 + 3, "written bytes leave the gauge");
        a.discard_unsent();
        assert_eq!(gauge.get(), 4 + 3, "the partly written frame stays");
        drop(b);
        assert_eq!(gauge.get(), 4, "a dropped queue takes its bytes along");
        drop(a);
        assert_eq!(gauge.get(), 0);
    }
}
