//! What arrived: the tool's own messages read back from either protocol,
//! and the counts of the run.

use std::collections::BTreeMap;
use std::time::Duration;

use super::position::{Arrival, OffsetStats, Position};
use crate::report::Latency;
use crate::v1::{self, Body, Object};

/// One member of the room, kept across its reconnects.
#[derive(Debug, Default)]
pub struct Member {
    /// Rank in opening order; ranks below `senders` send.
    pub rank: usize,
    /// Next sequence number expected from each sender.
    pub expected: Vec<u64>,
    /// Its place in the room's numbering (`wschat.v1`).
    pub position: Position,
}

/// One of our messages, parsed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    sender: usize,
    seq: u64,
    nanos: u64,
}

/// Parses `...b{run}:{sender}:{seq}:{nanos}`, whatever prefix the server
/// added; `None` for a message of another run or another client.
pub fn parse(text: &str, run_tag: &str) -> Option<Stamp> {
    let mut fields = text.rsplitn(4, ':');
    let nanos = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let sender = fields.next()?.parse().ok()?;
    fields
        .next()?
        .ends_with(run_tag)
        .then_some(Stamp { sender, seq, nanos })
}

/// When a message arrived: nanoseconds since sending started, and whether
/// that was still within the sending window.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// Nanoseconds since the run's epoch.
    pub nanos: u64,
    /// Before the senders stopped.
    pub in_window: bool,
}

/// Per-sender counts.
#[derive(Debug, Default, Clone)]
pub struct SenderStats {
    /// Messages sent.
    pub sent: u64,
    /// Gaps seen by receivers (a late arrival fills one back in).
    pub lost: u64,
    /// Messages that came after a later one of the same sender.
    pub out_of_order: u64,
    /// Whether any member received each message, by sequence number.
    pub received: Vec<bool>,
}

impl SenderStats {
    /// Messages sent that no member received: the server never took them
    /// (a sender closed with them still in flight), or lost them for all.
    pub fn received_by_none(&self) -> u64 {
        self.received.iter().filter(|r| !**r).count() as u64
    }
}

/// Counters of the run.
#[derive(Debug)]
pub struct Tally {
    /// Sending to delivery, live messages.
    pub latency: Latency,
    /// Sending to delivery of the messages recovered after a reconnect
    /// (the time a member was away included), kept apart so they do not
    /// pass for the live latency.
    pub recovery_latency: Latency,
    /// Messages of ours received, everywhere.
    pub deliveries: u64,
    /// Those received before sending stopped.
    pub deliveries_in_window: u64,
    /// Deliveries since the last progress line.
    pub interval_deliveries: u64,
    /// Messages not of this run.
    pub foreign: u64,
    /// Pings answered.
    pub pings: u64,
    /// Per sender.
    pub senders: Vec<SenderStats>,
    /// `wschat.v1` presence objects (`join`, `leave`).
    pub presence: u64,
    /// `wschat.v1` objects that could not be read.
    pub malformed: u64,
    /// What the offsets said (`wschat.v1`).
    pub offsets: OffsetStats,
}

impl Tally {
    /// Nothing counted yet, for `senders` senders.
    pub fn new(senders: usize) -> Tally {
        Tally {
            latency: Latency::new(),
            recovery_latency: Latency::new(),
            deliveries: 0,
            deliveries_in_window: 0,
            interval_deliveries: 0,
            foreign: 0,
            pings: 0,
            senders: vec![SenderStats::default(); senders],
            presence: 0,
            malformed: 0,
            offsets: OffsetStats::default(),
        }
    }

    /// A per-sender count summed over all senders.
    pub fn total(&self, count: fn(&SenderStats) -> u64) -> u64 {
        self.senders.iter().map(count).sum()
    }

    /// The senders for which `count` is not zero, for the report.
    pub fn by_sender(&self, count: fn(&SenderStats) -> u64) -> BTreeMap<String, u64> {
        self.senders
            .iter()
            .enumerate()
            .filter(|(_, s)| count(s) > 0)
            .map(|(i, s)| (format!("sender {i}"), count(s)))
            .collect()
    }

    /// A classic text message (`from{id}:` and our text) to `member`.
    pub fn classic(&mut self, member: &mut Member, data: &[u8], run_tag: &str, at: Moment) {
        match std::str::from_utf8(data)
            .ok()
            .and_then(|t| parse(t, run_tag))
        {
            Some(stamp) => self.deliver(member, stamp, at, false),
            None => self.foreign += 1,
        }
    }

    /// A `wschat.v1` object to `member`.
    pub fn object(&mut self, member: &mut Member, data: &[u8], run_tag: &str, at: Moment) {
        let message = match v1::parse(data) {
            Ok(Object::Message(message)) => message,
            Ok(Object::Welcome(welcome)) => {
                member.position.welcome(&welcome, &mut self.offsets);
                return;
            }
            Ok(Object::Presence) => {
                self.presence += 1;
                return;
            }
            Ok(Object::Other) => {
                self.foreign += 1;
                return;
            }
            Err(_) => {
                self.malformed += 1;
                return;
            }
        };
        let recovered = match member.position.message(message.offset, &mut self.offsets) {
            Arrival::Skip => return,
            Arrival::Live => false,
            Arrival::Recovered => true,
        };
        let stamp = match message.body {
            Body::Text(text) => text.value().and_then(|t| parse(&t, run_tag)),
            Body::Binary => None,
        };
        match stamp {
            Some(stamp) => self.deliver(member, stamp, at, recovered),
            None => self.foreign += 1,
        }
    }

