//! What the hall does with readiness and time: receivers read, pollers
//! poll (again, or on schedule, on a new connection when the server
//! closed theirs), senders send, and the end of the run is seen.

use std::cmp::Reverse;
use std::io;
use std::time::Instant;

use mio::Token;

use super::{register, Counts, Hall, MAX_WAIT, READS_PER_SEND_CHECK, SENDER_TOKENS};
use crate::conn::{ConnError, Readiness, Status};
use crate::http::HttpConn;
use crate::scenario::broadcast::tally::Moment;
use crate::scenario::broadcast::transport::receiver::{poll_request, Link, Outcome, Reading};
use crate::scenario::broadcast::transport::Transport;
use crate::scenario::broadcast::unseen;

impl Hall {
    /// Waits for readiness until `wake` (or the next poll or send due,
    /// at most [`MAX_WAIT`]), handles it, then sends and polls what is due.
    pub(super) fn turn(&mut self, wake: Instant) -> io::Result<()> {
        let mut wake = wake;
        if let Some(Reverse((due, _))) = self.timers.peek() {
            wake = wake.min(*due);
        }
        if self.window.is_some() {
            if let Some(due) = self.senders.next_turn() {
                wake = wake.min(due);
            }
        }
        let timeout = wake.saturating_duration_since(Instant::now()).min(MAX_WAIT);
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        self.ready.clear();
        self.ready
            .extend(self.events.iter().map(|e| (e.token().0, Readiness::of(e))));
        let mut start = 0;
        while start < self.ready.len() {
            let end = (start + READS_PER_SEND_CHECK).min(self.ready.len());
            for i in start..end {
                let (token, readiness) = self.ready[i];
                match token.checked_sub(SENDER_TOKENS) {
                    Some(rank) => self.sender_ready(rank, readiness),
                    None => self.receiver_ready(token, readiness),
                }
            }
            self.send_due(Instant::now());
            start = end;
        }
        self.poll_due(Instant::now());
        Ok(())
    }

    /// Sends what is due, once the measured stretch has begun.
    pub(super) fn send_due(&mut self, now: Instant) {
        if let Some(window) = self.window {
            self.senders.send_due(
                now,
                window,
                &mut self.tally,
                &self.run_tag,
                &mut self.rng,
                &mut self.errors,
            );
        }
    }

    /// A sender's event: what it receives is the room's traffic and not
    /// counted; it only must not fail.
    fn sender_ready(&mut self, rank: usize, readiness: Readiness) {
        let Some(conn) = self.senders.conns.get_mut(rank).and_then(Option::as_mut) else {
            return;
        };
        let failure = match conn.on_ready(readiness, &mut self.rng, |_, _| {}) {
            Ok(Status::Alive) => return,
            Ok(Status::Finished { code }) => ConnError::Closed(code),
            Err(e) => e,
        };
        self.senders.fail(rank, &failure, &mut self.errors);
    }

    /// A receiver's event: its objects counted, its join noted, a poller's
    /// next poll, a failure.
    fn receiver_ready(&mut self, key: usize, readiness: Readiness) {
        let now = Instant::now();
        let at = match self.window {
            Some(w) => Moment {
                nanos: now.duration_since(w.epoch).as_nanos() as u64,
                in_window: now <= w.send_end,
            },
            None => Moment {
                nanos: 0,
                in_window: false,
            },
        };
        let Some(receiver) = self.receivers.get_mut(key) else {
            return;
        };
        let was_joined = receiver.joined;
        let mut reading = Reading {
            tally: &mut self.tally,
            run_tag: &self.run_tag,
            at,
            rng: &mut self.rng,
        };
        let outcome = receiver.on_ready(readiness, &mut reading);
        if receiver.joined && !was_joined {
            self.join_latency
                .record(now.duration_since(receiver.started));
        }
        let answered = std::mem::take(&mut receiver.poller.answered);
        match outcome {
            Outcome::Alive => {}
            Outcome::Ended if matches!(receiver.link, Link::Poll(_)) => {
                // A kept-alive connection the server let go between polls.
                if !self.reopen(key) {
                    return;
                }
            }
            Outcome::Ended => return self.fail(key, &ConnError::Closed(None)),
            Outcome::Failed(e) => return self.fail(key, &e),
        }
        if answered {
            self.on_answer(key, now);
        }
    }

    /// A poller's answer came: the server closes the connection after it
    /// if it said so (a new one is opened), and the next poll goes now
    /// (long polling) or at its time (polling).
    fn on_answer(&mut self, key: usize, now: Instant) {
        if self.receivers[key].poller.close_after && !self.reopen(key) {
            return;
        }
        if !self.polling {
            if self.via.transport == Transport::LongPoll {
                self.send_poll(key, now);
            }
            return;
        }
        match self.via.transport {
            Transport::LongPoll => self.send_poll(key, now),
            Transport::Poll => {
                let poller = &mut self.receivers[key].poller;
                let after = poller.last_sent.map_or(now, |t| t + self.via.poll_interval);
                let due = after.max(now);
                poller.next_due = Some(due);
                self.timers.push(Reverse((due, key)));
            }
            Transport::Websocket | Transport::Sse => {}
        }
    }

    /// Sends the polls whose time has come.
    fn poll_due(&mut self, now: Instant) {
        while let Some(&Reverse((due, key))) = self.timers.peek() {
            if due > now {
                return;
            }
            self.timers.pop();
            let current = self
                .receivers
                .get(key)
                .is_some_and(|r| r.poller.next_due == Some(due));
            if current {
                self.send_poll(key, now);
            }
        }
    }

