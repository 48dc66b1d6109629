//! How connections end: their timers, the server's shutdown, and removal
//! at the end of a turn.

use log::{debug, info};

use super::{members, wake, Server};
use crate::http::{self, Reply};
use crate::server::connection::Expiry;
use crate::server::policy::{PolicyClose, Refusal};

impl Server {
    /// Handles every connection timer due now.
    pub(super) fn fire_timers(&mut self) {
        let now = self.clock.now();
        while let Some(key) = self.table.pop_due(now) {
            let timeouts = self.settings.timeouts;
            let Some(conn) = self.table.get_mut(key) else {
                continue;
            };
            match conn.handle_timeout(now, timeouts) {
                Expiry::Handshake => self.request_timed_out(key),
                Expiry::KeepAlive => self.end_exchange(key),
                Expiry::Close => {
                    if conn.websocket().is_some() {
                        debug!("{}: close timeout", conn.peer());
                        self.metrics.timeouts += 1;
                    }
                    self.table.remove_at_turn_end(key);
                }
                Expiry::Idle(silent) => {
                    let id = conn.id().unwrap_or(0);
                    let ms = silent.as_millis();
                    info!("client-{id} ({}): idle for {ms} ms, closing", conn.peer());
                    self.metrics.timeouts += 1;
                    self.close_for(key, PolicyClose::IdleTimeout);
                }
                Expiry::Pinged => {
                    self.table.track_timer(key);
                    self.table.mark_dirty(key);
                }
                Expiry::Rearmed => self.table.track_timer(key),
                Expiry::PollDue => self.answer_poll(key, true),
            }
        }
    }

    /// Answers a request that did not complete in time with 408 and ends
    /// its connection: best effort, then gone, since a slow client gets no
    /// more time; behind answers still queued (pipelined), in turn.
    fn request_timed_out(&mut self, key: usize) {
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        let refusal = if conn.is_reading_body() {
            Refusal::BodyTimeout
        } else {
            Refusal::Timeout
        };
        self.metrics.timeouts += 1;
        if conn.backlog_bytes() > 0 {
            return self.refuse(key, refusal);
        }
        let peer = conn.peer();
        conn.write_once(&http::error(refusal, Reply::CLOSE));
        self.count_refusal(refusal, peer);
        self.table.remove_at_turn_end(key);
    }

    /// Stops accepting and starts the closing handshake with every client.
    pub(super) fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!("shutting down: closing {} connections", self.table.len());
        self.notifier.stopping();
        self.acceptor.close(self.poll.registry());
        if let Some(tls) = self.tls.as_mut() {
            tls.acceptor.close(self.poll.registry());
        }
        self.shutdown_deadline = Some(self.clock.after(self.settings.config.shutdown_timeout));
        for key in self.table.keys() {
            let Some(conn) = self.table.get(key) else {
                continue;
            };
            // Idle kept-alive connections and requests not complete go at
            // once; answers on their way are finished first; held polls
            // are answered, then closed.
            if conn.is_exchanging() {
                self.end_exchange(key);
            } else if conn.held_poll().is_some() {
                self.answer_poll(key, true);
            } else if conn.websocket().is_some() || conn.stream().is_some() {
                self.close_for(key, PolicyClose::ShuttingDown);
            }
        }
    }

    /// Removes the connections that ended this turn.
    pub(super) fn reap(&mut self) {
        let registry = self.poll.registry();
        let (budgets, per_address) = (&mut self.budgets, &mut self.per_address);
        let (sessions, now) = (&mut self.sessions, self.clock.now());
        let mut left = std::mem::take(&mut self.buffers.left);
        self.table.reap(|key, mut conn| {
            conn.deregister(registry);
            budgets.inbound -= conn.buffered_bytes();
            if conn.is_admitted() {
                per_address.release(conn.peer().ip());
            }
            // A stream's session ends with it; a poller outlives its poll.
            if let Some(stream) = conn.stream() {
                sessions.close(stream.session);
            }
            if let Some(poll) = conn.held_poll() {
                sessions.release(poll.session, key, now);
            }
            if let Some(id) = conn.id() {
                left.push((key, id));
                debug!("client-{id} closed");
            }
        });
        // Before any key is used again: the rooms know members by key.
        let mut woken = Vec::new();
        for (key, id) in left.drain(..) {
            let members = &mut members(&mut self.table, &mut self.sessions);
            self.hub.leave(key, id, members, &mut woken);
        }
        wake(&mut self.table, &mut self.sessions, &mut woken);
        self.buffers.left = left;
    }
}
