//! Flood on the real binary: two clients write frames to `/echo` as fast as
//! they can for 3 s without reading (one with 100-byte frames, one with
//! 64 KiB frames). The server stops reading them once their queue passes
//! `--max-backpressure`, so its memory stays bounded; other clients' round
//! trips stay fast; and once the flooders read, every frame they sent comes
//! back, in order.

mod support;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{encode_header, mib, op, percentile, Daemon, RawClient};
use wschat::server::reactor::READ_BUFFER_BYTES;

const MAX_BACKPRESSURE: usize = 256 * 1024;
const FLOOD_FOR: Duration = Duration::from_secs(3);
const MASK: [u8; 4] = [0xA5, 0x5A, 0x3C, 0xC3];
/// Round-trip bound for the other clients (debug build).
const P99_BOUND: Duration = Duration::from_millis(1000);

/// What a flooder did.
#[derive(Debug)]
struct Flood {
    frame_len: usize,
    frames: u64,
    bytes: u64,
    /// Writes that found the socket full: the server had stopped reading.
    blocked_writes: u64,
}

/// Byte `i` of each frame's payload after its 8-byte sequence number.
fn filler(len: usize) -> Vec<u8> {
    (0..len - 8).map(|i| (i * 13 + 1) as u8).collect()
}

/// Appends masked frames `seq..` of `frame_len` bytes to `batch` until it
/// holds about 64 KiB (at least one frame). Returns the next sequence number.
fn fill_batch(batch: &mut Vec<u8>, masked_filler: &[u8], frame_len: usize, mut seq: u64) -> u64 {
    batch.clear();
    while batch.is_empty() || batch.len() + frame_len <= 64 * 1024 {
        let header = encode_header(true, 0, op::BINARY, frame_len as u64, Some(MASK));
        batch.extend_from_slice(&header);
        let mut number = seq.to_be_bytes();
        for (i, b) in number.iter_mut().enumerate() {
            *b ^= MASK[i % 4];
        }
        batch.extend_from_slice(&number);
        batch.extend_from_slice(masked_filler);
        seq += 1;
    }
    seq
}