    /// One delivery of a message of ours to `member`.
    pub fn deliver(&mut self, member: &mut Member, stamp: Stamp, at: Moment, recovered: bool) {
        // A member not yet counted in (no `expected`) cannot have been
        // sent anything of this run.
        let (Some(stats), Some(next)) = (
            self.senders.get_mut(stamp.sender),
            member.expected.get_mut(stamp.sender),
        ) else {
            self.foreign += 1;
            return;
        };
        self.deliveries += 1;
        self.interval_deliveries += 1;
        if at.in_window {
            self.deliveries_in_window += 1;
        }
        let latency = Duration::from_nanos(at.nanos.saturating_sub(stamp.nanos));
        if recovered {
            self.recovery_latency.record(latency);
        } else {
            self.latency.record(latency);
        }
        if let Some(received) = stats.received.get_mut(stamp.seq as usize) {
            *received = true;
        }
        if stamp.seq >= *next {
            stats.lost += stamp.seq - *next;
            *next = stamp.seq + 1;
        } else {
            stats.out_of_order += 1;
            stats.lost = stats.lost.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wschat::protocol::frame::OpCode;
    use wschat::server::json;

    const AT: Moment = Moment {
        nanos: 10,
        in_window: true,
    };

    fn member(senders: usize) -> Member {
        Member {
            expected: vec![0; senders],
            ..Member::default()
        }
    }

    #[test]
    fn parses_with_and_without_a_server_prefix() {
        let expected = Some(Stamp {
            sender: 3,
            seq: 17,
            nanos: 123456789,
        });
        assert_eq!(parse("from42:b1f:3:17:123456789", "b1f"), expected);
        assert_eq!(parse("b1f:3:17:123456789", "b1f"), expected);
        assert_eq!(parse("from42:b2a:3:17:123456789", "b1f"), None);
        assert_eq!(parse("from42:hello", "b1f"), None);
        assert_eq!(parse("b1f:x:17:1", "b1f"), None);
    }

    #[test]
    fn gaps_and_late_arrivals() {
        let mut tally = Tally::new(2);
        let mut member = member(2);
        tally.senders[1].received = vec![false; 6];
        for seq in [0, 1, 3, 2, 4] {
            let stamp = Stamp {
                sender: 1,
                seq,
                nanos: 0,
            };
            tally.deliver(&mut member, stamp, AT, false);
        }
        assert_eq!(tally.senders[1].lost, 0);
        assert_eq!(tally.senders[1].out_of_order, 1);
        assert_eq!(member.expected[1], 5);
        assert_eq!(tally.senders[1].received_by_none(), 1, "5 reached no one");
        let stranger = Stamp {
            sender: 7,
            seq: 0,
            nanos: 0,
        };
        tally.deliver(&mut member, stranger, AT, false);
        assert_eq!(tally.foreign, 1);
        assert_eq!(tally.deliveries, 5);
    }

    /// The JSON object the server sends for our text `text` at `offset`.
    fn object(offset: u64, text: &str) -> Vec<u8> {
        let stamp = json::Stamp {
            epoch: "e1",
            offset,
            time_ms: 1,
        };
        let mut out = Vec::new();
        json::message(&stamp, 9, OpCode::Text, text.as_bytes(), &mut out);
        out
    }

    #[test]
    fn json_objects_are_counted_by_kind() {
        let mut tally = Tally::new(1);
        let mut member = member(1);
        let welcome = br#"{"type":"welcome","id":9,"room":"lobby","epoch":"e1","offset":4,"members":1,"recovered":false}"#;
        tally.object(&mut member, welcome, "b1", AT);
        // History from before the join: neither a delivery nor foreign.
        tally.object(&mut member, &object(4, "b0:0:0:1"), "b1", AT);
        tally.object(&mut member, &object(5, "b1:0:0:1"), "b1", AT);
        tally.object(&mut member, &object(6, "someone else"), "b1", AT);
        tally.object(&mut member, &object(6, "b1:0:1:1"), "b1", AT);
        tally.object(
            &mut member,
            br#"{"type":"join","id":3,"members":2}"#,
            "b1",
            AT,
        );
        tally.object(&mut member, b"from9:b1:0:1:1", "b1", AT);
        assert_eq!(tally.deliveries, 1);
        assert_eq!((tally.foreign, tally.presence, tally.malformed), (1, 1, 1));
        assert_eq!(tally.offsets.history_on_join, 1);
        assert_eq!(tally.offsets.duplicates, 1);
        assert_eq!(member.expected[0], 1);
    }
}
