//! Nothing lost: 200 lobby members each send 100 messages at once; every
//! member receives all 20000 broadcasts (its own included), each sender's in
//! the order sent, and nobody is disconnected.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::{encode_frame, op, start_server, test_config, Metrics, RawClient};

const CLIENTS: usize = 200;
const MESSAGES: usize = 100;
/// Overall bound; a debug build needs a few seconds.
const DEADLINE: Duration = Duration::from_secs(30);

/// Sends this client's 100 messages (`{index}:{seq}`) in 10 bursts, then
/// reads until all `CLIENTS × MESSAGES` broadcasts are in, checking that
/// every sender's come in order and that `from{id}` always names the same
/// sender. Returns how many it got, and the still open client.
fn member(
    index: usize,
    mut ws: RawClient,
    start: Arc<Barrier>,
    deadline: Instant,
) -> (usize, RawClient) {
    let frames: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|seq| {
            let key = (index as u32 * 131 + seq as u32).to_be_bytes();
            let text = format!("{index}:{seq}");
            encode_frame(true, 0, op::TEXT, text.as_bytes(), Some(key))
        })
        .collect();
    start.wait();
    for burst in frames.chunks(10) {
        ws.stream.write_all(&burst.concat()).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut next = vec![0usize; CLIENTS];
    let mut sender_of: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut total = 0;
    while total < CLIENTS * MESSAGES {
        while let Some((opcode, payload)) = ws.decoder.next_frame() {
            assert_eq!(
                opcode,
                op::TEXT,
                "member {index}: opcode {opcode} after {total}"
            );
            let text = std::str::from_utf8(payload).unwrap();
            let mut parts = text.split(':');
            let (from, who, seq) = (parts.next(), parts.next(), parts.next());
            let who: usize = who.and_then(|w| w.parse().ok()).expect(text);
            let seq: usize = seq.and_then(|s| s.parse().ok()).expect(text);
            let from = from.expect(text).as_bytes().to_vec();
            let known = *sender_of.entry(from).or_insert(who);
            assert_eq!(known, who, "member {index}: {text} from another id before");
            assert_eq!(
                seq, next[who],
                "member {index}: sender {who}'s messages out of order"
            );
            next[who] += 1;
            total += 1;
        }
        if total == CLIENTS * MESSAGES {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = ws.decoder.read_from(&mut ws.stream, left) {
            panic!(
                "member {index}: {e} after {total} of {} broadcasts",
                CLIENTS * MESSAGES
            );
        }
    }
    assert_eq!(
        sender_of.len(),
        CLIENTS,
        "member {index}: distinct sender ids"
    );
    (total, ws)
}

#[test]
fn two_hundred_members_times_one_hundred_messages_all_arrive_in_order() {
    let server = start_server(test_config());
    let addr = server.addr();
    // Everyone joins before anyone speaks.
    let members: Vec<RawClient> = (0..CLIENTS)
        .map(|_| RawClient::connect(addr, "/"))
        .collect();
    let start = Arc::new(Barrier::new(CLIENTS));
    let started = Instant::now();
    let deadline = started + DEADLINE;
    let threads: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(index, ws)| {
            let start = start.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || member(index, ws, start, deadline))
                .unwrap()
        })
        .collect();
    let (counts, open): (Vec<usize>, Vec<RawClient>) = threads
        .into_iter()
        .map(|t| t.join().expect("member"))
        .unzip();
    let received: usize = counts.iter().sum();
    eprintln!(
        "nothing lost: {received} deliveries in {:?}",
        started.elapsed()
    );
    assert_eq!(received, CLIENTS * CLIENTS * MESSAGES);
    let m = Metrics::fetch(addr);
    assert_eq!(
        m.require("wschat_messages_received_total"),
        (CLIENTS * MESSAGES) as f64
    );
    assert_eq!(m.value("wschat_slow_consumer_disconnects_total"), 0.0);
    // Nobody was disconnected (the gauge counts this request too).
    assert_eq!(m.require("wschat_connections"), (CLIENTS + 1) as f64);
    drop(open);
}
