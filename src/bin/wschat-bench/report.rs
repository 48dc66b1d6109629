//! Measuring and telling: latency histograms, error counts, the live
//! progress line on stderr and the final table (and JSON line) on stdout.
//!
//! stdout carries only the final summary, so `wschat-bench ... --json |
//! tail -n1` is machine-readable while a person watches stderr.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::conn::ConnError;

/// Latencies above this are clamped (a stuck request shows as 100 s).
const MAX_LATENCY_NS: u64 = 100_000_000_000;

/// A latency distribution for the whole run plus one for the current
/// progress interval, both in nanoseconds with 3 significant digits.
#[derive(Debug)]
pub struct Latency {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

impl Latency {
    /// Empty histograms from 1 ns to 100 s.
    pub fn new() -> Latency {
        let make = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("static histogram bounds are valid")
        };
        Latency {
            total: make(),
            interval: make(),
        }
    }

    /// Records one sample.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos())
            .unwrap_or(MAX_LATENCY_NS)
            .max(1);
        self.total.saturating_record(ns);
        self.interval.saturating_record(ns);
    }

    /// The 99th percentile of the interval since the last call, then resets it.
    pub fn take_interval_p99(&mut self) -> Option<Duration> {
        let p99 = (!self.interval.is_empty())
            .then(|| Duration::from_nanos(self.interval.value_at_quantile(0.99)));
        self.interval.reset();
        p99
    }

    /// A quantile of the whole run, in microseconds (0 when empty).
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total.is_empty() {
            return 0.0;
        }
        self.total.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest sample of the whole run, in microseconds.
    pub fn max_us(&self) -> f64 {
        self.total.max() as f64 / 1000.0
    }

    /// Adds p50, p99 and max rows named after `what` to `report`.
    pub fn report(&self, report: &mut Report, what: &str) {
        report.float(&format!("{what} p50"), "µs", self.quantile_us(0.5));
        report.float(&format!("{what} p99"), "µs", self.quantile_us(0.99));
        report.float(&format!("{what} max"), "µs", self.max_us());
    }
}

/// CPU use of a process over a stretch of wall time.
///
/// A load generator that saturates its own core measures itself, not the
/// server; reporting its CPU share tells which side was the limit. The
/// server's own figure, read the same way from its process, turns into CPU
/// time per operation, which compares servers even when the load generator
/// is the limit. Reads `/proc/PID/schedstat` (nanoseconds on CPU and
/// waiting for one; a single-threaded process's main thread is all of it).
#[derive(Debug)]
pub struct CpuMeter {
    /// `self` or a process id.
    pid: String,
    wall: Instant,
    start: Option<(Duration, Duration)>,
}

/// What a [`CpuMeter`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Time on a CPU.
    pub cpu: Duration,
    /// Time runnable but waiting for a CPU.
    pub waited: Duration,
    /// Wall time.
    pub wall: Duration,
}

impl Usage {
    /// Percent of one core used.
    pub fn percent(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64() * 100.0
    }

    /// Percent of the wall time spent waiting for a core.
    pub fn waited_percent(&self) -> f64 {
        self.waited.as_secs_f64() / self.wall.as_secs_f64() * 100.0
    }
}

impl CpuMeter {
    /// Starts measuring this process now.
    pub fn start() -> CpuMeter {
        CpuMeter::of("self".to_string())
    }

    /// Starts measuring process `pid` now.
    pub fn of_process(pid: u32) -> CpuMeter {
        CpuMeter::of(pid.to_string())
    }

    /// Starts measuring `/proc/{pid}` now (`pid` may be `self`).
    fn of(pid: String) -> CpuMeter {
        let start = schedstat(&pid);
        CpuMeter {
            pid,
            wall: Instant::now(),
            start,
        }
    }

    /// What was used since the start (`None` where /proc cannot be read,
    /// or the process is gone).
    pub fn usage(&self) -> Option<Usage> {
        let wall = self.wall.elapsed();
        let ((cpu0, wait0), (cpu1, wait1)) = (self.start?, schedstat(&self.pid)?);
        (!wall.is_zero()).then(|| Usage {
            cpu: cpu1.saturating_sub(cpu0),
            waited: wait1.saturating_sub(wait0),
            wall,
        })
    }

