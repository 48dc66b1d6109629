//! The `wschat` daemon: flags, logging, signals and what systemd hands the
//! process; the rest is the library.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use wschat::config::CompressionMode;
use wschat::server::proxy::TrustedRange;
use wschat::server::systemd::Systemd;
use wschat::{Config, Server};

/// `--compression` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Compression {
    /// Never negotiate permessage-deflate.
    Off,
    /// No context takeover: one deflater for the loop, a broadcast compressed once.
    Shared,
    /// Context takeover per connection, as the client asks (more memory).
    Dedicated,
}

/// A small, fast WebSocket chat and broadcast daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Flags {
    /// Address and port to listen on (port 0 picks a free one); not bound
    /// when systemd hands over a listener (socket activation).
    #[arg(long, default_value = "0.0.0.0:9502")]
    listen: SocketAddr,
    /// A subprotocol the server speaks (repeatable).
    #[arg(long = "protocol", default_values_t = ["chat".to_string()])]
    protocols: Vec<String>,
    /// Largest message or frame payload in bytes (at most 1 GiB); larger is closed with 1009.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    max_message_size: u64,
    /// Bound of each connection's outgoing queue, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_backpressure: usize,
    /// Most connections open at once; more get 503.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Seconds a client has to send a whole request (head and body).
    #[arg(long, default_value = "10", value_parser = seconds)]
    handshake_timeout: Duration,
    /// Seconds an idle kept-alive HTTP connection waits for its next request.
    #[arg(long, default_value = "5", value_parser = seconds)]
    keep_alive_timeout: Duration,
    /// Requests one HTTP connection serves; the last answer says Connection: close.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_requests_per_connection: u32,
    /// Seconds a client has to close TCP after the closing handshake.
    #[arg(long, default_value = "5", value_parser = seconds)]
    close_timeout: Duration,
    /// Seconds clients have to close on SIGINT/SIGTERM before exit.
    #[arg(long, default_value = "5", value_parser = seconds)]
    shutdown_timeout: Duration,
    /// Seconds of silence before the server pings a client.
    #[arg(long, default_value = "30", value_parser = seconds)]
    ping_interval: Duration,
    /// Seconds of silence (not even a Pong) before a client is closed.
    #[arg(long, default_value = "60", value_parser = seconds)]
    idle_timeout: Duration,
    /// An origin allowed to upgrade (repeatable); none allows all.
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// Messages per second one connection may send (token bucket); more is closed 1008.
    #[arg(long)]
    max_messages_per_second: Option<f64>,
    /// Connections one address may hold at once; more get 429.
    #[arg(long)]
    max_connections_per_ip: Option<usize>,
    /// New connections one address may open per second; more get 429.
    #[arg(long)]
    max_handshakes_per_ip_per_second: Option<f64>,
    /// Bytes all outgoing queues together may hold; past it the largest are closed 1008.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_outbound_memory: usize,
    /// Bytes all messages being received may hold together; past it, 1009.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_inbound_memory: usize,
    /// permessage-deflate (RFC 7692).
    #[arg(long, value_enum, default_value = "shared")]
    compression: Compression,
    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = 64)]
    compression_min_size: usize,
    /// Messages each room keeps for members that join late or come back (0: no history).
    #[arg(long, default_value_t = 100)]
    history_size: usize,
    /// Seconds a room keeps a message (more than zero).
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = seconds)]
    history_ttl: Duration,
    /// Bytes all rooms' history may hold together; the oldest messages go first.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    history_memory: usize,
    /// Messages a wschat.v1 client that gives no position is sent on joining.
    #[arg(long, default_value_t = 50)]
    history_on_join: usize,
    /// Cluster mode: relay room messages through this Redis (redis://HOST:PORT[/DB]).
    #[arg(long, value_name = "URL")]
    redis: Option<wschat::server::cluster::RedisUrl>,
    /// Set SO_REUSEPORT on the listener, so that several instances share one port.
    #[arg(long)]
    reuse_port: bool,
    /// Also listen for TLS (wss://, https://) on this address and port; needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR:PORT")]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for --tls-listen (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-listen: PKCS#8, RSA or SEC1 (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
    /// A proxy believed about the client's address, as an address or CIDR block (repeatable).
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<TrustedRange>,
    /// Expect a PROXY protocol v1 or v2 header first on every connection (needs --trusted-proxy).
    #[arg(long)]
    proxy_protocol: bool,
    /// Seconds a poller stays a room member after its last poll ended.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds)]
    poll_grace: Duration,
}

/// Seconds with decimals, e.g. `0.5`.
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{e}"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let flags = Flags::parse();
    let config = Config {
        listen: flags.listen,
        protocols: flags.protocols,
        max_message_size: flags.max_message_size as usize,
        max_backpressure: flags.max_backpressure,
        max_connections: flags.max_connections,
        handshake_timeout: flags.handshake_timeout,
        keep_alive_timeout: flags.keep_alive_timeout,
        max_requests_per_connection: flags.max_requests_per_connection,
        close_timeout: flags.close_timeout,
        shutdown_timeout: flags.shutdown_timeout,
        ping_interval: flags.ping_interval,
        idle_timeout: flags.idle_timeout,
        allowed_origins: flags.allowed_origins,
        max_messages_per_second: flags.max_messages_per_second,
        max_connections_per_ip: flags.max_connections_per_ip,
        max_handshakes_per_ip_per_second: flags.max_handshakes_per_ip_per_second,
        max_outbound_memory: flags.max_outbound_memory,
        max_inbound_memory: flags.max_inbound_memory,
        compression: match flags.compression {
            Compression::Off => CompressionMode::Off,
            Compression::Shared => CompressionMode::Shared,
            Compression::Dedicated => CompressionMode::Dedicated,
        },
        compression_min_size: flags.compression_min_size,
        history_size: flags.history_size,
        history_ttl: flags.history_ttl,
        history_memory: flags.history_memory,
        history_on_join: flags.history_on_join,
        redis: flags.redis,
        reuse_port: flags.reuse_port,
        tls_listen: flags.tls_listen,
        tls_cert: flags.tls_cert,
        tls_key: flags.tls_key,
        trusted_proxies: flags.trusted_proxies.into_iter().collect(),
        proxy_protocol: flags.proxy_protocol,
        poll_grace: flags.poll_grace,
        ..Config::default()
    };
    // Still one thread: taking the descriptors changes the environment.
    let result = Systemd::from_env()
        .and_then(|systemd| Server::bind_with(config, systemd))
        .and_then(|mut server| {
            server.handle_signals()?;
            server.run()
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
