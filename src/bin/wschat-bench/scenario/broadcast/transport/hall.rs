//! The reactor of a transport comparison: senders and receivers on one
//! mio `Poll`, the pollers' schedule, and the counts the report is made of.
//! Joining and the run's phases are here; what each event does is in
//! `events`.

mod events;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::super::tally::{Member, Tally};
use super::super::{Options, Protocol};
use super::receiver::{new_link, sse_request, Link, Receiver};
use super::senders::{Senders, Window};
use super::{Transport, Via};
use crate::codec::Upgrade;
use crate::conn::{Conn, ConnError, Readiness, Wire};
use crate::http::HttpConn;
use crate::report::{Errors, Latency, Progress};
use crate::rng::Rng;
use crate::scenario::Settings;

/// Tokens from here on are senders (rank added); below, receivers' keys.
pub(super) const SENDER_TOKENS: usize = 1 << 30;

/// The longest a wait sleeps, so timeouts are checked often.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(100);

/// Ready receivers read between two looks at the senders' schedule, so a
/// pass over a thousand of them does not hold a sender up (see the
/// classic broadcast's `receive`).
pub(super) const READS_PER_SEND_CHECK: usize = 64;

/// What the receivers and senders had moved at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// The receivers' sockets.
    pub receivers: Wire,
    /// The senders' sockets.
    pub senders: Wire,
    /// HTTP requests the receivers sent (WebSocket upgrades included).
    pub requests: u64,
    /// Connections a poller opened again after the server closed one.
    pub reopened: u64,
}

impl Counts {
    /// What happened between `before` and these counts.
    pub fn since(&self, before: &Counts) -> Counts {
        let minus = |a: Wire, b: Wire| Wire {
            read: a.read - b.read,
            written: a.written - b.written,
        };
        Counts {
            receivers: minus(self.receivers, before.receivers),
            senders: minus(self.senders, before.senders),
            requests: self.requests - before.requests,
            reopened: self.reopened - before.reopened,
        }
    }
}

/// How the receivers' joining went.
#[derive(Debug)]
pub struct Joining {
    /// Receivers that got their welcome (or first poll answer).
    pub joined: u64,
    /// Connect to welcome (or first answer).
    pub latency: Latency,
    /// How long joining took.
    pub elapsed: Duration,
}

/// Senders, receivers, and everything counted.
#[derive(Debug)]
pub struct Hall {
    poll: Poll,
    events: Events,
    ready: Vec<(usize, Readiness)>,
    pub(super) rng: Rng,
    settings: Settings,
    pub(super) via: Via,
    room: String,
    /// A long poll's `timeout`, or `0`.
    timeout: String,
    pub(super) receivers: Slab<Receiver>,
    pub(super) senders: Senders,
    pub(super) tally: Tally,
    run_tag: String,
    /// The measured stretch, once it has begun.
    window: Option<Window>,
    /// Pollers poll on their schedule (after joining).
    polling: bool,
    /// When each poller's next poll is due: (due, key).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    pub(super) requests: u64,
    /// Requests at the last progress line.
    pub(super) requests_shown: u64,
    reopened: u64,
    /// What receivers' connections moved before they were closed.
    gone: Wire,
    /// Connections that failed, by cause.
    pub(super) errors: Errors,
    /// Receivers lost after joining.
    pub(super) disconnected: u64,
    request: Vec<u8>,
    next_source: usize,
    /// Messages per second per sender.
    rate: f64,
    /// Receivers to open.
    wanted: usize,
    /// Connect to welcome (or first answer) of the receivers that joined.
    pub(super) join_latency: Latency,
}

