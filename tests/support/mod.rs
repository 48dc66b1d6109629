//! Helpers shared by the integration tests.
//!
//! * `frames`: a frame encoder and decoder written here from RFC 6455, not
//!   the crate's codec, so the tests check the server against an
//!   independent reading of the RFC.
//! * `client`: [`RawClient`], the one WebSocket client the tests drive
//!   byte by byte.
//! * `http`: the handshake request and its checks, one [`Response`]
//!   parser, plain requests (one per connection, or one after another on
//!   a [`RawClient`], each read by its `Content-Length`), `/healthz` and
//!   [`Metrics`].
//! * `server`: [`start_server`], the server in-process on its own thread.
//! * `daemon`: [`Daemon`], the real binary as a child process.
//! * `redis`: [`Redis`], a `redis-server` for the cluster tests.
//! * `net` and `rng`: sockets with bounded waits, and seeded randomness.
//! * `bench`: the load tool, run for its JSON report.
//! * `web`: SSE streams, polls and posts through `ureq`, an HTTP client of
//!   its own.
//!
//! Every wait is bounded: a blocking socket call waits at most
//! [`IO_TIMEOUT`], and a helper that gives up panics with what it saw.
//!
//! Each test binary includes this module with `mod support;` and uses only
//! part of it, hence the `dead_code` allowance.

#![allow(dead_code)]

mod bench;
mod client;
mod daemon;
mod frames;
mod http;
mod net;
mod python;
mod redis;
mod rng;
mod server;
mod tls;
pub mod web;

use std::fmt;
use std::time::{Duration, Instant};

// Each test binary uses part of these; the rest would warn as unused.
#[allow(unused_imports)]
pub use {
    bench::bench,
    client::RawClient,
    daemon::{mib, Daemon},
    frames::{
        apply_mask, client_frame, close_payload, decode_all, decode_frame, encode_frame,
        encode_header, hex, op, rsv, server_frame, Decoder, Frame,
    },
    http::{
        accept_key, assert_healthy, check_101, handshake_request, health, http_exchange, http_get,
        open_connections, Metrics, Response,
    },
    net::{
        free_port, read_to_eof, reset, tcp_connect, tcp_connect_from, tcp_connect_small_rcvbuf,
        ReadError,
    },
    python::{python_or_skip, python_websockets_or_skip},
    redis::{redis_or_skip, redis_server_path, Redis},
    rng::{random_key, random_mask, Rng},
    server::{start_server, test_config, TestServer},
    tls::{peer_common_name, tls_connect, wss_connect, TestCa, TlsClient},
};

/// How long one blocking read, write or connect may wait without progress.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls `probe` every 20 ms until it returns `Some`, or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `check` on every case and panics once at the end listing every
/// failing case with its panic message, so that one bad case does not hide
/// the others. Each case should open its own connection.
pub fn check_all<T: fmt::Debug>(cases: &[T], check: impl Fn(&T)) {
    let mut failures = Vec::new();
    for case in cases {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(case)));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("case {case:02x?}: {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The `p`-th percentile (0-100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}
