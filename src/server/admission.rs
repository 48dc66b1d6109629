//! Who may connect and how fast: per-address limits and per-connection
//! message rates.
//!
//! Both exist so that one address, or one client, cannot take the whole
//! server. They cost nothing when their flags are off: the address table
//! stays empty and the rate bucket is never consulted.

use std::collections::HashMap;
use std::net::IpAddr;

use super::timer::Millis;
use crate::protocol::HandshakeError;

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
    pub fn take(&mut self, now: Millis, rate: f64) -> bool {
        let now = (now as u32).max(1);
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
    window_start: Millis,
    handshakes_in_window: u32,
}

/// Per-address connection and handshake counts.
#[derive(Debug, Default)]
pub struct PerAddress {
    max_connections: Option<usize>,
    max_handshakes_per_second: Option<f64>,
    table: HashMap<IpAddr, AddressCount>,
    last_sweep: Millis,
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
    pub fn admit(&mut self, ip: IpAddr, now: Millis) -> Result<(), HandshakeError> {
        if !self.enabled() {
            return Ok(());
        }
        let entry = self.table.entry(ip).or_default();
        if now.saturating_sub(entry.window_start) >= 1000 {
            entry.window_start = now;
            entry.handshakes_in_window = 0;
        }
        let over_connections = self
            .max_connections
            .is_some_and(|max| entry.connections >= max);
        let over_rate = self
            .max_handshakes_per_second
            .is_some_and(|max| f64::from(entry.handshakes_in_window) >= max);
        if over_connections || over_rate {
            return Err(HandshakeError::TooManyFromAddress);
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
    pub fn sweep(&mut self, now: Millis) {
        if self.table.is_empty() || now.saturating_sub(self.last_sweep) < 1000 {
            return;
        }
        self.last_sweep = now;
        self.table
            .retain(|_, e| e.connections > 0 || now.saturating_sub(e.window_start) < 1000);
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

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut b = RateBucket::default();
        let allowed = (0..20).filter(|_| b.take(1000, 10.0)).count();
        assert_eq!(allowed, 10, "burst of one second's worth");
        assert!(!b.take(1000, 10.0));
        assert!(b.take(1100, 10.0), "a token every 100 ms");
        assert!(!b.take(1100, 10.0));
    }

    #[test]
    fn connections_per_address() {
        let mut p = PerAddress::new(Some(2), None);
        assert!(p.admit(IP, 1).is_ok());
        assert!(p.admit(IP, 1).is_ok());
        assert_eq!(p.admit(IP, 1), Err(HandshakeError::TooManyFromAddress));
        p.release(IP);
        assert!(p.admit(IP, 1).is_ok());
    }

    #[test]
    fn handshakes_per_address_per_second() {
        let mut p = PerAddress::new(None, Some(3.0));
        for _ in 0..3 {
            assert!(p.admit(IP, 10).is_ok());
            p.release(IP);
        }
        assert!(p.admit(IP, 500).is_err());
        assert!(p.admit(IP, 1010).is_ok(), "a new window");
    }

    #[test]
    fn disabled_limits_keep_no_table() {
        let mut p = PerAddress::new(None, None);
        for _ in 0..100 {
            assert!(p.admit(IP, 1).is_ok());
        }
        assert!(p.is_empty());
    }

    #[test]
    fn sweep_forgets_idle_addresses() {
        let mut p = PerAddress::new(Some(5), None);
        p.admit(IP, 1).unwrap();
        p.release(IP);
        p.sweep(5000);
        assert!(p.is_empty());
    }
}
