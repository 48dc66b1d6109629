//! `hold`: how many idle connections the server keeps, and whether it
//! keeps them.
//!
//! Opens `conns` connections, then holds them silent for `seconds`,
//! answering the server's pings. Anything the server closes meanwhile
//! (idle timeout, missed pong, limits) is counted by cause.

use std::io;
use std::time::{Duration, Instant};

use crate::conn::Event;
use crate::report::{Errors, Progress, Report};
use crate::scenario::{close_all, ended, establish, Fleet, Settings};

/// Options of the `hold` scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections to open.
    pub conns: usize,
    /// How long to hold them once open.
    pub seconds: Duration,
}

/// Per-run counters.
#[derive(Debug, Default)]
struct Tally {
    pings: u64,
    messages: u64,
}

/// Runs the scenario; the flag says whether it passed (every connection
/// opened and was still open at the end).
pub fn run(settings: &Settings, opts: &Options) -> io::Result<(Report, bool)> {
    if settings.plain_tcp {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "hold needs a ws:// URL",
        ));
    }
    let mut fleet: Fleet<()> = Fleet::new(settings)?;
    let setup = establish(&mut fleet, opts.conns, |_, _| {})?;
    let mut tally = Tally::default();
    let mut errors = Errors::default();
    let mut progress = Progress::new(settings.progress);
    let end = Instant::now() + opts.seconds;
    let mut min_open = fleet.conns.len();
    let mut ready = Vec::new();
    while !fleet.conns.is_empty() && Instant::now() < end {
        fleet.wait(progress.deadline().min(end), &mut ready)?;
        for &(key, readiness) in &ready {
            let Some(peer) = fleet.conns.get_mut(key) else {
                continue;
            };
            let result = peer
                .conn
                .on_ready(readiness, &mut fleet.rng, |event, _| match event {
                    Event::Ping => tally.pings += 1,
                    Event::Message { .. } | Event::Bytes(_) => tally.messages += 1,
                    Event::Opened => {}
                });
            let Some(failure) = ended(result) else {
                continue;
            };
            errors.add(&failure);
            fleet.remove(key);
        }
        min_open = min_open.min(fleet.conns.len());
        let now = Instant::now();
        if progress.tick(now).is_some() {
            progress.print(
                now,
                format_args!(
                    "{} open, {} dropped, {} pings answered",
                    fleet.conns.len(),
                    errors.total(),
                    tally.pings
                ),
            );
        }
    }
    progress.finish();
    let open_at_end = fleet.conns.len();
    let teardown = close_all(&mut fleet, |_, _, _| {})?;

    let mut report = settings.report("hold");
    report.float("held for", "s", opts.seconds.as_secs_f64());
    report.int("open at end", "", open_at_end as u64);
    report.int("fewest open", "", min_open as u64);
    report.int("dropped while held", "", errors.total());
    report.int("pings answered", "", tally.pings);
    report.int("messages received", "", tally.messages);
    setup.report(&mut report, opts.conns);
    teardown.report(&mut report);
    let mut all_errors = setup.errors;
    all_errors.merge(errors);
    all_errors.report(&mut report);
    let passed = open_at_end == opts.conns;
    Ok((report, passed))
}
