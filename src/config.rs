//! Everything an operator can set, with the defaults the README lists.
//!
//! `main.rs` fills this from flags; tests build it directly with small
//! limits so that edge cases are cheap to reach.

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::protocol::extension::CompressionMode;

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
    /// Time a client has to finish its request head.
    pub handshake_timeout: Duration,
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
    /// Cluster mode: the Redis that relays room messages between
    /// instances (`--redis`); `None` runs alone and loads nothing of Redis.
    pub redis: Option<crate::server::cluster::RedisUrl>,
    /// Sets `SO_REUSEPORT` on the listener, so that several instances can
    /// share one port (`--reuse-port`).
    pub reuse_port: bool,
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
            redis: None,
            reuse_port: false,
        }
    }
}
