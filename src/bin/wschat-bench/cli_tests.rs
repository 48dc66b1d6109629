//! The command line: which flags go together, and what is refused before
//! any connection opens.

use super::*;

/// The settings of `wschat-bench ARGS` (a `connect` or `echo` line).
fn settings_of(args: &[&str]) -> Result<Settings, String> {
    let cli =
        Cli::try_parse_from(["wschat-bench"].iter().chain(args)).map_err(|e| e.to_string())?;
    match &cli.scenario {
        Scenario::Connect(f) => settings(&cli.common, &f.url, f.tcp, 1, f.resume),
        Scenario::Echo(f) => settings(&cli.common, &f.url, f.tcp, 1, false),
        _ => unreachable!("only connect and echo here"),
    }
}

#[test]
fn tls_flags_with_wss() {
    let s = settings_of(&["connect", "--url", "wss://127.0.0.1:1/", "--insecure"]).unwrap();
    assert!(s.tls.is_some());
    assert!(s.report("connect").json().contains("\"mode\":\"wss\""));
    let s = settings_of(&[
        "echo",
        "--url",
        "wss://127.0.0.1:1/",
        "--insecure",
        "--quiet",
    ]);
    assert!(s.unwrap().tls.is_some());
    let s = settings_of(&[
        "connect",
        "--insecure",
        "--url",
        "wss://127.0.0.1:1/",
        "--resume",
    ]);
    assert!(s.is_ok());
    assert!(settings_of(&["echo", "--url", "ws://127.0.0.1:1/"])
        .unwrap()
        .tls
        .is_none());
}

/// Command lines refused, with words of the refusal.
const REFUSED: &[(&[&str], &str)] = &[
    (
        &["connect", "--url", "ws://127.0.0.1:1/", "--insecure"],
        "--insecure needs a wss:// URL",
    ),
    (
        &["connect", "--url", "ws://127.0.0.1:1/", "--resume"],
        "--resume needs a wss:// URL",
    ),
    (
        &["echo", "--url", "tcp://127.0.0.1:1", "--ca", "x.pem"],
        "--ca needs a wss:// URL",
    ),
    (
        &["echo", "--url", "ws://127.0.0.1:1/", "--cipher", "aes128"],
        "--cipher needs a wss:// URL",
    ),
    (
        &["echo", "--url", "wss://127.0.0.1:1/", "--cipher", "rot13"],
        "invalid value 'rot13'",
    ),
    (
        &["echo", "--url", "wss://127.0.0.1:1/", "--tcp", "--insecure"],
        "--tcp cannot be used",
    ),
    (
        &[
            "echo",
            "--url",
            "wss://127.0.0.1:1/",
            "--ca",
            "x.pem",
            "--insecure",
        ],
        "cannot be used with",
    ),
    (
        &[
            "echo",
            "--url",
            "wss://127.0.0.1:1/",
            "--resume",
            "--insecure",
        ],
        "unexpected argument",
    ),
    (
        &[
            "echo",
            "--url",
            "wss://127.0.0.1:1/",
            "--ca",
            "/nonexistent.pem",
        ],
        "--ca /nonexistent.pem",
    ),
];

/// Broadcast command lines refused before any connection opens, with
/// words of the refusal.
const BROADCAST_REFUSED: &[(&[&str], &str)] = &[
    (&["--recover"], "--recover needs --protocol wschat.v1"),
    (
        &["--protocol", "wschat.v1", "--drop-every", "1"],
        "--drop-every needs --recover",
    ),
    (
        &[
            "--protocol",
            "wschat.v1",
            "--recover",
            "--drop-every",
            "1",
            "--drop-fraction",
            "1.5",
        ],
        "--drop-fraction must be in (0, 1]",
    ),
    (&["--drop-fraction", "0.5"], "--drop-every"),
    (&["--protocol", "json"], "invalid value 'json'"),
    (
        &["--transport", "sse", "--protocol", "wschat.v1"],
        "cannot be used with",
    ),
    (
        &["--transport", "long-poll", "--recover"],
        "cannot be used with",
    ),
    (
        &["--transport", "poll", "--poll-interval", "0"],
        "--poll-interval must be positive",
    ),
    (
        &["--transport", "sse", "--senders", "0"],
        "--transport needs at least one sender",
    ),
    (&["--transport", "pigeon"], "invalid value 'pigeon'"),
    (
        &["--transport", "sse", "--poll-interval", "250"],
        "--poll-interval needs --transport poll",
    ),
    (
        &["--transport", "poll", "--long-poll-timeout", "5"],
        "--long-poll-timeout needs --transport long-poll",
    ),
    (&["--poll-interval", "250"], "need --transport"),
];

#[test]
fn broadcast_flags_that_cannot_work_together_are_refused() {
    for (flags, words) in BROADCAST_REFUSED {
        let args = ["wschat-bench", "broadcast", "--url", "ws://127.0.0.1:1/"];
        let refusal = match Cli::try_parse_from(args.iter().chain(flags.iter())) {
            Err(e) => e.to_string(),
            Ok(Cli {
                scenario: Scenario::Broadcast(f),
                common,
            }) => {
                let settings = settings(&common, &f.url, false, f.conns, false).unwrap();
                let outcome = f
                    .options()
                    .and_then(|o| broadcast::run(&settings, &o).map_err(|e| e.to_string()));
                outcome.err().unwrap_or_default()
            }
            Ok(other) => panic!("{other:?}"),
        };
        assert!(refusal.contains(words), "{flags:?}: {refusal}");
    }
}

#[test]
fn tls_flags_refused_where_they_change_nothing() {
    for (args, words) in REFUSED {
        let err = settings_of(args).err().unwrap_or_default();
        assert!(err.contains(words), "{args:?}: {err}");
    }
}

#[test]
fn help_describes_the_load_generator_not_the_daemon() {
    use clap::CommandFactory as _;
    let help = Cli::command().render_help().to_string();
    assert!(
        help.starts_with("Load generator for WebSocket servers"),
        "{help}"
    );
    assert!(!help.contains(env!("CARGO_PKG_DESCRIPTION")), "{help}");
    assert!(help.contains("Usage: wschat-bench "), "{help}");
    let version = Cli::command().render_version();
    assert!(version.starts_with("wschat-bench "), "{version}");
}
