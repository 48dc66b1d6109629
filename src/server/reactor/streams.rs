//! SSE streams: `GET /room/{name}/events` answered with a `200` whose body
//! goes on (events, heartbeats) until either side closes, the connection
//! a member of its room like a `wschat.v1` WebSocket.

use log::{debug, info, warn};

use super::Server;
use crate::http::{self, Reply};
use crate::server::connection::EventStream;
use crate::server::history::Position;
use crate::server::outgoing::Format;
use crate::server::policy::{PolicyClose, Refusal};

impl Server {
    /// Opens an SSE stream of `room` on connection `key` (recovering from
    /// `since`, as a WebSocket client would): its session is made, the
    /// head queued, and the connection joins the room, welcomed first.
    /// A HEAD gets the head alone.
    pub(super) fn open_stream(
        &mut self,
        key: usize,
        reply: Reply,
        room: &str,
        since: Option<&Position>,
    ) {
        if reply.head_only {
            return self.answer(key, reply, http::event_stream);
        }
        let id = self.relay.next_id();
        let Some((session, token)) = self.sessions.open_stream(id, room, key) else {
            return self.refuse_in(key, Refusal::SessionUnavailable, reply.closing());
        };
        let ping_at = self.clock.after(self.settings.config.ping_interval);
        let Some(conn) = self.table.get_mut(key) else {
            self.sessions.close(session);
            return;
        };
        debug!("client-{id} SSE stream from {} (room {room})", conn.peer());
        let stream = EventStream {
            id,
            session,
            token: token.to_text().into(),
        };
        conn.open_stream(http::event_stream(reply), stream, ping_at);
        self.table.track_timer(key);
        self.table.mark_dirty(key);
        self.join_room(key, id, Format::Sse, room, since);
    }

    /// Ends SSE stream `key` for `reason`: what is queued goes out (a
    /// slow reader's backlog is dropped first), then FIN. There is no
    /// close code: `EventSource` reconnects with `Last-Event-ID`.
    pub(super) fn end_stream(&mut self, key: usize, reason: PolicyClose) {
        let close_by = self.clock.after(self.settings.config.close_timeout);
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        let Some(id) = conn.stream().map(|s| s.id) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        if reason.fails() {
            conn.discard_unsent();
            warn!("client-{id} ({}): ending SSE stream: {reason}", conn.peer());
        } else if reason == PolicyClose::IdleTimeout {
            info!("client-{id} ({}): ending SSE stream: {reason}", conn.peer());
        }
        conn.finish_stream(close_by);
        self.table.track_timer(key);
        self.table.mark_dirty(key);
    }
}
