//! Running under systemd: what the service manager hands the process
//! ([`Activation`]: listening sockets) and what the process tells it back
//! ([`Notifier`]: `READY=1`, `STOPPING=1`, watchdog pings).
//!
//! Both come from the environment (`LISTEN_*`, `NOTIFY_SOCKET`,
//! `WATCHDOG_*`), which belongs to the process, not to a server: `main`
//! reads it once through [`Systemd::from_env`] and hands the result to
//! [`Server::bind_with`](super::Server::bind_with). A server bound with
//! [`Server::bind`](super::Server::bind), as the in-process tests do, never
//! looks at the environment. Without those variables both parts are inert
//! and the daemon behaves exactly as it does outside systemd.

mod activation;
mod notify;

use std::io;

pub use activation::{Activation, PLAIN};
pub use notify::Notifier;

/// What systemd handed this process, taken from the environment once.
#[derive(Debug, Default)]
pub struct Systemd {
    /// Listening sockets passed by socket activation (`LISTEN_FDS`).
    pub activation: Activation,
    /// Where readiness, stopping and watchdog pings go (`NOTIFY_SOCKET`).
    pub notifier: Notifier,
}

impl Systemd {
    /// Reads `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, `NOTIFY_SOCKET`
    /// and `WATCHDOG_USEC`. Call it before any thread starts: taking the
    /// descriptors removes `LISTEN_PID` and `LISTEN_FDS` from the
    /// environment (so they are not handed on), and changing the
    /// environment is only sound while one thread runs.
    ///
    /// `Err` when systemd handed this process descriptors that are not TCP
    /// listeners or whose variables do not parse: the unit is misconfigured,
    /// and serving on some other socket would hide it.
    pub fn from_env() -> io::Result<Systemd> {
        Ok(Systemd {
            activation: Activation::from_env()?,
            notifier: Notifier::from_env(),
        })
    }
}
