//! `connect`: how fast the server takes new connections.
//!
//! Keeps `concurrency` connection cycles in flight: TCP connect, upgrade,
//! check the 101, send Close 1000, wait for the server's close and its end
//! of TCP. The server closes TCP first (section 7.1.1), so its side, not
//! ours, waits in TIME_WAIT and our local ports never run out.
//!
//! With `--tcp` a cycle is TCP connect, wait for the server to hang up,
//! close: the same client code against a plain TCP server that closes on
//! accept (the baseline's hang-up port), teardown order as with WebSocket.
//! `--half-close` shuts down writing first instead, for servers that close
//! only at end of stream (an echo server); then our side holds TIME_WAIT,
//! and past ~28000 cycles a minute port allocation costs us CPU.

use std::io;
use std::time::{Duration, Instant};

use crate::conn::{ConnError, Event, Status};
use crate::report::{CpuMeter, Errors, Latency, Progress, Report};
use crate::scenario::{fmt_p99, Fleet, Settings};

/// After the deadline, cycles in flight get this long to finish.
const GRACE: Duration = Duration::from_secs(1);

/// Options of the `connect` scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cycles in flight at once.
    pub concurrency: usize,
    /// How long to keep starting new cycles.
    pub duration: Duration,
    /// Plain TCP: shut down writing at once instead of waiting for the
    /// server to close first.
    pub half_close: bool,
}

/// Runs the scenario; the flag says whether it passed (some handshakes,
/// no errors).
pub fn run(settings: &Settings, opts: &Options) -> io::Result<(Report, bool)> {
    // Per connection: has its handshake completed?
    let mut fleet: Fleet<bool> = Fleet::new(settings)?;
    let mut progress = Progress::new(settings.progress);
    let mut errors = Errors::default();
    let mut latency = Latency::new();
    let (mut handshakes, mut cycles, mut interval_handshakes) = (0u64, 0u64, 0u64);
    let cpu = CpuMeter::start();
    let start = Instant::now();
    let deadline = start + opts.duration;
    let plain_tcp = settings.plain_tcp;
    let mut ready = Vec::new();
    loop {
        let now = Instant::now();
        if now >= deadline + GRACE || (now >= deadline && fleet.conns.is_empty()) {
            break;
        }
        while now < deadline && fleet.conns.len() < opts.concurrency {
            if let Err(e) = fleet.open(false) {
                // Out of ports or fds: try again after the next poll rather
                // than spinning here.
                errors.add(&e);
                break;
            }
        }
        let wake = if now < deadline {
            progress.deadline().min(deadline)
        } else {
            deadline + GRACE
        };
        fleet.wait(wake, &mut ready)?;
        let now = Instant::now();
        for &(key, readiness) in &ready {
            let Some(peer) = fleet.conns.get_mut(key) else {
                continue;
            };
            let was_done = peer.state;
            let mut opened = false;
            let result = peer.conn.on_ready(readiness, &mut fleet.rng, |event, out| {
                if let Event::Opened = event {
                    opened = true;
                    if !plain_tcp || opts.half_close {
                        out.close(1000);
                    }
                }
            });
            if opened && !was_done {
                peer.state = true;
                latency.record(now.duration_since(peer.started));
                if now <= deadline {
                    handshakes += 1;
                    interval_handshakes += 1;
                }
            }
            match result {
                Ok(Status::Alive) => continue,
                Ok(Status::Finished { .. }) if peer.state => cycles += 1,
                Ok(Status::Finished { code }) => errors.add(&ConnError::Closed(code)),
                Err(e) => errors.add(&e),
            }
            fleet.remove(key);
        }
        if let Some(secs) = progress.tick(now) {
            for key in fleet.timed_out(now) {
                let what = if fleet.conns[key].state {
                    "close"
                } else {
                    "handshake"
                };
                errors.add(&ConnError::Timeout(what));
                fleet.remove(key);
            }
            progress.print(
                now,
                format_args!(
                    "{:.0} handshakes/s, {} in flight, p99 {}, {} errors{}",
                    interval_handshakes as f64 / secs,
                    fleet.conns.len(),
                    fmt_p99(latency.take_interval_p99()),
                    errors.total(),
                    errors.top().map(|e| format!(" ({e})")).unwrap_or_default(),
                ),
            );
            interval_handshakes = 0;
        }
    }
    progress.finish();
    let client_cpu = cpu.percent();
    let unfinished = fleet.conns.len() as u64;
    let secs = opts.duration.as_secs_f64();
    let mut report = settings.report("connect");
    report.int("concurrency", "", opts.concurrency as u64);
    if plain_tcp {
        report.text(
            "closes first",
            if opts.half_close { "client" } else { "server" },
        );
    }
    report.float("duration", "s", secs);
    report.int("handshakes", "", handshakes);
    report.float("handshakes", "/s", handshakes as f64 / secs);
    latency.report(&mut report, "handshake");
    report.int("cycles closed cleanly", "", cycles);
    report.float("client cpu", "%", client_cpu);
    report.int("unfinished at end", "", unfinished);
    errors.report(&mut report);
    let passed = handshakes > 0 && errors.total() == 0;
    Ok((report, passed))
}
