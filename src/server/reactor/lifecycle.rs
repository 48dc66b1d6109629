//! Deadlines, shutdown and removal: how connections end.
//!
//! A part of the reactor's `impl Server`, in a file of its own so that
//! each file stays readable; it reaches the reactor's private state as a
//! child module.

use super::*;

impl Server {
    pub(super) fn set_deadline(&mut self, key: usize, at: Millis) {
        self.conns[key].deadline = at;
        self.timers.push(at, key);
    }

    pub(super) fn fire_timers(&mut self) {
        while let Some((at, key)) = self.timers.pop_due(self.clock.now()) {
            match self.conns.get_mut(key) {
                Some(conn) if conn.deadline == at && !conn.flags.dead => {
                    conn.deadline = 0;
                    self.on_deadline(key);
                }
                _ => {} // stale: the deadline moved or the connection is gone
            }
        }
    }

    pub(super) fn on_deadline(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let closing = conn.queue.is_sealed();
        match &mut conn.phase {
            Phase::Handshake { .. } => {
                let peer = conn.peer;
                self.metrics.timeouts += 1;
                self.count_refusal(HandshakeError::Timeout, peer);
                let conn = &mut self.conns[key];
                // Best effort, then gone: a slow client gets no more time.
                let _ = conn.stream.write(&http::error(HandshakeError::Timeout));
                self.kill(key);
            }
            Phase::Responded => self.kill(key),
            Phase::Open { .. } if closing => {
                debug!("{}: close timeout", conn.peer);
                self.metrics.timeouts += 1;
                self.kill(key);
            }
            Phase::Open { id, session, .. } => {
                let silent = self.clock.now() - conn.last_rx;
                let idle_ms = to_millis(self.config.idle_timeout);
                let ping_ms = to_millis(self.config.ping_interval);
                if silent >= idle_ms {
                    info!("client-{id} ({}): idle for {silent} ms, closing", conn.peer);
                    self.metrics.timeouts += 1;
                    if let Some(Event::Close { frame, error }) =
                        session.close(CloseCode::GOING_AWAY, "idle timeout")
                    {
                        self.send_close(key, frame, error);
                    }
                } else if silent >= ping_ms {
                    if !conn.flags.pinged {
                        conn.flags.pinged = true;
                        self.outbound += conn.queue.push_frame(OpCode::Ping, b"");
                        self.mark_dirty(key);
                    }
                    let at = self.conns[key].last_rx + idle_ms;
                    self.set_deadline(key, at);
                } else {
                    let at = conn.last_rx + ping_ms;
                    self.set_deadline(key, at);
                }
            }
        }
    }

    pub(super) fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!("shutting down: closing {} connections", self.conns.len());
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.shutdown_deadline = Some(self.clock.after(self.config.shutdown_timeout));
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            match &mut conn.phase {
                Phase::Handshake { .. } => self.kill(key),
                Phase::Open { session, .. } => {
                    if let Some(Event::Close { frame, error }) =
                        session.close(CloseCode::GOING_AWAY, "server shutting down")
                    {
                        self.send_close(key, frame, error);
                    }
                }
                Phase::Responded => {}
            }
        }
    }

    pub(super) fn kill(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.flags.dead {
                conn.flags.dead = true;
                self.dead.push(key);
            }
        }
    }

    /// Removes the connections that ended this turn.
    pub(super) fn reap(&mut self) {
        // Each connection leaves stale deadlines behind; once they
        // outnumber the live ones, drop them rather than wait for them.
        if self.timers.len() > 2 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.timers
                .retain(|at, key| conns.get(key).is_some_and(|c| c.deadline == at));
        }
        for key in std::mem::take(&mut self.dead) {
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.outbound -= conn.queue.queued_bytes();
            if let Phase::Open { session, .. } = &conn.phase {
                self.inbound -= session.buffered_bytes();
            }
            self.per_address.release(conn.peer.ip());
            if let Phase::Open { id, endpoint, .. } = conn.phase {
                if let Endpoint::Room(m) = endpoint {
                    if let Some((moved, slot)) = self.rooms.leave(m) {
                        if let Some(Connection {
                            phase:
                                Phase::Open {
                                    endpoint: Endpoint::Room(moved_m),
                                    ..
                                },
                            ..
                        }) = self.conns.get_mut(moved)
                        {
                            *moved_m = slot;
                        }
                    }
                }
                debug!("client-{id} closed");
            }
        }
    }
}
