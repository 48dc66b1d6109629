//! The client address a trusted proxy reports in `Forwarded` (RFC 7239)
//! or `X-Forwarded-For`.
//!
//! Each proxy appends the address it received from, so the list reads
//! client first, nearest proxy last. Only the right end can be believed:
//! everything left of the first untrusted hop was written by someone the
//! server does not trust. Hence the walk from the right, past trusted
//! proxies, to the first address that is not one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::TrustedProxies;
use crate::protocol::handshake::RequestHead;

/// The address the connection is on behalf of.
///
/// A peer that is not trusted is its own client: its headers are ignored,
/// whatever they say. For a trusted peer the hops of `Forwarded` are read
/// (or, when it has none, those of `X-Forwarded-For`; `Forwarded` is the
/// standard, so a request with both is taken at its word there), from the
/// right: trusted hops are skipped and the first untrusted one is the
/// client. When every hop is trusted the left-most is. A hop that hides
/// its address (`unknown`, an obfuscated `_name`, an element without
/// `for=`) or cannot be read ends the walk at the last address known,
/// which is the peer itself when that is the right-most hop.
pub fn client_address(peer: IpAddr, head: &RequestHead<'_>, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut hops: Vec<Option<IpAddr>> = head
        .header_values("forwarded")
        .flat_map(forwarded_hops)
        .collect();
    if hops.is_empty() {
        hops = head
            .header_values("x-forwarded-for")
            .flat_map(x_forwarded_for_hops)
            .collect();
    }
    walk(peer, hops.into_iter().rev(), trusted)
}

/// Walks hops from the right; `None` is a hop whose address is hidden or
/// unreadable, past which nothing can be believed.
fn walk(
    peer: IpAddr,
    from_right: impl Iterator<Item = Option<IpAddr>>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut last = peer;
    for hop in from_right {
        let Some(addr) = hop else {
            return last;
        };
        if !trusted.contains(addr) {
            return addr;
        }
        last = addr;
    }
    last
}

/// The hops of one `X-Forwarded-For` line: addresses separated by commas,
/// sometimes with a port (as some cloud balancers write them).
fn x_forwarded_for_hops(line: &[u8]) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    line.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        // Empty list elements are allowed and mean nothing (RFC 9110 5.6.1).
        .filter(|item| !item.is_empty())
        .map(|item| std::str::from_utf8(item).ok().and_then(parse_node))
}

/// The hops of one `Forwarded` line: one per comma-separated element.
fn forwarded_hops(line: &[u8]) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    Unquoted::new(line, b',')
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
        .map(element_hop)
}

/// The address of one `Forwarded` element, from its single `for=`
/// parameter. The other parameters (`by`, `proto`, `host`, extensions) are
/// not needed, but must be well formed for the element to be believed.
fn element_hop(element: &[u8]) -> Option<IpAddr> {
    let mut node = None;
    for pair in Unquoted::new(element, b';').map(<[u8]>::trim_ascii) {
        if pair.is_empty() {
            continue;
        }
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = (
            pair[..eq].trim_ascii(),
            unquote(pair[eq + 1..].trim_ascii())?,
        );
        if name.is_empty() {
            return None;
        }
        if name.eq_ignore_ascii_case(b"for") {
            // The parameter may appear once per element (RFC 7239 4).
            if node.is_some() {
                return None;
            }
            node = Some(value);
        }
    }
    std::str::from_utf8(node?).ok().and_then(parse_node)
}

/// A parameter value: a token, or the inside of a quoted string (escapes
/// left in: no address has one, so a `for` holding one is unreadable).
fn unquote(value: &[u8]) -> Option<&[u8]> {
    match value {
        [] => None,
        [b'"', inner @ .., b'"'] => is_quoted_text(inner).then_some(inner),
        token => (!token.iter().any(|&b| b == b'"' || b == b'\\')).then_some(token),
    }
}

/// Whether every `"` inside a quoted string is escaped, and no backslash
/// escapes its closing quote.
fn is_quoted_text(inner: &[u8]) -> bool {
    let mut escaped = false;
    for &b in inner {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return false,
            _ => {}
        }
    }
    !escaped
}

/// A node (RFC 7239 6): an IPv4 address, a bracketed IPv6 address, either
/// with an optional port; also a bare IPv6 address, as X-Forwarded-For has
/// them. `unknown` and obfuscated `_names` give no address.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
            return None;
        }
        return addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(addr) = node.parse::<IpAddr>() {
        return Some(addr);
    }
    let (addr, port) = node.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port number, or an obfuscated port (`_` and letters, digits, `.`,
/// `_`, `-`), which still leaves the address readable.
fn is_port(port: &str) -> bool {
    port.parse::<u16>().is_ok()
        || port.strip_prefix('_').is_some_and(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// Splits at `separator` where it is not inside a quoted string, so that a
/// quoted value holding a comma or semicolon stays one piece.
struct Unquoted<'a> {
    rest: Option<&'a [u8]>,
    separator: u8,
}

impl<'a> Unquoted<'a> {
    fn new(bytes: &'a [u8], separator: u8) -> Unquoted<'a> {
        Unquoted {
            rest: Some(bytes),
            separator,
        }
    }
}

impl<'a> Iterator for Unquoted<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, &b) in rest.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == self.separator && !quoted => {
                    self.rest = Some(&rest[i + 1..]);
                    return Some(&rest[..i]);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(rest)
    }
}

#[cfg(test)]
mod tests;
