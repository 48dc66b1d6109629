//! What a link is and is set up with.

use std::fmt;
use std::time::Duration;

/// RESP framing, `pmessage`, the pattern and the channel name, on top of a
/// message of `--max-message-size`: a partial frame longer than that is
/// oversize for sure.
pub(super) const FRAME_OVERHEAD: usize = 1024;

/// RESP framing, the id and the other fields of one history entry, on top
/// of its payload.
const ENTRY_OVERHEAD: usize = 256;

/// What a link is for; it decides the handshake and how frames are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the history scripts (publish, read) and sends `INCRBY`; every
    /// frame it receives is a reply.
    Publisher,
    /// `PSUBSCRIBE`d to every room: receives messages between its replies.
    Subscriber,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        })
    }
}

/// What a link is set up with; fixed for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Publisher or subscriber.
    pub role: Role,
    /// The database to `SELECT` (publisher only; 0 sends no `SELECT`).
    pub db: u32,
    /// `--max-message-size`: larger messages are dropped, and an incomplete
    /// frame much larger than this fails the link.
    pub max_message_size: usize,
    /// The bound on queued bytes past which
    /// [`Link::publish`](super::Link::publish) refuses.
    pub queue_limit: usize,
    /// `--history-size`: entries kept per room (0: numbered, not kept), and
    /// the most a fetch returns.
    pub history_size: usize,
    /// `--history-ttl`: how long a room's entries outlive its last message.
    pub history_ttl: Duration,
}

impl LinkConfig {
    /// The largest frame the link waits for: a message on the subscriber,
    /// a whole history reply on the publisher.
    pub(super) fn max_frame(&self) -> usize {
        let entry = self.max_message_size.saturating_add(ENTRY_OVERHEAD);
        let frame = match self.role {
            Role::Publisher => entry.saturating_mul(self.history_size.max(1)),
            Role::Subscriber => self.max_message_size,
        };
        frame.saturating_add(FRAME_OVERHEAD)
    }
}
