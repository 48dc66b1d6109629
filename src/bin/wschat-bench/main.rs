//! wschat-bench: a single-threaded load generator for any WebSocket server.
//!
//! One mio reactor drives every connection, so the tool needs one core and
//! its numbers are comparable run to run (pin it with `taskset`). Client
//! frames are masked with fresh keys, handshakes are checked, pings are
//! answered: it is a correct RFC 6455 client, not a replay of canned bytes.
//!
//! Each scenario prints a progress line a second on stderr and a summary
//! table on stdout (plus one JSON line with `--json`). The exit status is 0
//! when the run passed its own checks (no errors, no mismatched echoes, no
//! lost broadcasts), 1 when it did not, 2 on bad usage or a local failure.
//!
//! Every scenario also speaks `wss://`: certificates are checked against
//! the system's roots, or the CAs of `--ca FILE`, or not at all with
//! `--insecure`; `connect --resume` resumes TLS sessions.
//!
//! ```text
//! wschat-bench connect   --url ws://127.0.0.1:9502/echo --concurrency 50 --duration 5
//! wschat-bench connect   --url wss://127.0.0.1:9443/echo --insecure --resume
//! wschat-bench echo      --url ws://127.0.0.1:9502/echo --conns 100 --size 16 --pipeline 16
//! wschat-bench echo      --url tcp://127.0.0.1:7000 --tcp --conns 100 --size 16
//! wschat-bench broadcast --url ws://127.0.0.1:9502/ --conns 1000 --senders 10 --rate 100
//! wschat-bench broadcast --url ws://127.0.0.1:9502/ --protocol wschat.v1 --recover --drop-every 1
//! wschat-bench broadcast --url ws://127.0.0.1:9502/room/a --transport poll --poll-interval 250
//! wschat-bench hold      --url ws://127.0.0.1:9502/ --conns 15000 --seconds 30 --json
//! ```

#![forbid(unsafe_code)]

mod codec;
mod conn;
mod http;
mod report;
mod rng;
mod scenario;
mod target;
mod tls;
mod v1;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::scenario::broadcast::transport::{Transport, Via};
use crate::scenario::broadcast::{Drops, Protocol};
use crate::scenario::{broadcast, connect, echo, hold, Settings};
use crate::target::Target;
use crate::tls::{Cipher, TlsOptions};

/// Load generator for WebSocket servers (wschat or any other).
// The name and description are this binary's own: a bare `about` (and the
// default name) would be the package's, which describe the daemon.
#[derive(Debug, Parser)]
#[command(name = "wschat-bench", version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

/// Flags every scenario takes.
#[derive(Debug, Args)]
struct Common {
    /// Also print the summary as one JSON line (the last line of stdout).
    #[arg(long, global = true)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Source addresses 127.0.0.1..=127.0.0.N to spread connections over
    /// (default: as many as the connection count needs, ~25000 each).
    #[arg(long, global = true, value_name = "N")]
    sources: Option<usize>,
    /// Connects and handshakes in flight at once while opening connections
    /// (kept under the 128-entry listen backlog of std and mio servers: a
    /// full backlog drops SYNs, which come back a second later and read as
    /// one-second handshakes).
    #[arg(long, global = true, default_value_t = 100, value_name = "N")]
    ramp: usize,
    /// Seconds one connect plus handshake (or one close) may take.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECS")]
    timeout: f64,
    /// wss://: trust the CA certificates in this PEM file instead of the
    /// system's roots (for a test CA).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// wss://: check no certificate and no handshake signature at all
    /// (for self-signed test certificates; proves nothing about the server).
    #[arg(long, global = true, conflicts_with = "ca")]
    insecure: bool,
    /// wss://: offer this TLS 1.3 cipher suite alone (default: all, in
    /// browsers' order, AES-128-GCM first).
    #[arg(long, global = true, value_enum, value_name = "SUITE")]
    cipher: Option<Cipher>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Handshake rate: open, upgrade, close, with C cycles in flight.
    Connect(ConnectFlags),
    /// Echo throughput and round trip with P messages in flight per connection.
    Echo(EchoFlags),
    /// Fan-out: N members read, K of them send R messages/s each.
    Broadcast(BroadcastFlags),
    /// Open N connections and hold them idle, answering pings.
    Hold(HoldFlags),
}

