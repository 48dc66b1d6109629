//! Everything an operator can set, with the defaults the README lists.
//!
//! `main.rs` fills this from flags; tests build it directly with small
//! limits so that edge cases are cheap to reach. [`Config::validate`] is
//! the one place where settings are checked and clamped: the server runs
//! on what it returns.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::extension::Takeover;
use crate::server::history::HistoryLimits;
use crate::server::proxy::TrustedProxies;

/// How the server uses permessage-deflate (`--compression`): a memory
/// policy, which the protocol code honours through [`Takeover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionMode {
    /// Never negotiated.
    Off,
    /// No context takeover either way: one deflater and one inflater serve
    /// the whole loop, and a broadcast is compressed once for everyone.
    #[default]
    Shared,
    /// Context takeover as the client asks, with a deflater and an inflater
    /// per connection: the best ratio, at a memory cost per connection.
    Dedicated,
}

impl CompressionMode {
    /// What negotiation may agree to in this mode (`None`: nothing).
    pub fn takeover(self) -> Option<Takeover> {
        match self {
            CompressionMode::Off => None,
            CompressionMode::Shared => Some(Takeover::Never),
            CompressionMode::Dedicated => Some(Takeover::AsOffered),
        }
    }
}

/// The largest `max_message_size` the server accepts (1 GiB): a frame must
/// fit a write queue's chunk.
pub const MAX_MESSAGE_SIZE: usize = 1 << 30;

/// Server settings. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`--listen`, default `0.0.0.0:9502`).
    pub listen: SocketAddr,
    /// Subprotocols the server speaks, in no particular order (`--protocol`).
    pub protocols: Vec<String>,
    /// Largest message or frame payload accepted; larger is closed with 1009.
    /// At most [`MAX_MESSAGE_SIZE`].
    pub max_message_size: usize,
    /// Largest request head; a longer one is answered 431.
    pub max_head_bytes: usize,
    /// Bound of one connection's outgoing queue, in bytes.
    pub max_backpressure: usize,
    /// Most connections open at once; more get 503.
    pub max_connections: usize,
    /// Time a client has to send a whole request (head and body), from
    /// its first byte (or from the accept, for the first request).
    pub handshake_timeout: Duration,
    /// An idle kept-alive HTTP connection (no byte of a next request
    /// yet) is closed after this.
    pub keep_alive_timeout: Duration,
    /// Answers one HTTP connection carries; the last says
    /// `Connection: close`.
    pub max_requests_per_connection: u32,
    /// After the Close frames, time the peer has to close its side of TCP.
    pub close_timeout: Duration,
    /// On SIGINT/SIGTERM, time clients have to finish the closing handshake.
    pub shutdown_timeout: Duration,
    /// A connection silent this long is pinged.
    pub ping_interval: Duration,
    /// A connection silent this long (not even a Pong) is closed.
    pub idle_timeout: Duration,
    /// Origins allowed to upgrade; empty allows all (`--allowed-origin`).
    pub allowed_origins: Vec<String>,
    /// Messages per second one connection may send; more is closed 1008.
    pub max_messages_per_second: Option<f64>,
    /// Connections one address may hold at once; more get 429.
    pub max_connections_per_ip: Option<usize>,
    /// New connections one address may open per second; more get 429.
    pub max_handshakes_per_ip_per_second: Option<f64>,
    /// Bytes all outgoing queues together may hold; past it the largest
    /// queues are closed with 1008.
    pub max_outbound_memory: usize,
    /// Bytes all messages being received may hold together; the connection
    /// that takes them past it is closed with 1009.
    pub max_inbound_memory: usize,
    /// How permessage-deflate is offered (`--compression`).
    pub compression: CompressionMode,
    /// Messages shorter than this are sent uncompressed.
    pub compression_min_size: usize,
    /// Messages each room keeps (`--history-size`); 0 keeps none.
    pub history_size: usize,
    /// How long a room keeps a message (`--history-ttl`).
    pub history_ttl: Duration,
    /// Bytes all rooms' history may hold together (`--history-memory`).
    pub history_memory: usize,
    /// Messages a `wschat.v1` client without a position is sent on
    /// joining (`--history-on-join`).
    pub history_on_join: usize,
    /// Cluster mode: the Redis that relays room messages between
    /// instances (`--redis`); `None` runs alone and loads nothing of Redis.
    pub redis: Option<crate::server::cluster::RedisUrl>,
    /// Sets `SO_REUSEPORT` on the listener, so that several instances can
    /// share one port (`--reuse-port`).
    pub reuse_port: bool,
    /// A second listener that speaks TLS (`--tls-listen`), serving the
    /// same rooms as the plain one.
    pub tls_listen: Option<SocketAddr>,
    /// The PEM certificate chain for TLS (`--tls-cert`).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for TLS: PKCS#8, RSA or SEC1 (`--tls-key`).
    pub tls_key: Option<PathBuf>,
    /// Peers whose word on the client's address is believed: their
    /// `Forwarded` / `X-Forwarded-For` headers and PROXY protocol headers
    /// (`--trusted-proxy`, repeatable). Empty by default: no one's is.
    pub trusted_proxies: TrustedProxies,
    /// Every connection starts with a PROXY protocol v1 or v2 header
    /// (`--proxy-protocol`), which only a trusted proxy may send.
    pub proxy_protocol: bool,
    /// How long a poller stays a room member after its last poll ended
    /// (`--poll-grace`): a client that polls again within it keeps its id
    /// and its place, one that does not is said to have left.
    pub poll_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9502)),
            protocols: vec!["chat".to_string()],
            max_message_size: 16 * 1024 * 1024,
            max_head_bytes: 8 * 1024,
            max_backpressure: 1024 * 1024,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            max_requests_per_connection: 100,
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            allowed_origins: Vec::new(),
            max_messages_per_second: None,
            max_connections_per_ip: None,
            max_handshakes_per_ip_per_second: None,
            max_outbound_memory: 256 * 1024 * 1024,
            max_inbound_memory: 256 * 1024 * 1024,
            compression: CompressionMode::Shared,
            compression_min_size: 64,
            history_size: 100,
            history_ttl: Duration::from_secs(600),
            history_memory: 64 * 1024 * 1024,
            history_on_join: 50,
            redis: None,
            reuse_port: false,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: TrustedProxies::default(),
            proxy_protocol: false,
            poll_grace: Duration::from_secs(30),
        }
    }
}

