//! Everything that owns a socket: the reactor, connections, write queues,
//! rooms and the counters behind `/metrics`.

pub mod admission;
pub mod cluster;
pub mod connection;
pub mod listener;
pub mod metrics;
pub mod outgoing;
pub mod reactor;
pub mod relay;
pub mod room;
pub mod timer;
pub mod write_queue;

pub use reactor::{Server, ServerHandle};
