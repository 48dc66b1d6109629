//! The reactor's side of cluster mode, and the per-room gauges.
//!
//! A child module of `reactor`, so it reaches the loop's state the way the
//! loop does, while `reactor.rs` itself only gains one call per hook. With
//! no `--redis`, `Server::cluster` is `None` and every hook here is a
//! no-op: connection ids stay 1, 2, 3, … and room messages go straight to
//! the local room, as before.

use std::fmt::Write as _;
use std::io;

use mio::event::Event;
use mio::Poll;

use super::{Server, REDIS_PUBLISHER, REDIS_SUBSCRIBER};
use crate::config::Config;
use crate::protocol::OpCode;
use crate::server::cluster::{Cluster, ClusterConfig};
use crate::server::timer::{Clock, Millis};

/// Rooms listed by `wschat_room_connections`: the largest ones only, so a
/// server with many rooms still has a bounded number of series.
pub(super) const TOP_ROOMS: usize = 10;

impl Server {
    /// The cluster, when `--redis` is given; nothing at all otherwise.
    pub(super) fn start_cluster(config: &Config, poll: &Poll) -> io::Result<Option<Cluster>> {
        let Some(url) = config.redis.clone() else {
            return Ok(None);
        };
        let cluster = ClusterConfig {
            url,
            max_message_size: config.max_message_size.min(crate::config::MAX_MESSAGE_SIZE),
            queue_limit: config.max_backpressure,
        };
        let tokens = [REDIS_PUBLISHER, REDIS_SUBSCRIBER];
        // The loop's clock starts at its first millisecond.
        Cluster::start(cluster, poll.registry(), tokens, Clock::new().now()).map(Some)
    }

    /// Readiness of one of the two links to Redis.
    pub(super) fn on_cluster_event(&mut self, event: &Event) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.handle_event(event, self.clock.now());
            self.deliver_remote();
        }
    }

    /// The cluster's end-of-turn work; runs before the dirty connections
    /// are flushed, so what it delivers leaves in the same turn.
    pub(super) fn cluster_turn(&mut self) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.handle_timeout(self.clock.now());
            self.deliver_remote();
        }
    }

    /// When the cluster next needs a turn (now, if it has work left).
    pub(super) fn cluster_deadline(&self) -> Option<Millis> {
        self.cluster.as_ref()?.poll_timeout()
    }

    /// The id of a new WebSocket connection, never repeated in this
    /// process: 1, 2, 3, … alone, or from Redis's blocks in cluster mode.
    pub(super) fn next_connection_id(&mut self) -> u64 {
        if let Some(cluster) = self.cluster.as_mut() {
            return cluster.next_id();
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Hands a local client's room message to Redis. `false`: not in
    /// cluster mode, or degraded; the caller delivers it locally.
    pub(super) fn publish_to_cluster(
        &mut self,
        room: usize,
        sender: u64,
        opcode: OpCode,
        payload: &[u8],
    ) -> bool {
        let (Some(cluster), Some(name)) = (self.cluster.as_mut(), self.rooms.name(room)) else {
            return false;
        };
        cluster.publish(name, sender, opcode, payload, self.clock.now())
    }

    /// The body of `/healthz`: `degraded` while Redis is unreachable.
    pub(super) fn health(&self) -> &'static str {
        match &self.cluster {
            Some(cluster) if !cluster.is_up() => "degraded",
            _ => "ok",
        }
    }

    /// Appends the largest rooms' sizes and, in cluster mode, the
    /// cluster's gauges and counters to a `/metrics` page.
    pub(super) fn render_extra_metrics(&self, page: &mut String) {
        let mut sizes: Vec<(&str, usize)> = self.rooms.sizes().collect();
        render_top_rooms(page, &mut sizes);
        if let Some(cluster) = &self.cluster {
            cluster.render_metrics(page);
        }
    }

    /// Room messages from Redis, to this instance's members of their
    /// rooms. Each message borrows the cluster, and `broadcast` borrows the
    /// whole server: the cluster is set aside meanwhile.
    fn deliver_remote(&mut self) {
        let Some(mut cluster) = self.cluster.take() else {
            return;
        };
        while let Some(m) = cluster.poll_message() {
            if let Some(room) = self.rooms.find(m.room) {
                self.broadcast(room, m.sender, m.opcode, m.payload);
            }
        }
        self.cluster = Some(cluster);
    }
}

/// Appends `wschat_room_connections{room="…"}` for the [`TOP_ROOMS`]
/// largest rooms (ties by name), reordering `sizes`. Room names need no
/// escaping: they are letters, digits, `-`, `_` and `.` only.
pub(super) fn render_top_rooms(out: &mut String, sizes: &mut [(&str, usize)]) {
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
    use super::super::{LISTENER, SIGNALS, WAKER};
    use super::*;

    #[test]
    fn fixed_tokens_are_distinct() {
        let tokens = [LISTENER, WAKER, SIGNALS, REDIS_PUBLISHER, REDIS_SUBSCRIBER];
        for (i, a) in tokens.iter().enumerate() {
            assert!(!tokens[i + 1..].contains(a), "{a:?} twice");
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
