//! The senders of a transport comparison: WebSocket connections of their
//! own (the classic protocol, no receivers among them), the same whatever
//! the receivers use, so that only the receiving side differs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use super::super::tally::Tally;
use crate::conn::{Conn, ConnError, Wire};
use crate::report::Errors;
use crate::rng::Rng;

/// The sending side: K connections and when each sends next.
#[derive(Debug)]
pub struct Senders {
    /// Each sender's connection, by rank (`None` once it failed).
    pub conns: Vec<Option<Conn>>,
    /// When each sender's turn comes, earliest first.
    schedule: BinaryHeap<Reverse<(Instant, usize)>>,
    /// When each sender's next message is due.
    due: Vec<Instant>,
    /// Time between two messages of one sender.
    interval: Duration,
    /// One message's text, reused.
    text: Vec<u8>,
    /// Messages sent since the last progress line.
    pub interval_sent: u64,
    /// What the connections of senders that failed had moved.
    gone: Wire,
}

/// When the room's messages are sent: timestamps count from `epoch`,
/// sending stops at `send_end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When sending started.
    pub epoch: Instant,
    /// When it stops.
    pub send_end: Instant,
}

impl Senders {
    /// `conns` opened, sending `rate` messages a second each once
    /// [`start`](Senders::start) is called.
    pub fn new(conns: Vec<Option<Conn>>, rate: f64) -> Senders {
        Senders {
            conns,
            schedule: BinaryHeap::new(),
            due: Vec::new(),
            interval: Duration::from_secs_f64(1.0 / rate),
            text: Vec::with_capacity(64),
            interval_sent: 0,
            gone: Wire::default(),
        }
    }

    /// Starts the schedule at `window.epoch`, senders staggered over one
    /// interval so the room sees an even stream.
    pub fn start(&mut self, window: Window) {
        let k = self.conns.len();
        self.due = (0..k)
            .map(|s| window.epoch + self.interval.mul_f64(s as f64 / k as f64))
            .collect();
        self.schedule = (0..k)
            .filter(|s| self.conns[*s].is_some())
            .map(|s| Reverse((self.due[s], s)))
            .collect();
    }

    /// When the next sender's turn comes, if any is left.
    pub fn next_turn(&self) -> Option<Instant> {
        self.schedule.peek().map(|Reverse((at, _))| *at)
    }

    /// Sends whatever is due at `now`, each sender's late messages in one
    /// write (open loop: a late sender catches up rather than sending less).
    pub fn send_due(
        &mut self,
        now: Instant,
        window: Window,
        tally: &mut Tally,
        run_tag: &str,
        rng: &mut Rng,
        errors: &mut Errors,
    ) {
        while let Some(&Reverse((turn, sender))) = self.schedule.peek() {
            if turn > now {
                break;
            }
            self.schedule.pop();
            let Some(conn) = self.conns[sender].as_mut() else {
                continue;
            };
            let mut next_due = self.due[sender];
            let stats = &mut tally.senders[sender];
            let text = &mut self.text;
            let sent = &mut self.interval_sent;
            let interval = self.interval;
            let result = conn.send(rng, |out| {
                while next_due <= now && next_due < window.send_end {
                    let nanos = now.duration_since(window.epoch).as_nanos() as u64;
                    text.clear();
                    let _ = write!(text, "{run_tag}:{sender}:{}:{nanos}", stats.sent);
                    out.message(false, &[text.as_slice()]);
                    stats.sent += 1;
                    stats.received.push(false);
                    *sent += 1;
                    next_due += interval;
                }
            });
            self.due[sender] = next_due;
            match result {
                Ok(()) if next_due < window.send_end => {
                    self.schedule.push(Reverse((next_due, sender)));
                }
                Ok(()) => {}
                Err(e) => self.fail(sender, &e, errors),
            }
        }
    }

    /// Drops sender `rank`'s connection, counting why.
    pub fn fail(&mut self, rank: usize, error: &ConnError, errors: &mut Errors) {
        errors.add(error);
        if let Some(conn) = self.conns[rank].take() {
            self.gone.add(conn.wire());
        }
    }

    /// What all sender connections moved at their sockets so far.
    pub fn wire(&self) -> Wire {
        let mut wire = self.gone;
        for conn in self.conns.iter().flatten() {
            wire.add(conn.wire());
        }
        wire
    }

    /// Whether sender `rank` is connected and upgraded.
    pub fn is_open(&self, rank: usize) -> bool {
        self.conns[rank].as_ref().is_some_and(Conn::is_open)
    }
}
