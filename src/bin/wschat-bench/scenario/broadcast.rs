//! `broadcast`: fan-out delivery rate, latency and completeness in a room.
//!
//! All `conns` connections join the room and read; the first `senders` of
//! them (in opening order) also send `rate` messages a second each, on a
//! fixed schedule (open loop: a late sender catches up in a burst rather
//! than silently sending less). A message is the text
//! `b{run}:{sender}:{seq}:{nanos}`; the server may put a prefix such as
//! `from{id}:` before it. Every receiver tracks the next sequence number it
//! expects from each sender, which yields losses and reorderings per sender.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use crate::conn::{ConnError, Event};
use crate::report::{CpuMeter, Errors, Latency, Progress, Report};
use crate::scenario::{
    close_all, ended, establish, fmt_p99, invalid_input, report_fleet, Fleet, Settings,
};

/// Options of the `broadcast` scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections in the room.
    pub conns: usize,
    /// How many of them send.
    pub senders: usize,
    /// Messages per second per sender.
    pub rate: f64,
    /// How long the senders send.
    pub duration: Duration,
    /// How long to wait after the last send for deliveries to arrive.
    pub drain: Duration,
}

/// Per-connection state.
#[derive(Debug, Default)]
struct Member {
    /// Rank in opening order; ranks below `senders` send.
    rank: usize,
    /// Next sequence number expected from each sender.
    expected: Vec<u64>,
}

/// One of our messages, parsed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    sender: usize,
    seq: u64,
    nanos: u64,
}

/// Parses `...b{run}:{sender}:{seq}:{nanos}`, whatever prefix the server
/// added; `None` for a message of another run or another client.
fn parse(data: &[u8], run_tag: &str) -> Option<Stamp> {
    let text = std::str::from_utf8(data).ok()?;
    let mut fields = text.rsplitn(4, ':');
    let nanos = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let sender = fields.next()?.parse().ok()?;
    fields
        .next()?
        .ends_with(run_tag)
        .then_some(Stamp { sender, seq, nanos })
}

/// Per-sender counts.
#[derive(Debug, Default, Clone)]
struct SenderStats {
    sent: u64,
    /// Gaps seen by receivers (a late arrival fills one back in).
    lost: u64,
    out_of_order: u64,
}

/// Counters of the run.
#[derive(Debug)]
struct Tally {
    latency: Latency,
    deliveries: u64,
    deliveries_in_window: u64,
    interval_deliveries: u64,
    foreign: u64,
    pings: u64,
    senders: Vec<SenderStats>,
}

impl Tally {
    /// Nothing counted yet, for `senders` senders.
    fn new(senders: usize) -> Tally {
        Tally {
            latency: Latency::new(),
            deliveries: 0,
            deliveries_in_window: 0,
            interval_deliveries: 0,
            foreign: 0,
            pings: 0,
            senders: vec![SenderStats::default(); senders],
        }
    }

    /// A per-sender count summed over all senders.
    fn total(&self, count: fn(&SenderStats) -> u64) -> u64 {
        self.senders.iter().map(count).sum()
    }

    /// The senders for which `count` is not zero, for the report.
    fn by_sender(&self, count: fn(&SenderStats) -> u64) -> BTreeMap<String, u64> {
        self.senders
            .iter()
            .enumerate()
            .filter(|(_, s)| count(s) > 0)
            .map(|(i, s)| (format!("sender {i}"), count(s)))
            .collect()
    }

    /// One delivery of a message of ours to `member`.
    fn deliver(&mut self, member: &mut Member, stamp: Stamp, now_nanos: u64, in_window: bool) {
        let Some(stats) = self.senders.get_mut(stamp.sender) else {
            self.foreign += 1;
            return;
        };
        self.deliveries += 1;
        self.interval_deliveries += 1;
        if in_window {
            self.deliveries_in_window += 1;
        }
        self.latency
            .record(Duration::from_nanos(now_nanos.saturating_sub(stamp.nanos)));
        let next = &mut member.expected[stamp.sender];
        if stamp.seq >= *next {
            stats.lost += stamp.seq - *next;
            *next = stamp.seq + 1;
        } else {
            stats.out_of_order += 1;
            stats.lost = stats.lost.saturating_sub(1);
        }
    }
}

/// Runs the scenario; the flag says whether it passed (deliveries arrived,
/// nothing lost or reordered, no connection failed).
pub fn run(settings: &Settings, opts: &Options) -> io::Result<(Report, bool)> {
    if settings.plain_tcp {
        return Err(invalid_input("broadcast needs a ws:// URL"));
    }
    if !opts.rate.is_finite() || opts.rate <= 0.0 {
        return Err(invalid_input("--rate must be positive"));
    }
    let senders = opts.senders.min(opts.conns);
    let mut fleet: Fleet<Member> = Fleet::new(settings)?;
    let run_tag = format!("b{:x}", fleet.rng.next_u64() >> 32);
    let setup = establish(&mut fleet, opts.conns, |member, rank| {
        member.rank = rank;
        member.expected = vec![0; senders];
    })?;
    let mut progress = Progress::new(settings.progress);
    let cpu = CpuMeter::start();
    let mut room = Room::new(fleet, run_tag, senders, opts);
    room.run(&mut progress)?;
    progress.finish();
    let client_cpu = cpu.percent();
    let receivers_at_end = room.count_unseen();
    let teardown = close_all(&mut room.fleet, |_, _, _| {})?;

    let mut report = settings.report("broadcast");
    let complete = room.report(&mut report, opts, client_cpu, receivers_at_end);
    let errors = report_fleet(&mut report, opts.conns, setup, &teardown, room.errors);
    Ok((report, complete && errors == 0))
}

