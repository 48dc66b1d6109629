//! Connection ids unique across the cluster, reserved from Redis in blocks.
//!
//! `INCRBY wschat:ids {delta}` answers `end`: the ids `end-delta+1 ..= end`
//! now belong to this process alone. A block is asked for while the
//! previous one is still in use (one current block, one spare), so an
//! upgrade never waits for a round trip.
//!
//! Two guarantees, in this order:
//!
//! 1. **An id never repeats within one process**, whatever Redis does. The
//!    highest id taken from Redis is remembered (`floor`); a block at or
//!    below it (the counter went back: Redis restarted without
//!    persistence, or the key was deleted) is cut to what lies above the
//!    floor, and if nothing does, the next request asks for `floor + block`
//!    ids at once, which carries the counter past the floor.
//! 2. **Ids are unique across the cluster while Redis keeps the counter.**
//!    After Redis loses it, two processes may be handed overlapping ranges
//!    (each still never repeats its own ids).
//!
//! Without any block (Redis unreachable at start, or blocks used up during
//! an outage), ids come from a local range that Redis never reaches:
//! `2^52 + pid * 2^30 + n`. Below 2^53, so JavaScript reads them exactly;
//! distinct between the processes of one machine (distinct pids); across
//! machines, two processes may meet in it only if they have the same pid
//! and both ran without Redis.

use std::ops::Range;

/// Ids reserved by one `INCRBY`.
pub const BLOCK: u64 = 1000;

/// Where the local fallback ranges start: far above any Redis counter.
pub const FALLBACK_BASE: u64 = 1 << 52;

/// Ids in one process's fallback range.
const FALLBACK_SPAN: u64 = 1 << 30;

/// The id source of one process in cluster mode.
#[derive(Debug, Clone)]
pub struct IdBlocks {
    current: Range<u64>,
    spare: Range<u64>,
    /// The highest id received from Redis; every later block lies above it.
    floor: u64,
    /// Whether an `INCRBY` is on its way.
    requested: bool,
    /// The counter went back: the next request jumps past `floor`.
    jump: bool,
    fallback: Range<u64>,
}

impl IdBlocks {
    /// No block yet; the fallback range of the process tagged `tag` (the
    /// pid, of which the low 22 bits are used).
    pub fn new(tag: u32) -> IdBlocks {
        let start = FALLBACK_BASE + u64::from(tag & 0x3f_ffff) * FALLBACK_SPAN;
        IdBlocks {
            current: 0..0,
            spare: 0..0,
            floor: 0,
            requested: false,
            jump: false,
            // Ids start at 1 in the fallback range too.
            fallback: start + 1..start + FALLBACK_SPAN,
        }
    }

    /// The next id: from the current block, else the spare one, else the
    /// local fallback range.
    pub fn next_id(&mut self) -> u64 {
        if self.current.is_empty() {
            self.current = std::mem::replace(&mut self.spare, 0..0);
        }
        if let Some(id) = self.current.next() {
            return id;
        }
        // Past 2^30 fallback ids the range runs on into the next tag's;
        // it never wraps, so the process still never repeats an id.
        let id = self.fallback.start;
        self.fallback.start += 1;
        id
    }

    /// Ids left before the fallback range is used.
    pub fn available(&self) -> u64 {
        (self.current.end - self.current.start) + (self.spare.end - self.spare.start)
    }

    /// Whether a block should be asked for now: none is on its way and the
    /// spare slot is free.
    pub fn wants_block(&self) -> bool {
        !self.requested && self.spare.is_empty()
    }

    /// Marks a request as sent; returns the `INCRBY` delta to send.
    pub fn request(&mut self) -> u64 {
        self.requested = true;
        if self.jump {
            self.floor.saturating_add(BLOCK)
        } else {
            BLOCK
        }
    }

    /// The request was lost with its connection: ask again later.
    pub fn cancel(&mut self) {
        self.requested = false;
    }

