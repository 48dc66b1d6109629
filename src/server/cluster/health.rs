//! Whether the cluster is up or degraded, and what is logged about it.
//!
//! An outage is logged once when it starts (with the link and the reason)
//! and once when it ends, however many reconnect attempts it takes.
//! Warnings that Redis can cause over and over (dropped messages, a full
//! publish queue) are shown at most once per [`LOG_INTERVAL`]; the
//! counters in `/metrics` have the full count.

use std::fmt;
use std::time::Duration;

use log::{debug, info, warn};

use super::error::LinkError;
use super::link::Role;
use super::url::RedisUrl;
use crate::server::timer::Time;

/// A repeated warning is logged at most this often.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The cluster's health and the times its repeated warnings were shown.
#[derive(Debug, Default)]
pub struct Health {
    up: bool,
    /// The current outage was logged.
    announced: bool,
    last_drop_warning: Option<Time>,
    last_overflow_warning: Option<Time>,
}

impl Health {
    /// Degraded, as a cluster is until both links are ready.
    pub fn new() -> Health {
        Health::default()
    }

    /// Whether room messages go through Redis (both links ready).
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Takes the links' state: `up` when both are ready; `down`, a link
    /// that failed and waits to reconnect, with why. Logs the end of an
    /// outage, and its start once. Returns `true` when an outage started.
    pub fn update(&mut self, up: bool, down: Option<(Role, &LinkError)>, url: &RedisUrl) -> bool {
        if up && !self.up {
            info!("redis at {url}: connected; room messages go through Redis");
            self.announced = false;
        }
        let mut started = false;
        if let (false, false, Some((role, error))) = (up, self.announced, down) {
            warn!(
                "redis at {url} unreachable ({role}: {error}): degraded, room messages reach this instance's clients only; reconnecting in the background"
            );
            self.announced = true;
            started = true;
        }
        self.up = up;
        started
    }

    /// Logs that something from Redis was dropped: a warning now and then,
    /// else a debug line.
    pub fn warn_drop(&mut self, now: Time, what: &dyn fmt::Display) {
        if log_allowed(&mut self.last_drop_warning, now) {
            warn!(
                "redis: dropped {what} (counted in /metrics; this warning is shown at most every {} s)",
                LOG_INTERVAL.as_secs()
            );
        } else {
            debug!("redis: dropped {what}");
        }
    }

    /// Logs, now and then, that the publish queue is over `limit` bytes.
    pub fn warn_overflow(&mut self, now: Time, limit: usize) {
        if log_allowed(&mut self.last_overflow_warning, now) {
            warn!("redis publish queue over {limit} bytes: room messages go to local members only until it drains");
        }
    }
}

/// Whether a warning last shown at `last` may be shown again at `now`; if
/// so, `last` becomes `now`.
pub fn log_allowed(last: &mut Option<Time>, now: Time) -> bool {
    if last.is_some_and(|t| now < t + LOG_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_spaced() {
        let mut last = None;
        let t = Time::from_millis;
        assert!(log_allowed(&mut last, t(1)));
        assert!(!log_allowed(&mut last, t(2)));
        assert!(!log_allowed(&mut last, t(0) + LOG_INTERVAL));
        assert!(log_allowed(&mut last, t(1) + LOG_INTERVAL));
    }

    #[test]
    fn an_outage_starts_once_and_ends_when_both_links_are_up() {
        let url: RedisUrl = "redis://127.0.0.1:6379".parse().unwrap();
        let mut health = Health::new();
        assert!(!health.is_up());
        let closed = LinkError::Closed;
        assert!(
            !health.update(false, None, &url),
            "connecting is not an outage"
        );
        assert!(!health.update(true, None, &url));
        assert!(health.is_up());
        let down = Some((Role::Subscriber, &closed));
        assert!(health.update(false, down, &url), "the outage starts");
        for _ in 0..3 {
            assert!(!health.update(false, down, &url), "and is counted once");
        }
        assert!(!health.update(true, None, &url));
        assert!(health.is_up());
        assert!(health.update(false, down, &url), "a new outage");
    }
}
