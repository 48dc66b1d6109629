//! Everything that owns a socket, and the server's policy: the reactor,
//! connections over their transports, write queues, rooms, the Redis
//! relay, and the counters behind `/metrics`.
//!
//! In the order data flows: [`listener`] accepts, [`reactor`] moves bytes
//! and time, [`transport`] carries a [`connection`]'s bytes, [`router`]
//! decides what a request asks for, [`hub`] and [`room`] decide who hears
//! a message ([`outgoing`] frames it once), [`write_queue`] holds what is
//! to be sent. [`policy`] names every refusal and close of the server's
//! own, and [`http_policy`] decides when an HTTP connection persists and
//! which bodies it reads; [`admission`] holds the per-address and rate limits; [`proxy`]
//! finds the real client behind trusted proxies; [`tls`] holds the
//! certificate in service; [`table`] keeps the connections and the work
//! of each turn; [`timer`] the clock; [`systemd`] the listeners systemd
//! hands over and what it is told back.

pub mod admission;
pub mod cluster;
pub mod connection;
pub mod history;
pub mod http_policy;
pub mod hub;
pub mod json;
pub mod listener;
pub mod metrics;
pub mod outgoing;
pub mod policy;
pub mod poll;
pub mod proxy;
pub mod reactor;
pub mod relay;
pub mod room;
pub mod router;
pub mod sessions;
pub mod sse;
pub mod systemd;
pub mod table;
pub mod timer;
pub mod tls;
pub mod transport;
pub mod write_queue;

pub use reactor::{Server, ServerHandle};
