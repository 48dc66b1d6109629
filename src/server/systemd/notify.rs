//! sd_notify(3): state changes and watchdog pings sent to the service
//! manager as datagrams on `NOTIFY_SOCKET`.
//!
//! The lines themselves ([`NotifyState`]) and the watchdog setting
//! (`WATCHDOG_USEC`, checked against `WATCHDOG_PID`) come from the
//! `sd-notify` crate. The sending does not: `sd_notify::notify` opens a
//! blocking socket for every message, and this process has one thread
//! for every client. A notifier opens one non-blocking socket at start, so
//! that a manager that stops reading costs a lost ping instead of a frozen
//! loop, and a process out of descriptors can still tell its watchdog it
//! is alive. The socket is unconnected and each message is sent to the
//! address, so that a manager that re-creates its socket (a re-exec of
//! systemd) is still reached.
//!
//! Sending is best effort: a failure is logged at debug and forgotten,
//! since the service manager is the one that acts on silence.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use log::debug;
use sd_notify::NotifyState;

use crate::server::timer::Time;

/// The variable that names the manager's socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Pings never come closer together than this, whatever `WATCHDOG_USEC`
/// says, so that a tiny setting cannot make the loop spin.
const MIN_PING_INTERVAL: Duration = Duration::from_millis(10);

/// Tells the service manager how the daemon is doing. Inert (every call
/// does nothing) without `NOTIFY_SOCKET`, which is how it is outside
/// systemd and in a server bound with [`Server::bind`](crate::Server::bind).
///
/// The reactor drives its watchdog like its other timers:
/// [`Notifier::poll_timeout`] says when the next ping is due and
/// [`Notifier::handle_timeout`] sends it.
#[derive(Debug, Default)]
pub struct Notifier {
    /// The socket and the manager's address; `None` when not notifying.
    target: Option<Target>,
    /// Half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.
    ping_interval: Option<Duration>,
    /// When the next ping is due; armed by [`Notifier::ready`].
    next_ping: Option<Time>,
}

/// Where notifications go.
#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET` with the watchdog `WATCHDOG_USEC`
    /// asks for; inert without `NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(socket) => Notifier::new(&socket, sd_notify::watchdog_enabled()),
            None => Notifier::default(),
        }
    }

    /// A notifier that sends to `socket` (a path, or `@name` for a Linux
    /// abstract socket) and pings every half of `watchdog`. Inert if the
    /// socket cannot be opened or the name is of another kind.
    pub fn new(socket: &OsStr, watchdog: Option<Duration>) -> Notifier {
        let target = match Target::open(socket) {
            Ok(target) => Some(target),
            Err(e) => {
                debug!("{NOTIFY_SOCKET}={socket:?}: {e}; not notifying");
                None
            }
        };
        let ping_interval = watchdog
            .filter(|usec| !usec.is_zero() && target.is_some())
            .map(|usec| (usec / 2).max(MIN_PING_INTERVAL));
        Notifier {
            target,
            ping_interval,
            next_ping: None,
        }
    }

    /// Whether messages are sent at all (`NOTIFY_SOCKET` was usable).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog ping interval, if the manager asked for pings.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.ping_interval
    }

    /// `READY=1` with `status` as `STATUS=`, and the first watchdog ping
    /// armed. Sent once the listener is registered, just before the loop
    /// first waits: from then on connections are served.
    pub fn ready(&mut self, now: Time, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.next_ping = self.ping_interval.map(|interval| now + interval);
    }

    /// `STOPPING=1`, when a shutdown begins. Watchdog pings go on until the
    /// process exits: the loop is still alive while clients close.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// When the next watchdog ping is due, if one is armed.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_ping
    }

    /// Sends `WATCHDOG=1` if a ping is due at `now`, and arms the next.
    pub fn handle_timeout(&mut self, now: Time) {
        let (Some(due), Some(interval)) = (self.next_ping, self.ping_interval) else {
            return;
        };
        if now < due {
            return;
        }
        self.send(&[NotifyState::Watchdog]);
        self.next_ping = Some(now + interval);
    }

    /// One datagram of `states`, one per line as sd_notify(3) has them.
    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(target) = &self.target else {
            return;
        };
        let message: String = states.iter().map(|state| format!("{state}\n")).collect();
        if let Err(e) = target.socket.send_to_addr(message.as_bytes(), &target.addr) {
            debug!("sd_notify {:?}: {e}", message.trim_end());
        }
    }
}

impl Target {
    fn open(name: &OsStr) -> io::Result<Target> {
        let addr = address(name)?;
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Target { socket, addr })
    }
}

