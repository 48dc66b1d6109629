//! What can go wrong on a link to Redis, and what is left out of it.
//!
//! A [`LinkError`] ends a link (its driver reconnects after a backoff); a
//! [`Dropped`] is one frame or message from Redis that is skipped while the
//! link goes on. Both are plain values, compared in tests and turned into
//! text only when they are logged.

use std::fmt;
use std::io;

use super::link::{Command, REPLY_TIMEOUT};
use super::message::Malformed;

/// The socket operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Opening the TCP connection, or finding that it was refused.
    Connect,
    /// Adding the socket to the reactor's `Poll`.
    Register,
    /// Reading from Redis.
    Read,
    /// Writing to Redis.
    Write,
}

/// An I/O failure as a value that can be copied and compared (an
/// `io::Error` can be neither): the operation, the kind and, when the
/// system gave one, the OS error code that `Display` spells out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoFailure {
    /// What was being done.
    pub op: IoOp,
    /// The kind of the error.
    pub kind: io::ErrorKind,
    /// `errno`, when the error came from the system.
    pub os_code: Option<i32>,
}

impl IoFailure {
    /// The failure of `op` with `error`.
    pub fn new(op: IoOp, error: &io::Error) -> IoFailure {
        IoFailure {
            op,
            kind: error.kind(),
            os_code: error.raw_os_error(),
        }
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            IoOp::Connect => "connect",
            IoOp::Register => "register",
            IoOp::Read => "read",
            IoOp::Write => "write",
        };
        match self.os_code {
            Some(code) => write!(f, "{op}: {}", io::Error::from_raw_os_error(code)),
            None => write!(f, "{op}: {}", self.kind),
        }
    }
}

/// Why a link to Redis was given up. Each variant names what went wrong;
/// none carries text of ours, only Redis's own error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The socket failed: connect, register, read or write.
    Io(IoFailure),
    /// The TCP connect did not complete within the connect timeout.
    ConnectTimeout,
    /// Redis closed the connection (a read returned end of file).
    Closed,
    /// The bytes from Redis are not RESP2: the stream cannot be
    /// resynchronised. Holds the first byte of the frame that failed.
    NotResp {
        /// The first byte of the undecodable frame.
        first_byte: u8,
    },
    /// A reply came while no command awaited one.
    UnsolicitedReply,
    /// A reply of a type the awaited command never answers.
    UnexpectedReply(Command),
    /// Redis answered an error to a command the link cannot go on without
    /// (or, with `command: None`, to no command at all).
    ErrorReply {
        /// The command refused, if one was awaited.
        command: Option<Command>,
        /// Redis's message, such as `NOAUTH Authentication required.`.
        message: Box<str>,
    },
    /// A reply was awaited and nothing at all arrived for the reply timeout.
    ReplyTimeout,
    /// A frame still incomplete at this many bytes is larger than any
    /// message that would be delivered; the only way past it is to read it
    /// whole, so the link starts over instead.
    OversizedFrame {
        /// Bytes of the incomplete frame received so far.
        buffered: usize,
        /// The most an incomplete frame may hold.
        max: usize,
    },
}

impl LinkError {
    /// Whether Redis sent something that makes no sense (counted with the
    /// malformed messages in `/metrics`), as opposed to failing or refusing.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            LinkError::NotResp { .. } | LinkError::UnsolicitedReply | LinkError::UnexpectedReply(_)
        )
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Io(failure) => write!(f, "{failure}"),
            LinkError::ConnectTimeout => f.write_str("connect timed out"),
            LinkError::Closed => f.write_str("closed by Redis"),
            LinkError::NotResp { first_byte } => {
                write!(
                    f,
                    "not RESP2 (a frame starting with byte 0x{first_byte:02x})"
                )
            }
            LinkError::UnsolicitedReply => f.write_str("a reply to no command"),
            LinkError::UnexpectedReply(command) => write!(f, "unexpected reply to {command}"),
            LinkError::ErrorReply {
                command: Some(command),
                message,
            } => write!(f, "{command}: {message}"),
            LinkError::ErrorReply {
                command: None,
                message,
            } => write!(f, "error reply: {message}"),
            LinkError::ReplyTimeout => write!(f, "no reply for {} s", REPLY_TIMEOUT.as_secs()),
            LinkError::OversizedFrame { buffered, max } => write!(
                f,
                "a frame over --max-message-size ({buffered} bytes and incomplete, at most {max})"
            ),
        }
    }
}

impl std::error::Error for LinkError {}

/// A frame or message from Redis that was skipped; the link goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A message on a channel that does not name a valid room.
    NoRoom,
    /// A message whose bytes are not in the format wschat publishes.
    Malformed(Malformed),
    /// A message over `--max-message-size`.
    Oversize,
    /// A frame on the subscriber that is neither a message nor a reply.
    UnexpectedFrame,
    /// An entry of a history reply that is not as the publish script
    /// writes them (why, in a few words); the rest of the reply is kept.
    BadEntry(&'static str),
    /// A history reply not shaped as the read script makes it (why); the
    /// fetch is answered with an error.
    BadHistory(&'static str),
}

impl Dropped {
    /// Whether the drop is counted as oversize (else as malformed).
    pub fn is_oversize(&self) -> bool {
        matches!(self, Dropped::Oversize)
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dropped::NoRoom => f.write_str("a message on a channel that names no room"),
            Dropped::Malformed(e) => write!(f, "a malformed message ({e})"),
            Dropped::Oversize => f.write_str("a message over --max-message-size"),
            Dropped::UnexpectedFrame => f.write_str("an unexpected frame"),
            Dropped::BadEntry(why) => write!(f, "a history entry ({why})"),
            Dropped::BadHistory(why) => write!(f, "a history reply ({why})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_went_wrong() {
        let refused = io::Error::from_raw_os_error(111);
        let text = LinkError::Io(IoFailure::new(IoOp::Connect, &refused)).to_string();
        assert!(text.starts_with("connect: "), "{text}");
        assert!(text.contains("os error 111"), "{text}");
        let failure = IoFailure {
            op: IoOp::Connect,
            kind: io::ErrorKind::ConnectionRefused,
            os_code: None,
        };
        assert_eq!(
            LinkError::Io(failure).to_string(),
            "connect: connection refused"
        );
        assert_eq!(LinkError::ReplyTimeout.to_string(), "no reply for 5 s");
        assert_eq!(
            LinkError::NotResp { first_byte: b'h' }.to_string(),
            "not RESP2 (a frame starting with byte 0x68)"
        );
        let refused = LinkError::ErrorReply {
            command: Some(Command::IncrBy { delta: 1000 }),
            message: "WRONGTYPE no".into(),
        };
        assert_eq!(refused.to_string(), "INCRBY wschat:ids: WRONGTYPE no");
        assert_eq!(
            LinkError::UnexpectedReply(Command::Publish).to_string(),
            "unexpected reply to EVALSHA (publish)"
        );
        assert_eq!(
            Dropped::Malformed(Malformed::Utf8).to_string(),
            "a malformed message (text message not UTF-8)"
        );
    }

    #[test]
    fn only_nonsense_counts_as_malformed() {
        assert!(LinkError::NotResp { first_byte: 0 }.is_malformed());
        assert!(LinkError::UnsolicitedReply.is_malformed());
        assert!(LinkError::UnexpectedReply(Command::Ping).is_malformed());
        assert!(!LinkError::Closed.is_malformed());
        assert!(!LinkError::ReplyTimeout.is_malformed());
        assert!(!LinkError::OversizedFrame {
            buffered: 2,
            max: 1
        }
        .is_malformed());
    }
}
