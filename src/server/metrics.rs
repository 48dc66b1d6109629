//! Counters for `GET /metrics`, in the Prometheus text format.
//!
//! Plain integers bumped on the one thread: no atomics, no registry crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Everything the server counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted since start.
    pub accepted: u64,
    /// WebSocket upgrades completed since start.
    pub upgraded: u64,
    /// Refused requests, by reason label.
    pub handshake_failures: BTreeMap<&'static str, u64>,
    /// Connections failed by the server, by close code.
    pub protocol_errors: BTreeMap<u16, u64>,
    /// Messages received from clients.
    pub messages_received: u64,
    /// Payload bytes received from clients.
    pub bytes_received: u64,
    /// Message frames queued to clients (one per receiver).
    pub messages_sent: u64,
    /// Bytes written to client sockets.
    pub bytes_sent: u64,
    /// Connections closed because their queue passed its bound.
    pub slow_consumers: u64,
    /// Connections closed for sending too fast.
    pub rate_limited: u64,
    /// Connections closed by a handshake, idle or close timeout.
    pub timeouts: u64,
    /// TLS handshakes by outcome: `ok`, or why they failed.
    pub tls_handshakes: BTreeMap<&'static str, u64>,
    /// Room messages queued to members, by transport.
    pub deliveries: ByTransport<u64>,
}

/// One number per transport a room member uses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ByTransport<T> {
    /// WebSocket members (classic or `wschat.v1`).
    pub websocket: T,
    /// SSE streams.
    pub sse: T,
    /// Pollers (for deliveries: messages in poll answers).
    pub poll: T,
}

