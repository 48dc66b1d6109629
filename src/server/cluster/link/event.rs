//! What a link reports, and what it hands out.

use super::Command;
use crate::protocol::frame::OpCode;
use crate::server::cluster::error::{Dropped, LinkError};
use crate::server::cluster::history::{FetchError, FetchedHistory, Stamp};
use crate::server::cluster::scripts::Script;

/// What a link has to report, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The handshake's replies all came: the link is usable.
    Ready,
    /// A room message is ready: [`Link::message`](super::Link::message) returns it until the next
    /// [`Link::poll_event`](super::Link::poll_event).
    Message,
    /// `INCRBY` answered `end` to a request for `delta` ids.
    IdsReserved {
        /// The counter after the increment (negative answers read as 0).
        end: u64,
        /// The increment that was asked for.
        delta: u64,
    },
    /// Redis refused a command with an error reply; the link goes on.
    Refused {
        /// The command refused.
        command: Command,
        /// Redis's message.
        message: Box<str>,
    },
    /// The read script answered fetch `id`, with the history or why not
    /// (`Err` for an error reply or a reply of the wrong shape; a fetch lost
    /// with the connection is [`LinkEvent::Unanswered`] instead).
    Fetched {
        /// The id given to [`Link::fetch`](super::Link::fetch).
        id: u64,
        /// The room's history, or why there is none.
        result: Result<FetchedHistory, FetchError>,
    },
    /// Redis answered `NOSCRIPT`: the script is being loaded again, and
    /// what it refused is sent again behind it.
    ScriptMissing(Script),
    /// The link failed with this command unanswered: it may or may not
    /// have run. Reported for each such command before [`LinkEvent::Failed`].
    Unanswered(Command),
    /// A frame or message from Redis was skipped.
    Dropped(Dropped),
    /// The link is given up; it is idle until the driver connects again.
    Failed(LinkError),
}

/// A room message received from Redis, for the local members of `room`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound<'a> {
    /// The room's name (valid by [`crate::server::room::is_valid_room_name`]).
    pub room: &'a str,
    /// The sender's connection id, on whichever instance it is.
    pub sender: u64,
    /// Text or binary.
    pub opcode: OpCode,
    /// The payload; never over `--max-message-size`, UTF-8 when text.
    pub payload: &'a [u8],
    /// Where the message sits in its room's history, as Redis numbered it
    /// (always there for a message from Redis; an `Option` so that the
    /// same type can stand for a message numbered nowhere).
    pub stamp: Option<Stamp<'a>>,
}

/// Why [`Link::publish`](super::Link::publish) did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// The link is not ready (connecting, handshaking or failed).
    NotReady,
    /// The bytes already queued are at the link's bound.
    QueueFull,
}
