//! What a transport comparison tells: its progress line, and the rows of
//! its report, per delivery where the transports differ (requests, bytes,
//! the server's CPU).

use std::time::Instant;

use super::super::summary::server_rows;
use super::super::Options;
use super::hall::{Counts, Hall, Joining};
use super::Transport;
use crate::report::{Progress, Report, Usage};
use crate::scenario::fmt_p99;

/// What the measured stretch gave besides the tally.
#[derive(Debug)]
pub struct Measured {
    /// Requests, bytes and reconnections during the stretch.
    pub counts: Counts,
    /// The load generator's CPU share over the stretch.
    pub client_cpu: f64,
    /// The server's CPU over the stretch, if its process was given.
    pub server: Option<Option<Usage>>,
    /// Receivers still there at the end.
    pub receivers_at_end: u64,
}

impl Hall {
    /// The progress line; `secs` since the previous one.
    pub(super) fn print_progress(&mut self, progress: &Progress, now: Instant, secs: f64) {
        let offsets = &self.tally.offsets;
        let gaps = offsets.gaps + offsets.not_recoverable;
        let requests = self.requests - self.requests_shown;
        progress.print(
            now,
            format_args!(
                "{:.0} sent/s, {:.0} deliveries/s, p99 {}, {:.0} requests/s, {} receivers, {gaps} gaps, {} errors",
                self.senders.interval_sent as f64 / secs,
                self.tally.interval_deliveries as f64 / secs,
                fmt_p99(self.tally.latency.take_interval_p99()),
                requests as f64 / secs,
                self.receivers.len(),
                self.errors.total(),
            ),
        );
        self.requests_shown = self.requests;
        self.senders.interval_sent = 0;
        self.tally.interval_deliveries = 0;
    }

    /// Adds the run's rows to `report`; returns whether it passed: every
    /// receiver joined and got every message once, in order, and nothing
    /// failed.
    pub(super) fn report(
        &self,
        report: &mut Report,
        opts: &Options,
        measured: &Measured,
        joining: Joining,
        (closed, close_errors): (u64, u64),
    ) -> bool {
        let tally = &self.tally;
        let via = self.via;
        let secs = opts.duration.as_secs_f64();
        let sent = tally.total(|s| s.sent);
        let offsets = &tally.offsets;
        let lost = offsets.gaps + offsets.unseen;
        let out_of_order = tally.total(|s| s.out_of_order);
        let received_by_none = tally.total(|s| s.received_by_none());
        report.text("transport", via.transport.name());
        match via.transport {
            Transport::Poll => {
                report.float("poll interval", "ms", via.poll_interval.as_secs_f64() * 1e3)
            }
            Transport::LongPoll => report.float(
                "long poll timeout",
                "s",
                via.long_poll_timeout.as_secs_f64(),
            ),
            Transport::Websocket | Transport::Sse => {}
        }
        report.int("receivers", "", opts.conns as u64);
        report.int("senders", "", tally.senders.len() as u64);
        report.text("senders transport", "websocket (classic protocol)");
        report.float("rate per sender", "/s", opts.rate);
        report.float("duration", "s", secs);
        report.int("messages sent", "", sent);
        report.float("messages sent", "/s", sent as f64 / secs);
        report.int("deliveries", "", tally.deliveries);
        report.int("deliveries expected", "", sent * measured.receivers_at_end);
        report.float("deliveries", "/s", tally.deliveries_in_window as f64 / secs);
        tally.latency.report(report, "delivery latency");
        report.int("lost", "", lost);
        report.int("duplicates", "", offsets.duplicates);
        report.int("out of order", "", out_of_order);
        report.int("received by none", "", received_by_none);
        report.int("not recoverable", "", offsets.not_recoverable);
        report.int("history on join", "", offsets.history_on_join);
        report.int("presence objects", "", tally.presence);
        report.int("malformed objects", "", tally.malformed);
        let c = &measured.counts;
        let per = |n: u64| n as f64 / tally.deliveries.max(1) as f64;
        report.int("http requests", "", c.requests);
        report.float("requests per delivery", "", per(c.requests));
        report.int("receiver bytes read", "", c.receivers.read);
        report.int("receiver bytes written", "", c.receivers.written);
        report.float("wire bytes per delivery", "", per(c.receivers.total()));
        report.float("bytes read per delivery", "", per(c.receivers.read));
        report.float("bytes written per delivery", "", per(c.receivers.written));
        report.int("sender bytes", "", c.senders.total());
        report.int("connections reopened", "", c.reopened);
        report.int("receivers at end", "", measured.receivers_at_end);
        report.int("disconnected", "", self.disconnected);
        report.int("foreign messages", "", tally.foreign);
        report.int("pings answered", "", tally.pings);
        report.float("client cpu", "%", measured.client_cpu);
        if let Some(usage) = measured.server {
            server_rows(report, usage, tally.deliveries);
            let per_1000 = usage.map_or(f64::NAN, |u| {
                u.cpu.as_secs_f64() * 1e6 / tally.deliveries as f64
            });
            report.float("server cpu per 1000 deliveries", "ms", per_1000);
        }
        report.int("receivers joined", "", joining.joined);
        report.float("join time", "s", joining.elapsed.as_secs_f64());
        joining.latency.report(report, "join");
        report.int("closed cleanly", "", closed);
        report.int("close errors", "", close_errors);
        self.errors.report(report);
        let complete = lost == 0
            && offsets.duplicates == 0
            && out_of_order == 0
            && received_by_none == 0
            && offsets.not_recoverable == 0
            && tally.malformed == 0;
        tally.deliveries > 0
            && complete
            && joining.joined == opts.conns as u64
            && self.errors.total() == 0
            && close_errors == 0
    }
}
