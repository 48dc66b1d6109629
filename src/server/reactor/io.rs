//! Bytes in and out: sockets read into the loop's one read buffer, each
//! connection fed what it sent, write queues flushed.

use log::{debug, info};

use super::Server;
use crate::http::{self, Reply};
use crate::protocol::ProtocolError;
use crate::server::connection::{AfterResponse, Received, Shared};
use crate::server::policy::Refusal;
use crate::server::tls::failure_label;
use crate::server::transport::ReadResult;
use crate::server::write_queue::Flush;

/// Reads one connection gets per turn before others are served.
const READS_PER_TURN: usize = 16;

/// Queued bytes from which a connection's own replies are written as soon
/// as its reads end, not at the end of the turn (see `Server::read_turn`).
const WRITE_NOW_BYTES: usize = 16 * 1024;

impl Server {
    /// Reads a connection until it would block (or, unless `to_the_end`,
    /// until its transport says a read drained it), or its budget runs out.
    ///
    /// What that queued for the connection itself (echoes, pongs) waits for
    /// the end of the turn to share one write with what other connections
    /// send it, unless it is already a large write on its own: then it goes
    /// now, while its bytes are still in the CPU cache rather than after
    /// every other connection's reads have pushed them out.
    pub(super) fn read_turn(&mut self, key: usize, to_the_end: bool) {
        // Pipelined requests held while their answers waited come first.
        if self
            .table
            .get_mut(key)
            .is_some_and(|c| c.take_pending_input())
        {
            self.on_data(key, &mut []);
        }
        self.read_socket(key, to_the_end);
        if self
            .table
            .get(key)
            .is_some_and(|c| c.needs_flush_of(WRITE_NOW_BYTES))
        {
            self.flush(key);
        }
    }

