//! permessage-deflate state of one connection: which form of a broadcast
//! it takes, and the compression contexts it keeps (if any).

use std::rc::Rc;

use crate::config::CompressionMode;
use crate::protocol::deflate::{Deflater, Inflater};
use crate::protocol::extension::Deflate;
use crate::server::outgoing::{Format, Outgoing};

/// permessage-deflate state of one connection.
#[derive(Debug)]
pub enum Compression {
    /// Not negotiated.
    Off,
    /// Agreed without context takeover: the loop's shared deflater and
    /// inflater serve, and this connection keeps no compression memory.
    Shared(Deflate),
    /// Agreed with context takeover (`--compression dedicated`).
    Dedicated(Box<OwnDeflate>),
}

/// A connection's own compression contexts.
#[derive(Debug)]
pub struct OwnDeflate {
    /// What was agreed.
    pub agreed: Deflate,
    /// Compresses what this connection is sent.
    pub deflater: Deflater,
    /// Inflates what this connection sends.
    pub inflater: Inflater,
}

impl Compression {
    /// The state for an agreement (or none) in the configured mode. In
    /// `shared` mode no connection gets contexts of its own (a client that
    /// narrowed the server's window is then sent plain frames).
    pub fn new(agreed: Option<Deflate>, mode: CompressionMode) -> Compression {
        match agreed {
            None => Compression::Off,
            Some(d) if mode != CompressionMode::Dedicated => Compression::Shared(d),
            Some(d) => Compression::Dedicated(Box::new(OwnDeflate {
                agreed: d,
                deflater: Deflater::new(d.server_max_window_bits.max(9)),
                inflater: Inflater::new(),
            })),
        }
    }

    /// Whether nothing was agreed.
    pub fn is_off(&self) -> bool {
        matches!(self, Compression::Off)
    }

    /// The connection's own inflater, if it keeps a context.
    pub fn own_inflater(&mut self) -> Option<&mut Inflater> {
        match self {
            Compression::Dedicated(own) => Some(&mut own.inflater),
            _ => None,
        }
    }

    /// The frame of `message` this connection should be sent, in `format`.
    pub fn frame_of(&mut self, message: &mut Outgoing<'_>, format: Format) -> Rc<[u8]> {
        match self {
            Compression::Off => message.frame_for(format, None, None),
            Compression::Shared(d) => message.frame_for(format, Some(*d), None),
            Compression::Dedicated(own) => {
                message.frame_for(format, Some(own.agreed), Some(&mut own.deflater))
            }
        }
    }
}
