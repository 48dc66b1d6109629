//! Where a `wschat.v1` member stands in its room's numbering, and what
//! the offsets it receives say: losses, duplicates, and what came back
//! through recovery.
//!
//! Offsets are checked independently of the tool's own sequence numbers:
//! they cover every message of the room (another client's too), and they
//! are what the server promises about (`?since=EPOCH:OFFSET` gets exactly
//! what followed, or a welcome that says `"recovered":false`).

use crate::v1::Welcome;

/// Offset counts of the whole run, over all members.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetStats {
    /// Messages received through recovery: at or below the offset of the
    /// welcome that answered a `since`.
    pub recovered: u64,
    /// Offsets received twice by one member.
    pub duplicates: u64,
    /// Offsets skipped without the server saying so: each is a message
    /// the server promised and never sent.
    pub gaps: u64,
    /// Offsets the members still there at the end had not received, below
    /// the newest one any of them had (in the same epoch).
    pub unseen: u64,
    /// Offsets skipped after a welcome with `"recovered":false` (or a new
    /// epoch): gone from the history, as the server said.
    pub not_recoverable: u64,
    /// The history a member is sent on a fresh join (`--history-on-join`),
    /// from before it joined: not counted as deliveries.
    pub history_on_join: u64,
    /// Welcomes after a `since` that said `"recovered":true`.
    pub exact: u64,
    /// Welcomes after a `since` that said `"recovered":false`.
    pub partial: u64,
    /// Welcomes after a `since` under another epoch than the member's.
    pub epoch_changes: u64,
}

/// What a message's offset means for its member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A message sent while the member was connected.
    Live,
    /// A message it missed, replayed after a reconnect.
    Recovered,
    /// Not a delivery: a duplicate, or history from before it joined.
    Skip,
}

/// One member's position, kept across its reconnects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Position {
    /// The room's epoch from the last welcome (empty before the first).
    epoch: String,
    /// The last offset received (on a fresh join, the welcome's).
    last: u64,
    /// After a fresh join: the history sent first runs up to here.
    history_until: u64,
    /// After a reconnect: offsets up to here are the ones it missed.
    replay_until: u64,
    /// The welcome said messages after `last` are gone: the next gap is
    /// the server's announced one, not a loss.
    gap_announced: bool,
    /// The connection was opened with `since`, so its welcome answers it.
    asked: bool,
}

impl Position {
    /// Whether the member was welcomed, so that it can name a position.
    pub fn knows_epoch(&self) -> bool {
        !self.epoch.is_empty()
    }

    /// The room's epoch, as the last welcome said (empty before it).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The last offset received (on a fresh join, the welcome's).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The request target of a reconnect: `base` with
    /// `since=EPOCH:OFFSET` added, or `None` without a welcome yet.
    pub fn since_path(&self, base: &str) -> Option<String> {
        if !self.knows_epoch() {
            return None;
        }
        let join = if base.contains('?') { '&' } else { '?' };
        Some(format!("{base}{join}since={}:{}", self.epoch, self.last))
    }

    /// Marks the next welcome as the answer to a reconnect (with `since`
    /// if the member knows its epoch).
    pub fn rejoin(&mut self) {
        self.asked = self.knows_epoch();
    }

    /// Takes in a welcome.
    pub fn welcome(&mut self, welcome: &Welcome<'_>, stats: &mut OffsetStats) {
        self.history_until = 0;
        self.replay_until = 0;
        self.gap_announced = false;
        if !std::mem::take(&mut self.asked) {
            // A fresh join: live messages follow the welcome's offset, and
            // what comes at or below it is the history on join.
            self.epoch = welcome.epoch.to_string();
            self.last = welcome.offset;
            self.history_until = welcome.offset;
            return;
        }
        if welcome.epoch != self.epoch {
            stats.epoch_changes += 1;
            self.epoch = welcome.epoch.to_string();
            self.last = 0;
            self.gap_announced = true;
        } else if welcome.recovered {
            stats.exact += 1;
        } else {
            stats.partial += 1;
            self.gap_announced = true;
        }
        self.replay_until = welcome.offset;
    }

