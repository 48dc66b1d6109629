//! `echo`: message throughput and round trip through an echo endpoint.
//!
//! Each connection keeps `pipeline` messages in flight: every echo that
//! comes back is checked byte for byte and answered with a new message, and
//! all the new messages of one read go out in one write. Each message
//! carries its sequence number, so a reordered, corrupted or foreign echo
//! shows up as a mismatch. With `--tcp` the same runs over plain TCP: the
//! "messages" are `size`-byte slices of the byte stream.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::conn::{Event, Outbox};
use crate::report::{CpuMeter, Errors, Latency, Progress, Report};
use crate::rng::Rng;
use crate::scenario::{
    close_all, ended, establish, fmt_p99, invalid_input, report_fleet, Fleet, Settings,
};

/// Options of the `echo` scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections.
    pub conns: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Measurement time, after all connections are open.
    pub duration: Duration,
    /// Binary messages instead of text.
    pub binary: bool,
}

/// What every message looks like: a fixed random template with the
/// sequence number written over its first (up to) 16 bytes in hex.
#[derive(Debug)]
pub struct Payload {
    template: Vec<u8>,
}

/// Hex digits of the sequence number stamped into each payload.
const STAMP: usize = 16;

impl Payload {
    /// A template of `size` bytes: letters and digits for text (valid
    /// UTF-8), any bytes for binary.
    pub fn new(rng: &mut Rng, size: usize, binary: bool) -> Payload {
        let mut template = vec![0u8; size];
        rng.fill(&mut template);
        if !binary {
            const ALPHABET: &[u8] =
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            for b in &mut template {
                *b = ALPHABET[usize::from(*b) % ALPHABET.len()];
            }
        }
        Payload { template }
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.template.len()
    }

    /// The stamp for `seq`: its lowest hex digits, most significant first.
    fn stamp(&self, seq: u64) -> ([u8; STAMP], usize) {
        let n = self.template.len().min(STAMP);
        let mut stamp = [0u8; STAMP];
        for (i, digit) in stamp[..n].iter_mut().rev().enumerate() {
            *digit = b"0123456789abcdef"[((seq >> (4 * i)) & 0xF) as usize];
        }
        (stamp, n)
    }

    /// Queues message `seq`: the stamp, then the rest of the template.
    pub fn send(&self, out: &mut Outbox<'_>, seq: u64, binary: bool) {
        let (stamp, n) = self.stamp(seq);
        out.message(binary, &[&stamp[..n], &self.template[n..]]);
    }

    /// Whether `part` equals bytes `offset..offset + part.len()` of
    /// message `seq`; with offset 0 and the whole length, the whole message.
    pub fn matches(&self, seq: u64, offset: usize, part: &[u8]) -> bool {
        let end = offset + part.len();
        if end > self.template.len() {
            return false;
        }
        let (stamp, n) = self.stamp(seq);
        // The part may start in the stamp, in the template, or straddle both.
        let split = n.clamp(offset, end);
        let (head, tail) = part.split_at(split - offset);
        (head.is_empty() || head == &stamp[offset..split]) && tail == &self.template[split..end]
    }
}

/// Per-connection state.
#[derive(Debug, Default)]
struct Echo {
    /// Sequence number of the next message to send.
    next_seq: u64,
    /// Sequence number the next echo must carry.
    expect_seq: u64,
    /// Send times of the messages in flight, oldest first.
    sent_at: VecDeque<Instant>,
    /// Plain TCP: bytes of the current message received so far.
    tcp_offset: usize,
    /// Plain TCP: the current message already differs.
    tcp_bad: bool,
}

impl Echo {
    /// Queues message `next_seq`.
    fn send(&mut self, out: &mut Outbox<'_>, payload: &Payload, binary: bool, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sent_at.push_back(now);
        payload.send(out, seq, binary);
    }
}

/// Counters of the run.
#[derive(Debug)]
struct Tally {
    latency: Latency,
    /// Echoes received inside the measured window, and their bytes.
    messages: u64,
    bytes: u64,
    /// Echoes whose bytes (or type) differ from what was sent, at any time.
    mismatched: u64,
    interval_messages: u64,
    pings: u64,
    /// Connections lost after opening, by cause.
    errors: Errors,
}

