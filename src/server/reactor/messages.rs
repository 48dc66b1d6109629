//! What a session's events do: echoes, room messages through the relay,
//! and the closes that follow a protocol error or a policy.

use log::{info, warn};

use super::{members, wake, Server};
use crate::protocol::session::{Event, Payload};
use crate::protocol::{CloseCode, OpCode, ProtocolError};
use crate::server::connection::{Echo, Endpoint};
use crate::server::hub::{Numbered, Pump, RoomMessage};
use crate::server::outgoing::Format;
use crate::server::policy::PolicyClose;
use crate::server::relay::Route;
use crate::server::room::FORMATS;
use crate::server::timer::wall_ms;
use crate::server::write_queue::BufferPool;

impl Server {
    /// Acts on the session events of connection `key`, in order; `data` is
    /// the buffer the session read them from.
    pub(super) fn dispatch(&mut self, key: usize, data: &[u8]) {
        let mut events = std::mem::take(&mut self.buffers.events);
        for event in events.drain(..) {
            match event {
                Event::Message { opcode, payload } => self.on_message(key, opcode, payload, data),
                Event::Send(frame) => {
                    if let Some(conn) = self.table.get_mut(key) {
                        conn.send_control(frame);
                        self.table.mark_dirty(key);
                    }
                }
                Event::Close { frame, error } => {
                    if let Some(err) = error {
                        self.log_protocol_close(key, err);
                    }
                    self.send_close(key, frame);
                }
            }
        }
        self.buffers.events = events;
    }

    fn on_message(&mut self, key: usize, opcode: OpCode, payload: Payload, data: &[u8]) {
        let bytes = payload.bytes(data);
        self.metrics.messages_received += 1;
        self.metrics.bytes_received += bytes.len() as u64;
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        // Events are acted on in order: once a Close is queued (a policy
        // close earlier in this batch), later messages are dropped.
        let Some((id, endpoint)) = conn.websocket().map(|ws| (ws.id, ws.endpoint)) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        if let Some(rate) = self.settings.config.max_messages_per_second {
            if !conn.take_rate_token(self.clock.now(), rate) {
                self.metrics.rate_limited += 1;
                self.close_for(key, PolicyClose::RateLimited);
                return;
            }
        }
        match endpoint {
            Endpoint::Echo => self.echo(key, opcode, payload, data),
            Endpoint::Room => {
                if let Some(room) = self.hub.rooms.room_of(key) {
                    let message = RoomMessage {
                        sender: id,
                        opcode,
                        payload: bytes,
                        time_ms: wall_ms(),
                        numbered: None,
                    };
                    // Cluster mode: the message comes back through Redis,
                    // to every instance alike, so it is not delivered here now.
                    if self.relay_room_message(room, message) == Route::DeliverHere {
                        self.broadcast(room, message);
                    }
                }
                recycle(&mut self.buffers.pool, payload);
            }
        }
        self.check_outbound();
    }

    /// Sends a message back to its sender, compressed if agreed.
    fn echo(&mut self, key: usize, opcode: OpCode, payload: Payload, data: &[u8]) {
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        let Some(ws) = conn.websocket_mut() else {
            return;
        };
        let len = payload.bytes(data).len();
        let pool = &mut self.buffers.pool;
        let queued = if ws.compression.is_off() || len < self.settings.config.compression_min_size {
            match payload {
                // A buffer of its own moves into the queue: no copy.
                Payload::Owned(buf) => conn.echo(opcode, Echo::Owned(buf), pool),
                Payload::InPlace(range) => conn.echo(opcode, Echo::Borrowed(&data[range]), pool),
            }
        } else {
            let mut message = self.hub.outgoing(opcode, b"", payload.bytes(data));
            let frame = ws.compression.frame_of(&mut message, Format::Classic);
            drop(message);
            recycle(pool, payload);
            conn.push_shared(frame)
        };
        self.metrics.messages_sent += 1;
        // TCP backpressure: stop reading a client that does not read.
        if queued > self.settings.config.max_backpressure {
            conn.pause_reading();
        }
        self.table.mark_dirty(key);
    }

    /// Hands a local client's room message to the relay, which says
    /// whether it is delivered to the local room now.
    pub(super) fn relay_room_message(&mut self, room: usize, m: RoomMessage<'_>) -> Route {
        let Some(name) = self.hub.rooms.name(room) else {
            return Route::DeliverHere;
        };
        self.relay.publish(
            name,
            m.sender,
            m.opcode,
            m.payload,
            m.time_ms,
            self.clock.now(),
        )
    }

    /// Room messages the relay brought back (from Redis), to this
    /// instance's members of their rooms. Each message borrows the relay's
    /// read buffer while the hub and the connections are borrowed beside it.
    pub(super) fn deliver_relayed(&mut self) {
        let limit = self.settings.config.max_backpressure;
        while let Some(m) = self.relay.poll_message() {
            let Some(room) = self.hub.rooms.find(m.room) else {
                continue;
            };
            // Redis numbered it; a message without a stamp (none comes
            // from this version) is numbered here.
            let message = RoomMessage {
                sender: m.sender,
                opcode: m.opcode,
                payload: m.payload,
                time_ms: m.stamp.map_or_else(wall_ms, |s| s.time_ms),
                numbered: m.stamp.map(|s| Numbered {
                    epoch: s.epoch,
                    offset: s.offset,
                }),
            };
            let members = &mut members(&mut self.table, &mut self.sessions);
            let now = self.clock.now();
            let fanout = self.hub.broadcast(room, message, members, limit, now);
            wake(&mut self.table, &mut self.sessions, &mut fanout.woken);
            let (delivered, refused) = (fanout.delivered_to, std::mem::take(&mut fanout.refused));
            self.after_broadcast(delivered, refused);
        }
    }

