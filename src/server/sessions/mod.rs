//! Sessions of the members that speak plain HTTP: SSE streams and
//! pollers.
//!
//! A session is made when an SSE stream opens or a first poll comes, and
//! gets a member id (from the relay, like a WebSocket's) and a [`Token`],
//! which the client shows in the request header `Wschat-Session` to post
//! as that member (never in a URL, where logs and referrers would keep it)
//! and, for a poller, to go on polling as the same member. An SSE session
//! lasts as long as its stream; a poller's lasts while it keeps polling:
//! until its poll's end plus the grace period (`Config::poll_grace`).
//!
//! A poller is a room member of its own (see [`poller`]), known to the
//! rooms by [`POLLER_KEY`] set on its session's key; [`Members`] shows the
//! rooms the connections and the pollers together.

pub mod poller;
pub mod token;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use slab::Slab;

pub use self::poller::Poller;
pub use self::token::Token;
use self::token::SECRET_BYTES;
use super::admission::RateBucket;
use super::connection::Connection;
use super::room::{is_poller_key, Member, Roster, POLLER_KEY};
use super::timer::Time;

/// The request header that carries a session token.
pub const SESSION_HEADER: &str = "wschat-session";

/// What a session is the session of.
#[derive(Debug)]
pub enum Kind {
    /// An SSE stream, on connection `conn`.
    Stream {
        /// The stream's connection key.
        conn: usize,
    },
    /// A poller, a room member of its own.
    Poll(Poller),
}

/// One session.
#[derive(Debug)]
pub struct Session {
    secret: [u8; SECRET_BYTES],
    /// The member id its posts are sent as.
    pub id: u64,
    /// The room it is a member of; a token is good for this room only.
    pub room: Box<str>,
    /// Its posts' rate (`--max-messages-per-second`).
    pub rate: RateBucket,
    /// Stream or poller.
    pub kind: Kind,
}

/// Every session, by key.
#[derive(Debug, Default)]
pub struct Sessions {
    slab: Slab<Session>,
    /// Pollers' expiry times (stale entries are skipped when met).
    expiries: BinaryHeap<Reverse<(Time, usize)>>,
    /// How long a poller stays a member after its last poll ended.
    grace: Duration,
    /// Pollers whose held poll a message or a presence change woke, to
    /// be answered at the end of the turn.
    due: Vec<usize>,
    /// Pollers now members.
    pollers: usize,
}

/// The member key of poller session `session`.
pub fn poller_key(session: usize) -> usize {
    POLLER_KEY | session
}

/// The session of poller member key `key`.
pub fn session_of(key: usize) -> usize {
    key & !POLLER_KEY
}

impl Sessions {
    /// No sessions; pollers stay members `grace` after their last poll.
    pub fn new(grace: Duration) -> Sessions {
        Sessions {
            grace,
            ..Sessions::default()
        }
    }

    /// Opens a session for member `id` of `room`; `None` when no token
    /// can be made (no randomness, or a table past 2^32 sessions).
    fn open(&mut self, id: u64, room: &str, kind: Kind) -> Option<(usize, Token)> {
        let key = self.slab.vacant_key();
        let token = Token::new(u32::try_from(key).ok()?)?;
        self.slab.insert(Session {
            secret: token.secret,
            id,
            room: room.into(),
            rate: RateBucket::default(),
            kind,
        });
        Some((key, token))
    }

    /// Opens the session of an SSE stream on connection `conn`.
    pub fn open_stream(&mut self, id: u64, room: &str, conn: usize) -> Option<(usize, Token)> {
        self.open(id, room, Kind::Stream { conn })
    }

    /// Opens a poller's session at `now`; it is a member until `now`
    /// plus the grace period unless it polls.
    pub fn open_poller(&mut self, id: u64, room: &str, now: Time) -> Option<(usize, Token)> {
        let expires = now + self.grace;
        let opened = self.open(id, room, Kind::Poll(Poller::new(id, expires)))?;
        self.expiries.push(Reverse((expires, opened.0)));
        self.pollers += 1;
        Some(opened)
    }

    /// The session `token` proves, if it is one of `room`: the slot is
    /// looked up, then the secret compared in constant time.
    pub fn find(&self, token: &Token, room: &str) -> Option<usize> {
        let key = token.slot as usize;
        let session = self.slab.get(key)?;
        let proven = token.proves(&session.secret);
        (proven && *session.room == *room).then_some(key)
    }

