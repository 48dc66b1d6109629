//! wschat: a WebSocket chat and broadcast daemon on one thread.
//!
//! Data flows one way:
//!
//! ```text
//! socket ─► server::reactor ─► server::connection ─► protocol::handshake (until 101)
//!                                                  └► protocol::session ─► Event
//! Event ─► server::room (encode once, Rc<[u8]>) ─► server::write_queue ─► socket
//! ```
//!
//! * [`protocol`] is sans-I/O: request heads, frames, masking, UTF-8, close
//!   codes and the session state machine, all on byte slices.
//! * [`server`] owns the sockets: the mio reactor, connections, bounded
//!   write queues and rooms.
//! * [`http`] writes the few plain HTTP answers.
//!
//! A `Session` never sees a socket; a `Connection` always owns one.

#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod config;
pub mod http;
pub mod protocol;
pub mod server;

pub use config::Config;
pub use server::{Server, ServerHandle};
