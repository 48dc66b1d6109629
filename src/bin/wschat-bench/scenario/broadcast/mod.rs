//! `broadcast`: fan-out delivery rate, latency and completeness in a room.
//!
//! All `conns` connections join the room and read; the first `senders` of
//! them (in opening order) also send `rate` messages a second each, on a
//! fixed schedule (open loop: a late sender catches up in a burst rather
//! than silently sending less). A message is the text
//! `b{run}:{sender}:{seq}:{nanos}`; the server may put a prefix such as
//! `from{id}:` before it. Every receiver tracks the next sequence number it
//! expects from each sender, which yields losses and reorderings per sender.
//!
//! With `--protocol wschat.v1` every connection offers that subprotocol and
//! reads JSON objects instead (the text is the same, inside `"text"`), and
//! `lost` counts offsets, the room's own numbering, which the server
//! promises about (see `position`); `received by none` counts messages of
//! ours that never made it into the room at all. With `--recover`, a
//! member the server closes as a slow consumer (1008), or that the tool
//! drops itself (`--drop-every`), reconnects (after `--reconnect-delay`)
//! with `?since=EPOCH:OFFSET` and keeps its counts, so what it missed must
//! come back through the replay: `recovered` counts it, `lost` and
//! `duplicates` prove it complete.

mod position;
mod receive;
mod summary;
mod tally;
pub mod transport;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use crate::conn::{ConnError, Event};
use crate::report::{CpuMeter, Errors, Progress, Report};
use crate::scenario::{close_all, establish_reading, invalid_input, report_fleet, Fleet, Settings};
use tally::{Member, Moment, Tally};

/// How long a sender whose connection is being reopened waits before its
/// turn comes again (what falls due meanwhile is sent in a burst after).
const SENDER_RETRY: Duration = Duration::from_millis(5);

/// What the members speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// No subprotocol offered: text frames as the server relays them
    /// (`from{id}:` and the text, with wschat).
    Classic,
    /// `wschat.v1`: JSON objects with offsets, and recovery.
    #[value(name = "wschat.v1")]
    V1,
}

impl Protocol {
    /// The subprotocol every upgrade offers.
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Protocol::Classic => None,
            Protocol::V1 => Some("wschat.v1"),
        }
    }

    /// The name in the report.
    fn name(self) -> &'static str {
        self.subprotocol().unwrap_or("classic")
    }
}

/// Members the tool drops itself while sending, so recovery is exercised
/// even without slow consumers.
#[derive(Debug, Clone, Copy)]
pub struct Drops {
    /// Time between two rounds.
    pub every: Duration,
    /// Share of the open receivers (senders excepted) each round drops,
    /// at least one.
    pub fraction: f64,
}

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
    /// What the members speak.
    pub protocol: Protocol,
    /// Reconnect members closed with 1008 or dropped, with their position.
    pub recover: bool,
    /// Drops by the tool itself (needs `recover`).
    pub drops: Option<Drops>,
    /// How long a dropped member stays away before it reconnects.
    pub reconnect_delay: Duration,
    /// The server's process: its CPU time over the run is reported, per
    /// delivery.
    pub server_pid: Option<u32>,
    /// Receivers on this transport, senders apart (see `transport`);
    /// `None`: every member both receives and may send, over WebSocket.
    pub via: Option<transport::Via>,
}

