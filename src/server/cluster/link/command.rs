//! The commands a link sends, and what their replies mean.
//!
//! Each command sent is pushed on the link's expectation queue, and each
//! reply is matched with the front of it here ([`Link::on_reply`], then
//! [`outcome`]). A command that needs context for its reply carries it in
//! its variant (`IncrBy { delta }`, `Fetch { id }`); one whose outcome the
//! owner must hear of turns it into an event.
//!
//! # Scripts and `NOSCRIPT`
//!
//! Publishes and fetches run the scripts of [`scripts`] by `EVALSHA`.
//! Their bytes are kept ([`Retained`]) until the reply comes: a `NOSCRIPT`
//! error (Redis's script cache was flushed, `SCRIPT FLUSH`) makes the link
//! queue `SCRIPT LOAD` once and send the same bytes again, behind it, so no
//! accepted message is lost. Redis runs nothing of an `EVALSHA` it answers
//! `NOSCRIPT` to, so nothing runs twice. A command is sent at most
//! [`MAX_TRIES`] times.
//!
//! Order: the commands sent before the reload are answered `NOSCRIPT` in
//! turn and resent in the order they were first sent. New publishes and
//! fetches are held back until all of those are answered (the *barrier*),
//! so none overtakes a message sent before it. One race is left: if
//! another client loads the script while ours are in flight, a later
//! message of ours may run (succeed) before an earlier one is resent; the
//! order is still one order for every instance, only this sender's own
//! may be changed, once, around a `SCRIPT FLUSH`.

use std::fmt;
use std::rc::Rc;

use super::{Link, LinkEvent, NotQueued, State, READ_CHUNK};
use crate::protocol::frame::OpCode;
use crate::server::cluster::error::{Dropped, LinkError};
use crate::server::cluster::history::{self, Fetch, FetchError, Parsed};
use crate::server::cluster::message::{self, is_valid_epoch};
use crate::server::cluster::scripts::{self, Script, EPOCHS_KEY, HISTORY_PREFIX, META_PREFIX};
use crate::server::cluster::{resp, CHANNEL_PREFIX, IDS_KEY};

/// Times one `EVALSHA` is sent before a `NOSCRIPT` answer counts as a
/// refusal: Redis would have to lose its scripts again while the reload
/// was on its way, twice.
pub const MAX_TRIES: u8 = 3;

/// The most bytes of unconfirmed `EVALSHA`s (queued or sent, reply
/// awaited) a link keeps, as a multiple of its queue bound: past it,
/// publishes are refused as if the queue were full.
pub const RETAINED_FACTOR: usize = 16;

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
    /// `SCRIPT LOAD` of one script: in the publisher's handshake, and again
    /// after a `NOSCRIPT`.
    ScriptLoad(Script),
    /// `EVALSHA` of the publish script for one room message.
    Publish,
    /// `EVALSHA` of the read script for one fetch.
    Fetch {
        /// The owner's id of the fetch.
        id: u64,
    },
    /// `INCRBY wschat:ids delta`: a block of connection ids.
    IncrBy {
        /// The number of ids asked for.
        delta: u64,
    },
}

impl Command {
    /// The script an `EVALSHA` runs, for the commands that keep their bytes.
    fn script(self) -> Option<Script> {
        match self {
            Command::Publish => Some(Script::Publish),
            Command::Fetch { .. } => Some(Script::Read),
            _ => None,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Select => f.write_str("SELECT"),
            Command::Ping => f.write_str("PING"),
            Command::PSubscribe => f.write_str("PSUBSCRIBE"),
            Command::ScriptLoad(script) => write!(f, "SCRIPT LOAD ({script})"),
            Command::Publish => f.write_str("EVALSHA (publish)"),
            Command::Fetch { .. } => f.write_str("EVALSHA (read)"),
            Command::IncrBy { .. } => write!(f, "INCRBY {IDS_KEY}"),
        }
    }
}

/// The bytes of an `EVALSHA` sent or queued, kept for a resend.
#[derive(Debug)]
pub(super) struct Retained {
    bytes: Rc<[u8]>,
    tries: u8,
}

/// An `EVALSHA` not queued yet, behind a reload's barrier.
#[derive(Debug)]
pub(super) struct Held {
    bytes: Rc<[u8]>,
    pub(super) command: Command,
}

