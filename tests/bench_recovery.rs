//! `wschat-bench broadcast --protocol wschat.v1 --recover` against the real
//! server: members dropped on a schedule come back with
//! `?since=EPOCH:OFFSET` and get every message they missed, once (issue 13).
//! The tool's JSON report is the evidence, read here field by field.

mod support;

use serde_json::Value;
use support::{bench, Daemon};

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
}

#[test]
fn members_dropped_while_sending_recover_every_message_exactly_once() {
    let server = Daemon::start(&["--history-size", "1000"]);
    let url = format!("ws://{}/room/recovery", server.addr());
    let pid = server.pid().to_string();
    let report = bench(
        &[
            "broadcast",
            "--url",
            &url,
            "--conns",
            "20",
            "--senders",
            "1",
            "--rate",
            "200",
            "--duration",
            "2",
            "--drain",
            "3",
            "--protocol",
            "wschat.v1",
            "--recover",
            "--drop-every",
            "0.2",
            "--drop-fraction",
            "0.25",
            "--reconnect-delay",
            "0.05",
            "--server-pid",
            &pid,
        ],
        true,
    );
    assert_eq!(report["protocol"], "wschat.v1");
    let dropped = count(&report, "dropped_by_us");
    // 2 s of rounds every 0.2 s, 5 of the 19 receivers each.
    assert!(dropped >= 20, "{report}");
    assert_eq!(count(&report, "reconnects"), dropped);
    assert_eq!(count(&report, "recoveries_exact"), dropped, "{report}");
    assert_eq!(count(&report, "recoveries_partial"), 0);
    assert!(count(&report, "recovered") > 0, "{report}");
    assert_eq!(count(&report, "lost"), 0, "{report}");
    assert_eq!(count(&report, "duplicates"), 0, "{report}");
    assert_eq!(count(&report, "received_by_none"), 0, "{report}");
    assert_eq!(count(&report, "errors"), 0, "{report}");
    // Every member, dropped or not, got every message.
    let sent = count(&report, "messages_sent");
    assert_eq!(count(&report, "deliveries"), sent * 20, "{report}");
    let server_cpu = report["server_cpu_per_delivery_us"].as_f64();
    assert!(server_cpu.is_some_and(|us| us > 0.0), "{report}");
}
