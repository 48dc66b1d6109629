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

#[test]
fn tls_flags_refused_where_they_change_nothing() {
    for (args, words) in REFUSED {
        let err = settings_of(args).err().unwrap_or_default();
        assert!(err.contains(words), "{args:?}: {err}");
    }
}