    fn read_socket(&mut self, key: usize, to_the_end: bool) {
        let mut scratch = std::mem::take(&mut self.buffers.scratch);
        let capacity = scratch.len();
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.table.get_mut(key) else {
                break;
            };
            if !conn.wants_read() {
                break;
            }
            let read = conn.read(&mut scratch);
            if conn.take_tls_handshake_done() {
                *self.metrics.tls_handshakes.entry("ok").or_default() += 1;
            }
            match read {
                Ok(ReadResult::TlsFailed(err)) => {
                    self.on_tls_failure(key, &err);
                    break;
                }
                Ok(ReadResult::Proxied(source)) => {
                    // Counted under the client's address once the head
                    // is in: `Forwarded` may still say more.
                    let _ = self.learn_client(key, source, None);
                }
                Ok(ReadResult::ProxyRefused(why)) => {
                    if let Some(peer) = self.table.get(key).map(|c| c.peer()) {
                        info!("{peer}: PROXY protocol header: {why}");
                    }
                    self.refuse(key, why.refusal());
                    break;
                }
                Ok(ReadResult::Data(n)) => {
                    let drained = conn.drained_by(n, capacity);
                    self.on_data(key, &mut scratch[..n]);
                    if drained && !to_the_end {
                        self.buffers.scratch = scratch;
                        return;
                    }
                }
                Ok(ReadResult::WouldBlock) => {
                    self.buffers.scratch = scratch;
                    return;
                }
                Ok(ReadResult::Eof) => {
                    if conn.on_eof() {
                        self.table.remove_at_turn_end(key);
                    } else if conn.is_exchanging() {
                        // Answers to requests sent before the FIN go out.
                        self.end_exchange(key);
                    }
                    break;
                }
                Err(e) => {
                    debug!("{key}: read: {e}");
                    self.table.remove_at_turn_end(key);
                    break;
                }
            }
        }
        // Budget spent (or stopped): come back next turn if still readable.
        if self.table.get(key).is_some_and(|c| c.wants_read()) {
            self.table.read_again(key);
        }
        self.buffers.scratch = scratch;
    }

    /// Logs, counts and ends a connection whose TLS peer failed.
    fn on_tls_failure(&mut self, key: usize, err: &rustls::Error) {
        let Some(conn) = self.table.get(key) else {
            return;
        };
        if conn.tls_established() {
            debug!("{}: TLS error: {err}", conn.peer());
        } else {
            info!("{}: TLS handshake failed: {err}", conn.peer());
            let label = failure_label(err);
            *self.metrics.tls_handshakes.entry(label).or_default() += 1;
        }
        self.table.remove_at_turn_end(key);
    }

    /// Feeds freshly read bytes to the connection and keeps only the
    /// unused tail.
    fn on_data(&mut self, key: usize, fresh: &mut [u8]) {
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        conn.on_activity(self.clock.now());
        let mut carried = conn.take_unused();
        let from_carried = !carried.is_empty();
        let (used, len) = if from_carried {
            carried.extend_from_slice(fresh);
            let used = self.consume(key, &mut carried);
            (used, carried.len())
        } else {
            (self.consume(key, fresh), fresh.len())
        };
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        if used == len || !conn.keeps_input() {
            return;
        }
        if from_carried {
            carried.drain(..used);
            conn.keep_unused(carried);
        } else {
            conn.keep_unused(fresh[used..].to_vec());
        }
    }

    /// Uses what it can of `data`; returns how many bytes it used (the
    /// rest is kept for later). While the connection speaks HTTP that is a
    /// request at a time, so that pipelined requests are answered in order,
    /// each once; after an upgrade, the frames that follow its head.
    pub(super) fn consume(&mut self, key: usize, data: &mut [u8]) -> usize {
        let mut used = 0;
        while used < data.len() && !self.holds_pipeline(key) {
            let (n, more) = self.consume_step(key, &mut data[used..]);
            used += n;
            if !more {
                break;
            }
        }
        used
    }

    /// Feeds `data` to the connection once; returns the bytes used and
    /// whether what follows them may be used at once (the next request,
    /// a body, or frames after an upgrade).
    fn consume_step(&mut self, key: usize, data: &mut [u8]) -> (usize, bool) {
        let request_by = self.clock.after(self.settings.config.handshake_timeout);
        if self
            .table
            .get_mut(key)
            .is_some_and(|c| c.begin_request(request_by))
        {
            self.table.track_timer(key);
        }
        let Some(conn) = self.table.get_mut(key) else {
            return (data.len(), false);
        };
        let before = conn.buffered_bytes();
        let mut shared = Shared {
            max_head_bytes: self.settings.config.max_head_bytes,
            proxy_protocol: self.settings.config.proxy_protocol,
            limits: self.settings.limits,
            inflater: &mut self.buffers.inflater,
            spare: self.buffers.pool.buffers(),
        };
        match conn.receive(data, &mut shared, &mut self.buffers.events) {
            Received::Partial => {
                self.hold_body(key, before);
                (0, false)
            }
            Received::Head(end) => (self.on_head(key, data, end), true),
            Received::Body(pending) => {
                // The body leaves the connection's keeping.
                self.budgets.inbound -= before;
                let length = pending.length;
                self.on_body(key, *pending, &data[..length]);
                (length, true)
            }
            Received::Refused(err) => {
                self.refuse(key, err.into());
                (data.len(), false)
            }
            Received::Frames(used) => {
                self.check_inbound(key, before);
                self.dispatch(key, data);
                // The reply to our Close arrived after our FIN went out.
                if self.table.get(key).is_some_and(|c| c.is_done()) {
                    self.table.remove_at_turn_end(key);
                }
                (used, false)
            }
            Received::Ignored => (data.len(), false),
            Received::Waiting => {
                // Requests behind a held poll wait, unread, until it is
                // answered: reading stops, so at most this read is kept.
                if let Some(conn) = self.table.get_mut(key) {
                    conn.hold_pipeline();
                }
                (0, false)
            }
            Received::ProxyHeaderUntrusted => {
                self.refuse(key, Refusal::ProxyHeaderUntrusted);
                (data.len(), false)
            }
            Received::TlsOnPlainPort => {
                self.refuse_tls_on_plain_port(key);
                (data.len(), false)
            }
        }
    }

    /// Answers a TLS ClientHello on the plain port with a 400 the client's
    /// TLS stack will reject at once, which a person reading the bytes (or
    /// a proxy's log) understands.
    fn refuse_tls_on_plain_port(&mut self, key: usize) {
        let Some(peer) = self.table.get(key).map(|c| c.peer()) else {
            return;
        };
        let refusal = Refusal::TlsOnPlainPort;
        info!("{peer}: TLS handshake on a plain port");
        *self
            .metrics
            .handshake_failures
            .entry(refusal.label())
            .or_default() += 1;
        self.respond(
            key,
            http::error(refusal, Reply::CLOSE),
            AfterResponse::Close,
        );
    }

    /// Counts the bytes connection `key`'s session now holds (it held
    /// `before`) into the inbound budget. All messages being received
    /// together have one budget: the connection that takes it past the
    /// budget is refused.
    fn check_inbound(&mut self, key: usize, before: usize) {
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        let after = conn.buffered_bytes();
        self.budgets.inbound = self.budgets.inbound + after - before;
        if after > 0 && self.budgets.inbound > self.settings.config.max_inbound_memory {
            if let Some(ws) = conn.websocket_mut() {
                if let Some(close) = ws.session.fail(ProtocolError::MessageTooLarge) {
                    self.buffers.events.push(close);
                }
            }
            self.budgets.inbound -= after;
        }
    }

    /// Writes what connection `key` has queued, as far as its socket takes it.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        if !conn.can_write() {
            return;
        }
        // What left the write queue (under TLS, as plaintext: the records
        // rustls makes of it may still wait in the transport).
        let before = conn.queued_bytes();
        let result = conn.flush(&mut self.buffers.pool);
        let written = before - conn.queued_bytes();
        self.metrics.bytes_sent += written as u64;
        if written > 0 {
            conn.on_written(self.clock.now());
        }
        match result {
            Ok(Flush::Done) if conn.is_done() => self.table.remove_at_turn_end(key),
            Ok(_) => {
                let resume_at = self.settings.config.max_backpressure / 2;
                if conn.resume_reading(resume_at) {
                    self.table.read_again(key);
                }
                // A member catching up on history gets more as it drains.
                self.pump(key);
            }
            Err(e) => {
                debug!("{}: write: {e}", conn.peer());
                self.table.remove_at_turn_end(key);
            }
        }
    }
}
