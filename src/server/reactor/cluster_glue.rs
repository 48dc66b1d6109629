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

use super::Server;
use crate::config::Config;
use crate::protocol::OpCode;
use crate::server::cluster::{Cluster, Inbound};
use crate::server::timer::{Millis, Time};

/// Rooms listed by `wschat_room_connections`: the largest ones only, so a
/// server with many rooms still has a bounded number of series.
pub(super) const TOP_ROOMS: usize = 10;

impl Server {
    /// The cluster, when `--redis` is given; nothing at all otherwise.
    pub(super) fn start_cluster(config: &Config, poll: &Poll) -> io::Result<Option<Cluster>> {
        let Some(url) = config.redis.clone() else {
            return Ok(None);
        };
        Cluster::start(
            url,
            poll.registry(),
            config.max_message_size,
            config.max_backpressure,
            // The loop's clock starts at its first millisecond.
            millis(Time::START),
        )
        .map(Some)
    }

    /// Readiness of one of the two links to Redis.
    pub(super) fn on_cluster_event(&mut self, event: &Event) {
        let Some(mut cluster) = self.cluster.take() else {
            return;
        };
        let now = millis(self.clock.now());
        cluster.on_event(event, now, &mut |m| self.deliver_remote(m));
        self.cluster = Some(cluster);
    }

    /// The cluster's end-of-turn work; runs before the dirty connections
    /// are flushed, so what it delivers leaves in the same turn.
    pub(super) fn cluster_turn(&mut self) {
        let Some(mut cluster) = self.cluster.take() else {
            return;
        };
        let now = millis(self.clock.now());
        cluster.end_of_turn(now, &mut |m| self.deliver_remote(m));
        self.cluster = Some(cluster);
    }

    /// When the cluster next needs a turn (now, if it has work left).
    pub(super) fn cluster_deadline(&self) -> Option<Time> {
        let cluster = self.cluster.as_ref()?;
        if cluster.busy() {
            return Some(self.clock.now());
        }
        cluster
            .next_deadline()
            .map(|at| Time::from_millis(at.saturating_sub(1)))
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
        let (Some(cluster), Some(name)) = (self.cluster.as_mut(), self.hub.rooms.name(room)) else {
            return false;
        };
        cluster.publish(name, sender, opcode, payload, millis(self.clock.now()))
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
        let mut sizes: Vec<(&str, usize)> = self.hub.rooms.sizes().collect();
        render_top_rooms(page, &mut sizes);
        if let Some(cluster) = &self.cluster {
            cluster.render_metrics(page);
        }
    }

    /// A room message from Redis, to this instance's members of its room.
    fn deliver_remote(&mut self, m: Inbound<'_>) {
        if let Some(room) = self.hub.rooms.find(m.room) {
            self.broadcast(room, m.sender, m.opcode, m.payload);
        }
    }
}

/// The link's milliseconds for an instant of the loop.
fn millis(t: Time) -> Millis {
    t.as_millis() + 1
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
    use super::*;

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
