//! Where to connect: the `--url` and the local source addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use rustls::pki_types::ServerName;

use crate::tls::server_name;

/// Local ports one source address can use towards one server address
/// (Linux's default `ip_local_port_range` 32768-60999 is ~28000; keep a
/// margin for ports other programs hold).
pub const PORTS_PER_SOURCE: usize = 25_000;

/// A parsed `ws://host:port/path`, `wss://host:port/path` (or
/// `tcp://host:port`) URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved server address (the first one the resolver gives).
    pub addr: SocketAddr,
    /// The Host header: the URL's authority exactly as written.
    pub host: String,
    /// Request target: path and query, `/` when the URL has none.
    pub path: String,
    /// The URL said `tcp://`: plain TCP, no WebSocket at all.
    pub plain_tcp: bool,
    /// The URL said `wss://`: the name the server's certificate must carry
    /// (the host without port or brackets).
    pub tls: Option<ServerName<'static>>,
}

impl Target {
    /// Parses and resolves `url`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (rest, default_port, plain_tcp, tls) = if let Some(rest) = url.strip_prefix("ws://") {
            (rest, 80, false, false)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (rest, 443, false, true)
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            (rest, 0, true, false)
        } else {
            return Err(format!(
                "{url}: expected ws://HOST:PORT/PATH, wss://HOST:PORT/PATH or tcp://HOST:PORT"
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| format!("{url}: bad host or port"))?;
        if port == 0 {
            return Err(format!("{url}: a port is required"));
        }
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address"))?;
        Ok(Target {
            addr,
            host: authority.to_string(),
            path,
            plain_tcp,
            tls: tls.then(|| server_name(host)).transpose()?,
        })
    }

    /// Source addresses for `conns` connections: none (let the kernel pick)
    /// when one address has ports enough, else 127.0.0.1, 127.0.0.2, ...
    /// Each is a distinct 4-tuple space, so ports stop being the limit.
    ///
    /// `requested` overrides the automatic count (`--sources`). More than
    /// one source only works towards an IPv4 loopback server, since
    /// 127.0.0.x cannot reach anything else.
    pub fn sources(&self, conns: usize, requested: Option<usize>) -> Result<Vec<IpAddr>, String> {
        let count = requested.unwrap_or_else(|| conns.div_ceil(PORTS_PER_SOURCE).max(1));
        if count <= 1 {
            return Ok(Vec::new());
        }
        if count > 250 {
            return Err(format!(
                "{count} source addresses is too many (at most 250)"
            ));
        }
        match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => Ok((1..=count as u8)
                .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
                .collect()),
            _ => Err(format!(
                "{count} source addresses needed, but 127.0.0.x sources only reach an IPv4 loopback server"
            )),
        }
    }
}

/// Splits `host:port`, `[v6]:port`, or a bare host with `default_port`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, port.parse().ok()?)),
            None if after.is_empty() => Some((host, default_port)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, port.parse().ok()?)),
        Some(_) => None,
        None => Some((authority, default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_url_with_path_and_query() {
        let t = Target::parse("ws://127.0.0.1:9001/echo?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:9001");
        assert_eq!(t.path, "/echo?x=1");
        assert!(!t.plain_tcp);
        assert!(t.tls.is_none());
    }

    #[test]
    fn wss_urls_name_the_server() {
        let t = Target::parse("wss://127.0.0.1:9443/echo").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:9443");
        assert_eq!(t.path, "/echo");
        assert_eq!(t.tls, Some(ServerName::try_from("127.0.0.1").unwrap()));
        let t = Target::parse("wss://localhost/").unwrap();
        assert_eq!(t.addr.port(), 443);
        assert_eq!(t.tls, Some(ServerName::try_from("localhost").unwrap()));
        let t = Target::parse("wss://[::1]:9443").unwrap();
        assert_eq!(t.tls, Some(ServerName::try_from("::1").unwrap()));
    }

    #[test]
    fn defaults() {
        let t = Target::parse("ws://127.0.0.1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
        let t = Target::parse("ws://127.0.0.1:81?room=a").unwrap();
        assert_eq!(t.path, "/?room=a");
        let t = Target::parse("ws://[::1]:9000/").unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        assert!(Target::parse("tcp://127.0.0.1:7").unwrap().plain_tcp);
    }

    #[test]
    fn refusals() {
        for bad in [
            "https://127.0.0.1/",
            "wss:///x",
            "http://127.0.0.1/",
            "ws:///x",
            "ws://127.0.0.1:x/",
            "tcp://127.0.0.1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_only_when_ports_run_out() {
        let t = Target::parse("ws://127.0.0.1:9000/").unwrap();
        assert!(t.sources(1000, None).unwrap().is_empty());
        let many = t.sources(60_000, None).unwrap();
        assert_eq!(many.len(), 3);
        assert_eq!(many[2], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        let v6 = Target::parse("ws://[::1]:9000/").unwrap();
        assert!(v6.sources(10, Some(2)).is_err());
    }
}