/// Floods `/echo` with `frame_len`-byte frames for [`FLOOD_FOR`] without
/// reading, then reads until every frame it sent has come back intact and
/// in order.
fn flood(addr: SocketAddr, frame_len: usize) -> Flood {
    let mut ws = RawClient::connect(addr, "/echo");
    ws.stream.set_nonblocking(true).unwrap();
    let plain = filler(frame_len);
    let masked: Vec<u8> = plain
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ MASK[(i + 8) % 4])
        .collect();
    let mut batch = Vec::with_capacity(128 * 1024);
    let mut next_seq = fill_batch(&mut batch, &masked, frame_len, 0);
    let (mut offset, mut bytes, mut blocked) = (0usize, 0u64, 0u64);
    let until = Instant::now() + FLOOD_FOR;
    let mut flooding = true;
    let mut echoed = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let drain_deadline = until + Duration::from_secs(15);
    loop {
        let now = Instant::now();
        if flooding && now >= until {
            // Stop after the batch being written: frames stay whole.
            flooding = false;
        }
        if offset == batch.len() {
            if !flooding {
                if echoed == next_seq {
                    break;
                }
            } else {
                next_seq = fill_batch(&mut batch, &masked, frame_len, next_seq);
                offset = 0;
            }
        }
        let mut progressed = false;
        if offset < batch.len() {
            match ws.stream.write(&batch[offset..]) {
                Ok(n) => {
                    offset += n;
                    bytes += n as u64;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked += 1,
                Err(e) => panic!("flooder ({frame_len} B frames): write: {e}"),
            }
        }
        if !flooding {
            assert!(
                now < drain_deadline,
                "flooder ({frame_len} B): {echoed} of {next_seq} echoes back"
            );
            match ws.stream.read(&mut buf) {
                Ok(0) => panic!("flooder ({frame_len} B): EOF after {echoed} echoes"),
                Ok(n) => {
                    ws.decoder.push(&buf[..n]);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("flooder ({frame_len} B): read: {e}"),
            }
            while let Some((opcode, payload)) = ws.decoder.next_frame() {
                assert_eq!(opcode, op::BINARY, "echo {echoed}");
                assert_eq!(payload.len(), frame_len, "echo {echoed}");
                let seq = u64::from_be_bytes(payload[..8].try_into().unwrap());
                assert_eq!(seq, echoed, "echo out of order");
                assert!(payload[8..] == plain[..], "echo {echoed} corrupted");
                echoed += 1;
            }
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Flood {
        frame_len,
        frames: next_seq,
        bytes,
        blocked_writes: blocked,
    }
}

/// Round trips of one well-behaved client on `path` every 10 ms until
/// `stop`; returns their durations.
fn round_trips(addr: SocketAddr, path: &'static str, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut ws = RawClient::connect(addr, path);
    let mut rtts = Vec::new();
    let mut i = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let text = format!("{path} {i}");
        let sent = Instant::now();
        ws.send_text(&text);
        let (opcode, got) = ws.next_message(Duration::from_secs(5));
        rtts.push(sent.elapsed());
        assert_eq!(opcode, op::TEXT);
        assert!(got.ends_with(text.as_bytes()), "{got:?}");
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    rtts
}

#[test]
fn echo_flooders_are_paused_while_others_stay_fast_and_memory_bounded() {
    let mut daemon = Daemon::start(&["--max-backpressure", &MAX_BACKPRESSURE.to_string()]);
    let addr = daemon.addr();
    let mut warm = RawClient::connect(addr, "/echo");
    warm.send_text("warm");
    warm.next_message(Duration::from_secs(5));
    drop(warm);
    std::thread::sleep(Duration::from_millis(100));
    let baseline_kib = daemon.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let latency: Vec<_> = ["/echo", "/"]
        .into_iter()
        .map(|path| {
            let stop = stop.clone();
            std::thread::spawn(move || round_trips(addr, path, stop))
        })
        .collect();
    let flooders: Vec<_> = [100, 64 * 1024]
        .into_iter()
        .map(|len| std::thread::spawn(move || flood(addr, len)))
        .collect();
    std::thread::sleep(FLOOD_FOR);
    stop.store(true, Ordering::SeqCst);
    let mut rtts: Vec<Duration> = latency
        .into_iter()
        .flat_map(|t| t.join().expect("round-trip client"))
        .collect();
    let floods: Vec<Flood> = flooders
        .into_iter()
        .map(|t| t.join().expect("flooder"))
        .collect();
    let peak_kib = daemon.peak_rss_kib();
    daemon.assert_alive();

    let p99 = percentile(&mut rtts, 99.0);
    let max = *rtts.last().unwrap();
    // Per flooder: its queue up to the bound, plus what one read turn
    // echoes past it (the reactor checks the bound between reads: at most
    // 16 reads of the loop's read buffer), plus a 64 KiB reassembly
    // buffer; 16 MiB of margin for the allocator. Without the pause, a
    // flooder's bytes would pile up at the rate it writes, hundreds of MiB
    // in 3 s.
    let per_flooder_kib = (MAX_BACKPRESSURE + 16 * READ_BUFFER_BYTES + 64 * 1024) as u64 / 1024;
    let bound_kib = baseline_kib + 2 * per_flooder_kib + 16 * 1024;
    eprintln!(
        "flood: {floods:?}\n  {} round trips, p99 {p99:?}, max {max:?}; RSS baseline {:.1} MiB, \
         peak {:.1} MiB, bound {:.1} MiB",
        rtts.len(),
        mib(baseline_kib),
        mib(peak_kib),
        mib(bound_kib)
    );
    for f in &floods {
        assert!(
            f.blocked_writes > 0,
            "flooder with {} B frames never blocked: the server read all {} frames ({} bytes) \
             as fast as they came",
            f.frame_len,
            f.frames,
            f.bytes
        );
    }
    assert!(rtts.len() >= 100, "only {} round trips", rtts.len());
    assert!(p99 < P99_BOUND, "round-trip p99 {p99:?} during the flood");
    assert!(
        peak_kib <= bound_kib,
        "server peak RSS {:.1} MiB over the bound {:.1} MiB",
        mib(peak_kib),
        mib(bound_kib)
    );
}
