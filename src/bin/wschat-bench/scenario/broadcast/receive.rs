//! The receiving side of the room: deliveries, members lost, and members
//! dropped and reopened with their position (`--recover`).

use std::ops::Range;
use std::time::Instant;

use super::tally::Moment;
use super::{Protocol, Room};
use crate::conn::{ConnError, Event, Status};
use crate::scenario::ended;

/// The close code of a policy close: wschat's slow consumer, or a member
/// that fell behind the room's history.
const POLICY_CLOSE: u16 = 1008;

/// Ready connections read between two looks at the senders' schedule.
const READS_PER_SEND_CHECK: usize = 64;

impl Room {
    /// Takes in what the last wait found ready: deliveries, pings, and
    /// connections lost (or, under `--recover`, closed with 1008 and
    /// reopened). Senders whose time has come send in between: a pass over
    /// a thousand busy receivers takes milliseconds, and a sender held up
    /// that long would send in bursts the server then reads together,
    /// which changes its work per delivery with the tool's own speed.
    pub(super) fn receive(&mut self) {
        let ready = self.fleet.ready_count();
        let mut start = 0;
        while start < ready {
            let end = (start + READS_PER_SEND_CHECK).min(ready);
            self.receive_part(start..end);
            self.send_due(Instant::now());
            start = end;
        }
        self.reopen_due(Instant::now());
    }

    /// Takes in the ready connections of `part` of the ready list.
    fn receive_part(&mut self, part: Range<usize>) {
        let (epoch, send_end, protocol) = (self.epoch, self.send_end, self.protocol);
        let (run_tag, tally) = (&self.run_tag, &mut self.tally);
        let (errors, disconnected) = (&mut self.errors, &mut self.disconnected);
        let recovery = &mut self.recovery;
        self.fleet.for_each_ready_in(part, |peer, rng, readiness| {
            let now = Instant::now();
            let at = Moment {
                nanos: now.duration_since(epoch).as_nanos() as u64,
                in_window: now <= send_end,
            };
            let member = &mut peer.state;
            let result = peer.conn.on_ready(readiness, rng, |event, _| match event {
                Event::Message {
                    binary: false,
                    data,
                } => match protocol {
                    Protocol::Classic => tally.classic(member, data, run_tag, at),
                    Protocol::V1 => tally.object(member, data, run_tag, at),
                },
                Event::Message { binary: true, .. } => tally.foreign += 1,
                Event::Ping => tally.pings += 1,
                Event::Opened | Event::Bytes(_) => {}
            });
            let cut = matches!(
                result,
                Ok(Status::Finished {
                    code: Some(POLICY_CLOSE)
                })
            );
            if cut && recovery.enabled {
                recovery.server_drops += 1;
                let back = now + recovery.delay;
                recovery
                    .pending
                    .push((back, std::mem::take(&mut peer.state)));
                return true;
            }
            if !ended(result, errors) {
                return false;
            }
            *disconnected += 1;
            true
        });
    }

    /// Drops a share of the open receivers when a round is due at `now`
    /// (only while sending: the drain is for catching up); they come back
    /// after the reconnect delay.
    pub(super) fn drop_due(&mut self, now: Instant) {
        let Some((drops, next)) = self.recovery.drops else {
            return;
        };
        if now < next || now >= self.send_end {
            return;
        }
        self.recovery.drops = Some((drops, now + drops.every));
        let senders = self.sender_keys.len();
        // Senders keep sending; members not yet welcomed have no position
        // to come back to.
        let mut candidates: Vec<usize> = self
            .fleet
            .conns
            .iter()
            .filter(|(_, p)| {
                p.conn.is_open() && p.state.rank >= senders && p.state.position.knows_epoch()
            })
            .map(|(key, _)| key)
            .collect();
        let count = (candidates.len() as f64 * drops.fraction).ceil() as usize;
        for i in 0..count.min(candidates.len()) {
            let left = (candidates.len() - i) as u64;
            let pick = i + (self.fleet.rng.next_u64() % left) as usize;
            candidates.swap(i, pick);
            // Dropping the socket, as a network failure would: unread
            // messages go with it, and recovery must bring them back.
            let peer = self.fleet.conns.remove(candidates[i]);
            let back = now + self.recovery.delay;
            self.recovery.pending.push((back, peer.state));
            self.recovery.our_drops += 1;
        }
        self.reopen_due(now);
    }

    /// Reopens the members whose time to come back has come at `now`,
    /// each with `since` at its last offset (a member never welcomed joins
    /// afresh).
    pub(super) fn reopen_due(&mut self, now: Instant) {
        if self.recovery.pending.is_empty() {
            return;
        }
        let (due, waiting) = std::mem::take(&mut self.recovery.pending)
            .into_iter()
            .partition(|(back, _)| *back <= now);
        self.recovery.pending = waiting;
        for (_, mut member) in due {
            let path = member.position.since_path(&self.path);
            if path.is_none() {
                self.recovery.without_position += 1;
            }
            member.position.rejoin();
            let rank = member.rank;
            match self.fleet.open_at(member, path.as_deref()) {
                Ok(key) => {
                    self.recovery.reconnects += 1;
                    if let Some(slot) = self.sender_keys.get_mut(rank) {
                        *slot = Some(key);
                    }
                }
                Err(e) => {
                    self.errors.add(&e);
                    self.disconnected += 1;
                }
            }
        }
    }

    /// Gives up on reconnects whose handshake has taken longer than the
    /// timeout at `now`.
    pub(super) fn give_up_stuck_reconnects(&mut self, now: Instant) {
        if !self.recovery.enabled {
            return;
        }
        for key in self.fleet.timed_out(now) {
            if !self.fleet.conns[key].conn.is_open() {
                self.errors.add(&ConnError::Timeout("reconnect"));
                self.disconnected += 1;
                self.fleet.remove(key);
            }
        }
    }
}
