//! Packets per connection, counted by the kernel (Linux, with `ss` from
//! iproute2): a short WebSocket life should cost the client as few TCP
//! segments as the protocol allows, because on a busy server every segment
//! is kernel work on both ends.
//!
//! Seen from the client, a connection that upgrades and closes at once
//! receives exactly three segments: the SYN-ACK, the 101 (carrying the ACK
//! of the request) and the Close reply (carrying the ACK of our Close and
//! the server's FIN). Without delayed ACKs on the server's side each
//! request would be acknowledged in a packet of its own; without the last
//! bytes held back for the FIN, the FIN would follow in another.
//!
//! Skipped (with a note) where `ss` is missing, unless `WSCHAT_REQUIRE_SS=1`
//! (as in CI).
#![cfg(target_os = "linux")]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::{close_payload, op, start_server, test_config, RawClient};

/// Segments the socket bound to `local` has received, from `ss -ti`.
fn segments_received(local: SocketAddr) -> Option<u64> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "all", "src"])
        .arg(local.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = text
        .split_whitespace()
        .find_map(|f| f.strip_prefix("segs_in:"))?;
    field.parse().ok()
}

fn ss_available() -> bool {
    let found = Command::new("ss")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("WSCHAT_REQUIRE_SS").as_deref() != Ok("1"),
            "WSCHAT_REQUIRE_SS=1 but `ss` (iproute2) is not installed"
        );
        eprintln!("skipped: `ss` (iproute2) is not installed");
    }
    found
}

/// One connection: upgrade, Close 1000, read the reply and the server's
/// FIN; returns the segments the client received, with our socket still
/// open (so that `ss` can see it).
fn one_short_life(server: SocketAddr) -> u64 {
    let mut c = RawClient::connect_tcp(server);
    // Let the server accept first, as it does under load, so the request
    // meets a socket the server has already set up.
    std::thread::sleep(Duration::from_millis(50));
    c.handshake("/echo", &[]);
    c.send_close(Some(1000), b"");
    // Exactly the Close reply, then FIN.
    c.expect_frame(op::CLOSE, &close_payload(Some(1000), b""));
    c.expect_eof();
    segments_received(c.stream.local_addr().unwrap()).expect("ss shows our socket")
}

#[test]
fn a_short_websocket_life_costs_the_client_three_segments_in() {
    if !ss_available() {
        return;
    }
    let server = start_server(test_config());
    // Timing can cost a segment now and then (a delayed ACK that fires
    // before the answer on a loaded machine): the best of a few tries.
    let counts: Vec<u64> = (0..5).map(|_| one_short_life(server.addr())).collect();
    let best = *counts.iter().min().unwrap();
    assert_eq!(
        best, 3,
        "segments received per connection, by try: {counts:?}"
    );
}