    /// Like [`Sessions::find`], for a poller's session only.
    pub fn find_poller(&self, token: &Token, room: &str) -> Option<usize> {
        self.find(token, room)
            .filter(|&key| matches!(self.slab[key].kind, Kind::Poll(_)))
    }

    /// Session `key`.
    pub fn get(&self, key: usize) -> Option<&Session> {
        self.slab.get(key)
    }

    /// Session `key`.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut Session> {
        self.slab.get_mut(key)
    }

    /// The token of session `key`, as the client was given it.
    pub fn token(&self, key: usize) -> Option<Token> {
        let session = self.slab.get(key)?;
        Some(Token {
            slot: u32::try_from(key).ok()?,
            secret: session.secret,
        })
    }

    /// The poller of session `key`, if it is a poller's.
    pub fn poller_mut(&mut self, key: usize) -> Option<&mut Poller> {
        match &mut self.slab.get_mut(key)?.kind {
            Kind::Poll(poller) => Some(poller),
            Kind::Stream { .. } => None,
        }
    }

    /// Poller `key` holds the poll of connection `conn` until `until`;
    /// returns the connection whose poll it held before, if another.
    pub fn hold(&mut self, key: usize, conn: usize, until: Time) -> Option<usize> {
        let expires = until + self.grace;
        let poller = self.poller_mut(key)?;
        let before = poller.held.replace(conn).filter(|&c| c != conn);
        poller.settle();
        poller.expires = poller.expires.max(expires);
        let expires = poller.expires;
        self.expiries.push(Reverse((expires, key)));
        before
    }

    /// The poll of connection `conn` is over (answered, or the connection
    /// gone) at `now`: poller `key` stays a member for the grace period.
    pub fn release(&mut self, key: usize, conn: usize, now: Time) {
        let expires = now + self.grace;
        let Some(poller) = self.poller_mut(key) else {
            return;
        };
        if poller.held == Some(conn) {
            poller.held = None;
        }
        poller.settle();
        // With no poll held any more, the grace period runs from now, even
        // when the poll ended (its connection gone) long before its timeout.
        poller.expires = if poller.held.is_none() {
            expires
        } else {
            poller.expires.max(expires)
        };
        let expires = poller.expires;
        self.expiries.push(Reverse((expires, key)));
    }

    /// Ends session `key` (its stream closed).
    pub fn close(&mut self, key: usize) {
        if let Some(session) = self.slab.try_remove(key) {
            self.pollers -= usize::from(matches!(session.kind, Kind::Poll(_)));
        }
    }

    /// Removes a poller whose membership ran out by `now` (none held);
    /// returns its session key and member id, for its room to be told.
    pub fn pop_expired(&mut self, now: Time) -> Option<(usize, u64)> {
        while let Some(&Reverse((at, key))) = self.expiries.peek() {
            if at > now {
                return None;
            }
            self.expiries.pop();
            let due = matches!(
                self.slab.get(key).map(|s| &s.kind),
                Some(Kind::Poll(p)) if p.expires == at && p.held.is_none()
            );
            if due {
                let session = self.slab.remove(key);
                self.pollers -= 1;
                return Some((key, session.id));
            }
        }
        None
    }

    /// When [`Sessions::pop_expired`] next may have a poller to remove.
    pub fn next_expiry(&self) -> Option<Time> {
        self.expiries.peek().map(|Reverse((at, _))| *at)
    }

    /// Moves the pollers out of `woken` (members a broadcast, a presence
    /// change or a replay woke), to be answered at the end of the turn;
    /// the connections stay.
    pub fn take_woken(&mut self, woken: &mut Vec<usize>) {
        let due = &mut self.due;
        woken.retain(|&key| {
            if is_poller_key(key) {
                due.push(session_of(key));
            }
            !is_poller_key(key)
        });
    }

    /// The pollers woken since the last call.
    pub fn take_due(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.due)
    }

    /// The connection whose poll session `key` holds, if any.
    pub fn held_by(&self, key: usize) -> Option<usize> {
        match &self.slab.get(key)?.kind {
            Kind::Poll(poller) => poller.held,
            Kind::Stream { .. } => None,
        }
    }

    /// Pollers now members.
    pub fn pollers(&self) -> usize {
        self.pollers
    }
}

