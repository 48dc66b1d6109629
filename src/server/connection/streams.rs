//! The members that speak plain HTTP on a connection: an SSE stream (the
//! connection's last answer, which goes on until either side closes) and
//! a held poll (an answer that waits for a message, its timeout, or the
//! server's shutdown, while the requests pipelined behind it wait too).

use std::time::Duration;

use super::state::{Exchange, State};
use super::{AfterResponse, Connection, Expiry, Flags, Timeouts};
use crate::server::history::Position;
use crate::server::sse::HEARTBEAT;
use crate::server::timer::{Time, Timer};

/// An SSE stream: what the connection is once its `200` head is queued.
#[derive(Debug)]
pub struct EventStream {
    /// Its member id.
    pub id: u64,
    /// Its session's key.
    pub session: usize,
    /// Its session's token, which every welcome carries.
    pub token: Box<str>,
}

/// A poll waiting for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPoll {
    /// The poller's session key.
    pub session: usize,
    /// The position it polls from.
    pub since: Option<Position>,
    /// When it is answered whatever there is.
    pub deadline: Time,
    /// What follows the answer, decided from the head.
    pub after: AfterResponse,
    /// Cluster mode: the room's history is being read from Redis.
    pub recalling: bool,
    /// Cluster mode: the read failed, so the answer cannot say that
    /// nothing is missing.
    pub recall_failed: bool,
    /// Answers the connection carried before this request.
    pub(super) served: u32,
}

impl HeldPoll {
    /// A poll of session `session` from `since`, due at `deadline`.
    pub fn new(
        session: usize,
        since: Option<Position>,
        deadline: Time,
        after: AfterResponse,
    ) -> HeldPoll {
        HeldPoll {
            session,
            since,
            deadline,
            after,
            recalling: false,
            recall_failed: false,
            served: 0,
        }
    }
}

impl Connection {
    /// Makes the connection an SSE stream: `head` (the `200`) is queued,
    /// no more requests are read, and the first heartbeat is due at
    /// `ping_at`.
    pub fn open_stream(&mut self, head: Vec<u8>, stream: EventStream, ping_at: Time) {
        self.state = State::Stream(Box::new(stream));
        self.inbuf = Vec::new();
        self.queue.push_owned(head);
        self.arm(Timer::Ping, ping_at);
    }

    /// The SSE stream, if the connection is one.
    pub fn stream(&self) -> Option<&EventStream> {
        match &self.state {
            State::Stream(stream) => Some(stream),
            _ => None,
        }
    }

    /// Ends an SSE stream after what is queued (nothing more is queued);
    /// the client has until `close_by` to take it.
    pub fn finish_stream(&mut self, close_by: Time) {
        self.queue.seal();
        self.inbuf = Vec::new();
        self.arm(Timer::Close, close_by);
    }

    /// Notes that bytes left for the client at `now`: for an SSE stream,
    /// whose client sends nothing, progress is its sign of life.
    pub fn on_written(&mut self, now: Time) {
        if matches!(self.state, State::Stream(_)) {
            self.last_rx = now;
        }
    }

    /// An SSE stream's heartbeat is due at `now`: one is queued, unless
    /// bytes have been waiting with no progress for the idle timeout (a
    /// client that takes nothing), which is then given up on.
    pub(super) fn stream_tick(&mut self, now: Time, timeouts: Timeouts) -> Expiry {
        let stalled = now.since(self.last_rx);
        if self.backlog_bytes() > 0 && stalled >= timeouts.idle {
            return Expiry::Idle(stalled);
        }
        self.queue.push_owned(HEARTBEAT.to_vec());
        self.arm(
            Timer::Ping,
            now + timeouts.ping.max(Duration::from_millis(1)),
        );
        Expiry::Pinged
    }

    /// Holds `poll` until `at` (its deadline, or longer while Redis is
    /// asked): the connection answers nothing else meanwhile.
    pub fn hold_poll(&mut self, mut poll: HeldPoll, at: Time) {
        poll.served = self.requests_served();
        self.state = State::Polling(Box::new(poll));
        self.arm(Timer::Hold, at);
    }

    /// The poll held, if any.
    pub fn held_poll(&self) -> Option<&HeldPoll> {
        match &self.state {
            State::Polling(poll) => Some(poll),
            _ => None,
        }
    }

    /// The poll held, if any.
    pub fn held_poll_mut(&mut self) -> Option<&mut HeldPoll> {
        match &mut self.state {
            State::Polling(poll) => Some(poll),
            _ => None,
        }
    }

    /// Takes the held poll out to answer it: the connection is back
    /// between requests, and its answer is queued next.
    pub fn take_poll(&mut self) -> Option<HeldPoll> {
        let State::Polling(poll) = &self.state else {
            return None;
        };
        let served = poll.served;
        match std::mem::replace(&mut self.state, State::Head(Exchange::after(served))) {
            State::Polling(poll) => Some(*poll),
            _ => None,
        }
    }

    /// Whether the peer sent FIN: an answer still due goes out, then the
    /// connection closes.
    pub fn saw_eof(&self) -> bool {
        self.flags.get(Flags::READ_EOF)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{accepted, t, TIMEOUTS};
    use super::*;

    fn stream() -> EventStream {
        EventStream {
            id: 3,
            session: 0,
            token: "tok".into(),
        }
    }

    #[test]
    fn a_stream_sends_heartbeats_and_gives_up_on_a_reader_that_takes_nothing() {
        let (mut conn, _client) = accepted();
        conn.open_stream(b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), stream(), t(30_000));
        assert_eq!(conn.poll_timeout(), Some(t(30_000)));
        conn.on_written(t(1_000));
        let queued = conn.queued_bytes();
        assert_eq!(conn.handle_timeout(t(30_000), TIMEOUTS), Expiry::Pinged);
        assert_eq!(conn.queued_bytes(), queued + HEARTBEAT.len());
        assert_eq!(conn.poll_timeout(), Some(t(60_000)));
        // Nothing was written since 1 s: at 61 s the backlog is stalled.
        assert_eq!(conn.handle_timeout(t(60_000), TIMEOUTS), Expiry::Pinged);
        assert_eq!(
            conn.handle_timeout(t(90_000), TIMEOUTS),
            Expiry::Idle(Duration::from_secs(89))
        );
    }

    #[test]
    fn a_held_poll_comes_back_out_with_the_exchange_where_it_was() {
        let (mut conn, _client) = accepted();
        let _ = conn.respond(b"x".to_vec(), AfterResponse::NextRequest, t(5_000));
        let poll = HeldPoll::new(4, None, t(9_000), AfterResponse::NextRequest);
        conn.hold_poll(poll.clone(), t(9_000));
        assert!(!conn.is_handshaking() && !conn.is_exchanging());
        assert_eq!(conn.handle_timeout(t(9_000), TIMEOUTS), Expiry::PollDue);
        assert!(!conn.on_eof(), "an answer is still due after a FIN");
        assert!(conn.saw_eof());
        let back = conn.take_poll().unwrap();
        assert_eq!(back.session, poll.session);
        assert_eq!(back.served, 1);
        assert!(conn.is_handshaking());
        assert_eq!(conn.requests_served(), 1);
        assert_eq!(conn.take_poll(), None);
    }
}
