//! Long polling and polling: `GET /room/{name}/poll`, answered at once
//! when there is something to say (messages after its position, presence
//! changes, a position that cannot be resumed, or `timeout=0`), else held
//! until a message comes, its timeout passes or the server shuts down.
//!
//! The poller is a room member of its own between polls (see
//! [`crate::server::sessions`]): the first poll makes its session and
//! joins it to the room; it leaves once it has not polled for the grace
//! period after its last poll ended.

use std::time::Duration;

use log::debug;

use super::{members, wake, Server};
use crate::http::{self, Reply};
use crate::server::connection::{AfterResponse, HeldPoll};
use crate::server::hub::Joining;
use crate::server::outgoing::Format;
use crate::server::policy::Refusal;
use crate::server::poll::{self, Answer};
use crate::server::router::PollRequest;
use crate::server::sessions::poller_key;

/// In cluster mode, how long a first poll may wait for Redis to say what
/// the room's history is, beyond its own timeout.
const RECALL_WAIT: Duration = Duration::from_secs(5);

impl Server {
    /// A poll on connection `key`: its session found (or made, with a
    /// fresh member), then answered or held. A HEAD gets the head alone.
    pub(super) fn poll(&mut self, key: usize, reply: Reply, request: PollRequest) {
        if reply.head_only {
            return self.answer(key, reply, |reply| http::json(b"", reply));
        }
        let found = request
            .session
            .and_then(|t| self.sessions.find_poller(&t, &request.room));
        let (session, fresh) = match found {
            Some(session) => (session, false),
            None => match self.open_poller(&request.room) {
                Some(session) => (session, true),
                None => return self.refuse_in(key, Refusal::SessionUnavailable, reply.closing()),
            },
        };
        let now = self.clock.now();
        // A held poll is a silent connection: the idle timeout bounds it.
        let timeout = request.timeout.min(self.settings.config.idle_timeout);
        let deadline = now + timeout;
        let mut held = HeldPoll::new(session, request.since, deadline, reply.after);
        let clustered = fresh && self.relay.is_clustered();
        held.recalling =
            clustered && self.recall_for_poll(&request.room, key, session, held.since.as_ref());
        held.recall_failed = clustered && !held.recalling;
        let hold_until = match held.recalling {
            true => deadline.max(now + RECALL_WAIT),
            false => deadline,
        };
        let recalling = held.recalling;
        if let Some(before) = self.sessions.hold(session, key, hold_until) {
            // The same poller polls again elsewhere: the older poll is
            // answered now, with the messages there are.
            self.answer_poll(before, true);
        }
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        conn.hold_poll(held, hold_until);
        self.table.track_timer(key);
        if !recalling {
            self.answer_poll(key, false);
        }
    }

    /// Makes a poller's session for `room` and joins it to the room (the
    /// others are told); `None` when no session can be made: no
    /// randomness, or as many pollers as `--max-connections` already
    /// (each keeps a little memory between its polls).
    fn open_poller(&mut self, room: &str) -> Option<usize> {
        if self.sessions.pollers() >= self.settings.max_connections {
            return None;
        }
        let id = self.relay.next_id();
        let (session, _) = self.sessions.open_poller(id, room, self.clock.now())?;
        debug!("client-{id} polls room {room}");
        let joining = Joining {
            key: poller_key(session),
            id,
            format: Format::Poll,
            since: None,
            recall: false,
        };
        let mut woken = Vec::new();
        let members = &mut members(&mut self.table, &mut self.sessions);
        self.hub.join(room, joining, members, &mut woken);
        wake(&mut self.table, &mut self.sessions, &mut woken);
        Some(session)
    }

    /// Answers the poll connection `key` holds, if there is something to
    /// say or `force` (its time is up, the server shuts down); otherwise
    /// it stays held.
    pub(super) fn answer_poll(&mut self, key: usize, force: bool) {
        let Some(held) = self.table.get(key).and_then(|c| c.held_poll()).cloned() else {
            return;
        };
        if held.recalling && !force {
            return;
        }
        let force = force || self.shutdown_deadline.is_some();
        let room = self.hub.rooms.room_of(poller_key(held.session));
        let (Some(room), Some(token)) = (room, self.sessions.token(held.session)) else {
            // The session is gone (it cannot be while it holds a poll).
            return self.refuse_held(key);
        };
        let limit = self.settings.config.max_backpressure;
        let polled = self.hub.poll(room, held.since.as_ref(), limit);
        let Some(poller) = self.sessions.poller_mut(held.session) else {
            return self.refuse_held(key);
        };
        let nothing_new = polled.messages.is_empty() && polled.recovered && held.since.is_some();
        if nothing_new && !poller.has_presence() && !force {
            poller.settle();
            return;
        }
        let same_epoch = held.since.as_ref().is_none_or(|s| s.epoch == polled.epoch);
        // A poll superseded by a newer one of the same poller leaves the
        // presence changes to the newer one.
        let own = poller.held == Some(key);
        let mut presence = match own {
            true => poller.take_presence(same_epoch.then_some(polled.next)),
            false => Vec::new(),
        };
        if !same_epoch {
            // Offsets of another numbering: they come first.
            presence.iter_mut().for_each(|p| p.0 = 0);
        }
        let id = poller.id;
        let count = polled.messages.len() as u64;
        let items = poll::merge(polled.messages, presence);
        let answer = Answer {
            epoch: &polled.epoch,
            recovered: polled.recovered && !held.recall_failed && !held.recalling,
            next: polled.next,
            session: &token.to_text(),
            id,
            members: self.hub.rooms.members(room),
        };
        let mut body = Vec::new();
        poll::write_answer(&answer, &items, &mut body);
        self.metrics.messages_sent += count;
        self.metrics.deliveries.poll += count;
        self.send_poll_answer(key, held, &body);
    }

    /// Queues the answer `body` of `held`, connection `key`'s poll.
    fn send_poll_answer(&mut self, key: usize, held: HeldPoll, body: &[u8]) {
        let now = self.clock.now();
        self.sessions.release(held.session, key, now);
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        conn.take_poll();
        let closing = conn.saw_eof() || self.shutdown_deadline.is_some();
        let after = match closing {
            true => AfterResponse::Close,
            false => held.after,
        };
        let reply = Reply {
            after,
            head_only: false,
        };
        self.respond(key, http::json(body, reply), after);
    }

    /// A held poll whose session is gone: answered 401, so the client
    /// starts again.
    fn refuse_held(&mut self, key: usize) {
        let Some(held) = self.table.get_mut(key).and_then(|c| c.take_poll()) else {
            return;
        };
        let reply = Reply {
            after: held.after,
            head_only: false,
        };
        self.refuse_in(key, Refusal::Unauthorized, reply);
    }

    /// Answers the polls woken this turn by messages and presence changes.
    pub(super) fn answer_woken_polls(&mut self) {
        for session in self.sessions.take_due() {
            if let Some(conn) = self.sessions.held_by(session) {
                self.answer_poll(conn, false);
            }
        }
    }

    /// Removes the pollers that stopped polling (their grace period is
    /// over); their rooms are told they left.
    pub(super) fn expire_pollers(&mut self) {
        let now = self.clock.now();
        while let Some((session, id)) = self.sessions.pop_expired(now) {
            debug!("client-{id} stopped polling");
            let mut woken = Vec::new();
            let members = &mut members(&mut self.table, &mut self.sessions);
            self.hub.leave(poller_key(session), id, members, &mut woken);
            wake(&mut self.table, &mut self.sessions, &mut woken);
        }
    }
}
