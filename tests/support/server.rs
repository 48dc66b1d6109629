//! The server in-process, on its own thread, for tests that need no
//! process of their own (faster to start, and its config is typed).

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

/// A default [`wschat::Config`] listening on `127.0.0.1:0` (a free port).
pub fn test_config() -> wschat::Config {
    wschat::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..wschat::Config::default()
    }
}

/// A server running on its own thread for the duration of a test.
///
/// Dropping it calls `shutdown()` on its handle and waits, bounded by the
/// configured shutdown and close timeouts plus 5 s, for `run()` to return. If the server
/// does not stop in time, or `run()` returned an error, the drop panics
/// (unless the test is already panicking), so a test also checks that the
/// server stops cleanly.
pub struct TestServer {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    handle: wschat::ServerHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
    stop_wait: Duration,
}

/// Binds `config` (use [`test_config`] for a free loopback port) and runs the
/// server on a new thread. The server is bound on that thread (a `Server`
/// holds `Rc`s, so it is not `Send`); its address and handle come back over
/// a channel. Panics if binding fails.
pub fn start_server(config: wschat::Config) -> TestServer {
    let stop_wait = config.shutdown_timeout + config.close_timeout + Duration::from_secs(5);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("wschat-test-server".to_string())
        .spawn(move || {
            let server = match wschat::Server::bind(config) {
                Ok(server) => server,
                Err(e) => {
                    let message = format!("Server::bind failed: {e}");
                    let _ = tx.send(Err(message));
                    return Err(e);
                }
            };
            let _ = tx.send(Ok((
                server.local_addr(),
                server.tls_local_addr(),
                server.handle(),
            )));
            server.run()
        })
        .expect("spawn server thread");
    let (addr, tls_addr, handle) = match rx.recv_timeout(IO_TIMEOUT) {
        Ok(Ok(started)) => started,
        Ok(Err(message)) => panic!("{message}"),
        Err(e) => panic!("server thread did not report its address: {e}"),
    };
    TestServer {
        addr,
        tls_addr,
        handle,
        thread: Some(thread),
        stop_wait,
    }
}

impl TestServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the TLS listener (panics without `tls_listen`).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr.expect("the server has no TLS listener")
    }

    /// A clone of the server's handle (for example to call `shutdown()`
    /// while clients are still connected).
    pub fn handle(&self) -> wschat::ServerHandle {
        self.handle.clone()
    }

    /// Shuts the server down and waits (bounded) for `run()` to return.
    /// Returns `run()`'s result, or `Err(TimedOut)` if it did not return in
    /// time (the thread is then left running).
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.handle.shutdown();
        let deadline = Instant::now() + self.stop_wait;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "server on {} did not stop within {:?} of shutdown()",
                        self.addr, self.stop_wait
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match thread.join() {
            Ok(result) => result,
            Err(_) => Err(io::Error::other("server thread panicked")),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            if std::thread::panicking() {
                eprintln!("TestServer drop: {e}");
            } else {
                panic!("TestServer drop: {e}");
            }
        }
    }
}