impl Link {
    /// Queues the publish script for one message: numbered in the room's
    /// epoch, kept in its history, published on `wschat:room:{room}`. As
    /// for clients, the bound is on the backlog: one large message still
    /// goes into an empty queue.
    pub fn publish(
        &mut self,
        room: &str,
        sender: u64,
        opcode: OpCode,
        payload: &[u8],
        time_ms: u64,
    ) -> Result<(), NotQueued> {
        if self.state != State::Ready {
            return Err(NotQueued::NotReady);
        }
        self.scratch.clear();
        message::encode_head(sender, opcode, time_ms, &mut self.scratch);
        let (sender, time) = (sender.to_string(), time_ms.to_string());
        let history = &self.history;
        let keys = RoomKeys::new(room);
        let mut command = Vec::with_capacity(payload.len() + 256);
        resp::command(
            [
                b"EVALSHA",
                self.shas[Script::Publish.index()].as_bytes(),
                b"3",
                keys.meta.as_bytes(),
                keys.history.as_bytes(),
                EPOCHS_KEY.as_bytes(),
                keys.channel.as_bytes(),
                history.size.as_bytes(),
                history.ttl_ms.as_bytes(),
                history.meta_ttl_ms.as_bytes(),
                &self.scratch,
                sender.as_bytes(),
                history::opcode_name(opcode),
                time.as_bytes(),
                payload,
            ],
            &mut command,
        );
        if self.scratch.capacity() > READ_CHUNK {
            self.scratch = Vec::new();
        }
        let queued = self.out.queued_bytes();
        let over_queue = queued > 0 && queued + command.len() > self.config.queue_limit;
        let retained_limit = self.config.queue_limit.saturating_mul(RETAINED_FACTOR);
        let over_retained =
            self.retained_bytes > 0 && self.retained_bytes + command.len() > retained_limit;
        if over_queue || over_retained {
            return Err(NotQueued::QueueFull);
        }
        self.send_new(Rc::from(command), Command::Publish);
        Ok(())
    }

