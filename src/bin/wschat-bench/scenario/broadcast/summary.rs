//! What the room tells: the progress line and the report's rows.

use std::time::Instant;

use super::tally::SenderStats;
use super::{Options, Protocol, Room};
use crate::report::{Progress, Report, Usage};
use crate::scenario::fmt_p99;

impl Room {
    /// The progress line; `secs` since the previous one.
    pub(super) fn print_progress(&mut self, progress: &Progress, now: Instant, secs: f64) {
        let lost = self.lost();
        let recovery = if self.recovery.enabled {
            format!(
                ", {} reconnects, {} recovered",
                self.recovery.reconnects, self.tally.offsets.recovered
            )
        } else {
            String::new()
        };
        progress.print(
            now,
            format_args!(
                "{:.0} sent/s, {:.0} deliveries/s, p99 {}, {} open, {lost} gaps, {} errors{recovery}",
                self.interval_sent as f64 / secs,
                self.tally.interval_deliveries as f64 / secs,
                fmt_p99(self.tally.latency.take_interval_p99()),
                self.fleet.conns.len(),
                self.errors.total(),
            ),
        );
        self.interval_sent = 0;
        self.tally.interval_deliveries = 0;
    }

    /// Messages lost so far: by sequence number in the classic protocol;
    /// by offset in `wschat.v1`, where a sender's messages the server never
    /// took (counted apart) are no gap in the room.
    fn lost(&self) -> u64 {
        let offsets = &self.tally.offsets;
        match self.protocol {
            Protocol::Classic => self.tally.total(|s| s.lost),
            Protocol::V1 => offsets.gaps + offsets.unseen,
        }
    }

    /// Adds the run's own rows to `report` (`server`: the server's CPU use
    /// over the run, if its process was given); returns whether messages
    /// were delivered and every one arrived, once, in order.
    pub(super) fn report(
        &self,
        report: &mut Report,
        opts: &Options,
        client_cpu: f64,
        receivers_at_end: u64,
        server: Option<Option<Usage>>,
    ) -> bool {
        let tally = &self.tally;
        let secs = opts.duration.as_secs_f64();
        let sent = tally.total(|s| s.sent);
        let lost = self.lost();
        let out_of_order = tally.total(|s| s.out_of_order);
        let received_by_none = tally.total(SenderStats::received_by_none);
        report.text("protocol", self.protocol.name());
        report.int("connections", "", opts.conns as u64);
        report.int("senders", "", self.sender_keys.len() as u64);
        report.float("rate per sender", "/s", opts.rate);
        report.float("duration", "s", secs);
        report.int("messages sent", "", sent);
        report.float("messages sent", "/s", sent as f64 / secs);
        report.int("deliveries", "", tally.deliveries);
        report.float("deliveries", "/s", tally.deliveries_in_window as f64 / secs);
        tally.latency.report(report, "delivery latency");
        report.int("lost", "", lost);
        report.int("out of order", "", out_of_order);
        report.int("received by none", "", received_by_none);
        let lost_by_sender = tally.by_sender(|s| s.lost);
        if self.protocol == Protocol::Classic && !lost_by_sender.is_empty() {
            report.counts("lost by sender", lost_by_sender);
        }
        let reordered_by_sender = tally.by_sender(|s| s.out_of_order);
        if !reordered_by_sender.is_empty() {
            report.counts("out of order by sender", reordered_by_sender);
        }
        let offsets = &tally.offsets;
        let json_sound = match self.protocol {
            Protocol::Classic => true,
            Protocol::V1 => {
                report.int("recovered", "", offsets.recovered);
                report.int("duplicates", "", offsets.duplicates);
                report.int("not recoverable", "", offsets.not_recoverable);
                report.int("history on join", "", offsets.history_on_join);
                report.int("presence objects", "", tally.presence);
                report.int("malformed objects", "", tally.malformed);
                offsets.duplicates == 0 && tally.malformed == 0
            }
        };
        if self.recovery.enabled {
            let r = &self.recovery;
            report.int("reconnects", "", r.reconnects);
            report.int("dropped by server", "", r.server_drops);
            report.int("dropped by us", "", r.our_drops);
            report.int("rejoined without position", "", r.without_position);
            report.int("recoveries exact", "", offsets.exact);
            report.int("recoveries partial", "", offsets.partial);
            report.int("epoch changes", "", offsets.epoch_changes);
            tally.recovery_latency.report(report, "recovery latency");
        }
        report.int("receivers at end", "", receivers_at_end);
        report.int("disconnected", "", self.disconnected);
        report.int("foreign messages", "", tally.foreign);
        report.int("pings answered", "", tally.pings);
        report.float("client cpu", "%", client_cpu);
        if let Some(usage) = server {
            server_rows(report, usage, tally.deliveries);
        }
        let complete = lost == 0 && out_of_order == 0 && received_by_none == 0;
        tally.deliveries > 0 && complete && json_sound
    }
}

/// The server's CPU over the run: its share of one core, the time it
/// waited for its core (another process on it makes every figure here
/// high), and its CPU time per delivery of ours (NaN where /proc could not
/// be read).
pub(super) fn server_rows(report: &mut Report, usage: Option<Usage>, deliveries: u64) {
    let (percent, waited, per_delivery) = match usage {
        Some(u) => (
            u.percent(),
            u.waited_percent(),
            u.cpu.as_secs_f64() * 1e6 / deliveries as f64,
        ),
        None => (f64::NAN, f64::NAN, f64::NAN),
    };
    report.float("server cpu", "%", percent);
    report.float("server cpu wait", "%", waited);
    report.float("server cpu per delivery", "µs", per_delivery);
}