/// The room while the run goes on: who sends when, and what arrived.
#[derive(Debug)]
struct Room {
    fleet: Fleet<Member>,
    /// Marks this run's messages, so anyone else's count as foreign.
    run_tag: String,
    /// Each sender's connection key, by rank (`None`: it did not open).
    sender_keys: Vec<Option<usize>>,
    tally: Tally,
    /// Connections lost after opening, by cause.
    errors: Errors,
    disconnected: u64,
    /// When each sender's next message is due, earliest first.
    schedule: BinaryHeap<Reverse<(Instant, usize)>>,
    /// When sending started: message timestamps count from here.
    epoch: Instant,
    send_end: Instant,
    drain_end: Instant,
    /// Time between two messages of one sender.
    interval: Duration,
    /// One message's text, reused.
    text: Vec<u8>,
    interval_sent: u64,
}

impl Room {
    /// The opened `fleet`, with sending starting now.
    fn new(fleet: Fleet<Member>, run_tag: String, senders: usize, opts: &Options) -> Room {
        let mut sender_keys = vec![None; senders];
        for (key, peer) in fleet.conns.iter() {
            if let Some(slot) = sender_keys.get_mut(peer.state.rank) {
                *slot = Some(key);
            }
        }
        let epoch = Instant::now();
        let send_end = epoch + opts.duration;
        let interval = Duration::from_secs_f64(1.0 / opts.rate);
        // Senders start staggered over one interval, so the room sees an even
        // stream rather than `senders` messages at once every interval.
        let schedule = (0..senders)
            .filter(|s| sender_keys[*s].is_some())
            .map(|s| Reverse((epoch + interval.mul_f64(s as f64 / senders as f64), s)))
            .collect();
        Room {
            fleet,
            run_tag,
            sender_keys,
            tally: Tally::new(senders),
            errors: Errors::default(),
            disconnected: 0,
            schedule,
            epoch,
            send_end,
            drain_end: send_end + opts.drain,
            interval,
            text: Vec::with_capacity(64),
            interval_sent: 0,
        }
    }

    /// Sends on schedule and takes in deliveries until the run is over.
    fn run(&mut self, progress: &mut Progress) -> io::Result<()> {
        loop {
            let now = Instant::now();
            if self.is_over(now) {
                return Ok(());
            }
            self.send_due(now);
            let mut wake = progress.deadline().min(self.drain_end);
            if let Some(Reverse((due, _))) = self.schedule.peek() {
                wake = wake.min(*due);
            }
            self.fleet.wait(wake)?;
            self.receive();
            let now = Instant::now();
            if let Some(secs) = progress.tick(now) {
                self.print_progress(progress, now, secs);
            }
        }
    }

    /// Whether the run is over at `now`: the drain time is up, everything
    /// sent has arrived everywhere after sending stopped, or nobody is left.
    fn is_over(&self, now: Instant) -> bool {
        let receivers = self.fleet.conns.len() as u64;
        let sent = self.tally.total(|s| s.sent);
        let all_delivered = self.tally.deliveries >= sent * receivers;
        now >= self.drain_end
            || (now >= self.send_end && all_delivered)
            || self.fleet.conns.is_empty()
    }