    /// Takes in a message's offset and says what it is.
    pub fn message(&mut self, offset: u64, stats: &mut OffsetStats) -> Arrival {
        if offset <= self.history_until {
            stats.history_on_join += 1;
            return Arrival::Skip;
        }
        self.history_until = 0;
        if offset <= self.last {
            stats.duplicates += 1;
            return Arrival::Skip;
        }
        let skipped = offset - self.last - 1;
        if std::mem::take(&mut self.gap_announced) {
            stats.not_recoverable += skipped;
        } else {
            stats.gaps += skipped;
        }
        self.last = offset;
        if offset <= self.replay_until {
            stats.recovered += 1;
            Arrival::Recovered
        } else {
            self.replay_until = 0;
            Arrival::Live
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome(epoch: &str, offset: u64, recovered: bool) -> Welcome<'_> {
        Welcome {
            epoch,
            offset,
            recovered,
        }
    }

    /// What each offset was, in order.
    fn arrivals(p: &mut Position, offsets: &[u64], stats: &mut OffsetStats) -> Vec<Arrival> {
        offsets.iter().map(|&o| p.message(o, stats)).collect()
    }

    use Arrival::{Live, Recovered, Skip};

    #[test]
    fn a_fresh_join_skips_the_history_and_follows_live_offsets() {
        let (mut p, mut stats) = (Position::default(), OffsetStats::default());
        assert_eq!(p.since_path("/"), None, "no position before a welcome");
        p.welcome(&welcome("e1", 10, false), &mut stats);
        let got = arrivals(&mut p, &[8, 9, 10, 11, 12, 12, 14], &mut stats);
        assert_eq!(got, [Skip, Skip, Skip, Live, Live, Skip, Live]);
        let expected = OffsetStats {
            history_on_join: 3,
            duplicates: 1,
            gaps: 1,
            ..OffsetStats::default()
        };
        assert_eq!(stats, expected);
        assert_eq!(p.since_path("/"), Some("/?since=e1:14".to_string()));
        assert_eq!(
            p.since_path("/room/a?x=1"),
            Some("/room/a?x=1&since=e1:14".to_string())
        );
    }

    #[test]
    fn an_exact_recovery_counts_the_replay_and_no_loss() {
        let (mut p, mut stats) = (Position::default(), OffsetStats::default());
        p.welcome(&welcome("e1", 0, false), &mut stats);
        arrivals(&mut p, &[1, 2, 3], &mut stats);
        p.rejoin();
        p.welcome(&welcome("e1", 6, true), &mut stats);
        let got = arrivals(&mut p, &[4, 5, 6, 7, 8], &mut stats);
        assert_eq!(got, [Recovered, Recovered, Recovered, Live, Live]);
        assert_eq!((stats.recovered, stats.exact, stats.gaps), (3, 1, 0));
        // A replay that skips an offset it promised is a gap.
        p.rejoin();
        p.welcome(&welcome("e1", 11, true), &mut stats);
        arrivals(&mut p, &[9, 11], &mut stats);
        assert_eq!((stats.gaps, stats.not_recoverable), (1, 0));
    }

    #[test]
    fn an_announced_gap_is_not_a_loss() {
        let (mut p, mut stats) = (Position::default(), OffsetStats::default());
        p.welcome(&welcome("e1", 0, false), &mut stats);
        arrivals(&mut p, &[1, 2], &mut stats);
        p.rejoin();
        p.welcome(&welcome("e1", 50, false), &mut stats);
        let replay: Vec<u64> = (40..=51).collect();
        arrivals(&mut p, &replay, &mut stats);
        assert_eq!(
            (stats.partial, stats.not_recoverable, stats.gaps),
            (1, 37, 0)
        );
        assert_eq!(stats.recovered, 11, "40 to 50; 51 is live");
        // Another epoch: the numbering starts again.
        p.rejoin();
        p.welcome(&welcome("e2", 3, false), &mut stats);
        let got = arrivals(&mut p, &[2, 3, 4], &mut stats);
        assert_eq!(got, [Recovered, Recovered, Live]);
        assert_eq!((stats.epoch_changes, stats.not_recoverable), (1, 38));
        assert_eq!((stats.duplicates, stats.gaps), (0, 0));
    }

    #[test]
    fn a_rejoin_without_a_welcome_is_a_fresh_join() {
        let (mut p, mut stats) = (Position::default(), OffsetStats::default());
        p.rejoin();
        p.welcome(&welcome("e1", 5, false), &mut stats);
        assert_eq!(arrivals(&mut p, &[5, 6], &mut stats), [Skip, Live]);
        assert_eq!(stats.exact + stats.partial + stats.epoch_changes, 0);
    }
}