    /// Percent of one core used since `start` (NaN where /proc is missing).
    pub fn percent(&self) -> f64 {
        self.usage().map_or(f64::NAN, |u| u.percent())
    }
}

/// Time on a CPU and time waiting for one, of process `pid` so far.
fn schedstat(pid: &str) -> Option<(Duration, Duration)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse().ok());
    let (cpu, wait) = (fields.next()??, fields.next()??);
    Some((Duration::from_nanos(cpu), Duration::from_nanos(wait)))
}

/// Failed connections counted by cause (the error's display text).
#[derive(Debug, Default)]
pub struct Errors(BTreeMap<String, u64>);

impl Errors {
    /// Counts one failure.
    pub fn add(&mut self, error: &ConnError) {
        *self.0.entry(error.to_string()).or_default() += 1;
    }

    /// Adds the counts of `other` (errors of a later phase).
    pub fn merge(&mut self, other: Errors) {
        for (kind, n) in other.0 {
            *self.0.entry(kind).or_default() += n;
        }
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Adds the total and the breakdown to `report`.
    pub fn report(&self, report: &mut Report) {
        report.int("errors", "", self.total());
        if !self.0.is_empty() {
            report.counts("error kinds", self.0.clone());
        }
    }

    /// The most frequent cause, for the progress line.
    pub fn top(&self) -> Option<&str> {
        self.0
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, _)| k.as_str())
    }
}

/// The once-a-second progress line on stderr.
///
/// On a terminal it rewrites one line in place; into a file or pipe it
/// appends one line per second, so logs keep the whole time series.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    tty: bool,
    start: Instant,
    next: Instant,
    /// The previous tick, to turn counts into per-second rates.
    last: Instant,
}

impl Progress {
    /// A ticker starting now; `enabled: false` (`--quiet`) prints nothing.
    pub fn new(enabled: bool) -> Progress {
        let now = Instant::now();
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
            start: now,
            next: now + Duration::from_secs(1),
            last: now,
        }
    }

    /// When the next line is due (poll no longer than this).
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// If a line is due at `now`, returns the seconds since the previous
    /// one (to compute rates) and arms the next tick.
    pub fn tick(&mut self, now: Instant) -> Option<f64> {
        if now < self.next {
            return None;
        }
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        while self.next <= now {
            self.next += Duration::from_secs(1);
        }
        Some(elapsed)
    }

    /// Prints one progress line, prefixed with the time since start.
    pub fn print(&self, now: Instant, line: fmt::Arguments<'_>) {
        if !self.enabled {
            return;
        }
        let t = now.duration_since(self.start).as_secs_f64();
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[K[{t:5.1}s] {line}")
        } else {
            writeln!(err, "[{t:5.1}s] {line}")
        };
        let _ = err.flush();
    }

    /// Ends the in-place line on a terminal before the summary is printed.
    pub fn finish(&self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}

/// One value in the summary.
#[derive(Debug, Clone)]
enum Value {
    Int(u64),
    Float(f64),
    Text(String),
    Counts(BTreeMap<String, u64>),
}

/// One row: a human label, its unit, and the value.
#[derive(Debug, Clone)]
struct Row {
    label: String,
    unit: &'static str,
    value: Value,
}