/// The flags of `connect` (its description is the variant's).
#[derive(Debug, Args)]
struct ConnectFlags {
    /// ws:// or wss://HOST:PORT/PATH (or tcp://HOST:PORT with --tcp).
    #[arg(long)]
    url: String,
    /// Cycles in flight at once.
    #[arg(long, short, default_value_t = 50)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, short, default_value_t = 10.0)]
    duration: f64,
    /// Plain TCP connect, wait for the server to close, close (the
    /// baseline; the server must hang up on its own).
    #[arg(long)]
    tcp: bool,
    /// With --tcp: shut down writing right after connecting, for a
    /// server that closes only at end of stream (e.g. an echo server).
    #[arg(long)]
    half_close: bool,
    /// wss://: offer the TLS session tickets of earlier cycles, so that
    /// handshakes after the first ones are resumed (without it every
    /// handshake is full).
    #[arg(long)]
    resume: bool,
}

/// The flags of `echo` (its description is the variant's).
#[derive(Debug, Args)]
struct EchoFlags {
    /// ws:// or wss://HOST:PORT/PATH of an endpoint that echoes every message.
    #[arg(long)]
    url: String,
    /// Connections.
    #[arg(long, short = 'n', default_value_t = 100)]
    conns: usize,
    /// Payload bytes per message.
    #[arg(long, short, default_value_t = 16)]
    size: usize,
    /// Messages in flight per connection.
    #[arg(long, short, default_value_t = 16)]
    pipeline: usize,
    /// Seconds to measure, after all connections are open.
    #[arg(long, short, default_value_t = 10.0)]
    duration: f64,
    /// Binary messages instead of text.
    #[arg(long)]
    binary: bool,
    /// Plain TCP bytes, no WebSocket (against a TCP echo server).
    #[arg(long)]
    tcp: bool,
}

/// The flags of `broadcast` (its description is the variant's).
#[derive(Debug, Args)]
struct BroadcastFlags {
    /// ws:// or wss://HOST:PORT/PATH of a room that relays every message to
    /// all members.
    #[arg(long)]
    url: String,
    /// Connections in the room.
    #[arg(long, short = 'n', default_value_t = 100)]
    conns: usize,
    /// How many of them send.
    #[arg(long, short = 'k', default_value_t = 10)]
    senders: usize,
    /// Messages per second per sender.
    #[arg(long, short, default_value_t = 10.0)]
    rate: f64,
    /// Seconds to send.
    #[arg(long, short, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait for deliveries after the last send.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// What every member speaks: `classic` offers no subprotocol and reads
    /// the text frames the server relays; `wschat.v1` offers that
    /// subprotocol and reads its JSON objects, offsets checked.
    #[arg(long, value_enum, default_value_t = Protocol::Classic)]
    protocol: Protocol,
    /// A member the server closes with 1008 (slow consumer), or that
    /// --drop-every drops, reconnects at once with ?since=EPOCH:OFFSET and
    /// must get what it missed (needs --protocol wschat.v1).
    #[arg(long)]
    recover: bool,
    /// Every SECS seconds while sending, drop --drop-fraction of the
    /// receivers (senders excepted) as a network failure would, so that
    /// recovery is exercised without slow consumers (needs --recover).
    #[arg(long, value_name = "SECS")]
    drop_every: Option<f64>,
    /// The share of the open receivers each --drop-every round drops (at
    /// least one).
    #[arg(
        long,
        default_value_t = 0.1,
        value_name = "FRACTION",
        requires = "drop_every"
    )]
    drop_fraction: f64,
    /// Seconds a dropped member stays away before it reconnects, missing
    /// what is sent meanwhile (with --recover).
    #[arg(long, default_value_t = 0.0, value_name = "SECS", requires = "recover")]
    reconnect_delay: f64,
    /// The server's process id: its CPU time while sending and draining is
    /// reported, and per delivery (read from /proc/PID/schedstat; the
    /// server must run on this machine).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Compare transports: --conns receivers on this one (`websocket`
    /// speaks wschat.v1; `sse`, `long-poll` and `poll` use the room's HTTP
    /// endpoints), and --senders WebSocket connections of their own that
    /// only send, the same whatever the transport. Reports requests and
    /// bytes on the wire per delivery too (needs a ws:// URL of a room).
    #[arg(long, value_enum, conflicts_with_all = ["protocol", "recover"])]
    transport: Option<Transport>,
    /// With --transport poll: milliseconds from one poll of a receiver to
    /// its next (`timeout=0`) [default: 1000].
    #[arg(long, value_name = "MS")]
    poll_interval: Option<f64>,
    /// With --transport long-poll: the `timeout` every poll asks for
    /// [default: 30].
    #[arg(long, value_name = "SECS")]
    long_poll_timeout: Option<f64>,
}

