//! A poller: a room member between its requests, with no connection of
//! its own.
//!
//! Room messages are not queued to it: a poll reads them from the room's
//! history (where every message is kept before it is sent), by position,
//! exactly as a WebSocket client coming back with `since` would get them.
//! What it keeps is what history does not: presence changes, each with the
//! room's newest offset when it happened, so that a poll answer places it
//! among the messages. A broadcast or a presence change only wakes the
//! poll it may have held.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::server::outgoing::{Format, Outgoing};
use crate::server::room::Member;
use crate::server::timer::Time;

/// Bytes of presence changes a poller keeps between polls (about a
/// hundred); past it the oldest go (presence is best effort, as for every
/// member).
pub const PRESENCE_BYTES: usize = 4 * 1024;

/// One presence change: after which offset it happened, and its object.
pub type Presence = (u64, Rc<[u8]>);

/// What a poller session keeps.
#[derive(Debug)]
pub struct Poller {
    /// Its member id.
    pub id: u64,
    /// Presence changes not yet answered, oldest first.
    presence: VecDeque<Presence>,
    presence_bytes: usize,
    /// The connection whose poll it holds, if one is held.
    pub held: Option<usize>,
    /// Listed to be answered this turn (set once per wake).
    woken: bool,
    /// When it stops being a member, if it does not poll again.
    pub expires: Time,
}

impl Poller {
    /// Member `id`, a member until `expires`.
    pub fn new(id: u64, expires: Time) -> Poller {
        Poller {
            id,
            presence: VecDeque::new(),
            presence_bytes: 0,
            held: None,
            woken: false,
            expires,
        }
    }

    /// Whether presence changes wait to be answered.
    pub fn has_presence(&self) -> bool {
        !self.presence.is_empty()
    }

    /// Takes the presence changes that happened at or before offset
    /// `upto` (all of them with `None`), oldest first.
    pub fn take_presence(&mut self, upto: Option<u64>) -> Vec<Presence> {
        let count = match upto {
            Some(upto) => self.presence.iter().take_while(|p| p.0 <= upto).count(),
            None => self.presence.len(),
        };
        let taken: Vec<Presence> = self.presence.drain(..count).collect();
        self.presence_bytes -= taken.iter().map(|p| p.1.len()).sum::<usize>();
        taken
    }

    /// Notes that its held poll was answered (or dropped): a later wake
    /// lists it again.
    pub fn settle(&mut self) {
        self.woken = false;
    }

    /// Whether a broadcast or presence change should list it to be
    /// answered: it holds a poll and is not listed yet.
    fn wake(&mut self) -> bool {
        if self.held.is_none() || self.woken {
            return false;
        }
        self.woken = true;
        true
    }
}

impl Member for Poller {
    fn backlog(&self) -> Option<usize> {
        // Messages are read from the history, never queued here.
        Some(0)
    }

    fn format(&self) -> Format {
        Format::Poll
    }

    fn queue(&mut self, _message: &mut Outgoing<'_>) -> bool {
        self.wake()
    }

    fn id(&self) -> u64 {
        self.id
    }

    fn queue_frame(&mut self, frame: Rc<[u8]>) -> bool {
        self.queue_presence(frame, 0)
    }

    fn queue_presence(&mut self, frame: Rc<[u8]>, head: u64) -> bool {
        self.presence_bytes += frame.len();
        self.presence.push_back((head, frame));
        while self.presence_bytes > PRESENCE_BYTES {
            match self.presence.pop_front() {
                Some((_, old)) => self.presence_bytes -= old.len(),
                None => break,
            }
        }
        self.wake()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Rc<[u8]> {
        Rc::from(text.as_bytes())
    }

    #[test]
    fn presence_is_kept_in_order_and_taken_up_to_an_offset() {
        let mut p = Poller::new(7, Time::from_millis(0));
        assert!(!p.queue_presence(object("a"), 3), "no held poll to wake");
        let _ = p.queue_presence(object("b"), 5);
        let _ = p.queue_presence(object("c"), 9);
        let taken: Vec<u64> = p.take_presence(Some(5)).iter().map(|t| t.0).collect();
        assert_eq!(taken, [3, 5]);
        assert!(p.has_presence());
        assert_eq!(p.take_presence(None).len(), 1);
        assert!(!p.has_presence());
    }

    #[test]
    fn a_held_poll_is_woken_once_until_settled() {
        let mut p = Poller::new(7, Time::from_millis(0));
        p.held = Some(4);
        assert!(p.queue_presence(object("a"), 1));
        assert!(!p.queue_presence(object("b"), 1), "listed already");
        p.settle();
        assert!(p.queue_presence(object("c"), 1));
    }

    #[test]
    fn presence_kept_between_polls_is_bounded() {
        let mut p = Poller::new(7, Time::from_millis(0));
        let big = "x".repeat(500);
        for i in 0..100 {
            let _ = p.queue_presence(object(&big), i);
        }
        let kept = p.take_presence(None);
        assert!(kept.len() * 500 <= PRESENCE_BYTES);
        assert_eq!(kept.last().map(|k| k.0), Some(99), "the newest stay");
    }
}
