//! Who may connect and how fast: per-address limits and per-connection
//! message rates.
//!
//! Both exist so that one address, or one client, cannot take the whole
//! server. They cost nothing when their flags are off: the address table
//! stays empty and the rate bucket is never consulted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::policy::Refusal;
use super::timer::Time;

/// The window handshakes per address are counted in.
const SECOND: Duration = Duration::from_secs(1);

/// A token bucket: `rate` messages per second, bursts up to `rate`.
/// Eight bytes, since every connection carries one.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateBucket {
    /// Tokens left; starts full on the first message.
    tokens: f32,
    /// When tokens were last added (ms, wrapping); 0 before the first message.
    last: u32,
}

impl RateBucket {
    /// Takes one token at `now`; `false` when the client is over its rate.
    pub fn take(&mut self, now: Time, rate: f64) -> bool {
        // Wrapping milliseconds: only differences of under 49 days matter.
        let now = (now.as_millis() as u32).max(1);
        let burst = rate.max(1.0) as f32;
        if self.last == 0 {
            self.tokens = burst;
        } else {
            let elapsed_s = now.wrapping_sub(self.last) as f32 / 1000.0;
            self.tokens = (self.tokens + elapsed_s * rate as f32).min(burst);
        }
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct AddressCount {
    connections: usize,
    window_start: Option<Time>,
    handshakes_in_window: u32,
}

/// Per-address connection and handshake counts.
#[derive(Debug, Default)]
pub struct PerAddress {
    max_connections: Option<usize>,
    max_handshakes_per_second: Option<f64>,
    table: HashMap<IpAddr, AddressCount>,
    last_sweep: Option<Time>,
}

impl PerAddress {
    /// Limits as configured; `None` is unlimited.
    pub fn new(max_connections: Option<usize>, max_handshakes_per_second: Option<f64>) -> Self {
        PerAddress {
            max_connections,
            max_handshakes_per_second,
            ..PerAddress::default()
        }
    }

    fn enabled(&self) -> bool {
        self.max_connections.is_some() || self.max_handshakes_per_second.is_some()
    }

    /// Counts a new connection from `ip`, or refuses it (429).
    pub fn admit(&mut self, ip: IpAddr, now: Time) -> Result<(), Refusal> {
        if !self.enabled() {
            return Ok(());
        }
        let entry = self.table.entry(ip).or_default();
        let window_over = entry
            .window_start
            .is_none_or(|start| now.since(start) >= SECOND);
        if window_over {
            entry.window_start = Some(now);
            entry.handshakes_in_window = 0;
        }
        let over_connections = self
            .max_connections
            .is_some_and(|max| entry.connections >= max);
        let over_rate = self
            .max_handshakes_per_second
            .is_some_and(|max| f64::from(entry.handshakes_in_window) >= max);
        if over_connections || over_rate {
            return Err(Refusal::TooManyFromAddress);
        }
        entry.connections += 1;
        entry.handshakes_in_window += 1;
        Ok(())
    }

    /// Forgets a connection admitted from `ip`.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(entry) = self.table.get_mut(&ip) {
            entry.connections = entry.connections.saturating_sub(1);
        }
    }

    /// Drops addresses with no connection and no recent handshake, at most
    /// once a second, so the table only holds live addresses.
    pub fn sweep(&mut self, now: Time) {
        let swept_lately = self.last_sweep.is_some_and(|t| now.since(t) < SECOND);
        if self.table.is_empty() || swept_lately {
            return;
        }
        self.last_sweep = Some(now);
        self.table.retain(|_, e| {
            e.connections > 0 || e.window_start.is_some_and(|t| now.since(t) < SECOND)
        });
    }

    /// Addresses in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut b = RateBucket::default();
        let allowed = (0..20).filter(|_| b.take(t(1000), 10.0)).count();
        assert_eq!(allowed, 10, "burst of one second's worth");
        assert!(!b.take(t(1000), 10.0));
        assert!(b.take(t(1100), 10.0), "a token every 100 ms");
        assert!(!b.take(t(1100), 10.0));
    }

    #[test]
    fn connections_per_address() {
        let mut p = PerAddress::new(Some(2), None);
        assert!(p.admit(IP, t(1)).is_ok());
        assert!(p.admit(IP, t(1)).is_ok());
        assert_eq!(p.admit(IP, t(1)), Err(Refusal::TooManyFromAddress));
        p.release(IP);
        assert!(p.admit(IP, t(1)).is_ok());
    }

    #[test]
    fn handshakes_per_address_per_second() {
        let mut p = PerAddress::new(None, Some(3.0));
        for _ in 0..3 {
            assert!(p.admit(IP, t(10)).is_ok());
            p.release(IP);
        }
        assert!(p.admit(IP, t(500)).is_err());
        assert!(p.admit(IP, t(1010)).is_ok(), "a new window");
    }

    #[test]
    fn disabled_limits_keep_no_table() {
        let mut p = PerAddress::new(None, None);
        for _ in 0..100 {
            assert!(p.admit(IP, t(1)).is_ok());
        }
        assert!(p.is_empty());
    }

    #[test]
    fn sweep_forgets_idle_addresses() {
        let mut p = PerAddress::new(Some(5), None);
        p.admit(IP, t(1)).unwrap();
        p.release(IP);
        p.sweep(t(5000));
        assert!(p.is_empty());
    }
}
