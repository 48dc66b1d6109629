//! The loop's clock, its instants, named timers and the deadline queue.
//!
//! An instant is a [`Time`]: whole milliseconds since the loop started, in
//! eight bytes (a connection stores one), never zero, so `Option<Time>` is
//! eight bytes too and "no deadline" is `None`, not a magic value. Spans
//! are plain [`Duration`]s, rounded up when added to a `Time`, so a timer
//! never fires early.
//!
//! Each connection has at most one armed timer, named by a [`Timer`].
//! Re-arming pushes a new heap entry and leaves the old one to be
//! recognised as stale when it comes up (it no longer equals the
//! connection's deadline). Nothing is scanned per tick: an idle connection
//! costs one heap entry per ping interval.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::ops::{Add, Sub};
use std::time::{Duration, Instant};

/// An instant on the loop's clock: milliseconds since the loop started,
/// plus one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(NonZeroU64);

impl Time {
    /// The first millisecond of the loop.
    pub const START: Time = Time(NonZeroU64::MIN);

    /// The instant `ms` milliseconds after the start (tests and virtual time).
    pub fn from_millis(ms: u64) -> Time {
        Time(NonZeroU64::new(ms.saturating_add(1)).unwrap_or(NonZeroU64::MAX))
    }

    /// Milliseconds since the start.
    pub fn as_millis(self) -> u64 {
        self.0.get() - 1
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.get().saturating_sub(earlier.0.get()))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(ceil_millis(d)))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;

    /// The instant `d` earlier, rounded down so that a deadline computed
    /// back from another is never late; never before the start.
    fn sub(self, d: Duration) -> Time {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Time::from_millis(self.as_millis().saturating_sub(ms))
    }
}

/// The wall clock, in milliseconds since the Unix epoch: when a message
/// was accepted, as clients are told (the loop's own clock is monotonic
/// and starts at zero).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration in whole milliseconds, rounded up.
pub fn ceil_millis(d: Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if Duration::from_millis(ms) < d {
        ms + 1
    } else {
        ms
    }
}

/// The loop's notion of now, read once per batch of events.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    now: Time,
}

impl Clock {
    /// A clock whose time starts now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            now: Time::START,
        }
    }

    /// Reads the system clock; called once after each `poll`.
    pub fn tick(&mut self) -> Time {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.now = Time::from_millis(elapsed);
        self.now
    }

    /// The time of the last tick.
    pub fn now(&self) -> Time {
        self.now
    }

    /// `now + d`.
    pub fn after(&self, d: Duration) -> Time {
        self.now + d
    }

    /// How long from the system clock's now until `at` (zero if past).
    pub fn until(&self, at: Time) -> Duration {
        let at = self.start + Duration::from_millis(at.as_millis());
        at.saturating_duration_since(Instant::now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// What a connection's armed timer is for, so that its firing needs no
/// guessing from the connection's other state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The request (the TLS handshake, the head and any body) must be
    /// complete.
    Handshake,
    /// A kept-alive HTTP connection waits for the first byte of its next
    /// request; idle past this, it is closed.
    KeepAlive,
    /// Time to ping a silent WebSocket client, or to send an SSE stream
    /// its heartbeat.
    Ping,
    /// A held poll is due: it is answered with what there is.
    Hold,
    /// A pinged client that stays silent is closed.
    Idle,
    /// The last bytes are queued: the peer has this long to take them and
    /// close, after which the socket is dropped.
    Close,
}

/// Deadlines of connections, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Time, usize)>>,
}

impl Timers {
    /// No deadlines.
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Adds a deadline for connection `key`.
    pub fn push(&mut self, at: Time, key: usize) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline, stale or not.
    pub fn next(&self) -> Option<Time> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Time) -> Option<(Time, usize)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Keeps only the entries `live` accepts: used to drop stale entries
    /// when they outnumber live connections, so a burst of short
    /// connections does not keep the heap's memory.
    pub fn retain(&mut self, mut live: impl FnMut(Time, usize) -> bool) {
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

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn due_deadlines_come_out_in_order() {
        let mut timers = Timers::new();
        timers.push(t(30), 1);
        timers.push(t(10), 2);
        timers.push(t(20), 3);
        assert_eq!(timers.next(), Some(t(10)));
        assert_eq!(timers.pop_due(t(5)), None);
        assert_eq!(timers.pop_due(t(25)), Some((t(10), 2)));
        assert_eq!(timers.pop_due(t(25)), Some((t(20), 3)));
        assert_eq!(timers.pop_due(t(25)), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn retain_drops_stale_entries() {
        let mut timers = Timers::new();
        for key in 0..100 {
            timers.push(t(10), key);
        }
        timers.retain(|_, key| key % 10 == 0);
        assert_eq!(timers.len(), 10);
        assert_eq!(timers.pop_due(t(10)).map(|(_, k)| k % 10), Some(0));
    }

    #[test]
    fn durations_round_up() {
        assert_eq!(ceil_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ceil_millis(Duration::from_millis(3)), 3);
        assert_eq!(ceil_millis(Duration::ZERO), 0);
        assert_eq!(t(5) + Duration::from_micros(1), t(6), "never early");
    }

    #[test]
    fn instants_and_spans() {
        assert_eq!(t(1500).since(t(500)), Duration::from_secs(1));
        assert_eq!(t(5).since(t(9)), Duration::ZERO);
        assert_eq!(t(0), Time::START);
        assert_eq!(t(42).as_millis(), 42);
        assert_eq!(std::mem::size_of::<Option<Time>>(), 8);
    }

    #[test]
    fn clock_starts_at_the_start() {
        let mut c = Clock::new();
        assert_eq!(c.now(), Time::START);
        assert!(c.tick() >= Time::START);
        assert_eq!(
            c.after(Duration::from_secs(1)),
            c.now() + Duration::from_secs(1)
        );
    }
}