/// The socket address `NOTIFY_SOCKET` names: an absolute path, or on Linux
/// `@name` for an abstract socket. (systemd's `vsock:` form is for virtual
/// machines, which this daemon does not run as.)
fn address(name: &OsStr) -> io::Result<SocketAddr> {
    match name.as_bytes() {
        [b'/', ..] => SocketAddr::from_pathname(name),
        #[cfg(target_os = "linux")]
        [b'@', abstract_name @ ..] => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract socket name",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A bound datagram socket in the temporary directory, removed on drop.
    struct Manager {
        socket: UnixDatagram,
        path: PathBuf,
    }

    impl Manager {
        fn new(tag: &str) -> Manager {
            let name = format!("wschat-notify-{}-{tag}", std::process::id());
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_nonblocking(true).unwrap();
            Manager { socket, path }
        }

        /// The next datagram, if one is there.
        fn next(&self) -> Option<String> {
            let mut buf = [0; 512];
            match self.socket.recv(&mut buf) {
                Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    impl Drop for Manager {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    #[test]
    fn ready_stopping_and_pings_at_half_the_watchdog() {
        let manager = Manager::new("pings");
        let mut notifier =
            Notifier::new(manager.path.as_os_str(), Some(Duration::from_millis(200)));
        assert!(notifier.is_enabled());
        assert_eq!(notifier.poll_timeout(), None, "no ping before READY");
        notifier.ready(ms(0), "listening on 127.0.0.1:1");
        assert_eq!(
            manager.next().as_deref(),
            Some("READY=1\nSTATUS=listening on 127.0.0.1:1\n")
        );
        assert_eq!(notifier.poll_timeout(), Some(ms(100)));
        notifier.handle_timeout(ms(99));
        assert_eq!(manager.next(), None, "not due yet");
        notifier.handle_timeout(ms(130));
        assert_eq!(manager.next().as_deref(), Some("WATCHDOG=1\n"));
        assert_eq!(notifier.poll_timeout(), Some(ms(230)));
        notifier.stopping();
        assert_eq!(manager.next().as_deref(), Some("STOPPING=1\n"));
        assert_eq!(notifier.poll_timeout(), Some(ms(230)), "pings go on");
    }

    #[test]
    fn without_a_watchdog_nothing_is_armed() {
        let manager = Manager::new("no-watchdog");
        let mut notifier = Notifier::new(manager.path.as_os_str(), None);
        notifier.ready(ms(0), "up");
        assert!(manager.next().is_some());
        assert_eq!(notifier.poll_timeout(), None);
        notifier.handle_timeout(ms(1_000_000));
        assert_eq!(manager.next(), None);
    }

    #[test]
    fn a_tiny_watchdog_does_not_make_the_loop_spin() {
        let manager = Manager::new("tiny");
        let mut notifier = Notifier::new(manager.path.as_os_str(), Some(Duration::from_micros(2)));
        assert_eq!(notifier.ping_interval(), Some(MIN_PING_INTERVAL));
        notifier.ready(ms(5), "up");
        assert_eq!(notifier.poll_timeout(), Some(ms(5) + MIN_PING_INTERVAL));
    }

    #[test]
    fn inert_without_a_usable_socket() {
        let mut notifier = Notifier::default();
        notifier.ready(ms(0), "up");
        notifier.stopping();
        assert!(!notifier.is_enabled());
        assert_eq!(notifier.poll_timeout(), None);
        for name in ["relative/path", "", "vsock:2:1234"] {
            let notifier = Notifier::new(OsStr::new(name), Some(Duration::from_secs(1)));
            assert!(!notifier.is_enabled(), "{name:?}");
            assert_eq!(notifier.ping_interval(), None, "no pings to nowhere");
        }
    }

    #[test]
    fn a_manager_that_does_not_read_never_blocks_the_sender() {
        let manager = Manager::new("full");
        let mut notifier = Notifier::new(manager.path.as_os_str(), Some(Duration::from_millis(20)));
        notifier.ready(ms(0), "up");
        // Far more than a datagram queue holds (net.unix.max_dgram_qlen is
        // 512 by default): the sends past it fail at once instead of waiting.
        for i in 1..=5_000 {
            notifier.handle_timeout(ms(i * 10));
        }
        assert!(manager.next().is_some());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_names_are_understood() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("wschat-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        manager.set_nonblocking(true).unwrap();
        let mut notifier = Notifier::new(OsStr::new(&format!("@{name}")), None);
        notifier.stopping();
        let mut buf = [0; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }
}