impl Hall {
    /// An empty hall for the room `room` of `settings.target`.
    pub fn new(settings: &Settings, opts: &Options, via: Via, room: String) -> io::Result<Hall> {
        let mut rng = Rng::from_entropy();
        let run_tag = format!("b{:x}", rng.next_u64() >> 32);
        let timeout = match via.transport {
            Transport::LongPoll => format!("{}", via.long_poll_timeout.as_secs_f64()),
            _ => "0".to_string(),
        };
        Ok(Hall {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            ready: Vec::new(),
            rng,
            settings: settings.clone(),
            via,
            room,
            timeout,
            receivers: Slab::with_capacity(opts.conns),
            senders: Senders::new(Vec::new(), opts.rate),
            tally: Tally::new(opts.senders),
            run_tag,
            window: None,
            polling: false,
            timers: BinaryHeap::new(),
            requests: 0,
            requests_shown: 0,
            reopened: 0,
            gone: Wire::default(),
            errors: Errors::default(),
            disconnected: 0,
            request: Vec::with_capacity(256),
            next_source: 0,
            rate: opts.rate,
            wanted: opts.conns,
            join_latency: Latency::new(),
        })
    }

    /// The next source address, round-robin (`None`: the kernel's choice).
    fn source(&mut self) -> Option<IpAddr> {
        let sources = &self.settings.sources;
        let ip = (!sources.is_empty()).then(|| sources[self.next_source % sources.len()]);
        self.next_source += 1;
        ip
    }

    /// Connects the senders (classic WebSocket members of the room) and
    /// waits until all are upgraded or failed.
    pub fn open_senders(&mut self) -> io::Result<()> {
        let k = self.tally.senders.len();
        let mut conns = Vec::with_capacity(k);
        for rank in 0..k {
            let source = self.source();
            let target = &self.settings.target;
            let upgrade = Upgrade {
                path: &target.path,
                protocol: None,
            };
            match Conn::connect(target, upgrade, false, None, source, &mut self.rng) {
                Ok(mut conn) => {
                    let token = Token(SENDER_TOKENS + rank);
                    register(&self.poll, conn.stream(), token)?;
                    conns.push(Some(conn));
                }
                Err(e) => {
                    self.errors.add(&e);
                    conns.push(None);
                }
            }
        }
        self.senders = Senders::new(conns, self.rate);
        let deadline = Instant::now() + self.settings.timeout;
        while (0..k).any(|s| self.senders.conns[s].is_some() && !self.senders.is_open(s)) {
            if Instant::now() >= deadline {
                let late: Vec<usize> = (0..k)
                    .filter(|s| self.senders.conns[*s].is_some() && !self.senders.is_open(*s))
                    .collect();
                for s in late {
                    self.senders
                        .fail(s, &ConnError::Timeout("handshake"), &mut self.errors);
                }
                break;
            }
            self.turn(deadline)?;
        }
        Ok(())
    }

    /// Opens the receivers, at most `--ramp` joining at once, until all
    /// have joined or failed (or taken longer than the timeout).
    pub fn open_receivers(&mut self) -> io::Result<Joining> {
        let start = Instant::now();
        let wanted = self.wanted;
        let mut progress = Progress::new(self.settings.progress);
        let mut started = 0;
        loop {
            let joining = self.receivers.iter().filter(|(_, r)| !r.joined).count();
            if started == wanted && joining == 0 {
                break;
            }
            for _ in joining..self.settings.ramp {
                if started == wanted {
                    break;
                }
                self.start_receiver(started);
                started += 1;
            }
            self.turn(progress.deadline())?;
            let now = Instant::now();
            if progress.tick(now).is_some() {
                self.drop_unjoined(now);
                let joined = self.receivers.iter().filter(|(_, r)| r.joined).count();
                progress.print(
                    now,
                    format_args!(
                        "joining: {joined}/{wanted} joined, {} failed",
                        self.errors.total()
                    ),
                );
            }
        }
        progress.finish();
        self.start_polling();
        Ok(Joining {
            joined: self.receivers.len() as u64,
            latency: std::mem::replace(&mut self.join_latency, Latency::new()),
            elapsed: start.elapsed(),
        })
    }

