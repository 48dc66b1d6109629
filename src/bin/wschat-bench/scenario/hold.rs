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
use crate::scenario::{close_all, ended, establish, invalid_input, report_fleet, Fleet, Settings};

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
    /// Connections lost while held, by cause.
    errors: Errors,
    /// The fewest connections open at any moment of the hold.
    min_open: usize,
}

/// Runs the scenario; the flag says whether it passed (every connection
/// opened and was still open at the end).
pub fn run(settings: &Settings, opts: &Options) -> io::Result<(Report, bool)> {
    if settings.plain_tcp {
        return Err(invalid_input("hold needs a ws:// URL"));
    }
    let mut fleet: Fleet<()> = Fleet::new(settings)?;
    let setup = establish(&mut fleet, opts.conns, |_, _| {})?;
    let tally = hold(&mut fleet, settings.progress, opts.seconds)?;
    let open_at_end = fleet.conns.len();
    let teardown = close_all(&mut fleet, |_, _, _| {})?;

    let mut report = settings.report("hold");
    report.float("held for", "s", opts.seconds.as_secs_f64());
    report.int("open at end", "", open_at_end as u64);
    report.int("fewest open", "", tally.min_open as u64);
    report.int("dropped while held", "", tally.errors.total());
    report.int("pings answered", "", tally.pings);
    report.int("messages received", "", tally.messages);
    report_fleet(&mut report, opts.conns, setup, &teardown, tally.errors);
    let passed = open_at_end == opts.conns;
    Ok((report, passed))
}

/// Keeps the open connections for `seconds`, answering pings and counting
/// what the server sends or drops.
fn hold(fleet: &mut Fleet<()>, show_progress: bool, seconds: Duration) -> io::Result<Tally> {
    let mut tally = Tally {
        min_open: fleet.conns.len(),
        ..Tally::default()
    };
    let mut progress = Progress::new(show_progress);
    let end = Instant::now() + seconds;
    while !fleet.conns.is_empty() && Instant::now() < end {
        fleet.wait(progress.deadline().min(end))?;
        fleet.for_each_ready(|peer, rng, readiness| {
            let result = peer.conn.on_ready(readiness, rng, |event, _| match event {
                Event::Ping => tally.pings += 1,
                Event::Message { .. } | Event::Bytes(_) => tally.messages += 1,
                Event::Opened => {}
            });
            ended(result, &mut tally.errors)
        });
        tally.min_open = tally.min_open.min(fleet.conns.len());
        let now = Instant::now();
        if progress.tick(now).is_some() {
            progress.print(
                now,
                format_args!(
                    "{} open, {} dropped, {} pings answered",
                    fleet.conns.len(),
                    tally.errors.total(),
                    tally.pings
                ),
            );
        }
    }
    progress.finish();
    Ok(tally)
}