    /// Sends receiver `key`'s next poll.
    pub(super) fn send_poll(&mut self, key: usize, now: Instant) {
        let receiver = &mut self.receivers[key];
        let Link::Poll(conn) = &mut receiver.link else {
            return;
        };
        let host = &self.settings.target.host;
        poll_request(
            &mut self.request,
            &self.room,
            host,
            &receiver.poller,
            &self.timeout,
        );
        receiver.poller.next_due = None;
        receiver.poller.last_sent = Some(now);
        self.requests += 1;
        if let Err(e) = conn.send(&self.request) {
            self.fail(key, &e);
        }
    }

    /// Replaces poller `key`'s connection with a new one (the server
    /// closed the old one, or will after its answer); `false` if that
    /// failed and the receiver is gone.
    fn reopen(&mut self, key: usize) -> bool {
        let source = self.source();
        let mut conn = match HttpConn::connect(self.settings.target.addr, source) {
            Ok(conn) => conn,
            Err(e) => {
                self.fail(key, &e);
                return false;
            }
        };
        if let Err(e) = register(&self.poll, conn.stream(), Token(key)) {
            self.fail(key, &ConnError::Connect(e));
            return false;
        }
        let old = std::mem::replace(&mut self.receivers[key].link, Link::Poll(conn));
        self.gone.add(old.wire());
        self.reopened += 1;
        true
    }

    /// Drops receiver `key`, counting why.
    pub(super) fn fail(&mut self, key: usize, error: &ConnError) {
        self.errors.add(error);
        if let Some(receiver) = self.receivers.try_remove(key) {
            self.gone.add(receiver.link.wire());
            if receiver.joined {
                self.disconnected += 1;
            }
        }
    }

    /// Whether, sending over at `now`, every receiver still there has
    /// every message sent (the run can end before its drain time).
    pub(super) fn everything_arrived(&self, now: Instant) -> bool {
        let Some(window) = self.window else {
            return false;
        };
        if self.receivers.is_empty() {
            return true;
        }
        if now < window.send_end {
            return false;
        }
        let sent = &self.tally.senders;
        let members = self.receivers.len() as u64;
        if self.tally.deliveries < self.tally.total(|s| s.sent) * members {
            return false;
        }
        self.receivers.iter().all(|(_, r)| {
            let expected = &r.member.expected;
            expected.iter().zip(sent).all(|(e, s)| *e >= s.sent)
        })
    }

    /// What everyone has moved so far.
    pub fn counts(&self) -> Counts {
        let mut receivers = self.gone;
        for (_, r) in &self.receivers {
            receivers.add(r.link.wire());
        }
        Counts {
            receivers,
            senders: self.senders.wire(),
            requests: self.requests,
            reopened: self.reopened,
        }
    }

    /// Counts as lost what the receivers still there never saw (see the
    /// classic broadcast's `count_unseen`); returns how many they are.
    pub fn count_unseen(&mut self) -> u64 {
        let members: Vec<_> = self.receivers.iter().map(|(_, r)| &r.member).collect();
        unseen(&mut self.tally, &members);
        members.len() as u64
    }

    /// Ends every connection: WebSockets (receivers and senders) with a
    /// closing handshake, waited for up to the timeout; HTTP connections
    /// are closed at once, as a browser leaving the page does. Returns
    /// the closing handshakes that completed, and counts the others as
    /// close errors.
    pub fn close_all(&mut self) -> io::Result<(u64, u64)> {
        let keys: Vec<usize> = self.receivers.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Link::Ws(conn) = &mut self.receivers[key].link {
                if conn.close(&mut self.rng, 1000).is_ok() {
                    continue;
                }
            }
            self.receivers.remove(key);
        }
        let mut failed = 0;
        for conn in self.senders.conns.iter_mut() {
            if let Some(c) = conn {
                if c.close(&mut self.rng, 1000).is_err() {
                    *conn = None;
                    failed += 1;
                }
            }
        }
        let mut clean = 0;
        let deadline = Instant::now() + self.settings.timeout;
        while Instant::now() < deadline
            && (!self.receivers.is_empty() || self.senders.conns.iter().any(Option::is_some))
        {
            let timeout = deadline
                .saturating_duration_since(Instant::now())
                .min(MAX_WAIT);
            self.poll.poll(&mut self.events, Some(timeout))?;
            for event in self.events.iter() {
                let readiness = Readiness::of(event);
                let key = event.token().0;
                let conn = match key.checked_sub(SENDER_TOKENS) {
                    Some(rank) => self.senders.conns.get_mut(rank).and_then(Option::as_mut),
                    None => match self.receivers.get_mut(key).map(|r| &mut r.link) {
                        Some(Link::Ws(conn)) => Some(conn),
                        _ => None,
                    },
                };
                let Some(conn) = conn else { continue };
                match conn.on_ready(readiness, &mut self.rng, |_, _| {}) {
                    Ok(Status::Alive) => continue,
                    Ok(Status::Finished { .. }) => clean += 1,
                    Err(_) => failed += 1,
                }
                match key.checked_sub(SENDER_TOKENS) {
                    Some(rank) => self.senders.conns[rank] = None,
                    None => {
                        self.receivers.remove(key);
                    }
                }
            }
        }
        let left = self.receivers.len() + self.senders.conns.iter().flatten().count();
        self.receivers.clear();
        Ok((clean, failed + left as u64))
    }
}
