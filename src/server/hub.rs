//! Chat semantics: the rooms, the classic `from{id}:` form of a room
//! message, and what a broadcast needs besides its receivers (the loop's
//! shared deflater and the scratch buffer frames are built in).

use std::io::Write as _;

use slab::Slab;

use super::outgoing::Outgoing;
use super::room::{Fanout, Member, Rooms};
use crate::protocol::deflate::Deflater;
use crate::protocol::OpCode;

/// Scratch buffers larger than this are freed after a broadcast, so one
/// large message does not keep its size for the life of the process.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

/// The longest `from{id}:` prefix: `from` + 20 digits + `:`.
pub const PREFIX_BYTES: usize = 25;

/// Writes the classic prefix of a room message, `from{id}:` (the
/// Swoole-style form every client of the classic protocol parses), into
/// `buf`; returns it. The one place this form is written.
pub fn classic_prefix(sender: u64, buf: &mut [u8; PREFIX_BYTES]) -> &[u8] {
    let mut cursor = &mut buf[..];
    // 25 bytes hold any u64: the write cannot fail.
    let _ = write!(cursor, "from{sender}:");
    let left = cursor.len();
    &buf[..PREFIX_BYTES - left]
}

/// What building a message's frames takes: the loop's shared deflater and
/// the scratch buffer frames are built in.
#[derive(Debug)]
struct Framing {
    /// The deflater of every message compressed without context takeover.
    deflater: Deflater,
    /// Reused to build each frame before it is shared.
    scratch: Vec<u8>,
    /// Messages shorter than this are never compressed.
    min_compress: usize,
}

impl Framing {
    fn outgoing<'a>(
        &'a mut self,
        opcode: OpCode,
        prefix: &'a [u8],
        payload: &'a [u8],
    ) -> Outgoing<'a> {
        Outgoing::new(
            opcode,
            prefix,
            payload,
            self.min_compress,
            &mut self.deflater,
            &mut self.scratch,
        )
    }
}

/// Rooms and the means to broadcast into them.
#[derive(Debug)]
pub struct Hub {
    /// Every room and its members.
    pub rooms: Rooms,
    framing: Framing,
    fanout: Fanout,
}

impl Hub {
    /// No rooms; messages from `min_compress` bytes on may be compressed.
    pub fn new(min_compress: usize) -> Hub {
        Hub {
            rooms: Rooms::new(),
            framing: Framing {
                deflater: Deflater::new(15),
                scratch: Vec::new(),
                min_compress,
            },
            fanout: Fanout::default(),
        }
    }

    /// Messages compressed by the shared deflater so far.
    pub fn deflate_calls(&self) -> u64 {
        self.framing.deflater.calls()
    }

    /// A message to frame (at most once per form) for any receiver.
    pub fn outgoing<'a>(
        &'a mut self,
        opcode: OpCode,
        prefix: &'a [u8],
        payload: &'a [u8],
    ) -> Outgoing<'a> {
        self.framing.outgoing(opcode, prefix, payload)
    }

    /// Delivers `from{sender}:{payload}` to the members of `room` among
    /// `members`, each queue bounded by `limit`; returns who needs a flush
    /// and who refused (slow consumers).
    pub fn broadcast<M: Member>(
        &mut self,
        room: usize,
        sender: u64,
        opcode: OpCode,
        payload: &[u8],
        members: &mut Slab<M>,
        limit: usize,
    ) -> &mut Fanout {
        let mut buf = [0; PREFIX_BYTES];
        let prefix = classic_prefix(sender, &mut buf);
        let mut fanout = std::mem::take(&mut self.fanout);
        fanout.limit = limit;
        let mut message = self.framing.outgoing(opcode, prefix, payload);
        self.rooms
            .broadcast(room, &mut message, members, &mut fanout);
        drop(message);
        if self.framing.scratch.capacity() > SCRATCH_KEEP_BYTES {
            self.framing.scratch = Vec::new();
        }
        self.fanout = fanout;
        &mut self.fanout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_prefixes() {
        let mut buf = [0; PREFIX_BYTES];
        assert_eq!(classic_prefix(7, &mut buf), b"from7:");
        assert_eq!(
            classic_prefix(u64::MAX, &mut buf),
            b"from18446744073709551615:"
        );
    }
}