/// The final summary of a scenario: a table for people, a JSON line for
/// scripts (the throughput bench reads it), built from the same rows.
#[derive(Debug, Clone)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// A report for `scenario` in `mode` (`ws` or `tcp`).
    pub fn new(scenario: &str, mode: &str) -> Report {
        let mut report = Report { rows: Vec::new() };
        report.text("scenario", scenario);
        report.text("mode", mode);
        report
    }

    /// Adds an integer row.
    pub fn int(&mut self, label: &str, unit: &'static str, value: u64) {
        self.push(label, unit, Value::Int(value));
    }

    /// Adds a floating-point row.
    pub fn float(&mut self, label: &str, unit: &'static str, value: f64) {
        self.push(label, unit, Value::Float(value));
    }

    /// Adds a text row.
    pub fn text(&mut self, label: &str, value: &str) {
        self.push(label, "", Value::Text(value.to_string()));
    }

    /// Adds a row of named counts (a JSON object).
    pub fn counts(&mut self, label: &str, counts: BTreeMap<String, u64>) {
        self.push(label, "", Value::Counts(counts));
    }

    /// Appends one row; rows keep their order in the table and the JSON.
    fn push(&mut self, label: &str, unit: &'static str, value: Value) {
        self.rows.push(Row {
            label: label.to_string(),
            unit,
            value,
        });
    }

    /// The aligned table printed to stdout.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
        let mut out = String::new();
        for row in &self.rows {
            let value = match &row.value {
                Value::Int(v) => v.to_string(),
                Value::Float(v) => format_float(*v),
                Value::Text(s) => s.clone(),
                Value::Counts(m) => m
                    .iter()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            let _ = writeln!(out, "{:<width$}  {value} {}", row.label, row.unit);
        }
        out
    }

    /// The whole report as one JSON object on one line. Keys are the labels
    /// in snake case with the unit appended (`round trip p99` in µs becomes
    /// `round_trip_p99_us`).
    pub fn json(&self) -> String {
        let mut out = String::from("{");
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(&mut out, &json_key(&row.label, row.unit));
            out.push(':');
            match &row.value {
                Value::Int(v) => {
                    let _ = write!(out, "{v}");
                }
                Value::Float(v) if v.is_finite() => {
                    let _ = write!(out, "{v:.3}");
                }
                Value::Float(_) => out.push_str("null"),
                Value::Text(s) => json_string(&mut out, s),
                Value::Counts(m) => {
                    out.push('{');
                    for (j, (k, v)) in m.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        json_string(&mut out, k);
                        let _ = write!(out, ":{v}");
                    }
                    out.push('}');
                }
            }
        }
        out.push('}');
        out
    }

    /// Prints the table, and the JSON line after it if asked.
    pub fn print(&self, json: bool) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.table().as_bytes());
        if json {
            let _ = writeln!(out, "{}", self.json());
        }
        let _ = out.flush();
    }
}

/// Floats in the table: enough digits to read, no more.
fn format_float(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// `messages` + `/s` -> `messages_per_sec`; `p99` + `µs` -> `p99_us`.
fn json_key(label: &str, unit: &str) -> String {
    let mut key: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let suffix = match unit {
        "" => "",
        "/s" => "_per_sec",
        "µs" => "_us",
        "ms" => "_ms",
        "MB/s" => "_mb_per_sec",
        "s" => "_s",
        "B" => "_bytes",
        "%" => "_pct",
        _ => "_",
    };
    key.push_str(suffix);
    key
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_is_flat_and_escaped() {
        let mut r = Report::new("echo", "ws");
        r.int("messages", "/s", 42);
        r.float("round trip p99", "µs", 12.5);
        r.float("nothing", "", f64::NAN);
        r.counts(
            "error kinds",
            BTreeMap::from([("io: \"reset\"".to_string(), 2)]),
        );
        assert_eq!(
            r.json(),
            r#"{"scenario":"echo","mode":"ws","messages_per_sec":42,"round_trip_p99_us":12.500,"nothing":null,"error_kinds":{"io: \"reset\"":2}}"#
        );
        assert!(r.table().contains("round trip p99  12.5 µs"));
    }

    #[test]
    fn cpu_of_another_process() {
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        let meter = CpuMeter::of_process(busy.id());
        std::thread::sleep(Duration::from_millis(200));
        let used = meter.usage();
        let _ = busy.kill();
        let _ = busy.wait();
        let used = used.expect("/proc/PID/schedstat");
        // Always runnable: on a core or waiting for one, however busy the
        // machine is.
        assert!(used.cpu > Duration::ZERO, "{used:?}");
        assert!(used.percent() + used.waited_percent() > 50.0, "{used:?}");
        assert!(CpuMeter::of_process(u32::MAX).usage().is_none());
        assert!(CpuMeter::of_process(u32::MAX).percent().is_nan());
    }

    #[test]
    fn latency_quantiles() {
        let mut l = Latency::new();
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us));
        }
        assert!((l.quantile_us(0.5) - 50.0).abs() < 0.1);
        assert!((l.max_us() - 100.0).abs() < 0.1);
        assert!(l.take_interval_p99().is_some());
        assert!(l.take_interval_p99().is_none());
    }
}
