//! `wschat-bench broadcast --transport` against the real server (issue
//! 14): receivers on SSE, long polling, polling and `wschat.v1` WebSocket
//! in one room get every message once, and the requests and bytes the
//! tool reports per delivery are what each transport must cost. The
//! tool's JSON report is the evidence, read here field by field.

mod support;

use serde_json::Value;
use support::{bench, Daemon};

/// Receivers per run.
const RECEIVERS: u64 = 20;

/// Runs `wschat-bench broadcast` with receivers on `transport` (and
/// `extra` flags) against `server`, and returns its JSON report after
/// checking that it passed and lost, duplicated and missed nothing.
fn run(server: &Daemon, transport: &str, extra: &[&str]) -> Value {
    let url = format!("ws://{}/room/transports", server.addr());
    let pid = server.pid().to_string();
    let receivers = RECEIVERS.to_string();
    let mut args = vec!["broadcast", "--url", &url, "--conns", &receivers];
    args.extend(["--senders", "1", "--rate", "100", "--duration", "1"]);
    args.extend([
        "--drain",
        "3",
        "--server-pid",
        &pid,
        "--transport",
        transport,
    ]);
    args.extend(extra);
    let report = bench(&args, true);
    assert_eq!(report["transport"], transport);
    for zero in [
        "lost",
        "duplicates",
        "out_of_order",
        "received_by_none",
        "not_recoverable",
        "malformed_objects",
        "errors",
    ] {
        assert_eq!(count(&report, zero), 0, "{zero}: {report}");
    }
    let sent = count(&report, "messages_sent");
    assert!(sent >= 90, "{report}");
    assert_eq!(count(&report, "receivers_at_end"), RECEIVERS);
    assert_eq!(count(&report, "deliveries"), sent * RECEIVERS, "{report}");
    assert!(number(&report, "server_cpu_per_1000_deliveries_ms") > 0.0);
    // Every delivery crossed a receiver's socket: its message at least.
    assert!(
        number(&report, "bytes_read_per_delivery") > 60.0,
        "{report}"
    );
    report
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
}

fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
}

#[test]
fn every_transport_delivers_everything_once_at_its_own_cost() {
    let server = Daemon::start(&[]);

    // Pushed transports: no request once the stream is open, nothing
    // written by the receivers.
    for transport in ["sse", "websocket"] {
        let report = run(&server, transport, &[]);
        assert_eq!(count(&report, "http_requests"), 0, "{report}");
        assert_eq!(count(&report, "receiver_bytes_written"), 0, "{report}");
    }

    // Long polling: a request per answer, and an answer carries at least
    // one message (never an empty one while messages flow).
    let report = run(&server, "long-poll", &["--long-poll-timeout", "30"]);
    let per_delivery = number(&report, "requests_per_delivery");
    assert!(per_delivery > 0.0 && per_delivery <= 1.05, "{report}");
    assert!(count(&report, "http_requests") >= RECEIVERS, "{report}");
    assert!(number(&report, "bytes_written_per_delivery") > 0.0);

    // Polling every 50 ms: the schedule is kept (20 a second each over
    // the second of sending at least), and each poll brings a batch.
    let report = run(&server, "poll", &["--poll-interval", "50"]);
    let requests = count(&report, "http_requests");
    assert!(requests >= RECEIVERS * 16, "{report}");
    let per_delivery = number(&report, "requests_per_delivery");
    assert!(per_delivery > 0.0 && per_delivery < 0.5, "{report}");
    let p50 = number(&report, "delivery_latency_p50_us");
    assert!(p50 < 200_000.0, "half the interval, give or take: {report}");
}
