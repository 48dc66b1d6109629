//! The cluster's counters, and their lines on `/metrics`.

use std::fmt::Write as _;

/// What the cluster counts, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStats {
    /// Messages queued for `PUBLISH`.
    pub published: u64,
    /// Messages received from the subscription and passed on.
    pub received: u64,
    /// Messages delivered locally only because the publish queue was full.
    pub publish_dropped: u64,
    /// Messages published but unconfirmed when the publishing link failed
    /// (they may or may not have reached the other instances), or refused.
    pub publish_lost: u64,
    /// Frames or messages from Redis that made no sense, dropped.
    pub malformed: u64,
    /// Messages from Redis over `--max-message-size`, dropped.
    pub oversize: u64,
    /// Times the cluster became degraded.
    pub outages: u64,
    /// History fetches answered with the history.
    pub fetched: u64,
    /// History fetches answered with an error, or refused because too many
    /// were awaited.
    pub fetch_errors: u64,
    /// Scripts loaded again after Redis answered `NOSCRIPT`.
    pub script_reloads: u64,
}

impl ClusterStats {
    /// Appends the counters and the two gauges (`up`: both links ready;
    /// the bytes waiting in the publish queue) in the Prometheus format.
    pub fn render(&self, out: &mut String, up: bool, publish_queue_bytes: usize) {
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "wschat_redis_up",
            "gauge",
            "1 when room messages go through Redis, 0 when degraded (local delivery only).",
            u64::from(up),
        );
        metric(
            "wschat_cluster_published_total",
            "counter",
            "Room messages queued for PUBLISH.",
            self.published,
        );
        metric(
            "wschat_cluster_received_total",
            "counter",
            "Room messages received from Redis.",
            self.received,
        );
        metric(
            "wschat_cluster_publish_dropped_total",
            "counter",
            "Room messages not published (publish queue full), delivered locally only.",
            self.publish_dropped,
        );
        metric(
            "wschat_cluster_publish_lost_total",
            "counter",
            "Published room messages unconfirmed when the link to Redis failed.",
            self.publish_lost,
        );
        metric(
            "wschat_redis_malformed_total",
            "counter",
            "Frames or messages from Redis that were malformed, dropped.",
            self.malformed,
        );
        metric(
            "wschat_redis_oversize_total",
            "counter",
            "Messages from Redis over --max-message-size, dropped.",
            self.oversize,
        );
        metric(
            "wschat_redis_outages_total",
            "counter",
            "Times the link to Redis was lost (or not made at start).",
            self.outages,
        );
        metric(
            "wschat_cluster_fetches_total",
            "counter",
            "Room history fetches answered by Redis.",
            self.fetched,
        );
        metric(
            "wschat_cluster_fetch_errors_total",
            "counter",
            "Room history fetches that failed (error reply, link lost, malformed reply, too many awaited).",
            self.fetch_errors,
        );
        metric(
            "wschat_redis_script_reloads_total",
            "counter",
            "Scripts loaded again because Redis had lost them (NOSCRIPT).",
            self.script_reloads,
        );
        metric(
            "wschat_cluster_publish_queue_bytes",
            "gauge",
            "Bytes waiting to be sent to Redis.",
            publish_queue_bytes as u64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_has_help_type_and_value() {
        let stats = ClusterStats {
            received: 7,
            ..ClusterStats::default()
        };
        let mut out = String::new();
        stats.render(&mut out, true, 42);
        assert_eq!(out.lines().count(), 12 * 3);
        assert!(out.contains("\nwschat_redis_up 1\n"), "{out}");
        assert!(out.contains("\nwschat_cluster_received_total 7\n"));
        assert!(out.ends_with("\nwschat_cluster_publish_queue_bytes 42\n"));
    }
}
