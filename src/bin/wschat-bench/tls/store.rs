//! `--resume`'s session store: every TLS 1.3 ticket a server sends, kept
//! until a connection takes it.
//!
//! rustls's own in-memory store keeps 8 tickets per server name. A
//! `connect` run with 50 cycles in flight starts more than 8 connections
//! between two polls now and then, and the ones past the 8th would make
//! full handshakes for want of a ticket; this store keeps up to
//! [`TICKETS_PER_SERVER`], so after the first cycles every handshake can
//! resume. Each ticket is used once, as TLS 1.3 asks; the newest goes
//! first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// Tickets kept per server name; past this the oldest are dropped.
pub const TICKETS_PER_SERVER: usize = 4096;

/// What is kept for one server name.
#[derive(Debug, Default)]
struct Entry {
    /// The key-exchange group the server chose last time, offered first.
    kx_hint: Option<NamedGroup>,
    /// A TLS 1.2 session, if the server spoke TLS 1.2.
    tls12: Option<Tls12ClientSessionValue>,
    /// TLS 1.3 tickets, oldest first.
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// Sessions by server name (the process is single-threaded; the lock is
/// there because rustls asks for `Sync`, and is never contended).
#[derive(Debug, Default)]
pub struct TicketStore(Mutex<HashMap<ServerName<'static>, Entry>>);

impl TicketStore {
    /// Runs `f` on the entry of `name`, made if missing.
    fn with<T>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(name.to_owned()).or_default())
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.with(&name, |e| e.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(name, |e| e.kx_hint)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(&name, |e| e.tls12 = Some(value));
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(name, |e| e.tls12.clone())
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.with(name, |e| e.tls12 = None);
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.with(&name, |e| {
            if e.tls13.len() == TICKETS_PER_SERVER {
                e.tls13.pop_front();
            }
            e.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.with(name, |e| e.tls13.pop_back())
    }
}