impl Tally {
    /// Nothing counted yet.
    fn new() -> Tally {
        Tally {
            latency: Latency::new(),
            messages: 0,
            bytes: 0,
            mismatched: 0,
            interval_messages: 0,
            pings: 0,
            errors: Errors::default(),
        }
    }
}

/// The scenario's fixed inputs, shared by all connections.
#[derive(Debug)]
struct Plan {
    payload: Payload,
    binary: bool,
}

impl Plan {
    /// One complete echo of message `expect_seq`: check, time, replace.
    fn on_echo(
        &self,
        st: &mut Echo,
        tally: &mut Tally,
        (ok, len): (bool, usize),
        out: &mut Outbox<'_>,
        send_at: Option<Instant>,
    ) {
        st.expect_seq += 1;
        if !ok {
            tally.mismatched += 1;
        }
        let sent = st.sent_at.pop_front();
        if let Some(now) = send_at {
            if let Some(sent) = sent {
                tally.latency.record(now.duration_since(sent));
            }
            tally.messages += 1;
            tally.interval_messages += 1;
            tally.bytes += len as u64;
            st.send(out, &self.payload, self.binary, now);
        }
    }

    /// Handles one event; `send_at` is `Some(now)` while measuring (echoes
    /// count and get replaced) and `None` while draining.
    fn on_event(
        &self,
        st: &mut Echo,
        tally: &mut Tally,
        event: Event<'_>,
        out: &mut Outbox<'_>,
        send_at: Option<Instant>,
    ) {
        match event {
            Event::Message { binary, data } => {
                let ok = binary == self.binary
                    && data.len() == self.payload.len()
                    && self.payload.matches(st.expect_seq, 0, data);
                self.on_echo(st, tally, (ok, data.len()), out, send_at);
            }
            Event::Bytes(mut chunk) => {
                let size = self.payload.len();
                while !chunk.is_empty() {
                    let take = (size - st.tcp_offset).min(chunk.len());
                    if !self
                        .payload
                        .matches(st.expect_seq, st.tcp_offset, &chunk[..take])
                    {
                        st.tcp_bad = true;
                    }
                    st.tcp_offset += take;
                    chunk = &chunk[take..];
                    if st.tcp_offset == size {
                        let ok = !std::mem::take(&mut st.tcp_bad);
                        st.tcp_offset = 0;
                        self.on_echo(st, tally, (ok, size), out, send_at);
                    }
                }
            }
            Event::Ping => tally.pings += 1,
            Event::Opened => {}
        }
    }
}

/// Runs the scenario; the flag says whether it passed (echoes came back,
/// none differed, no connection failed).
pub fn run(settings: &Settings, opts: &Options) -> io::Result<(Report, bool)> {
    if settings.plain_tcp && opts.size == 0 {
        return Err(invalid_input("--tcp needs --size of at least 1"));
    }
    let mut fleet: Fleet<Echo> = Fleet::new(settings)?;
    let plan = Plan {
        payload: Payload::new(&mut fleet.rng, opts.size, opts.binary),
        binary: opts.binary,
    };
    let setup = establish(&mut fleet, opts.conns, |_, _| {})?;
    let mut tally = Tally::new();
    let mut progress = Progress::new(settings.progress);
    let cpu = CpuMeter::start();
    let start = Instant::now();
    fill_pipelines(&mut fleet, &plan, &mut tally, opts.pipeline, start);
    measure(&mut fleet, &plan, &mut tally, &mut progress, opts, start)?;
    let client_cpu = cpu.percent();
    let open_at_end = fleet.conns.len();
    // Echoes still in flight are checked too, but no longer timed.
    let teardown = close_all(&mut fleet, |st, event, out| {
        plan.on_event(st, &mut tally, event, out, None)
    })?;

    let secs = opts.duration.as_secs_f64();
    let mut report = settings.report("echo");
    report.int("connections", "", opts.conns as u64);
    report.int("message size", "B", opts.size as u64);
    report.text("message type", if opts.binary { "binary" } else { "text" });
    report.int("pipeline", "", opts.pipeline as u64);
    report.float("duration", "s", secs);
    report.int("messages", "", tally.messages);
    report.float("messages", "/s", tally.messages as f64 / secs);
    report.float("payload each way", "MB/s", tally.bytes as f64 / secs / 1e6);
    tally.latency.report(&mut report, "round trip");
    report.int("mismatched echoes", "", tally.mismatched);
    report.float("client cpu", "%", client_cpu);
    report.int("pings answered", "", tally.pings);
    report.int("open at end", "", open_at_end as u64);
    let errors = report_fleet(&mut report, opts.conns, setup, &teardown, tally.errors);
    let passed = tally.messages > 0 && tally.mismatched == 0 && errors == 0;
    Ok((report, passed))
}

