//! `--redis redis://HOST:PORT[/DB]`: where the cluster's Redis is.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// The port Redis listens on when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// A parsed `redis://HOST[:PORT][/DB]` URL.
///
/// Credentials (`user:pass@`), TLS (`rediss://`) and query parameters are
/// not supported and are refused when the flags are read, not later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or IP literal (IPv6 without the brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database number, for the id counter (`SELECT`). Pub/sub channels are
    /// server-wide in Redis: the database does not separate them.
    pub db: u32,
}

impl RedisUrl {
    /// Resolves the host. Called once, when the server starts: the event
    /// loop never waits for a name lookup.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no address", self.host),
            ));
        }
        Ok(addrs)
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<RedisUrl, String> {
        let rest = text
            .strip_prefix("redis://")
            .ok_or_else(|| format!("{text:?}: expected redis://HOST:PORT[/DB]"))?;
        if rest.contains('?') || rest.contains('#') {
            return Err(format!("{text:?}: URL parameters are not supported"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(format!(
                "{text:?}: credentials in the URL are not supported"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed '['"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("{text:?}: junk after ']'")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{text:?}: no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{text:?}: bad port {p:?}"))?,
        };
        let db = match path {
            "" => 0,
            _ => path
                .parse::<u32>()
                .map_err(|_| format!("{text:?}: bad database number {path:?}"))?,
        };
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            db,
        })
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "redis://[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "redis://{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, db: u32) -> RedisUrl {
        RedisUrl {
            host: host.to_string(),
            port,
            db,
        }
    }

    #[test]
    fn parses_the_forms_the_readme_lists() {
        assert_eq!(
            "redis://127.0.0.1:7000".parse(),
            Ok(url("127.0.0.1", 7000, 0))
        );
        assert_eq!("redis://cache".parse(), Ok(url("cache", DEFAULT_PORT, 0)));
        assert_eq!("redis://cache:6380/3".parse(), Ok(url("cache", 6380, 3)));
        assert_eq!("redis://cache/2".parse(), Ok(url("cache", DEFAULT_PORT, 2)));
        assert_eq!("redis://[::1]:7000/1".parse(), Ok(url("::1", 7000, 1)));
        assert_eq!("redis://[::1]".parse(), Ok(url("::1", DEFAULT_PORT, 0)));
        assert_eq!("redis://cache:6379/".parse(), Ok(url("cache", 6379, 0)));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            "http://cache:6379",
            "rediss://cache:6379",
            "redis://:secret@cache:6379",
            "redis://user:secret@cache",
            "redis://cache:0",
            "redis://cache:99999",
            "redis://cache:port",
            "redis://:6379",
            "redis://cache/db",
            "redis://cache?timeout=1",
            "redis://[::1",
            "redis://[::1]x",
        ] {
            assert!(bad.parse::<RedisUrl>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn displays_what_it_parsed() {
        for text in [
            "redis://127.0.0.1:7000",
            "redis://cache:6379/3",
            "redis://[::1]:7000/1",
        ] {
            assert_eq!(text.parse::<RedisUrl>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn resolves_ip_literals_without_a_lookup() {
        let addrs = url("127.0.0.1", 7000, 0).resolve().unwrap();
        assert_eq!(addrs, ["127.0.0.1:7000".parse().unwrap()]);
    }
}
