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
//!
//! Over `wss://` each cycle starts with a TLS handshake, counted as full or
//! resumed: all full unless `--resume` lets cycles offer the session
//! tickets of earlier ones.

use std::io;
use std::time::{Duration, Instant};

use crate::conn::{ConnError, Event, Readiness, Status, TlsHandshake};
use crate::report::{CpuMeter, Errors, Latency, Progress, Report};
use crate::rng::Rng;
use crate::scenario::{fmt_p99, Fleet, Peer, Settings};

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
    let cpu = CpuMeter::start();
    let start = Instant::now();
    let close_first = !settings.plain_tcp || opts.half_close;
    let mut cycles = Cycles::new(start + opts.duration, close_first);
    cycles.run(&mut fleet, &mut progress, opts.concurrency)?;
    progress.finish();
    let client_cpu = cpu.percent();
    let unfinished = fleet.conns.len() as u64;
    Ok(cycles.report(settings, opts, client_cpu, unfinished))
}

/// The cycles of one run and what they counted.
#[derive(Debug)]
struct Cycles {
    /// No new cycle starts after this; the ones in flight get [`GRACE`].
    deadline: Instant,
    /// Close as soon as a cycle opens (WebSocket, or `--half-close`)
    /// rather than wait for the server to hang up.
    close_first: bool,
    errors: Errors,
    latency: Latency,
    /// Handshakes completed before the deadline.
    handshakes: u64,
    /// Of those, over TLS: full and resumed TLS handshakes.
    tls_full: u64,
    tls_resumed: u64,
    /// What TLS negotiated for the first cycle.
    tls: Option<String>,
    /// Cycles that ended with a clean close after their handshake.
    closed: u64,
    interval_handshakes: u64,
}

impl Cycles {
    /// Nothing counted yet.
    fn new(deadline: Instant, close_first: bool) -> Cycles {
        Cycles {
            deadline,
            close_first,
            errors: Errors::default(),
            latency: Latency::new(),
            handshakes: 0,
            tls_full: 0,
            tls_resumed: 0,
            tls: None,
            closed: 0,
            interval_handshakes: 0,
        }
    }

    /// Keeps `concurrency` cycles in flight until the deadline, then lets
    /// the last ones finish.
    fn run(
        &mut self,
        fleet: &mut Fleet<bool>,
        progress: &mut Progress,
        concurrency: usize,
    ) -> io::Result<()> {
        let deadline = self.deadline;
        loop {
            let now = Instant::now();
            if now >= deadline + GRACE || (now >= deadline && fleet.conns.is_empty()) {
                return Ok(());
            }
            let wake = if now < deadline {
                self.start_more(fleet, concurrency);
                progress.deadline().min(deadline)
            } else {
                deadline + GRACE
            };
            fleet.wait(wake)?;
            let now = Instant::now();
            fleet.for_each_ready(|peer, rng, readiness| self.on_ready(peer, rng, readiness, now));
            if let Some(secs) = progress.tick(now) {
                self.drop_timed_out(fleet, now);
                self.print_progress(progress, fleet.conns.len(), now, secs);
            }
        }
    }

    /// Starts cycles until `concurrency` are in flight.
    fn start_more(&mut self, fleet: &mut Fleet<bool>, concurrency: usize) {
        while fleet.conns.len() < concurrency {
            if let Err(e) = fleet.open(false) {
                // Out of ports or fds: try again after the next poll rather
                // than spinning here.
                self.errors.add(&e);
                break;
            }
        }
    }

    /// Handles one readiness event of a cycle at `now`; returns whether
    /// the cycle is over.
    fn on_ready(
        &mut self,
        peer: &mut Peer<bool>,
        rng: &mut Rng,
        readiness: Readiness,
        now: Instant,
    ) -> bool {
        let was_done = peer.state;
        let mut opened = false;
        let close_first = self.close_first;
        let result = peer.conn.on_ready(readiness, rng, |event, out| {
            if let Event::Opened = event {
                opened = true;
                if close_first {
                    out.close(1000);
                }
            }
        });
        if opened && !was_done {
            peer.state = true;
            self.latency.record(now.duration_since(peer.started));
            if self.tls.is_none() {
                self.tls = peer.conn.tls_description();
            }
            if now <= self.deadline {
                self.handshakes += 1;
                self.interval_handshakes += 1;
                match peer.conn.tls_handshake() {
                    Some(TlsHandshake::Full) => self.tls_full += 1,
                    Some(TlsHandshake::Resumed) => self.tls_resumed += 1,
                    None => {}
                }
            }
        }
        match result {
            Ok(Status::Alive) => return false,
            Ok(Status::Finished { .. }) if peer.state => self.closed += 1,
            Ok(Status::Finished { code }) => self.errors.add(&ConnError::Closed(code)),
            Err(e) => self.errors.add(&e),
        }
        true
    }

    /// Gives up on cycles past the timeout, in whichever half they are.
    fn drop_timed_out(&mut self, fleet: &mut Fleet<bool>, now: Instant) {
        for key in fleet.timed_out(now) {
            let what = if fleet.conns[key].state {
                "close"
            } else {
                "handshake"
            };
            self.errors.add(&ConnError::Timeout(what));
            fleet.remove(key);
        }
    }

    /// The progress line; `secs` since the previous one.
    fn print_progress(&mut self, progress: &Progress, in_flight: usize, now: Instant, secs: f64) {
        progress.print(
            now,
            format_args!(
                "{:.0} handshakes/s, {} in flight, p99 {}, {} errors{}",
                self.interval_handshakes as f64 / secs,
                in_flight,
                fmt_p99(self.latency.take_interval_p99()),
                self.errors.total(),
                self.errors
                    .top()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
            ),
        );
        self.interval_handshakes = 0;
    }

    /// The summary, and whether the run passed.
    fn report(
        &self,
        settings: &Settings,
        opts: &Options,
        client_cpu: f64,
        unfinished: u64,
    ) -> (Report, bool) {
        let secs = opts.duration.as_secs_f64();
        let mut report = settings.report("connect");
        report.int("concurrency", "", opts.concurrency as u64);
        if settings.plain_tcp {
            report.text(
                "closes first",
                if opts.half_close { "client" } else { "server" },
            );
        }
        report.float("duration", "s", secs);
        report.int("handshakes", "", self.handshakes);
        report.float("handshakes", "/s", self.handshakes as f64 / secs);
        if settings.tls.is_some() {
            report.text("tls", self.tls.as_deref().unwrap_or("-"));
            report.int("tls full handshakes", "", self.tls_full);
            report.float("tls full handshakes", "/s", self.tls_full as f64 / secs);
            report.int("tls resumed handshakes", "", self.tls_resumed);
            report.float(
                "tls resumed handshakes",
                "/s",
                self.tls_resumed as f64 / secs,
            );
        }
        self.latency.report(&mut report, "handshake");
        report.int("cycles closed cleanly", "", self.closed);
        report.float("client cpu", "%", client_cpu);
        report.int("unfinished at end", "", unfinished);
        self.errors.report(&mut report);
        let passed = self.handshakes > 0 && self.errors.total() == 0;
        (report, passed)
    }
}