/// Puts `pipeline` messages in flight on every connection, one write per
/// connection.
fn fill_pipelines(
    fleet: &mut Fleet<Echo>,
    plan: &Plan,
    tally: &mut Tally,
    pipeline: usize,
    start: Instant,
) {
    let keys: Vec<usize> = fleet.conns.iter().map(|(k, _)| k).collect();
    for key in keys {
        let peer = &mut fleet.conns[key];
        let st = &mut peer.state;
        let sent = peer.conn.send(&mut fleet.rng, |out| {
            for _ in 0..pipeline {
                st.send(out, &plan.payload, plan.binary, start);
            }
        });
        if let Err(e) = sent {
            tally.errors.add(&e);
            fleet.remove(key);
        }
    }
}

/// Answers every echo with a new message until the measured window that
/// began at `start` is over, with a progress line a second.
fn measure(
    fleet: &mut Fleet<Echo>,
    plan: &Plan,
    tally: &mut Tally,
    progress: &mut Progress,
    opts: &Options,
    start: Instant,
) -> io::Result<()> {
    let deadline = start + opts.duration;
    while !fleet.conns.is_empty() && Instant::now() < deadline {
        fleet.wait(progress.deadline().min(deadline))?;
        fleet.for_each_ready(|peer, rng, readiness| {
            let st = &mut peer.state;
            let now = Instant::now();
            let measuring = (now < deadline).then_some(now);
            let result = peer.conn.on_ready(readiness, rng, |event, out| {
                plan.on_event(st, tally, event, out, measuring)
            });
            ended(result, &mut tally.errors)
        });
        let now = Instant::now();
        if let Some(secs) = progress.tick(now) {
            let rate = tally.interval_messages as f64 / secs;
            progress.print(
                now,
                format_args!(
                    "{rate:.0} msg/s, {:.1} MB/s, p99 {}, {} open, {} mismatched, {} errors",
                    rate * opts.size as f64 / 1e6,
                    fmt_p99(tally.latency.take_interval_p99()),
                    fleet.conns.len(),
                    tally.mismatched,
                    tally.errors.total(),
                ),
            );
            tally.interval_messages = 0;
        }
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Message `seq` as the client sends it.
    fn build(p: &Payload, seq: u64) -> Vec<u8> {
        let (stamp, n) = p.stamp(seq);
        let mut message = stamp[..n].to_vec();
        message.extend_from_slice(&p.template[n..]);
        message
    }

    #[test]
    fn payload_round_trip_and_partial_matches() {
        let mut rng = Rng::with_seed(9);
        for size in [0, 1, 5, 16, 17, 100] {
            for binary in [false, true] {
                let p = Payload::new(&mut rng, size, binary);
                let buf = build(&p, 0xABCDEF);
                assert_eq!(buf.len(), size);
                assert!(p.matches(0xABCDEF, 0, &buf));
                if !binary {
                    assert!(std::str::from_utf8(&buf).is_ok());
                }
                for cut in 0..=size {
                    assert!(p.matches(0xABCDEF, 0, &buf[..cut]));
                    assert!(p.matches(0xABCDEF, cut, &buf[cut..]));
                }
                if size > 0 {
                    assert!(!p.matches(0xABCDEE, 0, &buf), "size {size}");
                    let mut bad = buf.clone();
                    bad[size - 1] ^= 1;
                    assert!(!p.matches(0xABCDEF, 0, &bad));
                }
            }
        }
    }

    #[test]
    fn stamp_is_readable_hex() {
        let mut rng = Rng::with_seed(1);
        let p = Payload::new(&mut rng, 20, false);
        let buf = build(&p, 255);
        assert_eq!(&buf[..16], b"00000000000000ff");
    }
}
