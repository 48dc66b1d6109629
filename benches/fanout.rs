//! Broadcast fan-out in memory: a 1 KiB chat message to 10000 receivers,
//! uncompressed and with `--compression shared` negotiated by every
//! receiver. Prints deliveries/s for both and the deflate calls per
//! message (one: the frame is compressed once for the whole room).
//!
//! `cargo bench --bench fanout`

#[path = "support/receivers.rs"]
mod receivers;

use std::time::{Duration, Instant};

use receivers::Lobby;

const RECEIVERS: usize = 10_000;

fn measure(compress: bool) -> (f64, f64) {
    let mut lobby = Lobby::new(RECEIVERS, compress);
    let text: String = "a typical chat line, repeated to one kilobyte. "
        .repeat(22)
        .chars()
        .take(1024)
        .collect();
    let mut messages = 0u64;
    let mut deliveries = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        deliveries += lobby.broadcast(7, text.as_bytes()) as u64;
        messages += 1;
        lobby.drain();
    }
    let per_sec = deliveries as f64 / start.elapsed().as_secs_f64();
    let deflates_per_message = lobby.deflater.calls() as f64 / messages as f64;
    (per_sec, deflates_per_message)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (plain, _) = measure(false);
    let (compressed, calls) = measure(true);
    println!("fan-out of a 1 KiB message to {RECEIVERS} receivers (deliveries/s, in memory):");
    println!("  uncompressed        {plain:>14.0}");
    println!("  shared compression  {compressed:>14.0}  ({calls:.2} deflate calls per message)");
    println!(
        "{{\"case\":\"fanout_1KiB_10000\",\"plain_per_sec\":{plain:.0},\"shared_deflate_per_sec\":{compressed:.0},\"deflate_calls_per_message\":{calls:.3}}}"
    );
}