    /// Starts receiver `rank`: its connection, and its first request.
    fn start_receiver(&mut self, rank: usize) {
        let source = self.source();
        let target = &self.settings.target;
        let rng = &mut self.rng;
        let link = new_link(
            self.via.transport,
            || {
                let upgrade = Upgrade {
                    path: &target.path,
                    protocol: Protocol::V1.subprotocol(),
                };
                Conn::connect(target, upgrade, false, None, source, rng)
            },
            || HttpConn::connect(target.addr, source),
        );
        let mut link = match link {
            Ok(link) => link,
            Err(e) => return self.errors.add(&e),
        };
        let key = self.receivers.vacant_entry().key();
        if let Err(e) = register(&self.poll, link.stream(), Token(key)) {
            return self.errors.add(&ConnError::Connect(e));
        }
        let member = Member {
            rank,
            expected: vec![0; self.tally.senders.len()],
            ..Member::default()
        };
        self.receivers.insert(Receiver {
            link,
            member,
            started: Instant::now(),
            joined: false,
            poller: Default::default(),
        });
        match &mut self.receivers[key].link {
            // The upgrade request, queued by the connection itself.
            Link::Ws(_) => self.requests += 1,
            Link::Sse(conn, _) => {
                sse_request(&mut self.request, &self.room, &self.settings.target.host);
                self.requests += 1;
                if let Err(e) = conn.send(&self.request) {
                    self.fail(key, &e);
                }
            }
            Link::Poll(_) => self.send_poll(key, Instant::now()),
        }
    }

    /// Gives up on receivers that have not joined within the timeout.
    fn drop_unjoined(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .receivers
            .iter()
            .filter(|(_, r)| !r.joined && now.duration_since(r.started) > self.settings.timeout)
            .map(|(key, _)| key)
            .collect();
        for key in late {
            self.errors.add(&ConnError::Timeout("join"));
            self.receivers.remove(key);
        }
    }

    /// Pollers start polling on their schedule, spread evenly over one
    /// interval (many clients polling every second do not all poll at
    /// the same instant).
    fn start_polling(&mut self) {
        self.polling = true;
        if self.via.transport != Transport::Poll {
            return;
        }
        let now = Instant::now();
        let n = self.receivers.len().max(1) as f64;
        let interval = self.via.poll_interval;
        for (i, (key, r)) in self.receivers.iter_mut().enumerate() {
            if r.awaiting() {
                continue; // its answer schedules it
            }
            let due = now + interval.mul_f64(i as f64 / n);
            r.poller.next_due = Some(due);
            self.timers.push(Reverse((due, key)));
        }
    }

    /// Receives (and polls) without sending until `deadline`.
    pub fn idle_until(&mut self, deadline: Instant) -> io::Result<()> {
        while Instant::now() < deadline {
            self.turn(deadline)?;
        }
        Ok(())
    }

    /// The measured stretch: sends for `duration`, then drains for at
    /// most `drain`, ending early once every receiver has everything.
    pub fn measure(
        &mut self,
        duration: Duration,
        drain: Duration,
        progress: &mut Progress,
    ) -> io::Result<()> {
        let epoch = Instant::now();
        let window = Window {
            epoch,
            send_end: epoch + duration,
        };
        let drain_end = window.send_end + drain;
        self.window = Some(window);
        self.senders.start(window);
        loop {
            let now = Instant::now();
            if now >= drain_end || self.everything_arrived(now) {
                return Ok(());
            }
            self.send_due(now);
            let wake = progress.deadline().min(drain_end);
            self.turn(wake)?;
            let now = Instant::now();
            if let Some(secs) = progress.tick(now) {
                self.print_progress(progress, now, secs);
            }
        }
    }
}

/// Registers `stream` for both directions under `token`.
pub(super) fn register(poll: &Poll, stream: &mut TcpStream, token: Token) -> io::Result<()> {
    poll.registry()
        .register(stream, token, Interest::READABLE | Interest::WRITABLE)
}
