//! Real client addresses behind proxies: which peers are trusted proxies
//! (`--trusted-proxy`), the address such a peer reports in `Forwarded` or
//! `X-Forwarded-For` ([`client_address`]), and the PROXY protocol header
//! it may send first (`--proxy-protocol`, [`read_proxy_header`]).
//!
//! Pure functions on addresses and bytes: the connection code decides
//! when to call them. An address only counts as reported by a proxy when
//! the peer that reports it is trusted; anyone else could write any
//! address into a header. A PROXY header's source is meant to stand in
//! for the peer given to [`client_address`], so that a TCP balancer in
//! front of an HTTP proxy resolves as one chain.

mod forwarded;
mod header;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

pub use forwarded::client_address;
pub use header::{
    looks_like_proxy_header, read_proxy_header, InvalidProxyHeader, ProxyHeader,
    MAX_V1_HEADER_BYTES, MAX_V2_HEADER_BYTES,
};

/// One `--trusted-proxy` range: a CIDR block, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedRange(IpNet);

/// Why a `--trusted-proxy` value is not a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError {
    /// The value as given.
    pub input: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a trusted proxy range: {}",
            self.input, self.why
        )
    }
}

impl std::error::Error for RangeError {}

impl FromStr for TrustedRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<TrustedRange, RangeError> {
        let error = |why: String| RangeError {
            input: text.to_string(),
            why,
        };
        let expected = "expected an address or a CIDR block like 10.0.0.0/8 or fd00::/8";
        let net = if text.contains('/') {
            let net: IpNet = text.parse().map_err(|_| {
                error(format!(
                    "not an address and a prefix length in range; {expected}"
                ))
            })?;
            // A typo like 10.0.0.1/8 trusts far more than one host: refuse
            // it rather than guess which of the two was meant.
            if net.trunc() != net {
                return Err(error(format!(
                    "address bits set past the prefix; the block is {}",
                    net.trunc()
                )));
            }
            net
        } else {
            let addr: IpAddr = text
                .parse()
                .map_err(|_| error(format!("not an IP address; {expected}")))?;
            IpNet::from(addr)
        };
        Ok(TrustedRange(unmap(net)))
    }
}

impl fmt::Display for TrustedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TrustedRange {
    /// Whether `addr` is in this range; an IPv4-mapped IPv6 address (how a
    /// dual-stack socket reports an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr.to_canonical())
    }
}

/// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) as the IPv4 block it
/// is, so that it matches the canonical addresses [`TrustedRange::contains`]
/// compares.
fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// The peers whose word on a client's address is believed
/// (`--trusted-proxy`, repeatable). Empty by default: no one is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<TrustedRange>,
}

impl TrustedProxies {
    /// Parses every value, or names the first one that is not a range.
    pub fn parse<S: AsRef<str>>(
        values: impl IntoIterator<Item = S>,
    ) -> Result<TrustedProxies, RangeError> {
        values.into_iter().map(|v| v.as_ref().parse()).collect()
    }

    /// Whether `addr` is in one of the ranges.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(addr))
    }

    /// Whether no peer is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, in the order given (for the startup log line).
    pub fn ranges(&self) -> &[TrustedRange] {
        &self.ranges
    }
}

impl FromIterator<TrustedRange> for TrustedProxies {
    fn from_iter<I: IntoIterator<Item = TrustedRange>>(ranges: I) -> TrustedProxies {
        TrustedProxies {
            ranges: ranges.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(ranges).unwrap()
    }

    #[test]
    fn ipv4_blocks_and_single_addresses() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.7"]);
        assert!(t.contains(ip("10.0.0.0")));
        assert!(t.contains(ip("10.255.255.255")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(!t.contains(ip("::1")));
        assert_eq!(t.ranges()[1].to_string(), "192.168.1.7/32");
    }

    #[test]
    fn ipv6_blocks_and_single_addresses() {
        let t = trusted(&["::1/128", "fd00::/8", "2001:db8::5"]);
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fd12:3456::1")));
        assert!(!t.contains(ip("fe80::1")));
        assert!(t.contains(ip("2001:db8::5")));
        assert!(!t.contains(ip("2001:db8::6")));
        assert!(!t.contains(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_ranges() {
        let t = trusted(&["10.0.0.0/8"]);
        assert!(t.contains(ip("::ffff:10.0.0.1")));
        assert!(!t.contains(ip("::ffff:11.0.0.1")));
        // A range written in the mapped form matches both spellings too.
        let mapped = trusted(&["::ffff:192.168.0.0/112"]);
        assert!(mapped.contains(ip("192.168.3.4")));
        assert!(mapped.contains(ip("::ffff:192.168.3.4")));
        assert!(!mapped.contains(ip("192.169.0.1")));
        assert_eq!(mapped.ranges()[0].to_string(), "192.168.0.0/16");
    }

    #[test]
    fn everything_and_nothing() {
        assert!(trusted(&["0.0.0.0/0"]).contains(ip("203.0.113.9")));
        assert!(trusted(&["0.0.0.0/0"]).contains(ip("::ffff:203.0.113.9")));
        assert!(!trusted(&["0.0.0.0/0"]).contains(ip("2001:db8::1")));
        assert!(trusted(&["::/0"]).contains(ip("2001:db8::1")));
        let none = TrustedProxies::default();
        assert!(none.is_empty() && !none.contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_input_is_named() {
        for (bad, why) in [
            ("", "not an IP address"),
            ("localhost", "not an IP address"),
            ("10.0.0", "not an IP address"),
            ("10.0.0.0/33", "prefix"),
            ("::/129", "prefix"),
            ("10.0.0.0/", "prefix"),
            ("10.0.0.0/8/8", "prefix"),
            ("/8", "prefix"),
            ("10.0.0.0/-1", "prefix"),
            (" 10.0.0.1", "not an IP address"),
            ("10.0.0.1/8", "the block is 10.0.0.0/8"),
            ("fd00::1/8", "the block is fd00::/8"),
        ] {
            let err = bad.parse::<TrustedRange>().unwrap_err();
            assert_eq!(err.input, bad);
            assert!(err.why.contains(why), "{bad:?}: {err}");
            // Every message shows a block as it should be written.
            let text = err.to_string();
            assert!(
                text.contains("10.0.0.0/8") || text.contains("fd00::/8"),
                "{text}"
            );
        }
        let err = TrustedProxies::parse(["10.0.0.0/8", "nope"]).unwrap_err();
        assert_eq!(err.input, "nope");
    }
}