    /// Delivers a message to the local members of `room`, and keeps it in
    /// the room's history.
    pub(super) fn broadcast(&mut self, room: usize, message: RoomMessage<'_>) {
        let limit = self.settings.config.max_backpressure;
        let members = &mut members(&mut self.table, &mut self.sessions);
        let now = self.clock.now();
        let fanout = self.hub.broadcast(room, message, members, limit, now);
        wake(&mut self.table, &mut self.sessions, &mut fanout.woken);
        let (delivered, refused) = (fanout.delivered_to, std::mem::take(&mut fanout.refused));
        self.after_broadcast(delivered, refused);
    }

    /// Sends replaying member `key` more of its room's history, as far as
    /// its queue allows; one that fell behind what the history keeps is
    /// closed.
    pub(super) fn pump(&mut self, key: usize) {
        if self.hub.rooms.cursor(key).is_none() {
            return;
        }
        let limit = self.settings.config.max_backpressure;
        let mut woken = Vec::new();
        let members = &mut members(&mut self.table, &mut self.sessions);
        let outcome = self.hub.pump(key, members, limit, &mut woken);
        wake(&mut self.table, &mut self.sessions, &mut woken);
        if outcome == Pump::Lost {
            self.metrics.slow_consumers += 1;
            self.close_for(key, PolicyClose::HistoryOverrun);
        }
    }

    /// Counts a broadcast's deliveries (by the receivers' format; a
    /// poller's are counted when its poll is answered) and closes the
    /// receivers that refused it (slow consumers).
    fn after_broadcast(&mut self, delivered: [usize; FORMATS], refused: Vec<usize>) {
        let websocket = delivered[Format::Classic as usize] + delivered[Format::Json as usize];
        let sse = delivered[Format::Sse as usize];
        self.metrics.messages_sent += (websocket + sse) as u64;
        self.metrics.deliveries.websocket += websocket as u64;
        self.metrics.deliveries.sse += sse as u64;
        for slow in refused {
            self.metrics.slow_consumers += 1;
            self.close_for(slow, PolicyClose::SlowConsumer);
        }
        self.check_outbound();
    }

    /// Past the outbound budget, closes the connections with the largest
    /// queues until all queues together fit it again.
    fn check_outbound(&mut self) {
        let budget = self.settings.config.max_outbound_memory;
        if self.budgets.outbound.get() <= budget {
            return;
        }
        let mut by_size: Vec<(usize, usize)> = self
            .table
            .conns()
            .iter()
            .filter(|(_, c)| !c.is_dead() && !c.is_closing() && c.backlog_bytes() > 0)
            .map(|(key, c)| (c.backlog_bytes(), key))
            .collect();
        by_size.sort_unstable_by(|a, b| b.cmp(a));
        let mut shed = 0;
        for (_, key) in by_size {
            if self.budgets.outbound.get() <= budget {
                break;
            }
            self.metrics.slow_consumers += 1;
            shed += 1;
            self.close_for(key, PolicyClose::SlowConsumer);
        }
        warn!(
            "outbound queues over {budget} bytes: closed the {shed} largest, {} bytes left",
            self.budgets.outbound.get()
        );
    }

    /// Closes an open WebSocket (or ends an SSE stream) for a reason of
    /// the server's.
    pub(super) fn close_for(&mut self, key: usize, reason: PolicyClose) {
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        if conn.stream().is_some() {
            return self.end_stream(key, reason);
        }
        let Some(ws) = conn.websocket_mut() else {
            return;
        };
        let (code, text) = (reason.close_code(), reason.reason());
        let frame = if reason.fails() {
            ws.session.abort(code, text)
        } else {
            ws.session.close(code, text).and_then(|e| match e {
                Event::Close { frame, .. } => Some(frame),
                _ => None,
            })
        };
        let Some(frame) = frame else {
            return;
        };
        if reason.fails() {
            // What has not started on the wire is dropped: its memory is
            // freed now and the Close goes out next.
            conn.discard_unsent();
            let id = conn.id().unwrap_or(0);
            warn!(
                "client-{id} ({}): closing {}: {reason}",
                conn.peer(),
                code.0
            );
            *self.metrics.protocol_errors.entry(code.0).or_default() += 1;
        }
        self.send_close(key, frame);
    }

    /// Logs and counts a close for a broken protocol rule.
    fn log_protocol_close(&mut self, key: usize, err: ProtocolError) {
        let Some(conn) = self.table.get(key) else {
            return;
        };
        let code = err.close_code();
        let id = conn.id().unwrap_or(0);
        if code == CloseCode::PROTOCOL_ERROR || code == CloseCode::INVALID_PAYLOAD {
            info!("client-{id} ({}): closing {}: {err}", conn.peer(), code.0);
        } else {
            warn!("client-{id} ({}): closing {}: {err}", conn.peer(), code.0);
        }
        *self.metrics.protocol_errors.entry(code.0).or_default() += 1;
    }

    /// Queues a Close frame, the last bytes of the connection.
    fn send_close(&mut self, key: usize, frame: Vec<u8>) {
        let close_by = self.clock.after(self.settings.config.close_timeout);
        if let Some(conn) = self.table.get_mut(key) {
            conn.send_close(frame, close_by);
            self.table.track_timer(key);
            self.table.mark_dirty(key);
        }
    }
}

/// Gives a message's own buffer back to the pool (one in place has none).
fn recycle(pool: &mut BufferPool, payload: Payload) {
    if let Payload::Owned(buf) = payload {
        pool.put(buf);
    }
}