impl<T: Copy> ByTransport<T> {
    /// Each transport's label (as `/metrics` writes it) and number.
    pub fn labelled(&self) -> [(&'static str, T); 3] {
        [
            ("websocket", self.websocket),
            ("sse", self.sse),
            ("poll", self.poll),
        ]
    }
}

/// Appends `wschat_members{transport}` (room members now) and
/// `wschat_deliveries_total{transport}`.
pub fn render_transports(
    out: &mut String,
    members: ByTransport<usize>,
    deliveries: ByTransport<u64>,
) {
    let _ = writeln!(
        out,
        "# HELP wschat_members Room members now, by transport.\n# TYPE wschat_members gauge"
    );
    for (transport, n) in members.labelled() {
        let _ = writeln!(out, "wschat_members{{transport=\"{transport}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP wschat_deliveries_total Room messages queued to members, by transport.\n# TYPE wschat_deliveries_total counter");
    for (transport, n) in deliveries.labelled() {
        let _ = writeln!(
            out,
            "wschat_deliveries_total{{transport=\"{transport}\"}} {n}"
        );
    }
}

/// Appends the TLS series: the not-after time of the certificate in
/// service (seconds since the epoch) and the handshakes by outcome.
pub fn render_tls(out: &mut String, not_after: i64, handshakes: &BTreeMap<&'static str, u64>) {
    let _ = writeln!(out, "# HELP wschat_tls_certificate_expiry_seconds Not-after time of the certificate in service.\n# TYPE wschat_tls_certificate_expiry_seconds gauge\nwschat_tls_certificate_expiry_seconds {not_after}");
    let _ = writeln!(out, "# HELP wschat_tls_handshakes_total TLS handshakes by outcome.\n# TYPE wschat_tls_handshakes_total counter");
    for (outcome, n) in handshakes {
        let _ = writeln!(
            out,
            "wschat_tls_handshakes_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
}

/// Gauges read from the server's state when the page is rendered.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Connections open now (any phase).
    pub connections: usize,
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Messages compressed by the loop's shared deflater.
    pub deflate_calls: u64,
    /// Messages kept in all rooms' history, and the bytes they hold.
    pub history: (usize, usize),
}

impl Metrics {
    /// Every plain counter: name, help, value.
    fn counters(&self) -> [(&'static str, &'static str, u64); 9] {
        [
            (
                "wschat_connections_accepted_total",
                "Connections accepted.",
                self.accepted,
            ),
            (
                "wschat_upgrades_total",
                "WebSocket upgrades completed.",
                self.upgraded,
            ),
            (
                "wschat_messages_received_total",
                "Messages received.",
                self.messages_received,
            ),
            (
                "wschat_bytes_received_total",
                "Message payload bytes received.",
                self.bytes_received,
            ),
            (
                "wschat_messages_sent_total",
                "Message frames queued to receivers.",
                self.messages_sent,
            ),
            (
                "wschat_bytes_sent_total",
                "Bytes written to sockets.",
                self.bytes_sent,
            ),
            (
                "wschat_slow_consumer_disconnects_total",
                "Connections closed as slow consumers.",
                self.slow_consumers,
            ),
            (
                "wschat_rate_limit_disconnects_total",
                "Connections closed for their message rate.",
                self.rate_limited,
            ),
            (
                "wschat_timeouts_total",
                "Connections closed by a timeout.",
                self.timeouts,
            ),
        ]
    }

    /// Renders every counter and gauge.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(2048);
        let counters = self.counters();
        for (name, help, value) in counters {
            series(&mut out, name, help, "counter", value);
        }
        series(
            &mut out,
            "wschat_connections",
            "Connections open now.",
            "gauge",
            gauges.connections as u64,
        );
        series(
            &mut out,
            "wschat_rooms",
            "Rooms with members or history.",
            "gauge",
            gauges.rooms as u64,
        );
        series(
            &mut out,
            "wschat_history_messages",
            "Messages kept in all rooms' history.",
            "gauge",
            gauges.history.0 as u64,
        );
        series(
            &mut out,
            "wschat_history_bytes",
            "Bytes all rooms' history holds (within --history-memory).",
            "gauge",
            gauges.history.1 as u64,
        );
        series(
            &mut out,
            "wschat_deflate_calls_total",
            "Messages compressed by the shared deflater.",
            "counter",
            gauges.deflate_calls,
        );
        let _ = writeln!(out, "# HELP wschat_handshake_failures_total Refused requests by reason.\n# TYPE wschat_handshake_failures_total counter");
        for (reason, n) in &self.handshake_failures {
            let _ = writeln!(
                out,
                "wschat_handshake_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP wschat_protocol_errors_total Connections failed by close code.\n# TYPE wschat_protocol_errors_total counter");
        for (code, n) in &self.protocol_errors {
            let _ = writeln!(out, "wschat_protocol_errors_total{{code=\"{code}\"}} {n}");
        }
        out
    }
}

/// Appends one unlabelled series with its help and type lines.
fn series(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Rooms listed by `wschat_room_connections`: the largest ones only, so a
/// server with many rooms still has a bounded number of series.
pub const TOP_ROOMS: usize = 10;

/// Appends `wschat_room_connections{room="…"}` for the [`TOP_ROOMS`]
/// largest rooms (ties by name), reordering `sizes`. Room names need no
/// escaping: they are letters, digits, `-`, `_` and `.` only.
pub fn render_top_rooms(out: &mut String, sizes: &mut [(&str, usize)]) {
    let by_size = |a: &(&str, usize), b: &(&str, usize)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
    let top = sizes.len().min(TOP_ROOMS);
    if sizes.len() > top {
        sizes.select_nth_unstable_by(top - 1, by_size);
    }
    let top = &mut sizes[..top];
    top.sort_unstable_by(by_size);
    let _ = writeln!(
        out,
        "# HELP wschat_room_connections Connections of the {TOP_ROOMS} largest rooms.\n# TYPE wschat_room_connections gauge"
    );
    for (name, members) in top.iter() {
        let _ = writeln!(out, "wschat_room_connections{{room=\"{name}\"}} {members}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_and_gauges() {
        let mut m = Metrics {
            accepted: 3,
            ..Metrics::default()
        };
        *m.handshake_failures.entry("version").or_default() += 1;
        *m.protocol_errors.entry(1002).or_default() += 2;
        let text = m.render(Gauges {
            connections: 2,
            rooms: 1,
            deflate_calls: 0,
            history: (4, 4096),
        });
        assert!(text.contains("wschat_history_messages 4\n"));
        assert!(text.contains("wschat_history_bytes 4096\n"));
        assert!(text.contains("wschat_connections_accepted_total 3\n"));
        assert!(text.contains("wschat_handshake_failures_total{reason=\"version\"} 1\n"));
        assert!(text.contains("wschat_protocol_errors_total{code=\"1002\"} 2\n"));
        assert!(text.contains("wschat_connections 2\n"));
    }

    #[test]
    fn members_and_deliveries_by_transport() {
        let mut out = String::new();
        let members = ByTransport {
            websocket: 2,
            sse: 1,
            poll: 3,
        };
        let deliveries = ByTransport {
            websocket: 10,
            sse: 5,
            poll: 0,
        };
        render_transports(&mut out, members, deliveries);
        for line in [
            "wschat_members{transport=\"websocket\"} 2\n",
            "wschat_members{transport=\"sse\"} 1\n",
            "wschat_members{transport=\"poll\"} 3\n",
            "wschat_deliveries_total{transport=\"sse\"} 5\n",
            "wschat_deliveries_total{transport=\"poll\"} 0\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }

    #[test]
    fn only_the_largest_rooms_are_listed() {
        let names: Vec<String> = (0..50).map(|i| format!("room{i:02}")).collect();
        let mut sizes: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        sizes[7].1 = 100;
        sizes[42].1 = 50;
        let mut out = String::new();
        render_top_rooms(&mut out, &mut sizes);
        let series: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(series.len(), TOP_ROOMS);
        assert_eq!(series[0], "wschat_room_connections{room=\"room07\"} 100");
        assert_eq!(series[1], "wschat_room_connections{room=\"room42\"} 50");
        assert_eq!(series[2], "wschat_room_connections{room=\"room00\"} 1");
    }

    #[test]
    fn few_rooms_are_all_listed() {
        let mut out = String::new();
        render_top_rooms(&mut out, &mut [("lobby", 3), ("b", 3), ("a", 4)]);
        assert!(out.ends_with(
            "wschat_room_connections{room=\"a\"} 4\n\
             wschat_room_connections{room=\"b\"} 3\n\
             wschat_room_connections{room=\"lobby\"} 3\n"
        ));
        let mut out = String::new();
        render_top_rooms(&mut out, &mut []);
        assert_eq!(out.lines().count(), 2, "help and type only");
    }
}
