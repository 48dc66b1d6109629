//! Socket activation (sd_listen_fds(3)): systemd binds the port itself
//! (`wschat.socket`) and hands the listening socket over as descriptor 3
//! onwards, with `LISTEN_FDS` saying how many, `LISTEN_PID` which process
//! they are for, and `LISTEN_FDNAMES` their names (`FileDescriptorName=`).
//!
//! The descriptors are taken by the `listenfd` crate, which checks that
//! each is a TCP socket and marks it close-on-exec, so this crate stays
//! free of `unsafe`. `LISTEN_PID` is checked here first, strictly as
//! libsystemd does: without it, or with another process's id, the
//! variables were inherited from a parent and nothing is taken.
//!
//! Listeners are looked up by name so that a TLS port can be handed over
//! beside the plain one later: the one named [`PLAIN`] is the plain
//! listener, or else the first that is not named for another kind (a
//! socket unit without `FileDescriptorName=` names its socket after the
//! unit, which is then the plain one).

use std::env;
use std::io;
use std::net::TcpListener as StdListener;
use std::os::fd::AsRawFd;

use log::{debug, info, warn};
use mio::net::TcpListener;

/// The `FileDescriptorName=` of the plain (no TLS) listener.
pub const PLAIN: &str = "plain";

/// Names kept for listeners this build does not serve yet: never taken as
/// the plain listener, since serving plain HTTP on a TLS port would look
/// like a broken TLS server to every client.
const OTHER_KINDS: &[&str] = &["tls"];

/// The listening sockets systemd handed over and that are not taken yet.
/// Empty outside socket activation.
#[derive(Debug, Default)]
pub struct Activation {
    handed: Vec<Handed>,
}

/// One handed-over listener and its name.
#[derive(Debug)]
struct Handed {
    name: String,
    listener: StdListener,
}

impl Activation {
    /// Takes the listeners passed by socket activation, if `LISTEN_PID`
    /// names this process; `LISTEN_PID` and `LISTEN_FDS` are then removed
    /// from the environment, so call it before any thread starts. `Err` if
    /// the variables do not parse or a descriptor is not a TCP socket.
    pub fn from_env() -> io::Result<Activation> {
        let Ok(count) = env::var("LISTEN_FDS") else {
            return Ok(Activation::default());
        };
        let listen_pid = env::var("LISTEN_PID").ok();
        if !for_this_process(listen_pid.as_deref(), std::process::id())? {
            debug!("LISTEN_FDS={count} is for process {listen_pid:?}: not taken");
            return Ok(Activation::default());
        }
        let count: usize = count
            .parse()
            .map_err(|_| invalid(format!("LISTEN_FDS={count:?} is not a count")))?;
        let names = names(env::var("LISTEN_FDNAMES").ok().as_deref(), count)?;
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() != count {
            return Err(invalid(format!(
                "LISTEN_FDS={count}, but {} descriptors were found",
                fds.len()
            )));
        }
        let mut handed = Vec::with_capacity(count);
        for (index, name) in names.into_iter().enumerate() {
            let listener = fds
                .take_tcp_listener(index)
                .map_err(|e| invalid(format!("listener {name:?} from systemd: {e}")))?
                .ok_or_else(|| invalid(format!("listener {name:?} from systemd: gone")))?;
            handed.push(Handed { name, listener });
        }
        Ok(Activation { handed })
    }

    /// Whether nothing (more) was handed over.
    pub fn is_empty(&self) -> bool {
        self.handed.is_empty()
    }

    /// The plain listener: the one named [`PLAIN`], or else the first not
    /// named for another kind. `None` if none was handed over.
    pub fn take_plain(&mut self) -> io::Result<Option<TcpListener>> {
        let named = self.handed.iter().position(|h| h.name == PLAIN);
        let fallback = || {
            let other = |h: &Handed| OTHER_KINDS.contains(&h.name.as_str());
            self.handed.iter().position(|h| !other(h))
        };
        match named.or_else(fallback) {
            Some(index) => self.take_at(index).map(Some),
            None => Ok(None),
        }
    }

    /// The listener named `name`, if it was handed over (for listeners of
    /// other kinds, such as a TLS port).
    pub fn take(&mut self, name: &str) -> io::Result<Option<TcpListener>> {
        match self.handed.iter().position(|h| h.name == name) {
            Some(index) => self.take_at(index).map(Some),
            None => Ok(None),
        }
    }

