//! What every scenario shares: the reactor, opening a fleet of
//! connections at a bounded pace, and closing them cleanly at the end.
//!
//! Each scenario module owns only its own measurement: what it sends, what
//! it checks, what it reports.

pub mod broadcast;
pub mod connect;
pub mod echo;
pub mod hold;

use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use rustls::ClientConfig;
use slab::Slab;

use crate::codec::Upgrade;
use crate::conn::{Conn, ConnError, Event, Outbox, Readiness, Status};
use crate::report::{Errors, Latency, Progress, Report};
use crate::rng::Rng;
use crate::target::Target;

/// The longest a poll sleeps, so timeouts and deadlines are checked often.
const MAX_POLL: Duration = Duration::from_millis(100);

/// Options every scenario takes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server.
    pub target: Target,
    /// Plain TCP instead of WebSocket.
    pub plain_tcp: bool,
    /// For a `wss://` target: the TLS configuration every connection
    /// shares (and with it the session store, under `--resume`).
    pub tls: Option<Arc<ClientConfig>>,
    /// Source addresses to spread connections over (empty: kernel's choice).
    pub sources: Vec<IpAddr>,
    /// Connects and handshakes in flight at once while opening a fleet.
    pub ramp: usize,
    /// How long one connect plus handshake, or one closing handshake, may take.
    pub timeout: Duration,
    /// Print the live progress line.
    pub progress: bool,
    /// The subprotocol every upgrade offers and requires (`wschat.v1`),
    /// or none.
    pub protocol: Option<&'static str>,
}

impl Settings {
    /// A report for `scenario` that starts with the mode and the target.
    pub fn report(&self, scenario: &str) -> Report {
        let t = &self.target;
        let mode = match (self.plain_tcp, &self.tls) {
            (true, _) => "tcp",
            (false, Some(_)) => "wss",
            (false, None) => "ws",
        };
        let url = if self.plain_tcp {
            format!("tcp://{}", t.host)
        } else {
            format!("{mode}://{}{}", t.host, t.path)
        };
        let mut report = Report::new(scenario, mode);
        report.text("url", &url);
        report
    }
}

/// Whether one readiness event ended a connection, counting why in
/// `errors`: while a scenario runs, even a clean close by the server is a
/// connection lost.
pub fn ended(result: Result<Status, ConnError>, errors: &mut Errors) -> bool {
    let failure = match result {
        Ok(Status::Alive) => return false,
        Ok(Status::Finished { code }) => ConnError::Closed(code),
        Err(e) => e,
    };
    errors.add(&failure);
    true
}

/// Options that cannot work together, refused before any connection opens.
pub fn invalid_input(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A p99 for a progress line: `1.23ms`, `850µs`, or `-` with no samples.
pub fn fmt_p99(p99: Option<Duration>) -> String {
    match p99 {
        Some(d) if d >= Duration::from_millis(1) => format!("{:.2}ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{:.0}µs", d.as_secs_f64() * 1e6),
        None => "-".to_string(),
    }
}

/// One connection and the scenario's state for it.
#[derive(Debug)]
pub struct Peer<S> {
    /// The connection.
    pub conn: Conn,
    /// Per-connection scenario state.
    pub state: S,
    /// When the connect started (handshake latency, timeouts).
    pub started: Instant,
}

/// All connections of a scenario on one mio `Poll`, keyed by slab index
/// (the mio token).
#[derive(Debug)]
pub struct Fleet<S> {
    /// The connections.
    pub conns: Slab<Peer<S>>,
    /// Masks, keys and payloads for every connection.
    pub rng: Rng,
    poll: Poll,
    events: Events,
    /// What the last wait found ready, so handling needs no allocation.
    ready: Vec<(usize, Readiness)>,
    settings: Settings,
    next_source: usize,
}

impl<S> Fleet<S> {
    /// An empty fleet towards `settings.target`.
    pub fn new(settings: &Settings) -> io::Result<Fleet<S>> {
        Ok(Fleet {
            conns: Slab::new(),
            rng: Rng::from_entropy(),
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            ready: Vec::new(),
            settings: settings.clone(),
            next_source: 0,
        })
    }

    /// Starts one connection (round-robin over the source addresses) and
    /// returns its key.
    pub fn open(&mut self, state: S) -> Result<usize, ConnError> {
        self.open_at(state, None)
    }

    /// [`open`](Fleet::open), with `path` as the request target instead
    /// of the target's path when given (a reconnect that names its
    /// position in the query).
    pub fn open_at(&mut self, state: S, path: Option<&str>) -> Result<usize, ConnError> {
        let source = if self.settings.sources.is_empty() {
            None
        } else {
            let ip = self.settings.sources[self.next_source % self.settings.sources.len()];
            self.next_source += 1;
            Some(ip)
        };
        let upgrade = Upgrade {
            path: path.unwrap_or(&self.settings.target.path),
            protocol: self.settings.protocol,
        };
        let mut conn = Conn::connect(
            &self.settings.target,
            upgrade,
            self.settings.plain_tcp,
            self.settings.tls.as_ref(),
            source,
            &mut self.rng,
        )?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(
                conn.stream(),
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(ConnError::Connect)?;
        entry.insert(Peer {
            conn,
            state,
            started: Instant::now(),
        });
        Ok(key)
    }

    /// Drops a connection, closing its socket.
    ///
    /// No `deregister`: closing the only descriptor of a socket removes it
    /// from epoll, and the saved syscall counts when cycling connections.
    pub fn remove(&mut self, key: usize) {
        self.conns.remove(key);
    }

    /// Waits for readiness until `deadline` (at most [`MAX_POLL`]) and
    /// keeps the keys of ready connections, with what their event said,
    /// for [`for_each_ready`](Fleet::for_each_ready).
    pub fn wait(&mut self, deadline: Instant) -> io::Result<()> {
        self.ready.clear();
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(MAX_POLL);
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        self.ready
            .extend(self.events.iter().map(|e| (e.token().0, Readiness::of(e))));
        Ok(())
    }

    /// Hands each connection the last wait found ready to `handle`, and
    /// drops those for which it returns `true` (the connection ended).
    /// Keys dropped earlier in the same round are skipped.
    pub fn for_each_ready(
        &mut self,
        handle: impl FnMut(&mut Peer<S>, &mut Rng, Readiness) -> bool,
    ) {
        self.for_each_ready_in(0..self.ready.len(), handle);
    }

    /// How many connections the last wait found ready.
    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// [`for_each_ready`](Fleet::for_each_ready) over part of the ready
    /// list, so a scenario can do other work between the parts.
    pub fn for_each_ready_in(
        &mut self,
        part: Range<usize>,
        mut handle: impl FnMut(&mut Peer<S>, &mut Rng, Readiness) -> bool,
    ) {
        for &(key, readiness) in &self.ready[part] {
            let Some(peer) = self.conns.get_mut(key) else {
                continue;
            };
            if handle(peer, &mut self.rng, readiness) {
                self.conns.remove(key);
            }
        }
    }

    /// Keys of connections still connecting or upgrading for longer than
    /// the timeout at `now`.
    pub fn timed_out(&self, now: Instant) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) > self.settings.timeout)
            .map(|(k, _)| k)
            .collect()
    }
}

