//! Receivers without sockets, for fanning out broadcasts in memory.

use slab::Slab;
use wschat::protocol::deflate::Deflater;
use wschat::protocol::extension::Deflate;
use wschat::protocol::frame::OpCode;
use wschat::server::connection::Compression;
use wschat::server::history::HistoryLimits;
use wschat::server::hub::{classic_prefix, PREFIX_BYTES};
use wschat::server::json::Stamp;
use wschat::server::outgoing::{Format, Outgoing};
use wschat::server::room::{Fanout, Member, Rooms, LOBBY};
use wschat::server::write_queue::{Flush, WriteQueue};

/// What a browser agrees to in `--compression shared`.
pub const SHARED: Deflate = Deflate {
    server_no_context_takeover: true,
    client_no_context_takeover: true,
    server_max_window_bits: 15,
};

/// One in-memory receiver: a real write queue and compression state.
pub struct Receiver {
    queue: WriteQueue,
    compression: Compression,
    format: Format,
    dirty: bool,
}

impl Member for Receiver {
    fn backlog(&self) -> Option<usize> {
        Some(self.queue.queued_bytes())
    }

    fn format(&self) -> Format {
        self.format
    }

    fn id(&self) -> u64 {
        1
    }

    fn queue(&mut self, message: &mut Outgoing<'_>) -> bool {
        self.queue
            .push_shared(self.compression.frame_of(message, self.format));
        !std::mem::replace(&mut self.dirty, true)
    }

    fn queue_frame(&mut self, frame: std::rc::Rc<[u8]>) -> bool {
        self.queue.push_shared(frame);
        !std::mem::replace(&mut self.dirty, true)
    }
}

/// A lobby of `n` receivers, compressing (`shared`) or not.
pub struct Lobby {
    pub rooms: Rooms,
    pub room: usize,
    pub receivers: Slab<Receiver>,
    pub deflater: Deflater,
    scratch: Vec<u8>,
    fanout: Fanout,
    offset: u64,
}

impl Lobby {
    /// `n` classic receivers.
    pub fn new(n: usize, compress: bool) -> Lobby {
        Lobby::speaking(n, compress, Format::Classic)
    }

    /// `n` receivers that speak `format`.
    pub fn speaking(n: usize, compress: bool, format: Format) -> Lobby {
        let mut rooms = Rooms::new(HistoryLimits::default());
        let mut receivers = Slab::new();
        let mut room = 0;
        for _ in 0..n {
            let key = receivers.insert(Receiver {
                queue: WriteQueue::new(),
                compression: Compression::new(
                    compress.then_some(SHARED),
                    wschat::config::CompressionMode::Shared,
                ),
                format,
                dirty: false,
            });
            room = rooms.join(LOBBY, key);
        }
        Lobby {
            rooms,
            room,
            receivers,
            deflater: Deflater::new(15),
            scratch: Vec::new(),
            fanout: Fanout {
                limit: usize::MAX,
                ..Fanout::default()
            },
            offset: 0,
        }
    }

    /// Broadcasts one message; returns the frames queued.
    pub fn broadcast(&mut self, sender: u64, payload: &[u8]) -> usize {
        let mut buf = [0; PREFIX_BYTES];
        let prefix = classic_prefix(sender, &mut buf);
        let message = Outgoing::new(
            OpCode::Text,
            prefix,
            payload,
            64,
            &mut self.deflater,
            &mut self.scratch,
        );
        self.offset += 1;
        let stamp = Stamp {
            epoch: "bench",
            offset: self.offset,
            time_ms: 1_764_489_600_000,
        };
        let mut message = message.stamped(sender, stamp);
        self.fanout.woken.clear();
        self.rooms.broadcast(
            self.room,
            &mut message,
            &mut self.receivers,
            &mut self.fanout,
        );
        self.fanout.delivered
    }

    /// Writes every queue out to nowhere, as flushed sockets would be.
    pub fn drain(&mut self) {
        for (_, r) in self.receivers.iter_mut() {
            let flushed = r.queue.write_to(&mut std::io::sink());
            assert!(matches!(flushed, Ok(Flush::Done)));
            r.dirty = false;
        }
    }
}
