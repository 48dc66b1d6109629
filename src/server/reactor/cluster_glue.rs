//! The reactor's side of the relay (cluster mode), and the per-room gauges.
//!
//! A child module of `reactor`, so it reaches the loop's state the way the
//! loop does, while `reactor.rs` itself only gains one call per hook. With
//! no `--redis`, `Server::relay` is `Relay::Local`: connection ids are 1,
//! 2, 3, … and room messages go straight to the local room, as before.

use std::fmt::Write as _;
use std::io;

use mio::event::Event;
use mio::Poll;

use super::{Server, REDIS_PUBLISHER, REDIS_SUBSCRIBER};
use crate::config::Config;
use crate::protocol::OpCode;
use crate::server::relay::{Relay, Route};
use crate::server::timer::{Clock, Millis};

/// Rooms listed by `wschat_room_connections`: the largest ones only, so a
/// server with many rooms still has a bounded number of series.
pub(super) const TOP_ROOMS: usize = 10;

impl Server {
    /// The relay `--redis` asks for; the reactor's two Redis tokens go to it.
    pub(super) fn start_relay(config: &Config, poll: &Poll) -> io::Result<Relay> {
        let tokens = [REDIS_PUBLISHER, REDIS_SUBSCRIBER];
        // The loop's clock starts at its first millisecond.
        Relay::start(config, poll.registry(), tokens, Clock::new().now())
    }

    /// Readiness of one of the two links to Redis.
    pub(super) fn on_cluster_event(&mut self, event: &Event) {
        self.relay.handle_event(event, self.clock.now());
        self.deliver_relayed();
    }

    /// The relay's end-of-turn work; runs before the dirty connections are
    /// flushed, so what it delivers leaves in the same turn.
    pub(super) fn cluster_turn(&mut self) {
        self.relay.handle_timeout(self.clock.now());
        self.deliver_relayed();
    }

    /// When the relay next needs a turn (now, if it has work left).
    pub(super) fn cluster_deadline(&self) -> Option<Millis> {
        self.relay.poll_timeout()
    }

    /// The id of a new WebSocket connection, never repeated in this
    /// process: 1, 2, 3, … alone, or from Redis's blocks in cluster mode.
    pub(super) fn next_connection_id(&mut self) -> u64 {
        self.relay.next_id()
    }

    /// Hands a local client's room message to the relay, which says
    /// whether the caller delivers it to the local room now.
    pub(super) fn relay_room_message(
        &mut self,
        room: usize,
        sender: u64,
        opcode: OpCode,
        payload: &[u8],
    ) -> Route {
        let Some(name) = self.rooms.name(room) else {
            return Route::DeliverHere;
        };
        self.relay
            .publish(name, sender, opcode, payload, self.clock.now())
    }

    /// The body of `/healthz`: `degraded` while Redis is unreachable.
    pub(super) fn health(&self) -> &'static str {
        self.relay.health()
    }

    /// Appends the largest rooms' sizes and, in cluster mode, the
    /// cluster's gauges and counters to a `/metrics` page.
    pub(super) fn render_extra_metrics(&self, page: &mut String) {
        let mut sizes: Vec<(&str, usize)> = self.rooms.sizes().collect();
        render_top_rooms(page, &mut sizes);
        self.relay.render_metrics(page);
    }

    /// Room messages relayed back by Redis, to this instance's members of
    /// their rooms. Each message borrows the relay, and `broadcast` borrows
    /// the whole server: the relay is set aside meanwhile (a reactor that
    /// keeps its rooms apart from the relay borrows both side by side).
    fn deliver_relayed(&mut self) {
        let mut relay = std::mem::replace(&mut self.relay, Relay::local());
        while let Some(m) = relay.poll_message() {
            if let Some(room) = self.rooms.find(m.room) {
                self.broadcast(room, m.sender, m.opcode, m.payload);
            }
        }
        self.relay = relay;
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