/// Runs the scenario; the flag says whether it passed (deliveries arrived,
/// nothing lost, reordered or duplicated, no connection failed).
pub fn run(settings: &Settings, opts: &Options) -> io::Result<(Report, bool)> {
    if let Some(via) = opts.via {
        return transport::run(settings, opts, via);
    }
    if settings.plain_tcp {
        return Err(invalid_input("broadcast needs a ws:// URL"));
    }
    if !opts.rate.is_finite() || opts.rate <= 0.0 {
        return Err(invalid_input("--rate must be positive"));
    }
    if opts.recover && opts.protocol != Protocol::V1 {
        return Err(invalid_input("--recover needs --protocol wschat.v1"));
    }
    if opts.drops.is_some() && !opts.recover {
        return Err(invalid_input("--drop-every needs --recover"));
    }
    if let Some(d) = opts.drops {
        if !(d.fraction > 0.0 && d.fraction <= 1.0) || d.every.is_zero() {
            return Err(invalid_input(
                "--drop-fraction must be in (0, 1] and --drop-every positive",
            ));
        }
    }
    let mut settings = settings.clone();
    settings.protocol = opts.protocol.subprotocol();
    let senders = opts.senders.min(opts.conns);
    let mut fleet: Fleet<Member> = Fleet::new(&settings)?;
    let run_tag = format!("b{:x}", fleet.rng.next_u64() >> 32);
    let mut tally = Tally::new(senders);
    // Welcomes, presence and the history on join arrive while the others
    // are still joining: positions start there.
    let before = Moment {
        nanos: 0,
        in_window: false,
    };
    let setup = establish_reading(
        &mut fleet,
        opts.conns,
        |member, rank| {
            member.rank = rank;
            member.expected = vec![0; senders];
        },
        |member, event| match event {
            Event::Message {
                binary: false,
                data,
            } => match opts.protocol {
                Protocol::Classic => tally.classic(member, data, &run_tag, before),
                Protocol::V1 => tally.object(member, data, &run_tag, before),
            },
            Event::Message { binary: true, .. } => tally.foreign += 1,
            Event::Ping => tally.pings += 1,
            Event::Opened | Event::Bytes(_) => {}
        },
    )?;
    let mut progress = Progress::new(settings.progress);
    let cpu = CpuMeter::start();
    let server = opts.server_pid.map(CpuMeter::of_process);
    let mut room = Room::new(fleet, run_tag, tally, opts, &settings.target.path);
    room.run(&mut progress)?;
    progress.finish();
    let client_cpu = cpu.percent();
    let server = server.as_ref().map(CpuMeter::usage);
    let receivers_at_end = room.count_unseen();
    let teardown = close_all(&mut room.fleet, |_, _, _| {})?;

    let mut report = settings.report("broadcast");
    let complete = room.report(&mut report, opts, client_cpu, receivers_at_end, server);
    let errors = report_fleet(&mut report, opts.conns, setup, &teardown, room.errors);
    Ok((report, complete && errors == 0))
}

/// Reconnections: who waits to be reopened, and the counts.
#[derive(Debug, Default)]
struct Recovery {
    /// Reconnect after a 1008 close or a drop.
    enabled: bool,
    /// Drops by the tool, and when the next round is due.
    drops: Option<(Drops, Instant)>,
    /// How long a member stays away before it is reopened.
    delay: Duration,
    /// Members whose connection ended, to reopen with their position when
    /// their time comes.
    pending: Vec<(Instant, Member)>,
    /// Connections reopened.
    reconnects: u64,
    /// Closed by the server with 1008 (slow consumer).
    server_drops: u64,
    /// Dropped by the tool.
    our_drops: u64,
    /// Reopened without a position (dropped before their welcome).
    without_position: u64,
}

/// The room while the run goes on: who sends when, and what arrived.
#[derive(Debug)]
struct Room {
    fleet: Fleet<Member>,
    protocol: Protocol,
    /// The request target of the room, to which a reconnect adds `since`.
    path: String,
    /// Marks this run's messages, so anyone else's count as foreign.
    run_tag: String,
    /// Each sender's connection key, by rank (`None`: it did not open).
    sender_keys: Vec<Option<usize>>,
    tally: Tally,
    /// Connections lost after opening, by cause.
    errors: Errors,
    disconnected: u64,
    recovery: Recovery,
    /// When each sender's turn comes, earliest first.
    schedule: BinaryHeap<Reverse<(Instant, usize)>>,
    /// When each sender's next message is due.
    due: Vec<Instant>,
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
    /// The opened `fleet` in the room at `path`, with sending starting now.
    fn new(
        fleet: Fleet<Member>,
        run_tag: String,
        tally: Tally,
        opts: &Options,
        path: &str,
    ) -> Room {
        let senders = tally.senders.len();
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
        let due: Vec<Instant> = (0..senders)
            .map(|s| epoch + interval.mul_f64(s as f64 / senders as f64))
            .collect();
        let schedule = (0..senders)
            .filter(|s| sender_keys[*s].is_some())
            .map(|s| Reverse((due[s], s)))
            .collect();
        Room {
            fleet,
            protocol: opts.protocol,
            path: path.to_string(),
            run_tag,
            sender_keys,
            tally,
            errors: Errors::default(),
            disconnected: 0,
            recovery: Recovery {
                enabled: opts.recover,
                drops: opts.drops.map(|d| (d, epoch + d.every)),
                delay: opts.reconnect_delay,
                ..Recovery::default()
            },
            schedule,
            due,
            epoch,
            send_end,
            drain_end: send_end + opts.drain,
            interval,
            text: Vec::with_capacity(64),
            interval_sent: 0,
        }
    }

