//! The connection's bytes: read through its transport, written from its
//! queue.

use std::io;

use super::{Connection, Flags, State};
use crate::protocol::session::CloseState;
use crate::protocol::OpCode;
use crate::server::timer::Time;
use crate::server::transport::ReadResult;
use crate::server::write_queue::{BufferPool, Flush};

impl Connection {
    /// Whether reading should go on: not dropped, not paused for
    /// backpressure, and the peer has not finished.
    pub fn wants_read(&self) -> bool {
        !self.flags.get(Flags::DEAD)
            && !self.flags.get(Flags::PAUSED)
            && !self.flags.get(Flags::READ_EOF)
    }

    /// Whether the TLS handshake completed since the last call (once per
    /// TLS connection), for counting handshakes.
    pub fn take_tls_handshake_done(&mut self) -> bool {
        self.transport.take_handshake_done()
    }

    /// Whether this connection's TLS handshake completed.
    pub fn tls_established(&self) -> bool {
        self.transport.tls_established()
    }

    /// Whether the connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.transport.is_tls()
    }

    /// Reads once into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<ReadResult> {
        self.transport.read(buf)
    }

    /// Whether a read of `n` bytes into a buffer of `capacity` emptied the
    /// transport (see [`Transport::drained_by`](crate::server::transport::Transport::drained_by)).
    pub fn drained_by(&self, n: usize, capacity: usize) -> bool {
        self.transport.drained_by(n, capacity)
    }

    /// The peer sent FIN. Returns whether the connection is over: final
    /// bytes still queued (a response or a Close), or answers to requests
    /// sent before the FIN, are worth sending to a half-closed peer (the
    /// exchange is then to be ended with [`Connection::finish_exchange`]);
    /// anything else ends here.
    #[must_use]
    pub fn on_eof(&mut self) -> bool {
        self.flags.set(Flags::READ_EOF, true);
        if self.flags.get(Flags::WRITE_SHUT) {
            return true;
        }
        let answers_left =
            (self.is_exchanging() && self.backlog_bytes() > 0) || self.held_poll().is_some();
        !(self.is_closing() || answers_left)
    }

    /// Notes that the peer spoke at `now` (any bytes count as a sign of life).
    pub fn on_activity(&mut self, now: Time) {
        self.last_rx = now;
        self.flags.set(Flags::PINGED, false);
    }

    /// The bytes kept from earlier reads, taken out so that new bytes can
    /// be appended to them; give back what stays unused with
    /// [`Connection::keep_unused`].
    pub fn take_unused(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inbuf)
    }

    /// Keeps `bytes` (unused input) for the next read.
    pub fn keep_unused(&mut self, bytes: Vec<u8>) {
        self.inbuf = bytes;
    }

    /// Takes one token of the message rate at `now`: `false` when the
    /// client is over `rate` messages per second.
    pub fn take_rate_token(&mut self, now: Time, rate: f64) -> bool {
        self.rate.take(now, rate)
    }

    /// Stops reading until the queue drains (a client that sends but does
    /// not read what it is sent).
    pub fn pause_reading(&mut self) {
        self.flags.set(Flags::PAUSED, true);
    }

    /// Stops answering pipelined requests until the queue drains: reading
    /// pauses, and the requests already read stay in the kept input.
    pub fn hold_pipeline(&mut self) {
        self.flags.set(Flags::PAUSED, true);
        self.flags.set(Flags::PENDING_INPUT, true);
    }

    /// Whether requests held by [`Connection::hold_pipeline`] are to be
    /// answered now (reading resumed); asks once.
    #[must_use]
    pub fn take_pending_input(&mut self) -> bool {
        !self.flags.get(Flags::PAUSED) && self.flags.replace(Flags::PENDING_INPUT, false)
    }

    /// Queues an echoed message: a payload of its own is moved, one read
    /// in place is copied. Returns the bytes now queued.
    pub fn echo(&mut self, opcode: OpCode, payload: Echo<'_>, pool: &mut BufferPool) -> usize {
        match payload {
            Echo::Owned(buf) => self.queue.push_frame_vec(opcode, buf, pool),
            Echo::Borrowed(bytes) => self.queue.push_frame(opcode, bytes),
        };
        self.queue.queued_bytes()
    }

    /// Queues a frame shared with other receivers; returns the bytes now queued.
    pub fn push_shared(&mut self, frame: std::rc::Rc<[u8]>) -> usize {
        self.queue.push_shared(frame);
        self.queue.queued_bytes()
    }

    /// Bytes in the write queue, not yet handed to the transport.
    pub fn queued_bytes(&self) -> usize {
        self.queue.queued_bytes()
    }

    /// Bytes waiting for the peer: in the write queue, and encrypted bytes
    /// the transport holds (what backpressure and the budgets see).
    pub fn backlog_bytes(&self) -> usize {
        self.queue.queued_bytes() + self.transport.pending_bytes()
    }

    /// Writes the queue until it is empty or the transport would block.
    /// Once the final bytes are out, sends FIN so the peer sees the end.
    ///
    /// Once both Close frames have been exchanged there is no FIN to send
    /// here: the reactor drops the connection at once (see
    /// [`Connection::is_done`]) and closing the socket sends the FIN. Under
    /// TLS the `close_notify` alert must still go before it.
    pub fn flush(&mut self, pool: &mut BufferPool) -> io::Result<Flush> {
        let last_bytes = self.queue.is_sealed() && !self.flags.get(Flags::WRITE_SHUT);
        if last_bytes {
            self.transport.hold_for_fin();
        }
        let result = self.transport.write_queue(&mut self.queue, pool)?;
        if result == Flush::Done && last_bytes {
            self.flags.set(Flags::WRITE_SHUT, true);
            if !self.is_done() || self.transport.is_tls() {
                self.transport.shutdown_write();
            }
        }
        Ok(result)
    }

    /// Whether a flush could write anything.
    pub fn can_write(&self) -> bool {
        !self.flags.get(Flags::DEAD) && !self.flags.get(Flags::WRITE_SHUT)
    }

    /// Resumes reading a connection paused for backpressure once its queue
    /// is down to `resume_at` bytes; returns whether it did.
    #[must_use]
    pub fn resume_reading(&mut self, resume_at: usize) -> bool {
        if self.flags.get(Flags::PAUSED) && self.queue.queued_bytes() <= resume_at {
            self.flags.set(Flags::PAUSED, false);
            return true;
        }
        false
    }

    /// Writes what fits of `bytes` outside the queue, for a connection
    /// dropped right after (see [`Transport::write_once`](crate::server::transport::Transport::write_once)).
    pub fn write_once(&mut self, bytes: &[u8]) {
        self.transport.write_once(bytes);
    }

    /// Nothing is left to do but close the socket: everything queued is
    /// written and either the peer sent FIN or the closing handshake is
    /// complete. In the latter case the server closes TCP first without
    /// waiting for the client's FIN (RFC 6455 section 7.1.1), so the
    /// client's FIN later meets a socket nobody waits on.
    pub fn is_done(&self) -> bool {
        // Flags first: this is asked after every read.
        self.flags.get(Flags::WRITE_SHUT)
            && self.queue.is_empty()
            && (self.flags.get(Flags::READ_EOF)
                || matches!(
                    &self.state,
                    State::WebSocket(ws) if ws.session.state() == CloseState::Closed
                ))
    }
}

/// The payload of a message to echo.
#[derive(Debug)]
pub enum Echo<'a> {
    /// A buffer of its own, moved into the queue.
    Owned(Vec<u8>),
    /// Bytes read in place, copied into the queue.
    Borrowed(&'a [u8]),
}
