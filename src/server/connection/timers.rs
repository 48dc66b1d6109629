//! The connection's one armed timer: what it is for, and what its firing
//! means, on time passed in (so tests run on virtual time).

use std::time::Duration;

use super::{Connection, Flags, State};
use crate::server::timer::{Time, Timer};

/// What [`Connection::handle_timeout`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The request (head or body) is late: answer 408 and drop the
    /// connection.
    Handshake,
    /// A kept-alive connection stayed idle between requests: close it.
    KeepAlive,
    /// The last bytes had their time: drop the connection.
    Close,
    /// A silent client was sent a Ping.
    Pinged,
    /// A client stayed silent for this long (an SSE client: took nothing
    /// of what waits for it): close it.
    Idle(Duration),
    /// A held poll is due: answer it with what there is.
    PollDue,
    /// Nothing is due yet (the peer spoke since): the timer was re-armed.
    Rearmed,
}

/// The timeouts a connection's timers are armed with.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--ping-interval`.
    pub ping: Duration,
    /// `--idle-timeout`.
    pub idle: Duration,
}

impl Connection {
    /// The armed timer, if any.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deadline
    }

    /// Arms `timer` to fire at `at`, replacing the armed one.
    pub fn arm(&mut self, timer: Timer, at: Time) {
        self.deadline = Some(at);
        self.timer = timer;
    }

    /// Handles the armed timer, due at `now`. A ping or idle timer whose
    /// time has not come (the peer spoke since) is re-armed.
    #[must_use]
    pub fn handle_timeout(&mut self, now: Time, timeouts: Timeouts) -> Expiry {
        if self.deadline.take().is_none() {
            return Expiry::Rearmed;
        }
        match self.timer {
            Timer::Handshake => Expiry::Handshake,
            Timer::KeepAlive => Expiry::KeepAlive,
            Timer::Close => Expiry::Close,
            Timer::Hold => Expiry::PollDue,
            Timer::Ping | Timer::Idle if matches!(self.state, State::Stream(_)) => {
                self.stream_tick(now, timeouts)
            }
            Timer::Ping | Timer::Idle => self.check_silence(now, timeouts),
        }
    }

    /// Pings a client silent for a ping interval, and gives up on one
    /// silent for the idle timeout; otherwise waits for the next interval.
    fn check_silence(&mut self, now: Time, timeouts: Timeouts) -> Expiry {
        let silent = now.since(self.last_rx);
        if silent >= timeouts.idle {
            return Expiry::Idle(silent);
        }
        if silent < timeouts.ping {
            self.arm(Timer::Ping, self.last_rx + timeouts.ping);
            return Expiry::Rearmed;
        }
        self.arm(Timer::Idle, self.last_rx + timeouts.idle);
        if self.flags.get(Flags::PINGED) {
            return Expiry::Rearmed;
        }
        let State::WebSocket(ws) = &self.state else {
            return Expiry::Rearmed;
        };
        match ws.session.ping() {
            Some(frame) => {
                self.flags.set(Flags::PINGED, true);
                self.queue.push_owned(frame);
                Expiry::Pinged
            }
            None => Expiry::Rearmed,
        }
    }
}