    /// Logs and closes what nobody took: systemd keeps its own copy and
    /// goes on listening there, so connections to it would wait unserved.
    pub fn warn_unused(self) {
        for Handed { name, listener } in self.handed {
            let fd = listener.as_raw_fd();
            match listener.local_addr() {
                Ok(addr) => warn!("listener from systemd: fd {fd} ({name}) on {addr} not used"),
                Err(_) => warn!("listener from systemd: fd {fd} ({name}) not used"),
            }
        }
    }

    /// The names of the listeners not taken yet (for messages).
    pub fn names(&self) -> Vec<&str> {
        self.handed.iter().map(|h| h.name.as_str()).collect()
    }

    /// Removes listener `index`, non-blocking as mio needs it, and logs
    /// where it came from.
    fn take_at(&mut self, index: usize) -> io::Result<TcpListener> {
        let Handed { name, listener } = self.handed.remove(index);
        // systemd creates its sockets blocking unless the unit says otherwise.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let fd = listener.as_raw_fd();
        info!("listener from systemd: fd {fd} ({name}) on {addr}, instead of --listen");
        Ok(TcpListener::from_std(listener))
    }
}

/// Whether `LISTEN_PID` names process `pid`. Unset means the variables
/// were not meant for anyone in particular, which libsystemd refuses too.
fn for_this_process(listen_pid: Option<&str>, pid: u32) -> io::Result<bool> {
    let Some(text) = listen_pid else {
        return Ok(false);
    };
    let listen_pid: u32 = text
        .parse()
        .map_err(|_| invalid(format!("LISTEN_PID={text:?} is not a process id")))?;
    Ok(listen_pid == pid)
}

/// The names of `count` descriptors: from `LISTEN_FDNAMES` (colon
/// separated), or `unknown` for each, as libsystemd does without it.
fn names(fdnames: Option<&str>, count: usize) -> io::Result<Vec<String>> {
    let Some(fdnames) = fdnames else {
        return Ok(vec!["unknown".to_string(); count]);
    };
    let names: Vec<String> = fdnames.split(':').map(str::to_string).collect();
    if names.len() != count {
        return Err(invalid(format!(
            "LISTEN_FDNAMES={fdnames:?} does not name {count} descriptors"
        )));
    }
    Ok(names)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_pid_must_name_this_process() {
        assert!(for_this_process(Some("42"), 42).unwrap());
        assert!(!for_this_process(Some("41"), 42).unwrap());
        assert!(!for_this_process(None, 42).unwrap());
        assert!(for_this_process(Some("x"), 42).is_err());
    }

    #[test]
    fn names_come_from_listen_fdnames_or_default_to_unknown() {
        assert_eq!(names(None, 2).unwrap(), ["unknown", "unknown"]);
        assert_eq!(names(Some("plain:tls"), 2).unwrap(), ["plain", "tls"]);
        assert!(names(Some("plain"), 2).is_err());
    }

    fn handed(names: &[&str]) -> Activation {
        let handed = names
            .iter()
            .map(|name| Handed {
                name: name.to_string(),
                listener: StdListener::bind("127.0.0.1:0").unwrap(),
            })
            .collect();
        Activation { handed }
    }

    fn port_of(activation: &Activation, name: &str) -> u16 {
        let h = activation.handed.iter().find(|h| h.name == name).unwrap();
        h.listener.local_addr().unwrap().port()
    }

    #[test]
    fn the_plain_listener_is_the_named_one_or_the_first_of_no_other_kind() {
        for (names, plain) in [
            (&["tls", "plain"][..], "plain"),
            (&["wschat.socket"][..], "wschat.socket"),
            (&["tls", "unknown"][..], "unknown"),
        ] {
            let mut activation = handed(names);
            let port = port_of(&activation, plain);
            let taken = activation.take_plain().unwrap().unwrap();
            assert_eq!(taken.local_addr().unwrap().port(), port, "{names:?}");
            assert!(!activation.names().contains(&plain));
        }
        let mut tls_only = handed(&["tls"]);
        assert!(tls_only.take_plain().unwrap().is_none());
        assert!(tls_only.take("tls").unwrap().is_some());
        assert!(tls_only.is_empty());
        assert!(Activation::default().take_plain().unwrap().is_none());
    }
}
