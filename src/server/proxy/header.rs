//! The PROXY protocol header (HAProxy's v1 text line and v2 binary block)
//! that a TCP balancer sends before the client's first byte, read as its
//! bytes arrive. The parsing itself is the `ppp` crate's; this decides
//! when enough bytes are there, how long a header may be, and what the
//! server takes from it.

use std::fmt;
use std::net::SocketAddr;

use ppp::PartialResult as _;
use ppp::{v1, v2};

use crate::server::policy::Refusal;

/// Longest v1 header, `\r\n` included: the specification's own bound (a
/// TCP6 line with the longest addresses and ports).
pub const MAX_V1_HEADER_BYTES: usize = 107;

/// Longest v2 header accepted: the 16 fixed bytes, then addresses and
/// TLVs. The format allows 64 KiB, but the header waits in the
/// connection's buffer before the request head does; real balancers send
/// addresses and a few short TLVs (a VPC endpoint id, TLS facts), so more
/// than 4 KiB is refused rather than buffered.
pub const MAX_V2_HEADER_BYTES: usize = V2_FIXED_BYTES + 4096;

/// How a v1 header starts.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The 12-byte signature of a v2 header, which no HTTP request starts with.
const V2_SIGNATURE: &[u8] = v2::PROTOCOL_PREFIX;

/// The fixed part of a v2 header: signature, version and command, family
/// and protocol, and the big-endian length of what follows.
const V2_FIXED_BYTES: usize = 16;

/// What the bytes received so far say about a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyHeader {
    /// Valid as far as they go: read again with more bytes.
    Partial,
    /// The header is `buf[..consumed]`; the client's own bytes follow it.
    Complete {
        /// The client's address and port; `None` when the proxy speaks
        /// for itself (v2 `LOCAL`, a health check) or does not know the
        /// client (v1 `UNKNOWN`, v2 without IP addresses): then the peer's
        /// own address stands.
        source: Option<SocketAddr>,
        /// Length of the header in bytes.
        consumed: usize,
    },
    /// No valid header can start these bytes, whatever follows.
    Invalid(InvalidProxyHeader),
}

/// Why the bytes are not a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidProxyHeader {
    /// They start with neither signature: no header was sent at all.
    Missing,
    /// Longer than [`MAX_V1_HEADER_BYTES`] or [`MAX_V2_HEADER_BYTES`].
    TooLong,
    /// A signature, then what the protocol does not allow (`ppp`'s words).
    Malformed(String),
}

impl InvalidProxyHeader {
    /// The answer the server gives such a connection.
    pub fn refusal(&self) -> Refusal {
        match self {
            InvalidProxyHeader::Missing => Refusal::ProxyHeaderMissing,
            InvalidProxyHeader::TooLong | InvalidProxyHeader::Malformed(_) => {
                Refusal::ProxyHeaderMalformed
            }
        }
    }
}

impl fmt::Display for InvalidProxyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidProxyHeader::Missing => f.write_str("no PROXY protocol header"),
            InvalidProxyHeader::TooLong => f.write_str("PROXY protocol header too long"),
            InvalidProxyHeader::Malformed(why) => {
                write!(f, "malformed PROXY protocol header: {why}")
            }
        }
    }
}

/// Reads a PROXY protocol header, v1 or v2, from the start of `buf` (every
/// byte received so far, the same buffer grown since the last call).
///
/// Any split of the same bytes gives [`ProxyHeader::Partial`] until the
/// one final answer: a v1 line is judged once its `\n` is in (or its
/// 107th byte is not one), a v2 block once its 16 fixed bytes are (for its
/// length) and then once all of it is.
pub fn read_proxy_header(buf: &[u8]) -> ProxyHeader {
    if buf.is_empty() {
        ProxyHeader::Partial
    } else if starts_like(buf, V1_PREFIX) {
        read_v1(buf)
    } else if starts_like(buf, V2_SIGNATURE) {
        read_v2(buf)
    } else {
        ProxyHeader::Invalid(InvalidProxyHeader::Missing)
    }
}

/// Whether `buf` is, as far as it goes, the start of a PROXY protocol
/// header: for telling a peer that must not send one that it did.
///
/// On fewer bytes than a signature (6 for v1, 12 for v2) a `true` may
/// still turn `false` with more (`P` could be `POST`); a `false` is final.
pub fn looks_like_proxy_header(buf: &[u8]) -> bool {
    !buf.is_empty() && (starts_like(buf, V1_PREFIX) || starts_like(buf, V2_SIGNATURE))
}

/// Whether `buf` and `signature` agree on the bytes both have.
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

/// A v1 line: `ppp` judges it once it is whole, since its verdicts on a
/// cut line are not all "incomplete" where they should be (it takes the
/// `TCP6` of an unfinished line for a bad protocol).
fn read_v1(buf: &[u8]) -> ProxyHeader {
    let window = &buf[..buf.len().min(MAX_V1_HEADER_BYTES)];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_V1_HEADER_BYTES {
            ProxyHeader::Invalid(InvalidProxyHeader::TooLong)
        } else {
            ProxyHeader::Partial
        };
    };
    match v1::Header::try_from(&buf[..=end]) {
        Ok(header) => ProxyHeader::Complete {
            source: match header.addresses {
                v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Unknown => None,
            },
            consumed: header.header.len(),
        },
        Err(e) => malformed(format!("v1: {e}")),
    }
}

/// A v2 block: its length is known from the fixed part, so an oversized
/// one is refused before its bytes are waited for.
fn read_v2(buf: &[u8]) -> ProxyHeader {
    if buf.len() < V2_FIXED_BYTES {
        return ProxyHeader::Partial;
    }
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if V2_FIXED_BYTES + length > MAX_V2_HEADER_BYTES {
        return ProxyHeader::Invalid(InvalidProxyHeader::TooLong);
    }
    let header = match v2::Header::try_from(buf) {
        Ok(header) => header,
        Err(e) if e.is_incomplete() => return ProxyHeader::Partial,
        Err(e) => return malformed(format!("v2: {e}")),
    };
    // `ppp` reads TLVs lazily; a block whose TLVs overrun it is as broken
    // as one with a bad family, so it is judged now.
    if let Some(Err(e)) = header.tlvs().find(Result::is_err) {
        return malformed(format!("v2: {e}"));
    }
    let source = match (header.command, header.addresses) {
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
            Some((a.source_address, a.source_port).into())
        }
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
            Some((a.source_address, a.source_port).into())
        }
        // LOCAL: the proxy's own connection; UNSPEC or UNIX: no IP address.
        _ => None,
    };
    ProxyHeader::Complete {
        source,
        consumed: header.len(),
    }
}

fn malformed(why: String) -> ProxyHeader {
    ProxyHeader::Invalid(InvalidProxyHeader::Malformed(why))
}

#[cfg(test)]
mod tests;