    /// Sends on schedule, takes in deliveries and drops members on
    /// schedule until the run is over.
    fn run(&mut self, progress: &mut Progress) -> io::Result<()> {
        loop {
            let now = Instant::now();
            if self.is_over(now) {
                return Ok(());
            }
            self.send_due(now);
            self.drop_due(now);
            self.reopen_due(now);
            let mut wake = progress.deadline().min(self.drain_end);
            if let Some(Reverse((due, _))) = self.schedule.peek() {
                wake = wake.min(*due);
            }
            if let Some((_, next)) = self.recovery.drops {
                wake = wake.min(next);
            }
            if let Some(due) = self.recovery.pending.iter().map(|(due, _)| *due).min() {
                wake = wake.min(due);
            }
            self.fleet.wait(wake)?;
            self.receive();
            let now = Instant::now();
            if let Some(secs) = progress.tick(now) {
                self.give_up_stuck_reconnects(now);
                self.print_progress(progress, now, secs);
            }
        }
    }

    /// Whether the run is over at `now`: the drain time is up, everything
    /// sent has arrived at every member after sending stopped, or nobody is
    /// left.
    fn is_over(&self, now: Instant) -> bool {
        if now >= self.drain_end || self.fleet.conns.is_empty() {
            return true;
        }
        if now < self.send_end || !self.recovery.pending.is_empty() {
            return false;
        }
        // The sum first: cheap, and short of it some member is missing
        // something (unless messages were lost, and then the drain runs out).
        let members = self.fleet.conns.len() as u64;
        if self.tally.deliveries < self.tally.total(|s| s.sent) * members {
            return false;
        }
        let senders = &self.tally.senders;
        self.fleet.conns.iter().all(|(_, peer)| {
            let expected = &peer.state.expected;
            peer.conn.is_open() && expected.iter().zip(senders).all(|(e, s)| *e >= s.sent)
        })
    }

    /// Sends whatever is due at `now`, each sender's batch in one write.
    fn send_due(&mut self, now: Instant) {
        while let Some(&Reverse((turn, sender))) = self.schedule.peek() {
            if turn > now {
                break;
            }
            self.schedule.pop();
            // The rank check: a key freed by a sender that left for good
            // may be some other member's by now.
            let conns = &self.fleet.conns;
            let Some(key) = self.sender_keys[sender]
                .filter(|k| conns.get(*k).is_some_and(|p| p.state.rank == sender))
            else {
                continue;
            };
            if !conns[key].conn.is_open() {
                // Reconnecting: its messages wait, and go out in a burst.
                self.schedule.push(Reverse((now + SENDER_RETRY, sender)));
                continue;
            }
            match self.send_batch(key, sender, now) {
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

    /// Sends every message of `sender` (on connection `key`) due until
    /// `now`, so a late sender catches up; returns when its next message
    /// is due.
    fn send_batch(
        &mut self,
        key: usize,
        sender: usize,
        now: Instant,
    ) -> Result<Instant, ConnError> {
        let mut next_due = self.due[sender];
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
                stats.received.push(false);
                self.interval_sent += 1;
                next_due += self.interval;
            }
        })?;
        self.due[sender] = next_due;
        Ok(next_due)
    }

    /// Counts as lost what the members still in the room (or about to
    /// come back to it) never saw: messages of ours by sequence number, and
    /// offsets below the newest any of them received (in its epoch).
    /// Members that left for good are not counted, what they missed is
    /// unknown. Returns how many members that is.
    fn count_unseen(&mut self) -> u64 {
        let open = self.fleet.conns.iter().map(|(_, peer)| &peer.state);
        let away = self.recovery.pending.iter().map(|(_, member)| member);
        let members: Vec<&Member> = open.chain(away).collect();
        unseen(&mut self.tally, &members);
        members.len() as u64
    }
}

/// Counts as lost what `members` never saw: messages of ours by sequence
/// number, and offsets below the newest any of them received (in its
/// epoch).
fn unseen(tally: &mut Tally, members: &[&Member]) {
    let mut heads: BTreeMap<&str, u64> = BTreeMap::new();
    for member in members {
        for (stats, next) in tally.senders.iter_mut().zip(&member.expected) {
            stats.lost += stats.sent.saturating_sub(*next);
        }
        let p = &member.position;
        if p.knows_epoch() {
            let head = heads.entry(p.epoch()).or_default();
            *head = (*head).max(p.last());
        }
    }
    for member in members {
        let p = &member.position;
        if let Some(head) = heads.get(p.epoch()) {
            tally.offsets.unseen += head - p.last();
        }
    }
}
