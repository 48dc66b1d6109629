//! The send side of a connection: bytes queued by the scenario and by the
//! protocol, written out in as few syscalls as the socket allows.

use std::io::{self, Write};
use wschat::protocol::frame::OpCode;

use super::socket::Counted;
use crate::codec::{write_close, write_frame};
use crate::conn::ConnError;
use crate::rng::Rng;

/// Bytes waiting to be written, and a TCP shutdown to follow them.
#[derive(Debug, Default)]
pub struct SendBuf {
    bytes: Vec<u8>,
    /// Bytes of `bytes` already written.
    pos: usize,
    /// Plain TCP: shut down writing as soon as `bytes` is flushed.
    shutdown_pending: bool,
}

impl SendBuf {
    /// A buffer that already holds `bytes` (the upgrade request).
    pub(super) fn with(bytes: Vec<u8>) -> SendBuf {
        SendBuf {
            bytes,
            ..SendBuf::default()
        }
    }

    /// Where a scenario queues its messages; a close it asks for lands in
    /// `close`, for the state machine to act on.
    pub(super) fn outbox<'a>(
        &'a mut self,
        rng: &'a mut Rng,
        plain_tcp: bool,
        close: &'a mut Option<u16>,
    ) -> Outbox<'a> {
        Outbox {
            tx: &mut self.bytes,
            rng,
            plain_tcp,
            close,
        }
    }

    /// Queues a close frame with `code`.
    pub(super) fn queue_close(&mut self, rng: &mut Rng, code: Option<u16>) {
        write_close(&mut self.bytes, rng, code);
    }

    /// Plain TCP has no close frame: shutting down writing takes its place,
    /// after whatever is still queued.
    pub(super) fn shutdown_when_flushed(&mut self) {
        self.shutdown_pending = true;
    }

    /// The queued bytes not yet written.
    pub(super) fn unsent(&self) -> &[u8] {
        &self.bytes[self.pos..]
    }

    /// Marks `n` more bytes as written.
    pub(super) fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Empties the queue once everything is written, keeping its memory.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.pos = 0;
    }

    /// Writes queued bytes until done or the socket is full.
    pub(super) fn flush(&mut self, stream: &mut Counted<'_>) -> Result<(), ConnError> {
        while self.pos < self.bytes.len() {
            match stream.write(&self.bytes[self.pos..]) {
                Ok(0) => return Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        self.clear();
        if self.shutdown_pending {
            self.shutdown_pending = false;
            match stream.shutdown_write() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        Ok(())
    }
}

/// Where a scenario queues what it sends; written out in one batch.
#[derive(Debug)]
pub struct Outbox<'a> {
    tx: &'a mut Vec<u8>,
    rng: &'a mut Rng,
    plain_tcp: bool,
    close: &'a mut Option<u16>,
}

impl Outbox<'_> {
    /// Queues one message whose payload is `parts` joined: a masked text
    /// or binary frame, or on plain TCP just the bytes.
    pub fn message(&mut self, binary: bool, parts: &[&[u8]]) {
        if self.plain_tcp {
            for part in parts {
                self.tx.extend_from_slice(part);
            }
        } else {
            let opcode = if binary { OpCode::Binary } else { OpCode::Text };
            write_frame(self.tx, self.rng, opcode, parts);
        }
    }

    /// Starts the closing handshake with `code` after what is queued
    /// (on plain TCP: shuts down writing once the queue is flushed).
    pub fn close(&mut self, code: u16) {
        *self.close = Some(code);
    }

    /// Answers a ping, ahead of whatever the scenario queues for it.
    pub(super) fn pong(&mut self, payload: &[u8]) {
        write_frame(self.tx, self.rng, OpCode::Pong, &[payload]);
    }

    /// Answers the server's close frame, echoing its code.
    pub(super) fn close_reply(&mut self, code: Option<u16>) {
        write_close(self.tx, self.rng, code);
    }
}