    /// Queues the read script for one fetch; its answer comes out as
    /// [`LinkEvent::Fetched`] with the same `id`.
    pub fn fetch(&mut self, id: u64, room: &str, want: &Fetch) -> Result<(), NotQueued> {
        if self.state != State::Ready {
            return Err(NotQueued::NotReady);
        }
        let (mode, epoch, n) = match want {
            // An epoch no script makes can match none: sent empty.
            Fetch::Since { epoch, offset } => {
                let epoch = if is_valid_epoch(epoch) {
                    epoch.as_str()
                } else {
                    ""
                };
                ("since", epoch, offset.to_string())
            }
            Fetch::Last(n) => ("last", "", n.to_string()),
        };
        let keys = RoomKeys::new(room);
        let mut command = Vec::new();
        resp::command(
            [
                b"EVALSHA",
                self.shas[Script::Read.index()].as_bytes(),
                b"3",
                keys.meta.as_bytes(),
                keys.history.as_bytes(),
                EPOCHS_KEY.as_bytes(),
                self.history.meta_ttl_ms.as_bytes(),
                self.history.size.as_bytes(),
                mode.as_bytes(),
                epoch.as_bytes(),
                n.as_bytes(),
            ],
            &mut command,
        );
        self.send_new(Rc::from(command), Command::Fetch { id });
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

    /// Queues `SCRIPT LOAD` of `script`.
    pub(super) fn load_script(&mut self, script: Script) {
        self.send(
            [b"SCRIPT", b"LOAD", script.source().as_bytes()],
            Command::ScriptLoad(script),
        );
    }

    /// Queues one command and awaits its reply, in order.
    pub(super) fn send<const N: usize>(&mut self, args: [&[u8]; N], command: Command) {
        let mut bytes = Vec::new();
        resp::command(args, &mut bytes);
        self.out.push_owned(bytes);
        self.expected.push_back(command);
    }

    /// Queues a new `EVALSHA`, or holds it behind a reload's barrier, and
    /// keeps its bytes until its reply.
    fn send_new(&mut self, bytes: Rc<[u8]>, command: Command) {
        self.retained_bytes += bytes.len();
        if self.barrier > 0 {
            self.held.push_back(Held { bytes, command });
        } else {
            self.send_retained(bytes, command, 1);
        }
    }

    /// Queues an `EVALSHA` whose bytes are counted as kept already.
    fn send_retained(&mut self, bytes: Rc<[u8]>, command: Command, tries: u8) {
        self.out.push_shared(bytes.clone());
        self.expected.push_back(command);
        self.retained.push_back(Retained { bytes, tries });
    }

    /// Matches a reply with the command it answers: a `NOSCRIPT` is
    /// resent behind a reload, anything else becomes the command's outcome.
    pub(super) fn on_reply(&mut self, reply: Reply) -> Result<(), LinkError> {
        let Some(command) = self.expected.pop_front() else {
            return Err(LinkError::UnsolicitedReply);
        };
        self.barrier = self.barrier.saturating_sub(1);
        let retained = match command.script() {
            Some(_) => self.retained.pop_front(),
            None => None,
        };
        if let Some(kept) = &retained {
            self.retained_bytes -= kept.bytes.len();
        }
        if let Command::ScriptLoad(script) = command {
            self.reloading[script.index()] = false;
        }
        let result = self.resend_or_conclude(command, reply, retained);
        if self.barrier == 0 {
            while let Some(Held { bytes, command }) = self.held.pop_front() {
                self.send_retained(bytes, command, 1);
            }
        }
        result
    }

    fn resend_or_conclude(
        &mut self,
        command: Command,
        reply: Reply,
        retained: Option<Retained>,
    ) -> Result<(), LinkError> {
        if let (Reply::Error(message), Some(script), Some(kept)) =
            (&reply, command.script(), retained)
        {
            if message.starts_with("NOSCRIPT") && kept.tries < MAX_TRIES {
                if !self.reloading[script.index()] {
                    // What was sent before this reload goes first; what
                    // was sent before a reload under way is counted already.
                    self.barrier = self.barrier.max(self.expected.len());
                    self.reloading[script.index()] = true;
                    self.load_script(script);
                    self.events.push_back(LinkEvent::ScriptMissing(script));
                }
                self.retained_bytes += kept.bytes.len();
                self.send_retained(kept.bytes, command, kept.tries + 1);
                return Ok(());
            }
        }
        let handshaking = self.state == State::Handshaking;
        let shas = &self.shas;
        let loaded = |script: Script, sha: &str| shas[script.index()] == sha;
        let (dropped, event) = outcome(command, reply, handshaking, loaded)?;
        self.events
            .extend(dropped.into_iter().map(LinkEvent::Dropped).chain(event));
        Ok(())
    }
}

/// The history settings as the scripts take them, in text once.
#[derive(Debug, Clone)]
pub(super) struct HistoryArgs {
    size: String,
    ttl_ms: String,
    meta_ttl_ms: String,
}

impl HistoryArgs {
    pub(super) fn new(size: usize, ttl: std::time::Duration) -> HistoryArgs {
        HistoryArgs {
            size: size.to_string(),
            ttl_ms: scripts::millis(ttl).to_string(),
            meta_ttl_ms: scripts::millis(scripts::meta_ttl(ttl)).to_string(),
        }
    }
}

/// The keys and channel of one room.
struct RoomKeys {
    meta: String,
    history: String,
    channel: String,
}

impl RoomKeys {
    fn new(room: &str) -> RoomKeys {
        RoomKeys {
            meta: format!("{META_PREFIX}{room}"),
            history: format!("{HISTORY_PREFIX}{room}"),
            channel: format!("{CHANNEL_PREFIX}{room}"),
        }
    }
}

/// A reply, whichever link it came on.
#[derive(Debug)]
pub(super) enum Reply {
    Integer(i64),
    /// `+OK`, `+PONG`.
    Status,
    Error(Box<str>),
    /// A bulk string: the SHA-1 `SCRIPT LOAD` answers (others are not
    /// kept).
    Text(Box<str>),
    /// The read script's answer, checked.
    History(Result<Parsed, &'static str>),
    /// A `(p)subscribe` confirmation.
    Subscribed,
    /// The subscribed form of a `PING` reply.
    Pong,
    /// A shape none of our commands is answered with.
    Other,
}

/// What `reply` to `command` means: entries dropped from a history and an
/// event for the owner, or the end of the link. `handshaking`: the link
/// cannot go on without the command's success; `loaded` tells whether a
/// SHA-1 is the one expected of a script.
pub(super) fn outcome(
    command: Command,
    reply: Reply,
    handshaking: bool,
    loaded: impl Fn(Script, &str) -> bool,
) -> Result<(Vec<Dropped>, Option<LinkEvent>), LinkError> {
    let fetched = |id, result| Some(LinkEvent::Fetched { id, result });
    let event = match (command, reply) {
        (Command::Publish, Reply::Integer(_)) => None,
        (Command::Fetch { id }, Reply::History(Ok(parsed))) => {
            return Ok((parsed.dropped, fetched(id, Ok(parsed.history))));
        }
        (Command::Fetch { id }, Reply::History(Err(why))) => {
            // Counted with the malformed frames, the link goes on: the
            // stream is still in step.
            let event = fetched(id, Err(FetchError::Malformed(why)));
            return Ok((vec![Dropped::BadHistory(why)], event));
        }
        (Command::Fetch { id }, Reply::Error(message)) => {
            fetched(id, Err(FetchError::Refused(message)))
        }
        (Command::ScriptLoad(script), Reply::Text(sha)) if loaded(script, &sha) => None,
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
    Ok((Vec::new(), event))
}