/// The flags of `hold` (its description is the variant's).
#[derive(Debug, Args)]
struct HoldFlags {
    /// ws:// or wss://HOST:PORT/PATH.
    #[arg(long)]
    url: String,
    /// Connections.
    #[arg(long, short = 'n', default_value_t = 1000)]
    conns: usize,
    /// Seconds to hold them.
    #[arg(long, short, default_value_t = 10.0)]
    seconds: f64,
}

/// Seconds from the command line as a `Duration`.
fn secs(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("--{flag}: {value} is not a duration"))
}

/// Resolves the target and the flags shared by all scenarios; `resume`
/// is `connect --resume`.
fn settings(
    common: &Common,
    url: &str,
    tcp: bool,
    conns: usize,
    resume: bool,
) -> Result<Settings, String> {
    let target = Target::parse(url)?;
    let plain_tcp = tcp || target.plain_tcp;
    let tls = tls_config(common, &target, plain_tcp, resume)?;
    let sources = target.sources(conns, common.sources)?;
    if common.ramp == 0 {
        return Err("--ramp must be at least 1".into());
    }
    if let Some(limit) = open_files_limit() {
        if conns + 16 > limit {
            eprintln!(
                "warning: {conns} connections but the open-files limit is {limit}; some will fail"
            );
        }
    }
    Ok(Settings {
        target,
        plain_tcp,
        tls,
        sources,
        ramp: common.ramp,
        timeout: secs("timeout", common.timeout)?,
        progress: !common.quiet,
        protocol: None,
    })
}

/// The TLS configuration for a `wss://` target; the TLS flags are refused
/// anywhere else, since they would change nothing.
fn tls_config(
    common: &Common,
    target: &Target,
    plain_tcp: bool,
    resume: bool,
) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if target.tls.is_none() {
        let flag = [
            (common.ca.is_some(), "--ca"),
            (common.insecure, "--insecure"),
            (common.cipher.is_some(), "--cipher"),
            (resume, "--resume"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag));
        return match flag {
            Some(flag) => Err(format!("{flag} needs a wss:// URL")),
            None => Ok(None),
        };
    }
    if plain_tcp {
        return Err("--tcp cannot be used with a wss:// URL".into());
    }
    let options = TlsOptions {
        ca: common.ca.clone(),
        insecure: common.insecure,
        resume,
        cipher: common.cipher,
    };
    options.client_config().map(Some)
}