    /// Takes the answer `end` to a request for `delta` ids. Returns the ids
    /// taken (empty when the counter had gone back below the floor).
    pub fn on_reserved(&mut self, end: u64, delta: u64) -> Range<u64> {
        self.requested = false;
        let start = end.saturating_sub(delta).max(self.floor) + 1;
        let block = start..end.saturating_add(1);
        if block.is_empty() {
            self.jump = true;
            return block;
        }
        self.jump = false;
        self.floor = end;
        if self.current.is_empty() {
            self.current = block.clone();
        } else {
            self.spare = block.clone();
        }
        block
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_come_from_blocks_in_order_then_from_the_spare() {
        let mut ids = IdBlocks::new(7);
        assert!(ids.wants_block());
        assert_eq!(ids.request(), BLOCK);
        assert!(!ids.wants_block(), "one request at a time");
        assert_eq!(ids.on_reserved(BLOCK, BLOCK), 1..BLOCK + 1);
        assert!(ids.wants_block(), "a spare is asked for at once");
        ids.request();
        assert_eq!(
            ids.on_reserved(3 * BLOCK, BLOCK),
            2 * BLOCK + 1..3 * BLOCK + 1
        );
        assert!(!ids.wants_block());
        assert_eq!(ids.available(), 2 * BLOCK);
        assert_eq!(ids.next_id(), 1);
        for _ in 1..BLOCK {
            ids.next_id();
        }
        assert_eq!(ids.next_id(), 2 * BLOCK + 1, "the spare follows");
        assert!(ids.wants_block(), "and is replaced");
    }

    #[test]
    fn without_blocks_ids_come_from_the_fallback_range() {
        let mut ids = IdBlocks::new(42);
        let first = ids.next_id();
        assert_eq!(first, FALLBACK_BASE + 42 * FALLBACK_SPAN + 1);
        assert_eq!(ids.next_id(), first + 1);
        assert!(first < 1 << 53);
        let last_tag = IdBlocks::new(u32::MAX).next_id();
        assert!(
            last_tag < 1 << 53,
            "every fallback id is exact in JavaScript"
        );
        // Blocks take over again once Redis answers.
        ids.request();
        ids.on_reserved(BLOCK, BLOCK);
        assert_eq!(ids.next_id(), 1);
    }

    #[test]
    fn a_counter_that_went_back_never_repeats_an_id() {
        let mut ids = IdBlocks::new(1);
        let mut seen = HashSet::new();
        ids.request();
        ids.on_reserved(5 * BLOCK, BLOCK);
        for _ in 0..BLOCK / 2 {
            assert!(seen.insert(ids.next_id()));
        }
        // Redis restarts empty: the counter answers 1000 again.
        ids.request();
        assert!(ids.on_reserved(BLOCK, BLOCK).is_empty());
        assert!(ids.wants_block());
        assert_eq!(ids.request(), 5 * BLOCK + BLOCK, "jump past the floor");
        // The counter was at 1000; INCRBY 6000 answers 7000: ids 1001..7000
        // are ours, of which those above the floor are used.
        assert_eq!(
            ids.on_reserved(7 * BLOCK, 6 * BLOCK),
            5 * BLOCK + 1..7 * BLOCK + 1
        );
        assert_eq!(ids.request(), BLOCK, "back to plain blocks");
        for _ in 0..3 * BLOCK {
            assert!(seen.insert(ids.next_id()));
        }
    }

    #[test]
    fn a_partly_reused_block_is_cut_at_the_floor() {
        let mut ids = IdBlocks::new(1);
        ids.request();
        ids.on_reserved(2 * BLOCK, BLOCK);
        ids.request();
        // The counter went back to 1500, so the answer 2500 covers 1501..2500.
        assert_eq!(
            ids.on_reserved(2 * BLOCK + 500, BLOCK),
            2 * BLOCK + 1..2 * BLOCK + 501
        );
    }

    #[test]
    fn a_lost_request_is_asked_again() {
        let mut ids = IdBlocks::new(1);
        ids.request();
        assert!(!ids.wants_block());
        ids.cancel();
        assert!(ids.wants_block());
    }
}
