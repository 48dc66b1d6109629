//! The comparisons the throughput bench makes, each measured in the same
//! run as what it is compared against.

/// What a case's figure is compared against.
pub enum Against {
    /// wschat over `ws://` against the plain TCP baseline: its echo port,
    /// or with `hangs_up` its hang-up port (connect cycles, where the
    /// server must close first).
    Baseline {
        /// Drive the hang-up port.
        hangs_up: bool,
    },
    /// wschat over `wss://` against the same wschat process over `ws://`:
    /// the price of TLS alone.
    PlainWs,
    /// Members speaking `wschat.v1` (JSON objects with offsets) against
    /// members of the classic protocol, same process, same room: the
    /// price of JSON alone.
    ClassicProtocol,
}

/// What decides which of a case's pairs is its median, and its ratio.
pub enum Compare {
    /// The headline figure, measured over the classic one (higher is
    /// better).
    Figure,
    /// The server's CPU time per operation, measured over the classic one
    /// (lower is better): for a load offered at a fixed rate, where both
    /// sides deliver the same and only the cost differs.
    ServerCpu,
}

/// One comparison: the same `wschat-bench` flags against both sides.
pub struct Case {
    /// Name in the table and in the results file.
    pub name: &'static str,
    /// The `wschat-bench` scenario.
    pub scenario: &'static str,
    /// wschat endpoint path.
    pub path: &'static str,
    /// Flags after `--url`, shared by both runs.
    pub args: &'static [&'static str],
    /// What the figure is compared against.
    pub against: Against,
    /// Flags of the `wss://` run only (besides the certificate flags).
    pub tls_args: &'static [&'static str],
    /// The headline figure (a JSON key of the summary).
    pub metric: &'static str,
    /// The JSON key counting the operations behind it, to turn server CPU
    /// time into CPU time per operation.
    pub count: &'static str,
    /// A latency figure reported beside it.
    pub latency: &'static str,
    /// The key of the load generator's own reading of the server's CPU
    /// time per operation, over the measured stretch alone (`--server-pid`
    /// is passed, and the server's CPU and wait shares are its readings
    /// too): for a scenario whose setup would weigh in the whole run's
    /// figure. `None`: the whole run's CPU time, read here.
    pub server_cpu: Option<&'static str>,
    /// What the pairs are ranked and the ratio taken by.
    pub compare: Compare,
}

impl Case {
    /// The names of the measured side and of the side it is compared
    /// against, in the table and as keys of the results.
    pub fn sides(&self) -> (&'static str, &'static str) {
        match self.against {
            Against::Baseline { .. } => ("wschat", "baseline"),
            Against::PlainWs => ("wss", "ws"),
            Against::ClassicProtocol => ("json", "classic"),
        }
    }
}

const ECHO_16B: &[&str] = &["--conns", "100", "--size", "16", "--pipeline", "16"];
const ECHO_16KIB: &[&str] = &[
    "--conns",
    "10",
    "--size",
    "16384",
    "--pipeline",
    "4",
    "--binary",
];
const CONNECT_C50: &[&str] = &["--concurrency", "50"];
const BROADCAST_1000: &[&str] = &["--conns", "1000", "--senders", "1", "--rate", "1000"];

/// The broadcast of the README's Performance table, `wschat.v1` against
/// classic members: deliveries per second, delivery p99, and the server's
/// CPU per delivery while sending and draining. Not over the whole run:
/// 1000 JSON members joining (and leaving) tell each other, a million
/// presence objects that would weigh more than the measured stretch.
const PROTOCOL: Case = Case {
    name: "broadcast_1000_protocol",
    scenario: "broadcast",
    path: "/",
    args: BROADCAST_1000,
    against: Against::ClassicProtocol,
    tls_args: &[],
    metric: "deliveries_per_sec",
    count: "deliveries",
    latency: "delivery_latency_p99_us",
    server_cpu: Some("server_cpu_per_delivery_us"),
    compare: Compare::ServerCpu,
};

/// An echo case: messages per second, round-trip p99.
const fn echo(name: &'static str, args: &'static [&'static str], against: Against) -> Case {
    Case {
        name,
        scenario: "echo",
        path: "/echo",
        args,
        against,
        tls_args: &[],
        metric: "messages_per_sec",
        count: "messages",
        latency: "round_trip_p99_us",
        server_cpu: None,
        compare: Compare::Figure,
    }
}

/// A connect case: handshakes per second, handshake p99.
const fn connect(name: &'static str, against: Against, tls_args: &'static [&'static str]) -> Case {
    Case {
        name,
        scenario: "connect",
        path: "/echo",
        args: CONNECT_C50,
        against,
        tls_args,
        metric: "handshakes_per_sec",
        count: "handshakes",
        latency: "handshake_p99_us",
        server_cpu: None,
        compare: Compare::Figure,
    }
}

/// The comparisons, in the order they run (connect cycles last: they
/// leave the most kernel state behind). The TLS cases' figures are full
/// handshakes (every connect cycle makes one) or, with `--resume`,
/// resumed ones after the first 50; `protocol` runs the JSON case alone.
pub const CASES: &[Case] = &[
    echo(
        "echo_16B_text",
        ECHO_16B,
        Against::Baseline { hangs_up: false },
    ),
    echo(
        "echo_16KiB_binary",
        ECHO_16KIB,
        Against::Baseline { hangs_up: false },
    ),
    echo("echo_16B_text_tls", ECHO_16B, Against::PlainWs),
    echo("echo_16KiB_binary_tls", ECHO_16KIB, Against::PlainWs),
    PROTOCOL,
    connect("connect_c50", Against::Baseline { hangs_up: true }, &[]),
    connect("connect_c50_tls_full", Against::PlainWs, &[]),
    connect("connect_c50_tls_resumed", Against::PlainWs, &["--resume"]),
];
