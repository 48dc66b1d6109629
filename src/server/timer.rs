//! The loop's clock and its deadline queue.
//!
//! Time is kept as milliseconds since the loop started (`Millis`), so a
//! connection stores its deadline in 8 bytes. Each connection has at most
//! one deadline; moving it pushes a new heap entry and leaves the old one
//! to be recognised as stale when it comes up (it no longer equals the
//! connection's deadline). Nothing is scanned per tick: an idle connection
//! costs one heap entry per ping interval.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Milliseconds since the loop started, plus one (0 means "no deadline").
pub type Millis = u64;

/// The loop's notion of now, read once per batch of events.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    now: Millis,
}

impl Clock {
    /// A clock whose time starts now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            now: 1,
        }
    }

    /// Reads the system clock; called once after each `poll`.
    pub fn tick(&mut self) -> Millis {
        self.now = self.start.elapsed().as_millis() as Millis + 1;
        self.now
    }

    /// The time of the last tick.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// `now + d`.
    pub fn after(&self, d: Duration) -> Millis {
        self.now + to_millis(d)
    }

    /// How long from the system clock's now until `at` (zero if past).
    pub fn until(&self, at: Millis) -> Duration {
        let at = self.start + Duration::from_millis(at.saturating_sub(1));
        at.saturating_duration_since(Instant::now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A duration in whole milliseconds, rounded up so that a timer never
/// fires early.
pub fn to_millis(d: Duration) -> Millis {
    let ms = d.as_millis() as Millis;
    if Duration::from_millis(ms) < d {
        ms + 1
    } else {
        ms
    }
}

/// Deadlines of connections, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Millis, usize)>>,
}

impl Timers {
    /// No deadlines.
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Adds a deadline for connection `key`.
    pub fn push(&mut self, at: Millis, key: usize) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline, stale or not.
    pub fn next(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<(Millis, usize)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Keeps only the entries `live` accepts: used to drop stale entries
    /// when they outnumber live connections, so a burst of short
    /// connections does not keep the heap's memory.
    pub fn retain(&mut self, mut live: impl FnMut(Millis, usize) -> bool) {
        self.heap.retain(|Reverse((at, key))| live(*at, *key));
        if self.heap.capacity() > 4 * self.heap.len() + 1024 {
            self.heap.shrink_to_fit();
        }
    }

    /// Entries in the queue, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_deadlines_come_out_in_order() {
        let mut t = Timers::new();
        t.push(30, 1);
        t.push(10, 2);
        t.push(20, 3);
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(25), Some((10, 2)));
        assert_eq!(t.pop_due(25), Some((20, 3)));
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn retain_drops_stale_entries() {
        let mut t = Timers::new();
        for key in 0..100 {
            t.push(10, key);
        }
        t.retain(|_, key| key % 10 == 0);
        assert_eq!(t.len(), 10);
        assert_eq!(t.pop_due(10).map(|(_, k)| k % 10), Some(0));
    }

    #[test]
    fn durations_round_up() {
        assert_eq!(to_millis(Duration::from_micros(1500)), 2);
        assert_eq!(to_millis(Duration::from_millis(3)), 3);
        assert_eq!(to_millis(Duration::ZERO), 0);
    }

    #[test]
    fn clock_starts_after_zero() {
        let mut c = Clock::new();
        assert!(c.now() >= 1);
        assert!(c.tick() >= 1);
        assert_eq!(c.after(Duration::from_secs(1)), c.now() + 1000);
    }
}