/// The connections and the pollers, as the rooms see their members.
#[derive(Debug)]
pub struct Members<'a> {
    /// The connections, by key.
    pub conns: &'a mut Slab<Connection>,
    /// The sessions, whose pollers are members by [`poller_key`].
    pub sessions: &'a mut Sessions,
}

impl Roster for Members<'_> {
    fn member(&self, key: usize) -> Option<&dyn Member> {
        if !is_poller_key(key) {
            return self.conns.get(key).map(|c| c as &dyn Member);
        }
        match &self.sessions.slab.get(session_of(key))?.kind {
            Kind::Poll(poller) => Some(poller as &dyn Member),
            Kind::Stream { .. } => None,
        }
    }

    fn member_mut(&mut self, key: usize) -> Option<&mut dyn Member> {
        if !is_poller_key(key) {
            return self.conns.get_mut(key).map(|c| c as &mut dyn Member);
        }
        self.sessions
            .poller_mut(session_of(key))
            .map(|p| p as &mut dyn Member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn a_token_is_good_for_its_session_and_room_only() {
        let mut sessions = Sessions::new(Duration::from_secs(1));
        let (a, token_a) = sessions.open_stream(1, "r", 3).unwrap();
        let (b, token_b) = sessions.open_poller(2, "r", t(0)).unwrap();
        assert_eq!(sessions.find(&token_a, "r"), Some(a));
        assert_eq!(sessions.find(&token_b, "r"), Some(b));
        assert_eq!(sessions.find(&token_a, "other"), None, "another room");
        assert_eq!(sessions.find_poller(&token_a, "r"), None, "a stream's");
        let forged = Token {
            slot: token_a.slot,
            secret: token_b.secret,
        };
        assert_eq!(sessions.find(&forged, "r"), None);
        assert_eq!(sessions.token(a), Some(token_a));
        sessions.close(a);
        assert_eq!(sessions.find(&token_a, "r"), None, "closed");
        let (again, token_c) = sessions.open_stream(3, "r", 4).unwrap();
        assert_eq!(again, a, "the slot is used again");
        assert_eq!(sessions.find(&token_a, "r"), None, "not by the old token");
        assert_eq!(sessions.find(&token_c, "r"), Some(again));
    }

    #[test]
    fn a_poller_stays_a_member_for_the_grace_period_after_its_last_poll() {
        let grace = Duration::from_millis(100);
        let mut sessions = Sessions::new(grace);
        let (p, _) = sessions.open_poller(9, "r", t(0)).unwrap();
        assert_eq!(sessions.hold(p, 5, t(1_000)), None);
        assert_eq!(sessions.pop_expired(t(500)), None, "a poll is held");
        assert_eq!(sessions.hold(p, 6, t(1_000)), Some(5), "superseded");
        sessions.release(p, 6, t(1_000));
        assert_eq!(sessions.pop_expired(t(1_099)), None);
        assert_eq!(sessions.next_expiry(), Some(t(1_100)));
        assert_eq!(sessions.pop_expired(t(1_100)), Some((p, 9)));
        assert_eq!(sessions.pollers(), 0);
    }

    #[test]
    fn a_long_poll_whose_connection_goes_early_starts_the_grace_period_then() {
        let grace = Duration::from_millis(100);
        let mut sessions = Sessions::new(grace);
        let (p, _) = sessions.open_poller(9, "r", t(0)).unwrap();
        // Held until 30 s, but the client leaves after 1 s.
        assert_eq!(sessions.hold(p, 5, t(30_000)), None);
        sessions.release(p, 5, t(1_000));
        assert_eq!(sessions.pop_expired(t(1_099)), None);
        assert_eq!(sessions.pop_expired(t(1_100)), Some((p, 9)));
    }

    #[test]
    fn poller_keys_stay_apart_from_connection_keys() {
        for session in [0, 1, 1 << 20] {
            let key = poller_key(session);
            assert!(is_poller_key(key));
            assert_eq!(session_of(key), session);
        }
        assert!(!is_poller_key(usize::MAX >> 1));
    }
}
