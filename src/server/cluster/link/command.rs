//! The commands a link sends, and what their replies mean.
//!
//! Each command sent is pushed on the link's expectation queue, and each
//! reply is matched with the front of it here, in [`outcome`]. Adding a
//! command (an `EVALSHA` that assigns offsets, an `XRANGE` that reads
//! history back) takes a variant of [`Command`] with what its reply needs,
//! a method on the link that queues it, its arms in `outcome`, and an event
//! if the owner must hear of the result; a reply of a new shape (`XRANGE`'s
//! nested arrays) is a variant of [`Reply`], read in `frame.rs`. The queue,
//! the reply timer and the reporting of commands lost with a connection
//! stay as they are.

use std::fmt;

use super::{Link, LinkEvent, NotQueued, State, READ_CHUNK};
use crate::protocol::frame::OpCode;
use crate::server::cluster::error::LinkError;
use crate::server::cluster::{message, resp, CHANNEL_PREFIX, IDS_KEY};

/// A command whose reply is awaited, with what its reply needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `SELECT db`, the publisher's first command when the URL has a `/DB`.
    Select,
    /// `PING`: ends a handshake with nothing else to ask, or keeps an idle
    /// link alive.
    Ping,
    /// `PSUBSCRIBE wschat:room:*`, the subscriber's handshake.
    PSubscribe,
    /// `PUBLISH` of one room message.
    Publish,
    /// `INCRBY wschat:ids delta`: a block of connection ids.
    IncrBy {
        /// The number of ids asked for.
        delta: u64,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Select => f.write_str("SELECT"),
            Command::Ping => f.write_str("PING"),
            Command::PSubscribe => f.write_str("PSUBSCRIBE"),
            Command::Publish => f.write_str("PUBLISH"),
            Command::IncrBy { .. } => write!(f, "INCRBY {IDS_KEY}"),
        }
    }
}

impl Link {
    /// Queues `PUBLISH wschat:room:{room}` of one message. As for clients,
    /// the bound is on the backlog: one large message still goes into an
    /// empty queue.
    pub fn publish(
        &mut self,
        room: &str,
        sender: u64,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), NotQueued> {
        if self.state != State::Ready {
            return Err(NotQueued::NotReady);
        }
        self.channel.clear();
        self.channel.push_str(CHANNEL_PREFIX);
        self.channel.push_str(room);
        self.scratch.clear();
        message::encode(sender, opcode, payload, &mut self.scratch);
        let mut command = Vec::new();
        resp::command(
            [b"PUBLISH", self.channel.as_bytes(), &self.scratch],
            &mut command,
        );
        if self.scratch.capacity() > READ_CHUNK {
            self.scratch = Vec::new();
        }
        let queued = self.out.queued_bytes();
        if queued > 0 && queued + command.len() > self.config.queue_limit {
            return Err(NotQueued::QueueFull);
        }
        self.out.push_owned(command);
        self.expected.push_back(Command::Publish);
        Ok(())
    }

    /// Queues `INCRBY wschat:ids {delta}`; its answer comes out as
    /// [`LinkEvent::IdsReserved`] (or [`LinkEvent::Refused`]).
    pub fn reserve_ids(&mut self, delta: u64) {
        let delta_text = delta.to_string();
        self.send(
            [b"INCRBY", IDS_KEY.as_bytes(), delta_text.as_bytes()],
            Command::IncrBy { delta },
        );
    }

    /// Queues one command and awaits its reply, in order.
    pub(super) fn send<const N: usize>(&mut self, args: [&[u8]; N], command: Command) {
        let mut bytes = Vec::new();
        resp::command(args, &mut bytes);
        self.out.push_owned(bytes);
        self.expected.push_back(command);
    }
}

/// A reply, whichever link it came on.
#[derive(Debug)]
pub(super) enum Reply {
    Integer(i64),
    /// `+OK`, `+PONG`.
    Status,
    Error(Box<str>),
    /// A `(p)subscribe` confirmation.
    Subscribed,
    /// The subscribed form of a `PING` reply.
    Pong,
    /// A shape none of our commands is answered with.
    Other,
}

/// What `reply` to `command` means: an event for the owner, nothing, or the
/// end of the link. `handshaking`: the link cannot go on without the
/// command's success.
pub(super) fn outcome(
    command: Command,
    reply: Reply,
    handshaking: bool,
) -> Result<Option<LinkEvent>, LinkError> {
    let event = match (command, reply) {
        (Command::Publish, Reply::Integer(_)) => None,
        (Command::IncrBy { delta }, Reply::Integer(end)) => Some(LinkEvent::IdsReserved {
            end: end.max(0) as u64,
            delta,
        }),
        (Command::Select | Command::Ping, Reply::Status)
        | (Command::Ping, Reply::Pong)
        | (Command::PSubscribe, Reply::Subscribed) => None,
        // A refused message is lost, a refused block asked for again later:
        // the link goes on, unless the handshake needed it.
        (Command::Publish, Reply::Error(message)) => Some(LinkEvent::Refused { command, message }),
        (Command::IncrBy { .. }, Reply::Error(message)) if !handshaking => {
            Some(LinkEvent::Refused { command, message })
        }
        (command, Reply::Error(message)) => {
            return Err(LinkError::ErrorReply {
                command: Some(command),
                message,
            })
        }
        (command, _) => return Err(LinkError::UnexpectedReply(command)),
    };
    Ok(event)
}