/// How opening a fleet went.
#[derive(Debug)]
pub struct Setup {
    /// Connections open at the end of setup.
    pub open: usize,
    /// Connections that failed (by cause).
    pub errors: Errors,
    /// Connect-to-101 latency of the ones that opened.
    pub latency: Latency,
    /// How long setup took.
    pub elapsed: Duration,
    /// What TLS negotiated for the first connection (`wss://` only).
    pub tls: Option<String>,
}

impl Setup {
    /// Adds the setup rows to a report.
    pub fn report(&self, report: &mut Report, wanted: usize) {
        report.int("connections wanted", "", wanted as u64);
        report.int("connections opened", "", self.open as u64);
        report.float("setup time", "s", self.elapsed.as_secs_f64());
        self.latency.report(report, "handshake");
        if let Some(tls) = &self.tls {
            report.text("tls", tls);
        }
    }
}

/// Counts kept while a fleet opens.
#[derive(Debug)]
struct Opening {
    wanted: usize,
    started: usize,
    open: usize,
    in_flight: usize,
    errors: Errors,
    latency: Latency,
    tls: Option<String>,
}

impl Opening {
    /// Nothing started yet out of `wanted`.
    fn new(wanted: usize) -> Opening {
        Opening {
            wanted,
            started: 0,
            open: 0,
            in_flight: 0,
            errors: Errors::default(),
            latency: Latency::new(),
            tls: None,
        }
    }

    /// Whether connections are still to start or still connecting.
    fn busy(&self) -> bool {
        self.started < self.wanted || self.in_flight > 0
    }

    /// Starts connections until `ramp` are in flight or all have started.
    fn start_more<S: Default>(&mut self, fleet: &mut Fleet<S>) {
        while self.started < self.wanted && self.in_flight < fleet.settings.ramp {
            self.started += 1;
            match fleet.open(S::default()) {
                Ok(_) => self.in_flight += 1,
                Err(e) => self.errors.add(&e),
            }
        }
    }