/// A setting the server cannot run with.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// A size or count that must be at least one is zero.
    Zero(&'static str),
    /// A rate that must be a positive number is not.
    NotPositive(&'static str),
    /// A subprotocol name that is not an HTTP token.
    InvalidProtocol(String),
    /// TLS settings that do not go together (what is missing or extra).
    Tls(&'static str),
    /// `--proxy-protocol` without any `--trusted-proxy`: every peer would
    /// be refused, since only a trusted one may send the header.
    ProxyProtocolWithoutTrustedProxy,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero(name) => write!(f, "{name} must be at least 1"),
            ConfigError::NotPositive(name) => write!(f, "{name} must be a positive number"),
            ConfigError::InvalidProtocol(p) => write!(f, "subprotocol {p:?} is not a token"),
            ConfigError::Tls(what) => f.write_str(what),
            ConfigError::ProxyProtocolWithoutTrustedProxy => f.write_str(
                "--proxy-protocol needs at least one --trusted-proxy: \
                 only a trusted proxy may send the header",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks every setting once and returns the configuration the server
    /// runs on: `max_message_size` is lowered to [`MAX_MESSAGE_SIZE`] (a
    /// frame must fit a write queue's chunk).
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        for (name, value) in [
            ("max_message_size", self.max_message_size),
            ("max_head_bytes", self.max_head_bytes),
            ("max_connections", self.max_connections),
            (
                "max_requests_per_connection",
                self.max_requests_per_connection as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, rate) in [
            ("max_messages_per_second", self.max_messages_per_second),
            (
                "max_handshakes_per_ip_per_second",
                self.max_handshakes_per_ip_per_second,
            ),
        ] {
            if rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if let Some(bad) = self.protocols.iter().find(|p| !is_token(p)) {
            return Err(ConfigError::InvalidProtocol(bad.clone()));
        }
        match (&self.tls_listen, &self.tls_cert, &self.tls_key) {
            (Some(_), Some(_), Some(_)) | (None, None, None) => {}
            (Some(_), _, _) => {
                return Err(ConfigError::Tls(
                    "--tls-listen needs --tls-cert and --tls-key",
                ))
            }
            (None, _, _) => {
                return Err(ConfigError::Tls(
                    "--tls-cert and --tls-key need --tls-listen",
                ))
            }
        }
        if self.history_ttl.is_zero() {
            return Err(ConfigError::NotPositive("history_ttl"));
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err(ConfigError::ProxyProtocolWithoutTrustedProxy);
        }
        self.max_message_size = self.max_message_size.min(MAX_MESSAGE_SIZE);
        Ok(self)
    }
}

impl Config {
    /// The history bounds, as the rooms apply them.
    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            size: self.history_size,
            ttl: self.history_ttl,
            memory: self.history_memory,
            on_join: self.history_on_join,
        }
    }
}

/// Whether `s` is an HTTP token (RFC 9110 section 5.6.2), as a
/// subprotocol name must be (RFC 6455 section 4.1).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn message_size_is_clamped_and_nonsense_refused() {
        let big = Config {
            max_message_size: usize::MAX,
            ..Config::default()
        };
        assert_eq!(big.validate().unwrap().max_message_size, MAX_MESSAGE_SIZE);
        let zero = Config {
            max_head_bytes: 0,
            ..Config::default()
        };
        assert_eq!(
            zero.validate().unwrap_err(),
            ConfigError::Zero("max_head_bytes")
        );
        let no_requests = Config {
            max_requests_per_connection: 0,
            ..Config::default()
        };
        assert_eq!(
            no_requests.validate().unwrap_err(),
            ConfigError::Zero("max_requests_per_connection")
        );
        let rate = Config {
            max_messages_per_second: Some(0.0),
            ..Config::default()
        };
        assert!(rate.validate().is_err());
        let protocol = Config {
            protocols: vec!["a b".into()],
            ..Config::default()
        };
        assert!(protocol.validate().is_err());
        let half_tls = Config {
            tls_listen: Some("127.0.0.1:0".parse().unwrap()),
            tls_cert: Some("cert.pem".into()),
            ..Config::default()
        };
        assert!(matches!(half_tls.validate(), Err(ConfigError::Tls(_))));
        let no_ttl = Config {
            history_ttl: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(
            no_ttl.validate().unwrap_err(),
            ConfigError::NotPositive("history_ttl")
        );
        let no_history = Config {
            history_size: 0,
            ..Config::default()
        };
        assert!(no_history.validate().is_ok(), "0 turns history off");
    }

    #[test]
    fn proxy_protocol_needs_a_trusted_proxy() {
        let defaults = Config::default();
        assert!(defaults.trusted_proxies.is_empty() && !defaults.proxy_protocol);
        let alone = Config {
            proxy_protocol: true,
            ..Config::default()
        };
        let err = alone.validate().unwrap_err();
        assert_eq!(err, ConfigError::ProxyProtocolWithoutTrustedProxy);
        assert!(err.to_string().contains("--trusted-proxy"));
        let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let behind = Config {
            proxy_protocol: true,
            trusted_proxies: trusted.clone(),
            ..Config::default()
        };
        let valid = behind.validate().unwrap();
        assert!(valid.proxy_protocol);
        assert_eq!(valid.trusted_proxies, trusted);
        // Headers from trusted proxies need no PROXY protocol.
        let headers_only = Config {
            trusted_proxies: trusted,
            ..Config::default()
        };
        assert!(headers_only.validate().is_ok());
    }
}
