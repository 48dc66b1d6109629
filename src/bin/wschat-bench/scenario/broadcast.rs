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

use crate::conn::Event;
use crate::report::{CpuMeter, Errors, Latency, Progress};
use crate::scenario::{close_all, ended, establish, fmt_p99, Fleet, Settings};

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
pub fn run(settings: &Settings, opts: &Options) -> io::Result<(crate::report::Report, bool)> {
    if settings.plain_tcp {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "broadcast needs a ws:// URL",
        ));
    }
    if !opts.rate.is_finite() || opts.rate <= 0.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--rate must be positive",
        ));
    }
    let senders = opts.senders.min(opts.conns);
    let mut fleet: Fleet<Member> = Fleet::new(settings)?;
    let run_tag = format!("b{:x}", fleet.rng.next_u64() >> 32);
    let setup = establish(&mut fleet, opts.conns, |member, rank| {
        member.rank = rank;
        member.expected = vec![0; senders];
    })?;
    let mut sender_keys = vec![None; senders];
    for (key, peer) in fleet.conns.iter() {
        if let Some(slot) = sender_keys.get_mut(peer.state.rank) {
            *slot = Some(key);
        }
    }

    let mut tally = Tally::new(senders);
    let mut errors = Errors::default();
    let mut disconnected = 0u64;
    let mut progress = Progress::new(settings.progress);
    let cpu = CpuMeter::start();
    let epoch = Instant::now();
    let send_end = epoch + opts.duration;
    let drain_end = send_end + opts.drain;
    let interval = Duration::from_secs_f64(1.0 / opts.rate);

    // Senders start staggered over one interval, so the room sees an even
    // stream rather than `senders` messages at once every interval.
    let mut schedule: BinaryHeap<Reverse<(Instant, usize)>> = (0..senders)
        .filter(|s| sender_keys[*s].is_some())
        .map(|s| Reverse((epoch + interval.mul_f64(s as f64 / senders as f64), s)))
        .collect();
    let mut text = Vec::with_capacity(64);
    let mut interval_sent = 0u64;
    let mut ready = Vec::new();
    loop {
        let now = Instant::now();
        let receivers = fleet.conns.len() as u64;
        let sent: u64 = tally.senders.iter().map(|s| s.sent).sum();
        let all_delivered = tally.deliveries >= sent * receivers;
        if now >= drain_end || (now >= send_end && all_delivered) || fleet.conns.is_empty() {
            break;
        }
        // Send whatever is due, each sender's batch in one write.
        while let Some(&Reverse((due, sender))) = schedule.peek() {
            if due > now {
                break;
            }
            schedule.pop();
            let Some(key) = sender_keys[sender].filter(|k| fleet.conns.contains(*k)) else {
                continue;
            };
            let mut next_due = due;
            let stats = &mut tally.senders[sender];
            let peer = &mut fleet.conns[key];
            let result = peer.conn.send(&mut fleet.rng, |out| {
                while next_due <= now && next_due < send_end {
                    let nanos = now.duration_since(epoch).as_nanos() as u64;
                    text.clear();
                    let _ = write!(text, "{run_tag}:{sender}:{}:{nanos}", stats.sent);
                    out.message(false, &[&text]);
                    stats.sent += 1;
                    interval_sent += 1;
                    next_due += interval;
                }
            });
            if let Err(e) = result {
                errors.add(&e);
                disconnected += 1;
                fleet.remove(key);
                continue;
            }
            if next_due < send_end {
                schedule.push(Reverse((next_due, sender)));
            }
        }

        let mut wake = progress.deadline().min(drain_end);
        if let Some(Reverse((due, _))) = schedule.peek() {
            wake = wake.min(*due);
        }
        fleet.wait(wake, &mut ready)?;
        for &(key, readiness) in &ready {
            let Some(peer) = fleet.conns.get_mut(key) else {
                continue;
            };
            let now = Instant::now();
            let now_nanos = now.duration_since(epoch).as_nanos() as u64;
            let in_window = now <= send_end;
            let member = &mut peer.state;
            let result = peer
                .conn
                .on_ready(readiness, &mut fleet.rng, |event, _| match event {
                    Event::Message {
                        binary: false,
                        data,
                    } => match parse(data, &run_tag) {
                        Some(stamp) => tally.deliver(member, stamp, now_nanos, in_window),
                        None => tally.foreign += 1,
                    },
                    Event::Message { binary: true, .. } => tally.foreign += 1,
                    Event::Ping => tally.pings += 1,
                    Event::Opened | Event::Bytes(_) => {}
                });
            let Some(failure) = ended(result) else {
                continue;
            };
            errors.add(&failure);
            disconnected += 1;
            fleet.remove(key);
        }
        let now = Instant::now();
        if let Some(secs) = progress.tick(now) {
            let lost: u64 = tally.senders.iter().map(|s| s.lost).sum();
            progress.print(
                now,
                format_args!(
                    "{:.0} sent/s, {:.0} deliveries/s, p99 {}, {} open, {lost} gaps, {} errors",
                    interval_sent as f64 / secs,
                    tally.interval_deliveries as f64 / secs,
                    fmt_p99(tally.latency.take_interval_p99()),
                    fleet.conns.len(),
                    errors.total(),
                ),
            );
            interval_sent = 0;
            tally.interval_deliveries = 0;
        }
    }
    progress.finish();
    let client_cpu = cpu.percent();

    // Messages never seen by a receiver still in the room are lost too
    // (receivers that left are not counted: what they missed is unknown).
    for (_, peer) in fleet.conns.iter() {
        for (stats, next) in tally.senders.iter_mut().zip(&peer.state.expected) {
            stats.lost += stats.sent.saturating_sub(*next);
        }
    }
    let receivers_at_end = fleet.conns.len() as u64;
    let teardown = close_all(&mut fleet, |_, _, _| {})?;

    let secs = opts.duration.as_secs_f64();
    let sent: u64 = tally.senders.iter().map(|s| s.sent).sum();
    let lost: u64 = tally.senders.iter().map(|s| s.lost).sum();
    let out_of_order: u64 = tally.senders.iter().map(|s| s.out_of_order).sum();
    let by_sender = |f: fn(&SenderStats) -> u64| -> BTreeMap<String, u64> {
        tally
            .senders
            .iter()
            .enumerate()
            .filter(|(_, s)| f(s) > 0)
            .map(|(i, s)| (format!("sender {i}"), f(s)))
            .collect()
    };
    let mut report = settings.report("broadcast");
    report.int("connections", "", opts.conns as u64);
    report.int("senders", "", senders as u64);
    report.float("rate per sender", "/s", opts.rate);
    report.float("duration", "s", secs);
    report.int("messages sent", "", sent);
    report.float("messages sent", "/s", sent as f64 / secs);
    report.int("deliveries", "", tally.deliveries);
    report.float("deliveries", "/s", tally.deliveries_in_window as f64 / secs);
    tally.latency.report(&mut report, "delivery latency");
    report.int("lost", "", lost);
    report.int("out of order", "", out_of_order);
    let lost_by_sender = by_sender(|s| s.lost);
    if !lost_by_sender.is_empty() {
        report.counts("lost by sender", lost_by_sender);
    }
    let reordered_by_sender = by_sender(|s| s.out_of_order);
    if !reordered_by_sender.is_empty() {
        report.counts("out of order by sender", reordered_by_sender);
    }
    report.int("receivers at end", "", receivers_at_end);
    report.int("disconnected", "", disconnected);
    report.int("foreign messages", "", tally.foreign);
    report.int("pings answered", "", tally.pings);
    report.float("client cpu", "%", client_cpu);
    setup.report(&mut report, opts.conns);
    teardown.report(&mut report);
    let mut all_errors = setup.errors;
    all_errors.merge(errors);
    all_errors.report(&mut report);
    let passed = tally.deliveries > 0 && lost == 0 && out_of_order == 0 && all_errors.total() == 0;
    Ok((report, passed))
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
