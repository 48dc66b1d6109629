//! Capped exponential backoff with jitter, for reconnecting to Redis.
//!
//! The base delay doubles from [`INITIAL_MS`] up to [`CAP_MS`]; each delay
//! is drawn from the upper half of the base ("equal jitter"), so instances
//! that lost Redis together do not all come back in the same millisecond,
//! and no delay is ever shorter than half the base.

use std::time::Duration;

/// The first delay's base.
pub const INITIAL_MS: u64 = 100;

/// The largest base: an outage is probed at least this often.
pub const CAP_MS: u64 = 2000;

/// The delay before the next connection attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: u64,
    rng: u64,
}

impl Backoff {
    /// A fresh backoff; `seed` varies the jitter between processes.
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            base: INITIAL_MS,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt; the one after it is longer,
    /// up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let half = self.base / 2;
        let delay = half + self.random() % (half + 1);
        self.base = (self.base * 2).min(CAP_MS);
        Duration::from_millis(delay)
    }

    /// Back to the first delay, after a connection that worked.
    pub fn reset(&mut self) {
        self.base = INITIAL_MS;
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_it() {
        let mut b = Backoff::new(12345);
        let mut base = INITIAL_MS;
        for _ in 0..50 {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                d >= base / 2 && d <= base,
                "{d} outside [{}, {base}]",
                base / 2
            );
            base = (base * 2).min(CAP_MS);
        }
        assert!(b.next_delay() >= Duration::from_millis(CAP_MS / 2));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(0);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(INITIAL_MS));
    }

    #[test]
    fn jitter_differs_between_seeds() {
        let delays = |seed| {
            let mut b = Backoff::new(seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_ne!(delays(1), delays(2));
    }
}
