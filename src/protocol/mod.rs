//! The WebSocket protocol, and the HTTP/1.1 it starts from, as pure code
//! on byte slices.
//!
//! Nothing here touches a socket or reads a clock: bytes come in as slices,
//! bytes to send go out as `Vec`s, and time (where it matters) is passed in.
//! That is what lets every rule be unit-tested with the RFC's own vectors and
//! fuzzed without a network.

pub mod close;
pub mod deflate;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod http1;
pub mod mask;
pub mod session;
pub mod utf8;

pub use close::CloseCode;
pub use error::{HandshakeError, ProtocolError};
pub use frame::{FrameHeader, OpCode};
pub use session::{Event, Session};