/// The soft `RLIMIT_NOFILE`, read from /proc (no libc call needed).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl ConnectFlags {
    /// The scenario's options; `settings` tells whether this is plain TCP.
    fn options(&self, settings: &Settings) -> Result<connect::Options, String> {
        if self.half_close && !settings.plain_tcp {
            return Err("--half-close needs --tcp (or a tcp:// URL)".into());
        }
        Ok(connect::Options {
            concurrency: self.concurrency.max(1),
            duration: secs("duration", self.duration)?,
            half_close: self.half_close,
        })
    }
}

impl EchoFlags {
    /// The scenario's options.
    fn options(&self) -> Result<echo::Options, String> {
        Ok(echo::Options {
            conns: self.conns,
            size: self.size,
            pipeline: self.pipeline.max(1),
            duration: secs("duration", self.duration)?,
            binary: self.binary,
        })
    }
}

impl BroadcastFlags {
    /// The scenario's options.
    fn options(&self) -> Result<broadcast::Options, String> {
        Ok(broadcast::Options {
            conns: self.conns,
            senders: self.senders,
            rate: self.rate,
            duration: secs("duration", self.duration)?,
            drain: secs("drain", self.drain)?,
            protocol: self.protocol,
            recover: self.recover,
            drops: match self.drop_every {
                Some(every) => Some(Drops {
                    every: secs("drop-every", every)?,
                    fraction: self.drop_fraction,
                }),
                None => None,
            },
            reconnect_delay: secs("reconnect-delay", self.reconnect_delay)?,
            server_pid: self.server_pid,
            via: self.via()?,
        })
    }

    /// The receiving side of `--transport`; a poll flag of another
    /// transport is refused rather than silently ignored.
    fn via(&self) -> Result<Option<Via>, String> {
        let Some(transport) = self.transport else {
            if self.poll_interval.is_some() || self.long_poll_timeout.is_some() {
                return Err("--poll-interval and --long-poll-timeout need --transport".into());
            }
            return Ok(None);
        };
        if self.poll_interval.is_some() && transport != Transport::Poll {
            return Err("--poll-interval needs --transport poll".into());
        }
        if self.long_poll_timeout.is_some() && transport != Transport::LongPoll {
            return Err("--long-poll-timeout needs --transport long-poll".into());
        }
        let interval_ms = self.poll_interval.unwrap_or(1000.0);
        Ok(Some(Via {
            transport,
            poll_interval: secs("poll-interval", interval_ms / 1000.0)?,
            long_poll_timeout: secs("long-poll-timeout", self.long_poll_timeout.unwrap_or(30.0))?,
        }))
    }
}

impl HoldFlags {
    /// The scenario's options.
    fn options(&self) -> Result<hold::Options, String> {
        Ok(hold::Options {
            conns: self.conns,
            seconds: secs("seconds", self.seconds)?,
        })
    }
}

/// Parses the flags and runs one scenario.
fn run(cli: Cli) -> Result<bool, String> {
    let common = &cli.common;
    // Settings come first: their checks (and the open-files warning) are
    // reported before those of the scenario's own flags.
    let outcome = match &cli.scenario {
        Scenario::Connect(f) => {
            let settings = settings(common, &f.url, f.tcp, f.concurrency, f.resume)?;
            connect::run(&settings, &f.options(&settings)?)
        }
        Scenario::Echo(f) => {
            let settings = settings(common, &f.url, f.tcp, f.conns, false)?;
            echo::run(&settings, &f.options()?)
        }
        Scenario::Broadcast(f) => {
            let conns = f.conns + if f.transport.is_some() { f.senders } else { 0 };
            let settings = settings(common, &f.url, false, conns, false)?;
            broadcast::run(&settings, &f.options()?)
        }
        Scenario::Hold(f) => {
            let settings = settings(common, &f.url, false, f.conns, false)?;
            hold::run(&settings, &f.options()?)
        }
    };
    let (report, passed) = outcome.map_err(|e| e.to_string())?;
    report.print(common.json);
    Ok(passed)
}

/// Exit status: 0 passed, 1 failed its checks, 2 could not run.
fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wschat-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod cli_tests;