    /// Handles one readiness event of `peer` at `now`, messages going to
    /// `on_message`; returns whether the connection ended.
    fn on_ready<S>(
        &mut self,
        peer: &mut Peer<S>,
        rng: &mut Rng,
        readiness: Readiness,
        now: Instant,
        on_open: &mut impl FnMut(&mut S, usize),
        on_message: &mut impl FnMut(&mut S, Event<'_>),
    ) -> bool {
        let was_open = peer.conn.is_open();
        let mut opened = false;
        let state = &mut peer.state;
        let result = peer.conn.on_ready(readiness, rng, |event, _| match event {
            Event::Opened => opened = true,
            other => on_message(state, other),
        });
        if opened {
            self.in_flight -= 1;
            on_open(&mut peer.state, self.open);
            self.open += 1;
            self.latency.record(now.duration_since(peer.started));
            if self.tls.is_none() {
                self.tls = peer.conn.tls_description();
            }
        }
        if !ended(result, &mut self.errors) {
            return false;
        }
        // One that opened and failed in the same event was counted open.
        if was_open || opened {
            self.open -= 1;
        } else {
            self.in_flight -= 1;
        }
        true
    }

    /// Gives up on handshakes that have taken longer than the timeout.
    fn drop_timed_out<S>(&mut self, fleet: &mut Fleet<S>, now: Instant) {
        for key in fleet.timed_out(now) {
            if !fleet.conns[key].conn.is_open() {
                self.errors.add(&ConnError::Timeout("handshake"));
                fleet.remove(key);
                self.in_flight -= 1;
            }
        }
    }
}

/// Opens `n` connections with at most `settings.ramp` connects in flight,
/// until all are open or failed. `on_open` gives each connection its state
/// as it opens, with its rank in opening order (0, 1, ...).
pub fn establish<S: Default>(
    fleet: &mut Fleet<S>,
    n: usize,
    on_open: impl FnMut(&mut S, usize),
) -> io::Result<Setup> {
    establish_reading(fleet, n, on_open, |_, _| {})
}

/// [`establish`], handing what arrives meanwhile (a server's greeting, or
/// presence as the others join) to `on_message` with the connection's
/// state; it may come before that connection's `on_open`.
pub fn establish_reading<S: Default>(
    fleet: &mut Fleet<S>,
    n: usize,
    mut on_open: impl FnMut(&mut S, usize),
    mut on_message: impl FnMut(&mut S, Event<'_>),
) -> io::Result<Setup> {
    let start = Instant::now();
    let mut progress = Progress::new(fleet.settings.progress);
    let mut opening = Opening::new(n);
    while opening.busy() {
        opening.start_more(fleet);
        fleet.wait(progress.deadline())?;
        let now = Instant::now();
        fleet.for_each_ready(|peer, rng, readiness| {
            opening.on_ready(peer, rng, readiness, now, &mut on_open, &mut on_message)
        });
        if progress.tick(now).is_some() {
            opening.drop_timed_out(fleet, now);
            progress.print(
                now,
                format_args!(
                    "opening: {}/{n} open, {} in flight, {} failed",
                    opening.open,
                    opening.in_flight,
                    opening.errors.total()
                ),
            );
        }
    }
    progress.finish();
    Ok(Setup {
        open: opening.open,
        errors: opening.errors,
        latency: opening.latency,
        elapsed: start.elapsed(),
        tls: opening.tls,
    })
}

/// How the closing handshakes at the end went.
#[derive(Debug, Default)]
pub struct Teardown {
    /// Connections whose close handshake completed.
    pub clean: u64,
    /// Connections that failed or timed out while closing (by cause).
    pub errors: Errors,
}

impl Teardown {
    /// Adds the teardown rows to a report.
    pub fn report(&self, report: &mut Report) {
        report.int("closed cleanly", "", self.clean);
        report.int("close errors", "", self.errors.total());
    }
}

/// Closes every connection with 1000 and waits (up to the timeout) for the
/// server to answer and close TCP, so the server sees orderly goodbyes.
/// Messages still arriving meanwhile go to `on_message`.
pub fn close_all<S>(
    fleet: &mut Fleet<S>,
    mut on_message: impl FnMut(&mut S, Event<'_>, &mut Outbox<'_>),
) -> io::Result<Teardown> {
    let mut teardown = Teardown::default();
    let keys: Vec<usize> = fleet.conns.iter().map(|(k, _)| k).collect();
    for key in keys {
        let peer = &mut fleet.conns[key];
        if let Err(e) = peer.conn.close(&mut fleet.rng, 1000) {
            teardown.errors.add(&e);
            fleet.remove(key);
        }
    }
    let deadline = Instant::now() + fleet.settings.timeout;
    while !fleet.conns.is_empty() && Instant::now() < deadline {
        fleet.wait(deadline)?;
        fleet.for_each_ready(|peer, rng, readiness| {
            let state = &mut peer.state;
            match peer
                .conn
                .on_ready(readiness, rng, |event, out| on_message(state, event, out))
            {
                Ok(Status::Alive) => return false,
                Ok(Status::Finished { .. }) => teardown.clean += 1,
                Err(e) => teardown.errors.add(&e),
            }
            true
        });
    }
    let left: Vec<usize> = fleet.conns.iter().map(|(k, _)| k).collect();
    for key in left {
        teardown.errors.add(&ConnError::Timeout("close"));
        fleet.remove(key);
    }
    Ok(teardown)
}

/// Adds the rows every fleet scenario ends with (opening, closing, and the
/// errors of all phases, `errors` being those after opening) and returns
/// the error count, which decides most scenarios' verdict.
pub fn report_fleet(
    report: &mut Report,
    wanted: usize,
    setup: Setup,
    teardown: &Teardown,
    errors: Errors,
) -> u64 {
    setup.report(report, wanted);
    teardown.report(report);
    let mut all_errors = setup.errors;
    all_errors.merge(errors);
    all_errors.report(report);
    all_errors.total()
}