    /// Sends whatever is due at `now`, each sender's batch in one write.
    fn send_due(&mut self, now: Instant) {
        while let Some(&Reverse((due, sender))) = self.schedule.peek() {
            if due > now {
                break;
            }
            self.schedule.pop();
            let Some(key) = self.sender_keys[sender].filter(|k| self.fleet.conns.contains(*k))
            else {
                continue;
            };
            match self.send_batch(key, sender, due, now) {
                Ok(next_due) if next_due < self.send_end => {
                    self.schedule.push(Reverse((next_due, sender)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.errors.add(&e);
                    self.disconnected += 1;
                    self.fleet.remove(key);
                }
            }
        }
    }

    /// Sends every message of `sender` (on connection `key`) due from
    /// `due` to `now`, so a late sender catches up; returns when its next
    /// message is due.
    fn send_batch(
        &mut self,
        key: usize,
        sender: usize,
        due: Instant,
        now: Instant,
    ) -> Result<Instant, ConnError> {
        let mut next_due = due;
        let stats = &mut self.tally.senders[sender];
        let peer = &mut self.fleet.conns[key];
        peer.conn.send(&mut self.fleet.rng, |out| {
            while next_due <= now && next_due < self.send_end {
                let nanos = now.duration_since(self.epoch).as_nanos() as u64;
                self.text.clear();
                let _ = write!(
                    self.text,
                    "{}:{sender}:{}:{nanos}",
                    self.run_tag, stats.sent
                );
                out.message(false, &[&self.text]);
                stats.sent += 1;
                self.interval_sent += 1;
                next_due += self.interval;
            }
        })?;
        Ok(next_due)
    }

    /// Takes in what the last wait found ready: deliveries, pings, and
    /// connections lost.
    fn receive(&mut self) {
        let (epoch, send_end) = (self.epoch, self.send_end);
        let (run_tag, tally) = (&self.run_tag, &mut self.tally);
        let (errors, disconnected) = (&mut self.errors, &mut self.disconnected);
        self.fleet.for_each_ready(|peer, rng, readiness| {
            let now = Instant::now();
            let now_nanos = now.duration_since(epoch).as_nanos() as u64;
            let in_window = now <= send_end;
            let member = &mut peer.state;
            let result = peer.conn.on_ready(readiness, rng, |event, _| match event {
                Event::Message {
                    binary: false,
                    data,
                } => match parse(data, run_tag) {
                    Some(stamp) => tally.deliver(member, stamp, now_nanos, in_window),
                    None => tally.foreign += 1,
                },
                Event::Message { binary: true, .. } => tally.foreign += 1,
                Event::Ping => tally.pings += 1,
                Event::Opened | Event::Bytes(_) => {}
            });
            if !ended(result, errors) {
                return false;
            }
            *disconnected += 1;
            true
        });
    }

    /// The progress line; `secs` since the previous one.
    fn print_progress(&mut self, progress: &Progress, now: Instant, secs: f64) {
        let lost = self.tally.total(|s| s.lost);
        progress.print(
            now,
            format_args!(
                "{:.0} sent/s, {:.0} deliveries/s, p99 {}, {} open, {lost} gaps, {} errors",
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

    /// Counts as lost what the receivers still in the room never saw
    /// (receivers that left are not counted: what they missed is unknown);
    /// returns how many receivers that is.
    fn count_unseen(&mut self) -> u64 {
        for (_, peer) in self.fleet.conns.iter() {
            for (stats, next) in self.tally.senders.iter_mut().zip(&peer.state.expected) {
                stats.lost += stats.sent.saturating_sub(*next);
            }
        }
        self.fleet.conns.len() as u64
    }

    /// Adds the run's own rows to `report`; returns whether messages were
    /// delivered and every one arrived, in order.
    fn report(
        &self,
        report: &mut Report,
        opts: &Options,
        client_cpu: f64,
        receivers_at_end: u64,
    ) -> bool {
        let tally = &self.tally;
        let secs = opts.duration.as_secs_f64();
        let sent = tally.total(|s| s.sent);
        let lost = tally.total(|s| s.lost);
        let out_of_order = tally.total(|s| s.out_of_order);
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
        let lost_by_sender = tally.by_sender(|s| s.lost);
        if !lost_by_sender.is_empty() {
            report.counts("lost by sender", lost_by_sender);
        }
        let reordered_by_sender = tally.by_sender(|s| s.out_of_order);
        if !reordered_by_sender.is_empty() {
            report.counts("out of order by sender", reordered_by_sender);
        }
        report.int("receivers at end", "", receivers_at_end);
        report.int("disconnected", "", self.disconnected);
        report.int("foreign messages", "", tally.foreign);
        report.int("pings answered", "", tally.pings);
        report.float("client cpu", "%", client_cpu);
        tally.deliveries > 0 && lost == 0 && out_of_order == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_a_server_prefix() {
        let expected = Some(Stamp {
            sender: 3,
            seq: 17,
            nanos: 123456789,
        });
        assert_eq!(parse(b"from42:b1f:3:17:123456789", "b1f"), expected);
        assert_eq!(parse(b"b1f:3:17:123456789", "b1f"), expected);
        assert_eq!(parse(b"from42:b2a:3:17:123456789", "b1f"), None);
        assert_eq!(parse(b"from42:hello", "b1f"), None);
        assert_eq!(parse(b"b1f:x:17:1", "b1f"), None);
    }

    #[test]
    fn gaps_and_late_arrivals() {
        let mut tally = Tally::new(2);
        let mut member = Member {
            rank: 0,
            expected: vec![0; 2],
        };
        for seq in [0, 1, 3, 2, 4] {
            let stamp = Stamp {
                sender: 1,
                seq,
                nanos: 0,
            };
            tally.deliver(&mut member, stamp, 10, true);
        }
        assert_eq!(tally.senders[1].lost, 0);
        assert_eq!(tally.senders[1].out_of_order, 1);
        assert_eq!(member.expected[1], 5);
        let stranger = Stamp {
            sender: 7,
            seq: 0,
            nanos: 0,
        };
        tally.deliver(&mut member, stranger, 10, true);
        assert_eq!(tally.foreign, 1);
        assert_eq!(tally.deliveries, 5);
    }
}
