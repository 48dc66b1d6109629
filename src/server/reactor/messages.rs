//! Messages and their consequences: echo, broadcast, policy closes and the outbound budget.
//!
//! A part of the reactor's `impl Server`, in a file of its own so that
//! each file stays readable; it reaches the reactor's private state as a
//! child module.

use super::*;

impl Server {
    /// Acts on the session events of connection `key`, in order; `data` is
    /// the buffer the session read them from.
    pub(super) fn dispatch(&mut self, key: usize, data: &[u8]) {
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            match event {
                Event::Message { opcode, payload } => self.on_message(key, opcode, payload, data),
                Event::Send(frame) => {
                    self.outbound += self.conns[key].queue.push_owned(frame);
                    self.mark_dirty(key);
                }
                Event::Close { frame, error } => self.send_close(key, frame, error),
            }
        }
        self.events = events;
    }

    pub(super) fn on_message(&mut self, key: usize, opcode: OpCode, payload: Payload, data: &[u8]) {
        let bytes = payload.bytes(data);
        self.metrics.messages_received += 1;
        self.metrics.bytes_received += bytes.len() as u64;
        let conn = &mut self.conns[key];
        let Phase::Open {
            id,
            endpoint,
            ref mut compression,
            ..
        } = conn.phase
        else {
            return;
        };
        // Events are acted on in order: once a Close is queued (a policy
        // close earlier in this batch), later messages are dropped.
        if conn.queue.is_sealed() {
            return;
        }
        if let Some(rate) = self.config.max_messages_per_second {
            if !conn.rate.take(self.clock.now(), rate) {
                self.metrics.rate_limited += 1;
                self.fail(key, ProtocolError::RateLimited);
                return;
            }
        }
        match endpoint {
            Endpoint::Echo => {
                let min = self.config.compression_min_size;
                self.outbound += if matches!(compression, Compression::Off) || bytes.len() < min {
                    match payload {
                        // A buffer of its own moves into the queue: no copy.
                        Payload::Owned(buf) => {
                            conn.queue.push_frame_vec(opcode, buf, &mut self.pool)
                        }
                        Payload::InPlace(_) => conn.queue.push_frame(opcode, bytes),
                    }
                } else {
                    let mut message = Outgoing::new(
                        opcode,
                        b"",
                        bytes,
                        min,
                        &mut self.deflater,
                        &mut self.frame_scratch,
                    );
                    let queued = conn.queue.push_shared(compression.frame_of(&mut message));
                    recycle(&mut self.pool, payload);
                    queued
                };
                self.metrics.messages_sent += 1;
                // TCP backpressure: stop reading a client that does not read.
                if conn.queue.queued_bytes() > self.config.max_backpressure {
                    conn.flags.paused = true;
                }
                self.mark_dirty(key);
            }
            Endpoint::Room(m) => {
                // Cluster mode: the message comes back through Redis, to
                // every instance alike, so it is not delivered here now.
                if self.relay_room_message(m.room, id, opcode, bytes) == Route::DeliverHere {
                    self.broadcast(m.room, id, opcode, bytes);
                }
                recycle(&mut self.pool, payload);
            }
        }
        if self.outbound > self.config.max_outbound_memory {
            self.shed_outbound();
        }
    }

    /// Delivers `from{sender}:{payload}` to the local members of `room`,
    /// framed once per form, and deals with the receivers that refused it.
    pub(super) fn broadcast(&mut self, room: usize, sender: u64, opcode: OpCode, payload: &[u8]) {
        self.fanout.limit = self.config.max_backpressure;
        let prefix = format!("from{sender}:");
        let mut message = Outgoing::new(
            opcode,
            prefix.as_bytes(),
            payload,
            self.config.compression_min_size,
            &mut self.deflater,
            &mut self.frame_scratch,
        );
        self.rooms
            .broadcast(room, &mut message, &mut self.conns, &mut self.fanout);
        if self.frame_scratch.capacity() > 64 * 1024 {
            self.frame_scratch = Vec::new();
        }
        self.outbound += self.fanout.queued_bytes;
        self.metrics.messages_sent += self.fanout.delivered as u64;
        self.dirty.append(&mut self.fanout.woken);
        for slow in std::mem::take(&mut self.fanout.refused) {
            self.metrics.slow_consumers += 1;
            self.fail(slow, ProtocolError::SlowConsumer);
        }
        if self.outbound > self.config.max_outbound_memory {
            self.shed_outbound();
        }
    }

    /// Closes the connections with the largest queues until all queues
    /// together fit the outbound budget again.
    pub(super) fn shed_outbound(&mut self) {
        let mut by_size: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.flags.dead && !c.queue.is_sealed() && !c.queue.is_empty())
            .map(|(key, c)| (c.queue.queued_bytes(), key))
            .collect();
        by_size.sort_unstable_by(|a, b| b.cmp(a));
        let budget = self.config.max_outbound_memory;
        let mut shed = 0;
        for (_, key) in by_size {
            if self.outbound <= budget {
                break;
            }
            self.metrics.slow_consumers += 1;
            shed += 1;
            self.fail(key, ProtocolError::SlowConsumer);
        }
        warn!(
            "outbound queues over {budget} bytes: closed the {shed} largest, {} bytes left",
            self.outbound
        );
    }

    /// Fails an open connection for a reason found outside its session.
    pub(super) fn fail(&mut self, key: usize, err: ProtocolError) {
        let Some(Connection {
            phase: Phase::Open { session, .. },
            queue,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        if let Some(Event::Close { frame, error }) = session.fail(err) {
            // What has not started on the wire is dropped: its memory is
            // freed now and the Close goes out next.
            self.outbound -= queue.discard_unsent();
            self.send_close(key, frame, error);
        }
    }

    pub(super) fn send_close(&mut self, key: usize, frame: Vec<u8>, error: Option<ProtocolError>) {
        let conn = &mut self.conns[key];
        if let Some(err) = error {
            let code = err.close_code();
            let id = conn.id().unwrap_or(0);
            if code == CloseCode::PROTOCOL_ERROR || code == CloseCode::INVALID_PAYLOAD {
                info!("client-{id} ({}): closing {}: {err}", conn.peer, code.0);
            } else {
                warn!("client-{id} ({}): closing {}: {err}", conn.peer, code.0);
            }
            *self.metrics.protocol_errors.entry(code.0).or_default() += 1;
        }
        self.outbound += conn.queue.push_owned(frame);
        conn.queue.seal();
        conn.inbuf = Vec::new();
        self.mark_dirty(key);
        self.set_deadline(key, self.clock.after(self.config.close_timeout));
    }
}

/// Gives a message's own buffer back to the pool (one in place has none).
fn recycle(pool: &mut BufferPool, payload: Payload) {
    if let Payload::Owned(buf) = payload {
        pool.put(buf);
    }
}
