//! `broadcast --transport`: the same room, the same senders, the same
//! rate, and receivers on one transport of wschat's four: `wschat.v1`
//! WebSocket, SSE, long polling or polling.
//!
//! The senders are WebSocket connections of their own (classic protocol,
//! not counted as receivers) whatever the transport, so that only the
//! receiving side differs. Every receiver's objects go through the same
//! offset checks as `--protocol wschat.v1` (`lost` and `duplicates` by
//! offset, per receiver), and every byte a receiver's socket reads or
//! writes is counted, heads included.
//!
//! A run has four phases: the senders connect; the receivers join (at
//! most `--ramp` connecting at once); a settling pause without sending,
//! so that the presence of the last joins reaches everyone (pollers poll
//! once more) outside the measured stretch; then the measured stretch,
//! from the first send to the end of the drain, over which requests,
//! bytes and the server's CPU are counted. Long pollers poll again as
//! soon as an answer comes, with `since=` its `next` and `timeout`;
//! pollers poll every `--poll-interval` with `timeout=0`, spread evenly
//! over the interval; both on one keep-alive connection each, sending
//! `Wschat-Session` after the first poll.

mod hall;
mod receiver;
mod senders;
mod summary;

use std::io;
use std::time::{Duration, Instant};

use super::Options;
use crate::report::{CpuMeter, Progress, Report};
use crate::scenario::{invalid_input, Settings};
use hall::Hall;

/// How long after the last join the presence of the joins is left to
/// settle before sending starts, for transports that are pushed to.
const SETTLE: Duration = Duration::from_millis(500);

/// How the receivers take the room's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// WebSocket, `wschat.v1` (JSON objects with offsets).
    Websocket,
    /// `GET /room/{name}/events`: one server-sent event stream each.
    Sse,
    /// `GET /room/{name}/poll?since=…&timeout=…`, again as soon as
    /// answered.
    #[value(name = "long-poll")]
    LongPoll,
    /// `GET /room/{name}/poll?since=…&timeout=0` every `--poll-interval`.
    Poll,
}

impl Transport {
    /// The name in the report (as on the command line).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Sse => "sse",
            Transport::LongPoll => "long-poll",
            Transport::Poll => "poll",
        }
    }
}

/// The receiving side of a transport comparison.
#[derive(Debug, Clone, Copy)]
pub struct Via {
    /// The receivers' transport.
    pub transport: Transport,
    /// Polling: time between the starts of two polls of one receiver.
    pub poll_interval: Duration,
    /// Long polling: the `timeout` each poll asks for.
    pub long_poll_timeout: Duration,
}

/// The room of a WebSocket path: `/` is `lobby`, `/room/NAME` is NAME.
pub fn room_of(path: &str) -> Result<String, String> {
    if path == "/" {
        return Ok("lobby".to_string());
    }
    match path.strip_prefix("/room/") {
        Some(name)
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(name.to_string())
        }
        _ => Err(format!(
            "--transport needs the URL of a room (/ or /room/NAME), not {path}"
        )),
    }
}

/// Runs the comparison; the flag says whether it passed: deliveries
/// arrived, nothing lost (announced or not), duplicated or out of order,
/// no connection failed.
pub fn run(settings: &Settings, opts: &Options, via: Via) -> io::Result<(Report, bool)> {
    if settings.tls.is_some() || settings.plain_tcp {
        return Err(invalid_input("--transport needs a ws:// URL"));
    }
    if !opts.rate.is_finite() || opts.rate <= 0.0 {
        return Err(invalid_input("--rate must be positive"));
    }
    if opts.senders == 0 {
        return Err(invalid_input("--transport needs at least one sender"));
    }
    if via.transport == Transport::Poll && via.poll_interval.is_zero() {
        return Err(invalid_input("--poll-interval must be positive"));
    }
    let room = room_of(&settings.target.path).map_err(|e| invalid_input(&e))?;
    let mut hall = Hall::new(settings, opts, via, room)?;
    hall.open_senders()?;
    let setup = hall.open_receivers()?;
    let settle = match via.transport {
        Transport::Poll => via.poll_interval + SETTLE,
        _ => SETTLE,
    };
    hall.idle_until(Instant::now() + settle)?;

    let mut progress = Progress::new(settings.progress);
    let before = hall.counts();
    let client = CpuMeter::start();
    let server = opts.server_pid.map(CpuMeter::of_process);
    hall.measure(opts.duration, opts.drain, &mut progress)?;
    let after = hall.counts();
    let client_cpu = client.percent();
    let server = server.as_ref().map(CpuMeter::usage);
    progress.finish();
    let receivers_at_end = hall.count_unseen();
    let closed_cleanly = hall.close_all()?;

    let mut report = settings.report("broadcast");
    let measured = summary::Measured {
        counts: after.since(&before),
        client_cpu,
        server,
        receivers_at_end,
    };
    let passed = hall.report(&mut report, opts, &measured, setup, closed_cleanly);
    Ok((report, passed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_comes_from_the_websocket_path() {
        assert_eq!(room_of("/").unwrap(), "lobby");
        assert_eq!(room_of("/room/a-b_c.9").unwrap(), "a-b_c.9");
        for refused in [
            "/echo",
            "/room/",
            "/room/a/b",
            "/room/a?since=x",
            "/rooms/a",
        ] {
            assert!(room_of(refused).is_err(), "{refused}");
        }
    }
}
