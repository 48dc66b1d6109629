//! `chat.html` in a real browser, against the real `wschat` binary.
//!
//! Two people chat in the lobby from two headless Chromium pages (each in its
//! own browser context, like two machines), a third page sits in another room,
//! and a plain WebSocket client listens in to learn which connection id the
//! server really gave each page. Then the server is killed and restarted on
//! the same port, and the pages must reconnect on their own.
//!
//! Chromium is driven over the DevTools protocol by the small synchronous
//! client below, built on `tungstenite` (already a dev-dependency), so the
//! test needs no async runtime and never downloads a browser. It writes
//! a screenshot of the chat as it goes (copied by hand to
//! `docs/screenshot.png` for the README).
//!
//! Over TLS (`--tls-listen`), two pages load the chat over `https://` and
//! chat with a page on the plain `http://` port in one room. The browser
//! trusts the test's server key alone, by the SHA-256 of its public key
//! (`--ignore-certificate-errors-spki-list`).
//!
//! The page speaks `wschat.v1`: raw `wschat.v1` peers ([`V1Peer`]) fill a
//! room's history before a page joins, come and go, and tell the test the
//! offsets, times, epochs and ids the page must show or ask for. A
//! [`Relay`] between browser and daemon cuts the page's connection and
//! refuses new ones, like a network outage, while the daemon keeps the
//! room's history, so the page's recovery with `since` is seen end to end.
//! A [`ScriptedServer`] serves the page and then says what a real daemon
//! never does on one instance (a message again, a new numbering under an
//! open connection), frame by frame.
//!
//! In cluster mode (two `wschat --redis` instances on a `redis-server` of
//! the test's own) the [`Relay`] is the load balancer in front of them:
//! the page's instance is stopped while a raw client on the other keeps
//! the room going, and the page, at the same URL, recovers on the other
//! one; and a Redis restarted empty renumbers the room under an open page,
//! which says that messages may be missing.
//!
//! Without Chromium the tests print a skip line and pass, unless
//! `WSCHAT_REQUIRE_BROWSER=1` (as in CI), where that is a failure; the
//! same goes for `redis-server` and `WSCHAT_REQUIRE_REDIS=1`.

mod support;

use base64::Engine as _;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{redis_or_skip, Metrics, Redis};
use tungstenite::protocol::Role;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The bound on every wait: a broken page or server fails the test instead of hanging CI.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
const CHROMIUM_PATHS: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const SKIP: &str = "skipped: no Chromium found (install: apt-get install chromium)";

/// Where the test saves its screenshot: under the build directory, so a
/// test run leaves the work tree unchanged.
const SCREENSHOT: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/chat-screenshot.png");

/// The page as the daemon embeds it, for the [`ScriptedServer`] to serve.
const CHAT_HTML: &str = include_str!("../chat.html");

/// The Chromium to drive, or `None` (after a skip line) when there is none
/// and none is required. While `Some`, the caller holds the one browser
/// slot: the tests take turns, as several Chromiums at once on a small
/// shared machine make the bounded waits flaky.
fn chromium_or_skip() -> Option<(&'static Path, MutexGuard<'static, ()>)> {
    static ONE_BROWSER_AT_A_TIME: Mutex<()> = Mutex::new(());
    let chromium = CHROMIUM_PATHS.iter().map(Path::new).find(|p| p.exists());
    if chromium.is_none() {
        assert!(
            std::env::var("WSCHAT_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "WSCHAT_REQUIRE_BROWSER=1 but no Chromium at {CHROMIUM_PATHS:?}"
        );
        println!("{SKIP}");
    }
    // A test that failed while holding the slot leaves nothing behind to
    // protect: its browser and daemons are gone with its drops.
    let turn = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    chromium.map(|path| (path, turn))
}

#[test]
fn chat_page_works_in_a_real_browser() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };

    let port = free_port()?;
    let server = ServerProcess::start(port, &[])?;
    let mut browser = Browser::launch(chromium, &[])?;
    let page = format!("http://127.0.0.1:{port}/");

    let mut listener = Listener::join(port)?;
    let alice = browser.open(&page, 820, 560)?;
    browser.wait_for(&alice, "Alice's page to connect", OPEN)?;
    let bob = browser.open(&page, 820, 560)?;
    browser.wait_for(&bob, "Bob's page to connect", OPEN)?;
    let carol = browser.open(&format!("{page}?room=side"), 820, 560)?;
    browser.wait_for(&carol, "Carol's page to connect", OPEN)?;
    for (tab, room) in [(&alice, "#lobby"), (&bob, "#lobby"), (&carol, "#side")] {
        assert_eq!(
            browser.eval(tab, "document.getElementById('room').textContent")?,
            room
        );
    }

    // Alice says hello; both lobby pages show it under the id the server gave her.
    browser.send_message(&alice, &["hello from A"])?;
    let alice_id = listener.sender_of(b"hello from A")?;
    for tab in [&alice, &bob] {
        let row = browser.wait_for_message(tab, "hello from A")?;
        assert_eq!(row.from, format!("#{alice_id}"));
        assert_eq!(
            row.mine,
            tab == &alice,
            "only Alice's page marks it as hers"
        );
    }
    let focus = "[document.activeElement.id, document.getElementById('input').value]";
    assert_eq!(
        browser.eval(&alice, focus)?,
        json!(["input", ""]),
        "input cleared and still focused"
    );

    // Bob answers over two lines: Shift+Enter is a newline, Enter sends.
    browser.send_message(&bob, &["hi A", "second line"])?;
    let bob_id = listener.sender_of(b"hi A\nsecond line")?;
    assert_ne!(alice_id, bob_id);
    for tab in [&alice, &bob] {
        let row = browser.wait_for_message(tab, "hi A\nsecond line")?;
        assert_eq!(row.from, format!("#{bob_id}"));
    }

    // Markup from a peer is text, never HTML.
    let xss = [
        "<img src=x onerror=alert(1)>",
        "<img src=x onerror=window.__xss=1>",
    ];
    for payload in xss {
        browser.send_message(&alice, &[payload])?;
        listener.sender_of(payload.as_bytes())?;
    }

    // Binary frames are summarised, with the sender still shown.
    listener.send_binary(&[0, 1, 2])?;
    let listener_id = listener.sender_of(&[0, 1, 2])?;
    for tab in [&alice, &bob] {
        for payload in xss {
            assert_eq!(
                browser.wait_for_message(tab, payload)?.from,
                format!("#{alice_id}")
            );
        }
        let row = browser.wait_for_message(tab, "[binary, 3 bytes]")?;
        assert_eq!(row.from, format!("#{listener_id}"));
        let injected = "[document.querySelectorAll('#messages img, #messages script').length, typeof window.__xss]";
        assert_eq!(browser.eval(tab, injected)?, json!([0, "undefined"]));
        assert_eq!(
            browser.eval(tab, COUNT)?,
            json!(5),
            "five messages received"
        );
    }
    assert_eq!(
        browser.eval(&carol, ROWS)?,
        json!([]),
        "the side room hears nothing"
    );
    assert!(
        browser.dialogs.is_empty(),
        "a page opened a dialog: {:?}",
        browser.dialogs
    );

    // Kill the server: the pages notice and wait to reconnect, sending disabled.
    drop(listener);
    drop(server);
    for tab in [&alice, &bob] {
        browser.wait_for(tab, "the page to show it is reconnecting", RECONNECTING)?;
        assert_eq!(
            browser.eval(tab, "document.getElementById('send').disabled")?,
            true
        );
    }

    // Same port, new process: the pages come back by themselves, asking
    // for what followed the fifth message; the new process has another
    // numbering and none of it, which the pages say.
    let server = ServerProcess::start(port, &[])?;
    let mut listener = Listener::join(port)?;
    for tab in [&alice, &bob] {
        browser.wait_for(tab, "the page to reconnect", OPEN)?;
        let gaps = format!("{GAPS}.length === 1 && {GAPS}[0].includes('history was reset')");
        browser.wait_for(tab, "the page to say history may be missing", &gaps)?;
        let asked = browser.sockets_of(tab).last().cloned().unwrap_or_default();
        let since = asked
            .strip_prefix(&format!("ws://127.0.0.1:{port}/?since="))
            .ok_or_else(|| format!("reconnected without a position: {asked}"))?;
        assert!(since.ends_with(":5"), "{asked}");
    }
    browser.send_message(&bob, &["back again?"])?;
    let bob_id = listener.sender_of(b"back again?")?;
    browser.send_message(&alice, &["yes, back on my own — ça marche"])?;
    let alice_id = listener.sender_of("yes, back on my own — ça marche".as_bytes())?;
    for tab in [&alice, &bob] {
        assert_eq!(
            browser.wait_for_message(tab, "back again?")?.from,
            format!("#{bob_id}")
        );
        let row = browser.wait_for_message(tab, "yes, back on my own — ça marche")?;
        assert_eq!(row.from, format!("#{alice_id}"));
        assert_eq!(browser.eval(tab, COUNT)?, json!(7));
    }
    // Tall enough for the whole conversation in the README's picture.
    browser.resize(&alice, 820, 680)?;
    browser.screenshot(&alice, Path::new(SCREENSHOT))?;

    // A phone-sized screen: nothing overflows sideways and Send stays on screen.
    browser.resize(&bob, 375, 667)?;
    let fits = "[document.documentElement.scrollWidth, \
                Math.ceil(document.getElementById('send').getBoundingClientRect().right)]";
    let widths: Vec<u32> = serde_json::from_value(browser.eval(&bob, fits)?)?;
    assert!(
        widths.iter().all(|&w| w <= 375),
        "page overflows at 375px: {widths:?}"
    );

    // Changing the #fragment moves the page to another room.
    browser.eval(&carol, "location.hash = 'other'")?;
    let moved = "document.getElementById('room').textContent === '#other' && \
                 document.getElementById('state').textContent === 'open'";
    browser.wait_for(&carol, "Carol's page to join #other", moved)?;
    assert_eq!(
        browser.sockets_of(&carol).last(),
        Some(&format!("ws://127.0.0.1:{port}/room/other")),
        "a position in #side means nothing in #other"
    );
    assert_eq!(browser.eval(&carol, GAPS)?, json!([]));

    assert!(
        browser.dialogs.is_empty(),
        "a page opened a dialog: {:?}",
        browser.dialogs
    );
    drop(browser);
    drop(server);
    Ok(())
}

#[test]
fn chat_page_works_over_https_with_a_page_on_the_plain_port() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let ca = support::TestCa::new("browser-https");
    let (cert, key) = ca.issue("server", "wschat browser test");
    let (port, tls_port) = (free_port()?, free_port()?);
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let server = ServerProcess::start(
        port,
        &[
            "--tls-listen".as_ref(),
            tls_listen.as_ref(),
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    )?;
    poll("the TLS listener", || {
        Ok(TcpStream::connect(("127.0.0.1", tls_port)).ok())
    })?;
    let trust = format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_sha256(&cert)?
    );
    let mut browser = Browser::launch(chromium, &[trust])?;
    let secure = format!("https://localhost:{tls_port}/?room=tls");
    let plain = format!("http://127.0.0.1:{port}/?room=tls");

    let mut listener = Listener::join_room(port, "tls")?;
    let alice = browser.open(&secure, 820, 560)?;
    browser.wait_for(&alice, "Alice's https page to connect", OPEN)?;
    let bob = browser.open(&secure, 820, 560)?;
    browser.wait_for(&bob, "Bob's https page to connect", OPEN)?;
    let carol = browser.open(&plain, 820, 560)?;
    browser.wait_for(&carol, "Carol's http page to connect", OPEN)?;
    // Each page's WebSocket follows the scheme it was loaded with.
    assert_eq!(
        browser.sockets_of(&alice),
        [format!("wss://localhost:{tls_port}/room/tls")]
    );
    assert_eq!(
        browser.sockets_of(&bob),
        [format!("wss://localhost:{tls_port}/room/tls")]
    );
    assert_eq!(
        browser.sockets_of(&carol),
        [format!("ws://127.0.0.1:{port}/room/tls")]
    );
    for tab in [&alice, &bob, &carol] {
        assert_eq!(
            browser.eval(tab, "document.getElementById('room').textContent")?,
            "#tls"
        );
    }
    assert_eq!(browser.eval(&alice, "location.protocol")?, "https:");

    // Over https to everyone, then from the plain port back.
    browser.send_message(&alice, &["hello over https"])?;
    let alice_id = listener.sender_of(b"hello over https")?;
    browser.send_message(&carol, &["hello from http"])?;
    let carol_id = listener.sender_of(b"hello from http")?;
    browser.send_message(&bob, &["both", "ways — ça marche"])?;
    let bob_id = listener.sender_of("both\nways — ça marche".as_bytes())?;
    for tab in [&alice, &bob, &carol] {
        let row = browser.wait_for_message(tab, "hello over https")?;
        assert_eq!(row.from, format!("#{alice_id}"));
        assert_eq!(row.mine, tab == &alice);
        let row = browser.wait_for_message(tab, "hello from http")?;
        assert_eq!(row.from, format!("#{carol_id}"));
        let row = browser.wait_for_message(tab, "both\nways — ça marche")?;
        assert_eq!(row.from, format!("#{bob_id}"));
        assert_eq!(browser.eval(tab, COUNT)?, json!(3));
    }
    assert!(
        browser.dialogs.is_empty(),
        "a page opened a dialog: {:?}",
        browser.dialogs
    );
    drop(browser);
    drop(server);
    Ok(())
}

#[test]
fn a_joining_page_shows_the_room_history_and_keeps_the_members_current() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let port = free_port()?;
    let _server = ServerProcess::start(port, &[])?;
    let mut browser = Browser::launch(chromium, &[])?;

    // Said before the page came: it must show all of it, as the server
    // numbered and timed it.
    let mut early = V1Peer::join(port, "/room/past")?;
    let said = [
        early.say(Message::text("said before you came"))?,
        early.say(Message::text("<b>not bold</b>"))?,
        early.say(Message::binary(vec![1, 2, 3, 4]))?,
    ];
    let page = browser.open(&format!("http://127.0.0.1:{port}/?room=past"), 820, 560)?;
    browser.wait_for(&page, "the page to connect", OPEN)?;
    let all_shown = format!("{TEXTS}.length === {}", said.len());
    browser.wait_for(&page, "the history on the page", &all_shown)?;
    let badge = format!("#{}", early.id());
    assert_eq!(
        browser.eval(&page, ROWS)?,
        json!([
            [badge, "said before you came", false],
            [badge, "<b>not bold</b>", false],
            [badge, "[binary, 4 bytes]", false],
        ])
    );
    assert_eq!(
        browser.eval(&page, "document.querySelectorAll('#messages b').length")?,
        json!(0)
    );
    let times: Vec<Value> = said.iter().map(|m| m["time"].clone()).collect();
    assert_eq!(browser.eval(&page, TIMES)?, Value::Array(times));
    assert_eq!(
        browser.eval(&page, MEMBERS)?,
        "2",
        "the early peer and the page"
    );
    assert_eq!(browser.eval(&page, COUNT)?, json!(3));

    // Someone comes and goes: a notice each time, and the count follows.
    let guest = V1Peer::join(port, "/room/past")?;
    let guest_id = guest.id();
    let joined = format!("{MEMBERS} === '3' && {PRESENCE}.join('|') === '#{guest_id} joined'");
    browser.wait_for(&page, "the guest's arrival on the page", &joined)?;
    drop(guest);
    let left = format!(
        "{MEMBERS} === '2' && {PRESENCE}.join('|') === '#{guest_id} joined|#{guest_id} left'"
    );
    browser.wait_for(&page, "the guest's departure on the page", &left)?;
    assert_eq!(
        browser.eval(&page, GAPS)?,
        json!([]),
        "a first join misses nothing"
    );
    Ok(())
}

#[test]
fn a_page_whose_connection_drops_recovers_every_message_exactly_once() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let port = free_port()?;
    let _server = ServerProcess::start(port, &[])?;
    let relay = Relay::to(port)?;
    let mut browser = Browser::launch(chromium, &[])?;
    let mut peer = V1Peer::join(port, "/room/recover")?;
    let page = browser.open(
        &format!("http://127.0.0.1:{}/?room=recover", relay.port()),
        820,
        560,
    )?;
    browser.wait_for(&page, "the page to connect", OPEN)?;

    let texts: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
    for text in &texts[..3] {
        peer.say(Message::text(text.as_str()))?;
    }
    browser.wait_for_message(&page, "m3")?;

    // The network goes away; what is said meanwhile only the daemon has.
    relay.down();
    browser.wait_for(&page, "the page to notice the outage", RECONNECTING)?;
    for text in &texts[3..8] {
        peer.say(Message::text(text.as_str()))?;
    }
    relay.up();
    browser.wait_for(&page, "the page to reconnect", OPEN)?;
    for text in &texts[8..] {
        peer.say(Message::text(text.as_str()))?;
    }
    browser.wait_for_message(&page, "m10")?;

    assert_eq!(
        browser.eval(&page, TEXTS)?,
        json!(texts),
        "each message once, in order"
    );
    assert_eq!(
        browser.sockets_of(&page).last(),
        Some(&format!(
            "ws://127.0.0.1:{}/room/recover?since={}:3",
            relay.port(),
            peer.epoch()
        )),
        "it asked for what followed the last message it showed"
    );
    assert_eq!(browser.eval(&page, GAPS)?, json!([]), "nothing was missing");
    assert_eq!(browser.eval(&page, COUNT)?, json!(10));
    Ok(())
}

#[test]
fn an_incomplete_recovery_is_shown_with_what_history_still_had() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let port = free_port()?;
    let _server = ServerProcess::start(port, &["--history-size".as_ref(), "3".as_ref()])?;
    let relay = Relay::to(port)?;
    let mut browser = Browser::launch(chromium, &[])?;
    let mut peer = V1Peer::join(port, "/room/short")?;
    let page = browser.open(
        &format!("http://127.0.0.1:{}/?room=short", relay.port()),
        820,
        560,
    )?;
    browser.wait_for(&page, "the page to connect", OPEN)?;
    peer.say(Message::text("before"))?;
    browser.wait_for_message(&page, "before")?;

    relay.down();
    browser.wait_for(&page, "the page to notice the outage", RECONNECTING)?;
    // Five messages, of which a history of three keeps the last three.
    for text in ["lost 1", "lost 2", "kept 1", "kept 2", "kept 3"] {
        peer.say(Message::text(text))?;
    }
    relay.up();
    browser.wait_for_message(&page, "kept 3")?;

    assert_eq!(
        browser.eval(&page, TEXTS)?,
        json!(["before", "kept 1", "kept 2", "kept 3"])
    );
    assert_eq!(
        browser.sockets_of(&page).last(),
        Some(&format!(
            "ws://127.0.0.1:{}/room/short?since={}:1",
            relay.port(),
            peer.epoch()
        ))
    );
    // Visible, and where the hole is: between what was shown and what came back.
    let notice = "(() => { \
        const rows = [...document.querySelectorAll('#messages .msg, #messages .sys.gap')]; \
        const gap = rows.findIndex(r => r.classList.contains('gap')); \
        const box = rows[gap].getBoundingClientRect(); \
        return [rows[gap].textContent, \
                rows[gap - 1].textContent.includes('before'), \
                rows[gap + 1].textContent.includes('kept 1'), \
                box.width > 0 && box.height > 0 && getComputedStyle(rows[gap]).visibility === 'visible']; \
    })()";
    assert_eq!(
        browser.eval(&page, notice)?,
        json!([
            "The server no longer had every message sent while you were away: some are missing.",
            true,
            true,
            true
        ])
    );
    assert_eq!(
        browser.eval(
            &page,
            "document.querySelectorAll('#messages .sys.gap').length"
        )?,
        json!(1)
    );
    Ok(())
}

#[test]
fn the_page_skips_messages_it_shows_already_and_follows_a_new_numbering() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let scripted = ScriptedServer::start()?;
    let mut browser = Browser::launch(chromium, &[])?;
    let page = browser.open(
        &format!("http://127.0.0.1:{}/?room=scripted", scripted.port()),
        820,
        560,
    )?;
    let (target, mut first) = scripted.next_socket()?;
    assert_eq!(target, "/room/scripted", "a first visit has no position");
    let say = |socket: &mut WebSocket<TcpStream>, value: Value| -> TestResult {
        Ok(socket.send(Message::text(value.to_string()))?)
    };
    let welcome = |id: u64, epoch: &str, offset: u64, recovered: bool| {
        json!({ "type": "welcome", "id": id, "room": "scripted", "epoch": epoch,
                "offset": offset, "members": 2, "recovered": recovered })
    };
    let message = |offset: u64, from: u64, text: &str| {
        json!({ "type": "message", "offset": offset, "from": from,
                "time": 1_764_489_600_000u64 + offset, "text": text })
    };

    // A first visit shows nothing yet (an empty history) and is cut: it
    // is owed what follows the head it was welcomed at, not all before.
    say(&mut first, welcome(6, "e1", 40, false))?;
    browser.wait_for(&page, "the first welcome", &format!("{MEMBERS} === '2'"))?;
    drop(first);
    let (target, mut second) = scripted.next_socket()?;
    assert_eq!(target, "/room/scripted?since=e1:40");

    // Offsets 42 and 43 come twice: the page shows them once.
    say(&mut second, welcome(7, "e1", 40, true))?;
    for (offset, from, text) in [(41, 7, "a1"), (42, 8, "a2"), (43, 7, "a3")] {
        say(&mut second, message(offset, from, text))?;
    }
    for (offset, from, text) in [(42, 8, "a2"), (43, 7, "a3"), (44, 8, "a4")] {
        say(&mut second, message(offset, from, text))?;
    }
    browser.wait_for_message(&page, "a4")?;
    assert_eq!(browser.eval(&page, TEXTS)?, json!(["a1", "a2", "a3", "a4"]));
    assert_eq!(browser.eval(&page, GAPS)?, json!([]));

    // A new numbering on the same connection, and a cut before any of it
    // arrived: said, and all of the new numbering is asked for.
    say(&mut second, welcome(7, "e2", 2, false))?;
    let reset = "The room's history was reset: some messages may be missing.";
    browser.wait_for(&page, "the reset notice", &format!("{GAPS}.length === 1"))?;
    assert_eq!(browser.eval(&page, GAPS)?, json!([reset]));
    drop(second);
    let (target, mut third) = scripted.next_socket()?;
    assert_eq!(target, "/room/scripted?since=e2:0");

    // Offsets below the old ones are new under e2; the page's message from
    // its connection before is still its own, an id from e1 no longer is.
    say(&mut third, welcome(9, "e2", 2, true))?;
    for (offset, from, text) in [
        (1, 8, "b1"),
        (2, 7, "b2"),
        (2, 7, "b2"),
        (3, 9, "b3"),
        (4, 6, "b4"),
    ] {
        say(&mut third, message(offset, from, text))?;
    }
    browser.wait_for_message(&page, "b4")?;
    assert_eq!(
        browser.eval(&page, ROWS)?,
        json!([
            ["#7", "a1", true],
            ["#8", "a2", false],
            ["#7", "a3", true],
            ["#8", "a4", false],
            ["#8", "b1", false],
            ["#7", "b2", true],
            ["#9", "b3", true],
            ["#6", "b4", false],
        ])
    );
    assert_eq!(
        browser.eval(&page, "document.getElementById('me-id').textContent")?,
        "#9"
    );
    assert_eq!(
        browser.eval(&page, GAPS)?,
        json!([reset]),
        "a recovered reconnect adds no notice"
    );
    Ok(())
}

#[test]
fn a_page_recovers_on_the_other_instance_while_its_own_restarts() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let Some(redis_server) =
        redis_or_skip("a_page_recovers_on_the_other_instance_while_its_own_restarts")
    else {
        return Ok(());
    };
    let redis = Redis::start(&redis_server);
    let mut a = redis.instance(WAIT);
    let b = redis.instance(WAIT);
    // The page's only way in, A behind it for now; the client on B keeps
    // the room alive whatever A does.
    let relay = Relay::to(a.addr().port())?;
    let mut browser = Browser::launch(chromium, &[])?;
    let mut peer = V1Peer::join(b.addr().port(), "/room/roll")?;
    let page = browser.open(
        &format!("http://127.0.0.1:{}/?room=roll", relay.port()),
        820,
        560,
    )?;
    browser.wait_for(&page, "the page to connect to A", OPEN)?;

    // Said on B, shown by A: only Redis carries them across.
    let texts: Vec<String> = (1..=12).map(|i| format!("m{i}")).collect();
    for text in &texts[..3] {
        peer.say(Message::text(text.as_str()))?;
    }
    browser.wait_for_message(&page, "m3")?;

    // A is stopped as in a rolling restart: it says 1001 to the page.
    a.signal("-TERM");
    let going_away = format!("{NOTES}.includes('Disconnected (code 1001)')");
    browser.wait_for(&page, "the page to hear A go away", &going_away)?;
    if a.wait_exit(WAIT).is_none() {
        return Err(format!("A still runs {WAIT:?} after SIGTERM:\n{}", a.log_tail()).into());
    }
    // The relay still leads to A, where nothing listens: the page keeps
    // failing to reconnect while B's client goes on.
    for text in &texts[3..6] {
        peer.say(Message::text(text.as_str()))?;
    }
    assert_eq!(
        browser.eval(&page, OPEN)?,
        false,
        "m4 to m6 were said while the page was away"
    );

    // The balancer moves to B; the page, at the same URL, lands there.
    relay.switch_to(b.addr().port());
    browser.wait_for(&page, "the page to reconnect, now to B", OPEN)?;
    // Joins are told only on the instance joined: the page is on B.
    let joined = peer.next("join")?;
    assert_eq!(
        browser.eval(&page, "document.getElementById('me-id').textContent")?,
        format!("#{}", joined["id"]),
        "B's client saw the page's new connection join"
    );
    browser.wait_for_message(&page, "m6")?;
    assert_eq!(
        browser.sockets_of(&page).last(),
        Some(&format!(
            "ws://127.0.0.1:{}/room/roll?since={}:3",
            relay.port(),
            peer.epoch()
        )),
        "it asked B for what followed the last message A gave it"
    );
    assert_eq!(browser.eval(&page, TEXTS)?, json!(texts[..6]));
    for text in &texts[6..9] {
        peer.say(Message::text(text.as_str()))?;
    }
    browser.wait_for_message(&page, "m9")?;

    // A comes back (a new process) into the cluster; the page stays
    // where it is and B's client talks on.
    let _a_again = redis.instance(WAIT);
    for text in &texts[9..] {
        peer.say(Message::text(text.as_str()))?;
    }
    browser.wait_for_message(&page, "m12")?;

    assert_eq!(
        browser.eval(&page, TEXTS)?,
        json!(texts),
        "each message once, in order"
    );
    assert_eq!(browser.eval(&page, COUNT)?, json!(12));
    assert_eq!(
        browser.eval(&page, GAPS)?,
        json!([]),
        "B had every message the page missed"
    );
    assert_eq!(
        browser.eval(&page, MEMBERS)?,
        "2",
        "the page and B's client, both on B"
    );
    assert!(
        browser.dialogs.is_empty(),
        "the page opened a dialog: {:?}",
        browser.dialogs
    );
    Ok(())
}

#[test]
fn a_page_is_told_when_redis_forgets_the_room_under_it() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let Some(redis_server) = redis_or_skip("a_page_is_told_when_redis_forgets_the_room_under_it")
    else {
        return Ok(());
    };
    let mut redis = Redis::start(&redis_server);
    let a = redis.instance(WAIT);
    let b = redis.instance(WAIT);
    // Only to cut the page off at the end.
    let relay = Relay::to(a.addr().port())?;
    let mut browser = Browser::launch(chromium, &[])?;
    let mut peer = V1Peer::join(b.addr().port(), "/room/forget")?;
    let old_epoch = peer.epoch().to_owned();
    let page = browser.open(
        &format!("http://127.0.0.1:{}/?room=forget", relay.port()),
        820,
        560,
    )?;
    browser.wait_for(&page, "the page to connect", OPEN)?;
    for text in ["before 1", "before 2"] {
        peer.say(Message::text(text))?;
    }
    browser.wait_for_message(&page, "before 2")?;
    let me = browser.eval(&page, "document.getElementById('me-id').textContent")?;

    // Redis restarts empty. Both instances must have noticed and be back
    // on it, or the next message could go out on a link already dead.
    let before = [&a, &b].map(|d| Metrics::fetch(d.addr()).value("wschat_redis_outages_total"));
    redis.restart();
    for (daemon, before) in [&a, &b].into_iter().zip(before) {
        poll("an instance to lose Redis and get it back", || {
            let Some(metrics) = Metrics::try_fetch(daemon.addr()) else {
                return Ok(None);
            };
            let back = metrics.value("wschat_redis_outages_total") > before
                && metrics.value("wschat_redis_up") == 1.0;
            Ok(back.then_some(()))
        })?;
    }

    // The instances learn that Redis forgot the room from the first
    // message it numbers, under a new epoch: each welcomes its members
    // again, recovered:false, before that message.
    peer.socket.send(Message::text("after"))?;
    let rewelcome = peer.next("welcome")?;
    assert_ne!(rewelcome["epoch"], old_epoch.as_str());
    assert_eq!(rewelcome["recovered"], false);
    peer.welcome = rewelcome;
    assert_eq!(peer.next("message")?["offset"], 1, "a numbering anew");
    browser.wait_for_message(&page, "after")?;

    // Said on the open connection, where the hole is.
    let reset = "The room's history was reset: some messages may be missing.";
    let log = "[...document.querySelectorAll('#messages .msg .text, #messages .sys.gap')] \
               .map(r => r.textContent)";
    assert_eq!(
        browser.eval(&page, log)?,
        json!(["before 1", "before 2", reset, "after"])
    );
    assert_eq!(
        browser.sockets_of(&page).len(),
        1,
        "no reconnect: the notice came with the fresh welcome"
    );
    assert_eq!(
        browser.eval(&page, "document.getElementById('me-id').textContent")?,
        me
    );
    assert_eq!(browser.eval(&page, COUNT)?, json!(3));

    // The page now stands in the new numbering: cut off, it asks from
    // there and gets all it missed, without another notice.
    relay.down();
    browser.wait_for(&page, "the page to notice the outage", RECONNECTING)?;
    peer.say(Message::text("while away"))?;
    relay.up();
    browser.wait_for_message(&page, "while away")?;
    assert_eq!(
        browser.sockets_of(&page).last(),
        Some(&format!(
            "ws://127.0.0.1:{}/room/forget?since={}:1",
            relay.port(),
            peer.epoch()
        ))
    );
    assert_eq!(
        browser.eval(&page, TEXTS)?,
        json!(["before 1", "before 2", "after", "while away"])
    );
    assert_eq!(browser.eval(&page, GAPS)?, json!([reset]));
    Ok(())
}

/// The transports a page can be put on with `?transport=` besides
/// WebSocket, with the label it shows for each.
const FALLBACKS: [(&str, &str); 3] = [
    ("sse", "via SSE"),
    ("long-poll", "via long polling"),
    ("poll", "via polling"),
];

#[test]
fn pages_on_sse_long_polling_and_polling_chat_with_a_websocket_page() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let port = free_port()?;
    let _server = ServerProcess::start(port, &[])?;
    let mut browser = Browser::launch(chromium, &[])?;
    let mut peer = V1Peer::join(port, "/room/mixed")?;
    let history = ["said before anyone came", "<i>still text</i>"];
    for text in history {
        peer.say(Message::text(text))?;
    }

    // A page left to choose (WebSocket, where nothing is in the way), then
    // one forced onto each other transport; the peer hears each join, which
    // tells the id the page must show.
    let url = format!("http://127.0.0.1:{port}/?room=mixed");
    let mut pages = Vec::new();
    for (transport, label) in [("websocket", "via WebSocket")]
        .into_iter()
        .chain(FALLBACKS)
    {
        let address = match transport {
            "websocket" => url.clone(),
            forced => format!("{url}&transport={forced}"),
        };
        let tab = browser.open(&address, 820, 560)?;
        let me = browser.wait_for(&tab, &format!("the {transport} page to join"), ME)?;
        let joined = peer.next("join")?;
        assert_eq!(me, format!("#{}", joined["id"]), "{transport}");
        let shown = browser.eval(&tab, VIA_SHOWN)?;
        assert_eq!(shown, json!([label, true]), "{transport}");
        let id = joined["id"].as_u64().ok_or("a join without an id")?;
        pages.push((transport, tab, id));
    }
    for (transport, tab, _) in &pages {
        // The history may come after the welcome, in events of its own.
        let all = format!("{MEMBERS} === '5' && {TEXTS}.length === {}", history.len());
        browser.wait_for(tab, &format!("the {transport} page to count all"), &all)?;
        assert_eq!(browser.eval(tab, TEXTS)?, json!(history), "{transport}");
    }

    // Each page says two things, the second typed right after the first:
    // the room numbers them as typed, whatever carries them.
    for (transport, tab, _) in &pages {
        browser.send_message(tab, &[&format!("{transport} says 1")])?;
        browser.send_message(tab, &[&format!("{transport} says 2")])?;
    }
    let mut said = Vec::new();
    for _ in 0..2 * pages.len() {
        let message = peer.next("message")?;
        let text = message["text"].as_str().ok_or("not text")?.to_owned();
        said.push((message["from"].as_u64().ok_or("no sender")?, text));
    }
    for (transport, _, id) in &pages {
        let theirs: Vec<&str> = said
            .iter()
            .filter(|(from, _)| from == id)
            .map(|(_, text)| text.as_str())
            .collect();
        let typed = [format!("{transport} says 1"), format!("{transport} says 2")];
        assert_eq!(theirs, typed, "{transport}: its own id, in the order typed");
    }
    peer.say(Message::text("the peer answers everyone"))?;

    // Every page shows the same conversation in the room's order, each
    // message once, its own marked as such.
    let mut expected: Vec<(String, String)> = history
        .iter()
        .map(|text| (format!("#{}", peer.id()), text.to_string()))
        .collect();
    expected.extend(
        said.iter()
            .map(|(from, text)| (format!("#{from}"), text.clone())),
    );
    expected.push((
        format!("#{}", peer.id()),
        "the peer answers everyone".into(),
    ));
    for (transport, tab, id) in &pages {
        browser.wait_for_message(tab, "the peer answers everyone")?;
        let rows: Vec<Value> = expected
            .iter()
            .map(|(from, text)| json!([from, text, *from == format!("#{id}")]))
            .collect();
        assert_eq!(browser.eval(tab, ROWS)?, Value::Array(rows), "{transport}");
        assert_eq!(
            browser.eval(tab, COUNT)?,
            json!(expected.len()),
            "{transport}"
        );
        assert_eq!(browser.eval(tab, GAPS)?, json!([]), "{transport}");
    }

    // Someone comes and goes: every page says so and counts.
    let guest = V1Peer::join(port, "/room/mixed")?;
    let guest_id = guest.id();
    for (transport, tab, _) in &pages {
        let joined = format!("{MEMBERS} === '6' && {PRESENCE}.includes('#{guest_id} joined')");
        browser.wait_for(
            tab,
            &format!("the {transport} page to see the guest"),
            &joined,
        )?;
    }
    drop(guest);
    for (transport, tab, _) in &pages {
        let left = format!("{MEMBERS} === '5' && {PRESENCE}.includes('#{guest_id} left')");
        browser.wait_for(
            tab,
            &format!("the {transport} page to see the guest go"),
            &left,
        )?;
    }

    // Each page used its transport and nothing else.
    for (transport, tab, _) in &pages {
        let sockets = browser.sockets_of(tab);
        let streams = browser.requests_of(tab, "/room/mixed/events");
        let polls = browser.requests_of(tab, "/room/mixed/poll");
        let posts = browser.requests_of(tab, "/room/mixed/messages");
        match *transport {
            "websocket" => {
                assert_eq!(sockets, [format!("ws://127.0.0.1:{port}/room/mixed")]);
                assert!(streams.is_empty() && polls.is_empty() && posts.is_empty());
            }
            "sse" => {
                assert!(sockets.is_empty() && polls.is_empty());
                assert_eq!(streams.len(), 1, "one stream, never dropped");
                assert_eq!(streams[0]["type"], "EventSource");
            }
            _ => {
                assert!(sockets.is_empty() && streams.is_empty(), "{transport}");
                let timeout = if *transport == "long-poll" { 25 } else { 0 };
                let wanted = format!("timeout={timeout}");
                for (i, poll) in polls.iter().enumerate() {
                    let url = poll["url"].as_str().unwrap_or_default();
                    assert!(url.contains(&wanted), "{transport}: {url}");
                    // The first poll makes the member, the others keep to it.
                    let session = header(poll, "Wschat-Session");
                    assert_eq!(session.is_some(), i > 0, "{transport}: poll {i}: {poll}");
                    assert_eq!(url.contains("since="), i > 0, "{transport}: {url}");
                }
            }
        }
        if *transport != "websocket" {
            assert_eq!(posts.len(), 2, "{transport}: one post per message");
            for post in &posts {
                assert_eq!(post["method"], "POST");
                let kind = header(post, "Content-Type");
                assert_eq!(kind.as_deref(), Some("text/plain; charset=utf-8"));
                assert!(header(post, "Wschat-Session").is_some(), "{post}");
            }
        }
    }
    assert!(
        browser.dialogs.is_empty(),
        "a page opened a dialog: {:?}",
        browser.dialogs
    );
    Ok(())
}

#[test]
fn a_page_on_sse_or_polling_recovers_what_it_missed_and_says_when_some_is_gone() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let port = free_port()?;
    let _server = ServerProcess::start(port, &["--history-size".as_ref(), "3".as_ref()])?;
    let mut browser = Browser::launch(chromium, &[])?;
    for (transport, label) in FALLBACKS {
        let relay = Relay::to(port)?;
        let room = format!("away-{transport}");
        let mut peer = V1Peer::join(port, &format!("/room/{room}"))?;
        let url = format!(
            "http://127.0.0.1:{}/?room={room}&transport={transport}",
            relay.port()
        );
        let page = browser.open(&url, 820, 560)?;
        let me = browser.wait_for(&page, &format!("the {transport} page to join"), ME)?;
        for text in ["m1", "m2"] {
            peer.say(Message::text(text))?;
        }
        browser.wait_for_message(&page, "m2")?;

        // Three messages while the page is cut off: history (3) has them all.
        let polls_before = browser.requests_of(&page, &format!("/room/{room}/poll"));
        relay.down();
        browser.wait_for(&page, &format!("{transport}: the outage"), INTERRUPTED)?;
        for text in ["m3", "m4", "m5"] {
            peer.say(Message::text(text))?;
        }
        relay.up();
        browser.wait_for_message(&page, "m5")?;
        peer.say(Message::text("m6"))?;
        browser.wait_for_message(&page, "m6")?;
        let texts = ["m1", "m2", "m3", "m4", "m5", "m6"];
        assert_eq!(browser.eval(&page, TEXTS)?, json!(texts), "{transport}");
        assert_eq!(browser.eval(&page, GAPS)?, json!([]), "{transport}");
        assert_eq!(browser.eval(&page, VIA)?, label);

        // How it asked: EventSource came back by itself with the id of the
        // last event; the poller kept its session and its place.
        let position = format!("{}:2", peer.epoch());
        let path = format!("/room/{room}/events");
        if transport == "sse" {
            let streams = browser.requests_of(&page, &path);
            let resumed = streams.iter().any(|s| {
                header(s, "Last-Event-ID").as_deref() == Some(position.as_str())
                    && s["url"].as_str().is_some_and(|u| u.ends_with("/events"))
            });
            assert!(resumed, "no stream resumed from {position}: {streams:?}");
        } else {
            let polls = browser.requests_of(&page, &format!("/room/{room}/poll"));
            let (Some(before), Some(after)) = (polls_before.last(), polls.get(polls_before.len()))
            else {
                return Err(format!("{transport}: no polls around the outage: {polls:?}").into());
            };
            let since = format!("since={position}&");
            assert!(
                after["url"].as_str().is_some_and(|u| u.contains(&since)),
                "{transport}: the poll after the outage began: {after}"
            );
            let session = header(after, "Wschat-Session");
            assert!(session.is_some(), "{after}");
            assert_eq!(session, header(before, "Wschat-Session"), "{transport}");
            assert_eq!(
                browser.eval(&page, ME)?,
                me,
                "{transport}: the same member after the outage"
            );
        }

        // Five while it is away again: history keeps the last three only,
        // and the page says where the hole is.
        relay.down();
        browser.wait_for(
            &page,
            &format!("{transport}: the second outage"),
            INTERRUPTED,
        )?;
        for text in ["lost 1", "lost 2", "kept 1", "kept 2", "kept 3"] {
            peer.say(Message::text(text))?;
        }
        relay.up();
        browser.wait_for_message(&page, "kept 3")?;
        let log = "[...document.querySelectorAll('#messages .msg .text, #messages .sys.gap')] \
                   .map(r => r.textContent)";
        assert_eq!(
            browser.eval(&page, log)?,
            json!([
                "m1", "m2", "m3", "m4", "m5", "m6",
                "The server no longer had every message sent while you were away: some are missing.",
                "kept 1", "kept 2", "kept 3",
            ]),
            "{transport}"
        );
        assert_eq!(browser.eval(&page, COUNT)?, json!(9), "{transport}");
    }
    Ok(())
}

#[test]
fn a_page_whose_websocket_is_refused_falls_back_to_sse_and_then_to_long_polling() -> TestResult {
    let Some((chromium, _turn)) = chromium_or_skip() else {
        return Ok(());
    };
    let port = free_port()?;
    let _server = ServerProcess::start(port, &[])?;
    let mut browser = Browser::launch(chromium, &[])?;
    let mut peer = V1Peer::join(port, "/room/blocked")?;
    peer.say(Message::text("said before the pages came"))?;

    // A network that passes plain HTTP and refuses every WebSocket: the
    // page gives WebSocket three tries, then chats over SSE and posts.
    let no_websocket = Relay::refusing(port, is_upgrade)?;
    let page = browser.open(
        &format!("http://127.0.0.1:{}/?room=blocked", no_websocket.port()),
        820,
        560,
    )?;
    let on_sse = format!("{OPEN} && {VIA} === 'via SSE' && {ME}");
    browser.wait_for(&page, "the page to fall back to SSE", &on_sse)?;
    assert_eq!(browser.sockets_of(&page).len(), 3, "three WebSocket tries");
    let notes: Vec<String> = serde_json::from_value(browser.eval(&page, NOTES)?)?;
    assert!(
        notes.contains(&"WebSocket did not connect; trying SSE".to_owned()),
        "{notes:?}"
    );
    let joined = peer.next("join")?;
    assert_eq!(browser.eval(&page, ME)?, format!("#{}", joined["id"]));
    browser.wait_for_message(&page, "said before the pages came")?;
    chat_both_ways(&mut browser, &page, &mut peer, "over SSE")?;
    let streams = browser.requests_of(&page, "/room/blocked/events");
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0]["type"], "EventSource");

    // Where SSE is refused too, long polling.
    let plain_only = Relay::refusing(port, is_upgrade_or_events)?;
    let second = browser.open(
        &format!("http://127.0.0.1:{}/?room=blocked", plain_only.port()),
        820,
        560,
    )?;
    let on_polls = format!("{OPEN} && {VIA} === 'via long polling' && {ME}");
    browser.wait_for(&second, "the page to fall back to long polling", &on_polls)?;
    assert_eq!(browser.sockets_of(&second).len(), 3);
    assert_eq!(browser.requests_of(&second, "/events").len(), 3);
    let notes: Vec<String> = serde_json::from_value(browser.eval(&second, NOTES)?)?;
    for expected in [
        "WebSocket did not connect; trying SSE",
        "SSE did not connect; trying long polling",
    ] {
        assert!(notes.contains(&expected.to_owned()), "{notes:?}");
    }
    let joined = peer.next("join")?;
    assert_eq!(browser.eval(&second, ME)?, format!("#{}", joined["id"]));
    chat_both_ways(&mut browser, &second, &mut peer, "over long polling")?;
    let history = [
        "said before the pages came",
        "page over SSE",
        "peer over SSE",
    ];
    let texts = history
        .iter()
        .copied()
        .chain(["page over long polling", "peer over long polling"]);
    assert_eq!(
        browser.eval(&second, TEXTS)?,
        json!(texts.collect::<Vec<_>>())
    );

    // A page that asks for WebSocket keeps to it, refused or not.
    let kept = browser.open(
        &format!(
            "http://127.0.0.1:{}/?room=blocked&transport=websocket",
            no_websocket.port()
        ),
        820,
        560,
    )?;
    poll("four WebSocket tries of the page that asked for it", || {
        browser.eval(&kept, "1")?;
        Ok((browser.sockets_of(&kept).len() >= 4).then_some(()))
    })?;
    assert_eq!(browser.eval(&kept, VIA)?, "via WebSocket");
    assert_eq!(browser.eval(&kept, OPEN)?, false);
    assert!(browser.requests_of(&kept, "/events").is_empty());
    assert!(browser.requests_of(&kept, "/poll").is_empty());
    assert!(
        browser.dialogs.is_empty(),
        "a page opened a dialog: {:?}",
        browser.dialogs
    );
    Ok(())
}

/// `page` says `page {how}` and the peer hears it from the page's id; the
/// peer says `peer {how}` and the page shows it, after its own, once.
fn chat_both_ways(browser: &mut Browser, page: &Tab, peer: &mut V1Peer, how: &str) -> TestResult {
    let mine = format!("page {how}");
    browser.send_message(page, &[&mine])?;
    let heard = peer.next("message")?;
    assert_eq!(heard["text"], mine.as_str());
    assert_eq!(browser.eval(page, ME)?, format!("#{}", heard["from"]));
    let theirs = format!("peer {how}");
    peer.say(Message::text(theirs.as_str()))?;
    let row = browser.wait_for_message(page, &theirs)?;
    assert_eq!(row.from, format!("#{}", peer.id()));
    let texts: Vec<String> = serde_json::from_value(browser.eval(page, TEXTS)?)?;
    assert_eq!(texts.iter().filter(|t| **t == mine).count(), 1, "{texts:?}");
    assert_eq!(
        texts.iter().filter(|t| **t == theirs).count(),
        1,
        "{texts:?}"
    );
    assert!(browser.wait_for_message(page, &mine)?.mine);
    assert_eq!(browser.eval(page, GAPS)?, json!([]));
    Ok(())
}

/// The value of a header of a request from [`Browser::requests_of`],
/// whatever the case of its name: as it went out where DevTools told
/// that, else as the page made it.
fn header(request: &Value, name: &str) -> Option<String> {
    ["sentHeaders", "headers"].iter().find_map(|field| {
        let headers = request[*field].as_object()?;
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| value.as_str().map(str::to_owned))
    })
}

/// The base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo, as
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_sha256(cert_pem: &Path) -> TestResult<String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Ok(base64::engine::general_purpose::STANDARD.encode(digest))
}

/// True once the page's connection is open.
const OPEN: &str = "document.getElementById('state')?.textContent === 'open'";
/// The page's own count of received messages.
const COUNT: &str = "Number(document.getElementById('count').textContent)";
/// Every message row as `[sender badge, text, is mine]`.
const ROWS: &str = "[...document.querySelectorAll('#messages .msg')].map(m => \
    [m.querySelector('.from').textContent, m.querySelector('.text').textContent, \
     m.classList.contains('mine')])";
/// The text of every message row, in order.
const TEXTS: &str =
    "[...document.querySelectorAll('#messages .msg .text')].map(t => t.textContent)";
/// The server time (ms) each message row shows, from its `<time datetime>`.
const TIMES: &str =
    "[...document.querySelectorAll('#messages .msg time')].map(t => Date.parse(t.dateTime))";
/// The text of every notice that messages may be missing.
const GAPS: &str = "[...document.querySelectorAll('#messages .sys.gap')].map(g => g.textContent)";
/// The text of every notice (connection, presence, gaps), in order.
const NOTES: &str = "[...document.querySelectorAll('#messages .sys')].map(n => n.textContent)";
/// The text of every join and leave notice.
const PRESENCE: &str =
    "[...document.querySelectorAll('#messages .sys.presence')].map(n => n.textContent)";
/// The members count the page shows.
const MEMBERS: &str = "document.getElementById('members').textContent";
/// The member id the page shows as its own (`#7`), or `''` while it has none.
const ME: &str =
    "document.getElementById('me').hidden ? '' : document.getElementById('me-id').textContent";
/// The transport the page says it uses (`via SSE`).
const VIA: &str = "document.getElementById('transport').textContent";
/// `[the transport label, whether it is on screen]`.
const VIA_SHOWN: &str = "(() => { const via = document.getElementById('transport'); \
    const box = via.getBoundingClientRect(); \
    return [via.textContent, box.width > 0 && box.height > 0 && getComputedStyle(via).visibility === 'visible']; })()";
/// Whether the page lost its connection and waits for it to come back,
/// whoever retries (the page itself, or EventSource).
const INTERRUPTED: &str = "document.getElementById('state').dataset.state === 'reconnecting'";
/// Whether the page is waiting to reconnect.
const RECONNECTING: &str =
    "document.getElementById('state').textContent.startsWith('reconnecting in ')";

/// Asks the kernel for a free port. The test needs a fixed one (not
/// `127.0.0.1:0`) because the restarted server must come back where the pages
/// are already trying to reconnect.
fn free_port() -> TestResult<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Calls `probe` until it yields a value, at most [`WAIT`] long; the last
/// error, if any, goes into the timeout message to explain what went wrong.
fn poll<T>(what: &str, mut probe: impl FnMut() -> TestResult<Option<T>>) -> TestResult<T> {
    let deadline = Instant::now() + WAIT;
    let mut last_error = String::new();
    loop {
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = format!(" (last error: {e})"),
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {WAIT:?} waiting for {what}{last_error}").into());
        }
        sleep(POLL);
    }
}

/// The `wschat` binary as a child process. It is a real process, not the
/// in-process server, so the test can kill it outright like a crash and start
/// it again; the drop kills it so a failing assertion never leaks one.
struct ServerProcess(Child);

impl ServerProcess {
    /// Starts it on `port`, with more flags from `args`.
    fn start(port: u16, args: &[&OsStr]) -> TestResult<Self> {
        let child = Command::new(env!("CARGO_BIN_EXE_wschat"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let mut server = ServerProcess(child);
        poll("wschat to accept connections", || {
            if let Some(status) = server.0.try_wait()? {
                return Err(format!("wschat exited early: {status}").into());
            }
            Ok(TcpStream::connect(("127.0.0.1", port)).ok())
        })?;
        Ok(server)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain WebSocket client in the lobby. The pages cannot know connection
/// ids, so the raw `from{N}:` frames it sees are the ground truth for which
/// sender id each page must display.
struct Listener(WebSocket<TcpStream>);

impl Listener {
    fn join(port: u16) -> TestResult<Self> {
        Self::at(port, "/")
    }

    /// A listener in the room `room` instead of the lobby.
    fn join_room(port: u16, room: &str) -> TestResult<Self> {
        Self::at(port, &format!("/room/{room}"))
    }

    fn at(port: u16, path: &str) -> TestResult<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(WAIT))?;
        let (socket, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)?;
        Ok(Listener(socket))
    }

    fn send_binary(&mut self, payload: &[u8]) -> TestResult {
        Ok(self.0.send(Message::binary(payload.to_vec()))?)
    }

    /// Reads frames (text or binary) until one carries `payload` and returns
    /// the sender id from its `from{N}:` prefix.
    fn sender_of(&mut self, payload: &[u8]) -> TestResult<u64> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let frame = match self.0.read()? {
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Binary(bytes) => bytes.to_vec(),
                _ => continue,
            };
            let Some(rest) = frame.strip_prefix(b"from") else {
                continue;
            };
            let Some(colon) = rest.iter().position(|&b| b == b':') else {
                continue;
            };
            if &rest[colon + 1..] == payload {
                return Ok(std::str::from_utf8(&rest[..colon])?.parse()?);
            }
        }
        Err(format!("no frame carrying {:?}", String::from_utf8_lossy(payload)).into())
    }
}

/// A raw `wschat.v1` client: the ground truth for the ids, epochs, offsets
/// and times the page must show or ask for.
struct V1Peer {
    socket: WebSocket<TcpStream>,
    welcome: Value,
}

impl V1Peer {
    fn join(port: u16, path: &str) -> TestResult<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(WAIT))?;
        let url = format!("ws://127.0.0.1:{port}{path}");
        let request = ClientRequestBuilder::new(url.parse()?).with_sub_protocol("wschat.v1");
        let (socket, _) = tungstenite::client(request, stream)?;
        let mut peer = V1Peer {
            socket,
            welcome: Value::Null,
        };
        peer.welcome = peer.next("welcome")?;
        Ok(peer)
    }

    fn id(&self) -> u64 {
        self.welcome["id"].as_u64().unwrap_or_default()
    }

    fn epoch(&self) -> &str {
        self.welcome["epoch"].as_str().unwrap_or_default()
    }

    /// The next object of type `kind`; others are skipped.
    fn next(&mut self, kind: &str) -> TestResult<Value> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Message::Text(text) = self.socket.read()? {
                let object: Value = serde_json::from_str(text.as_str())?;
                if object["type"] == kind {
                    return Ok(object);
                }
            }
        }
        Err(format!("no {kind} object within {WAIT:?}").into())
    }

    /// Sends `message` and returns the room message the server made of it,
    /// with its offset and time.
    fn say(&mut self, message: Message) -> TestResult<Value> {
        self.socket.send(message)?;
        let echo = self.next("message")?;
        if echo["from"] != self.id() {
            return Err(format!("someone else spoke: {echo}").into());
        }
        Ok(echo)
    }
}

/// A TCP relay between the browser and a daemon, so that the page's
/// connection can be lost while the daemon, and the room's history, stay
/// up. In a cluster it plays the load balancer in front of the instances:
/// [`Relay::switch_to`] sends new connections to another one, so the page
/// reconnects to the same URL and reaches whichever instance is there.
/// Made with [`Relay::refusing`], it is a proxy that reads each request
/// head and answers some itself with 403, like a network that lets plain
/// HTTP through and not WebSocket.
struct Relay {
    port: u16,
    shared: Arc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    /// Both sockets of every relayed connection; `refusing` changes only
    /// under this lock, so no connection slips past a [`Relay::down`].
    open: Mutex<RelayConnections>,
    /// The daemon's port, read for each new connection.
    backend: AtomicU16,
    stopped: AtomicBool,
}

#[derive(Default)]
struct RelayConnections {
    sockets: Vec<TcpStream>,
    refusing: bool,
}

/// Which request heads a [`Relay`] refuses (with 403) instead of passing on.
type Refuse = fn(&str) -> bool;

impl Relay {
    fn to(backend: u16) -> TestResult<Self> {
        Self::start(backend, None)
    }

    /// A relay that answers the requests whose head `refuse` picks with
    /// 403 and closes that connection; it passes the others on.
    fn refusing(backend: u16, refuse: Refuse) -> TestResult<Self> {
        Self::start(backend, Some(refuse))
    }

    fn start(backend: u16, refuse: Option<Refuse>) -> TestResult<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(RelayState {
            backend: AtomicU16::new(backend),
            ..RelayState::default()
        });
        let state = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if state.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let backend = state.backend.load(Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", backend)) else {
                    continue;
                };
                let mut open = state.open.lock().unwrap_or_else(|p| p.into_inner());
                if open.refusing {
                    continue;
                }
                let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                open.sockets.extend([c, s]);
                drop(open);
                match refuse {
                    Some(refuse) => pipe_requests(&client, &server, refuse),
                    None => pipe(&client, &server),
                }
            }
        });
        Ok(Relay { port, shared })
    }

    fn port(&self) -> u16 {
        self.port
    }

    /// Ends every relayed connection at once, without a Close frame, and
    /// refuses new ones until [`Relay::up`]: the network is gone.
    fn down(&self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
        open.refusing = true;
        for socket in open.sockets.drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Sends the connections made from now on to `backend`; those open
    /// stay where they are, as when a load balancer takes an instance out
    /// of rotation.
    fn switch_to(&self, backend: u16) {
        self.shared.backend.store(backend, Ordering::SeqCst);
    }

    fn up(&self) {
        self.shared
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refusing = false;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.down();
        // Wakes the accepting thread so that it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies bytes both ways between `a` and `b` on two threads; each end's
/// FIN is passed on.
fn pipe(a: &TcpStream, b: &TcpStream) {
    for (from, to) in [(a, b), (b, a)] {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
            continue;
        };
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}

/// Like [`pipe`], but reads the client's requests one by one: a head that
/// `refuse` picks is answered with 403 and ends the connection; the others,
/// with their `Content-Length` bodies, go to `server`. After an upgrade that
/// was let through, the bytes are frames, passed on as they come.
fn pipe_requests(client: &TcpStream, server: &TcpStream, refuse: Refuse) {
    use std::io::{Read, Write};
    let (Ok(mut from), Ok(mut to)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    let (Ok(reading), Ok(mut answering), Ok(mut to)) =
        (client.try_clone(), client.try_clone(), server.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || -> std::io::Result<()> {
        let mut requests = BufReader::new(reading);
        loop {
            let mut head = String::new();
            loop {
                if requests.read_line(&mut head)? == 0 {
                    return to.shutdown(std::net::Shutdown::Write);
                }
                if head.ends_with("\r\n\r\n") {
                    break;
                }
            }
            if refuse(&head) {
                let body = "refused by the test's proxy\n";
                write!(
                    answering,
                    "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )?;
                let _ = answering.shutdown(std::net::Shutdown::Both);
                return to.shutdown(std::net::Shutdown::Both);
            }
            to.write_all(head.as_bytes())?;
            if header_of(&head, "upgrade").is_some() {
                std::io::copy(&mut requests, &mut to)?;
                return to.shutdown(std::net::Shutdown::Write);
            }
            let length = header_of(&head, "content-length").map_or(Ok(0), |v| v.parse::<u64>());
            let length = length.map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
            std::io::copy(&mut (&mut requests).take(length), &mut to)?;
        }
    });
}

/// The value of the header `name` in a request head, if it has one.
fn header_of<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A head asking for a WebSocket.
fn is_upgrade(head: &str) -> bool {
    header_of(head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A head asking for a WebSocket, or for a room's SSE stream.
fn is_upgrade_or_events(head: &str) -> bool {
    let target = head.split(' ').nth(1).unwrap_or_default();
    is_upgrade(head)
        || target
            .split('?')
            .next()
            .unwrap_or_default()
            .ends_with("/events")
}

/// Serves the page at `/` and hands each WebSocket it accepts (offering
/// `wschat.v1`) to the test with the request target, so the test can play
/// the server frame by frame.
struct ScriptedServer {
    port: u16,
    sockets: mpsc::Receiver<(String, WebSocket<TcpStream>)>,
    stopped: Arc<AtomicBool>,
}

impl ScriptedServer {
    fn start() -> TestResult<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        let (tx, sockets) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = Self::serve(stream, &tx);
                }
            }
        });
        Ok(ScriptedServer {
            port,
            sockets,
            stopped,
        })
    }

    fn port(&self) -> u16 {
        self.port
    }

    /// The next WebSocket the page opened, with its request target.
    fn next_socket(&self) -> TestResult<(String, WebSocket<TcpStream>)> {
        Ok(self.sockets.recv_timeout(WAIT)?)
    }

    fn serve(
        mut stream: TcpStream,
        sockets: &mpsc::Sender<(String, WebSocket<TcpStream>)>,
    ) -> TestResult {
        use std::io::{Read, Write};
        stream.set_read_timeout(Some(WAIT))?;
        let mut head = Vec::new();
        let mut chunk = [0; 4096];
        let end = loop {
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err("closed within the request head".into());
            }
            head.extend_from_slice(&chunk[..n]);
        };
        let rest = head.split_off(end);
        let head = String::from_utf8(head)?;
        let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        if let Some(key) = header("sec-websocket-key") {
            let offered = header("sec-websocket-protocol").unwrap_or_default();
            if !offered.split(',').any(|p| p.trim() == "wschat.v1") {
                stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")?;
                return Err(format!("the page did not offer wschat.v1: {offered:?}").into());
            }
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            write!(
                stream,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\
                 Sec-WebSocket-Protocol: wschat.v1\r\n\r\n"
            )?;
            let socket = WebSocket::from_partially_read(stream, rest, Role::Server, None);
            sockets.send((target, socket))?;
        } else if target == "/" || target.starts_with("/?") {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{CHAT_HTML}",
                CHAT_HTML.len()
            )?;
        } else {
            stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
        }
        Ok(())
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One message row as a page shows it.
#[derive(Debug)]
struct Row {
    from: String,
    mine: bool,
}

/// One page, attached through a flat DevTools session.
#[derive(PartialEq)]
struct Tab {
    session: String,
}

/// The Chromium process and its throwaway profile. Dropping it kills the
/// browser and removes the profile, even when the test fails half-way.
struct ChromiumProcess {
    child: Child,
    profile: PathBuf,
}

impl Drop for ChromiumProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Helper processes may still be writing into the profile for a moment
        // after the main process is gone, so retry briefly.
        let deadline = Instant::now() + WAIT;
        while std::fs::remove_dir_all(&self.profile).is_err()
            && self.profile.exists()
            && Instant::now() < deadline
        {
            sleep(POLL);
        }
    }
}

/// Headless Chromium driven over the DevTools protocol: just the handful of
/// commands this test needs, on one synchronous WebSocket.
struct Browser {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Messages of any JavaScript dialog (`alert` and friends) a page opened;
    /// an injected `alert(1)` would land here.
    dialogs: Vec<String>,
    /// `(DevTools session, URL)` of every WebSocket a page created.
    sockets: Vec<(String, String)>,
    /// `(DevTools session, request)` of every HTTP request a page made,
    /// each as DevTools tells it (`url`, `method`, `headers`), with the
    /// kind of its initiator added as `type` (`EventSource`, `Fetch`, …).
    requests: Vec<(String, Value)>,
    /// The headers each request really went out with, by request id: the
    /// network stack adds some (`Last-Event-ID` of an EventSource's
    /// reconnect) that `requests` does not show.
    sent_headers: std::collections::HashMap<String, Value>,
    _process: ChromiumProcess,
}

impl Browser {
    /// Starts Chromium with its usual flags and `extra` ones.
    fn launch(executable: &Path, extra: &[String]) -> TestResult<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let profile =
            std::env::temp_dir().join(format!("wschat-chromium-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&profile)?;
        let child = Command::new(executable)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut process = match child {
            Ok(child) => ChromiumProcess { child, profile },
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(e.into());
            }
        };
        let url = devtools_url(&mut process.child)?;
        let address = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| format!("odd DevTools address {url}"))?;
        let stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(WAIT))?;
        let (socket, _) = tungstenite::client(url.as_str(), stream)?;
        // Short reads from here on, so `call` can check its deadline.
        socket.get_ref().set_read_timeout(Some(POLL))?;
        Ok(Browser {
            socket,
            next_id: 0,
            dialogs: Vec::new(),
            sockets: Vec::new(),
            requests: Vec::new(),
            sent_headers: std::collections::HashMap::new(),
            _process: process,
        })
    }

    /// Sends one command (to the browser, or to a page when `tab` is given)
    /// and waits for its answer, noting dialog events that arrive meanwhile.
    fn call(&mut self, tab: Option<&Tab>, method: &str, params: Value) -> TestResult<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(tab) = tab {
            command["sessionId"] = json!(tab.session);
        }
        self.socket.send(Message::text(command.to_string()))?;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            let reply: Value = serde_json::from_str(text.as_str())?;
            if reply["method"] == "Page.javascriptDialogOpening" {
                self.dialogs.push(reply["params"]["message"].to_string());
            }
            if reply["method"] == "Network.webSocketCreated" {
                let session = reply["sessionId"].as_str().unwrap_or_default();
                let url = reply["params"]["url"].as_str().unwrap_or_default();
                self.sockets.push((session.to_owned(), url.to_owned()));
            }
            if reply["method"] == "Network.requestWillBeSent" {
                let session = reply["sessionId"].as_str().unwrap_or_default();
                let mut request = reply["params"]["request"].clone();
                request["type"] = reply["params"]["type"].clone();
                request["requestId"] = reply["params"]["requestId"].clone();
                self.requests.push((session.to_owned(), request));
            }
            if reply["method"] == "Network.requestWillBeSentExtraInfo" {
                let id = reply["params"]["requestId"].as_str().unwrap_or_default();
                let headers = reply["params"]["headers"].clone();
                self.sent_headers.insert(id.to_owned(), headers);
            }
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(error) => Err(format!("{method} failed: {error}").into()),
                    None => Ok(reply["result"].clone()),
                };
            }
        }
        Err(format!("no answer to {method} within {WAIT:?}").into())
    }

    /// Opens `url` in a fresh browser context (own cookies and storage, like
    /// another person's browser) with a `width`×`height` viewport.
    fn open(&mut self, url: &str, width: u32, height: u32) -> TestResult<Tab> {
        let context = self.call(None, "Target.createBrowserContext", json!({}))?;
        let target = self.call(
            None,
            "Target.createTarget",
            json!({ "url": "about:blank", "browserContextId": context["browserContextId"] }),
        )?;
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or("no DevTools session id")?;
        let tab = Tab {
            session: session.to_owned(),
        };
        // Dialog events before the page loads; focus as if each window were
        // the active one, so key events and `focus()` behave as for a person.
        self.call(Some(&tab), "Page.enable", json!({}))?;
        self.call(Some(&tab), "Network.enable", json!({}))?;
        self.call(
            Some(&tab),
            "Emulation.setFocusEmulationEnabled",
            json!({ "enabled": true }),
        )?;
        self.resize(&tab, width, height)?;
        self.call(Some(&tab), "Page.navigate", json!({ "url": url }))?;
        Ok(tab)
    }

    /// The URLs of the WebSockets `tab` created so far (as far as the
    /// events read up to now tell).
    fn sockets_of(&self, tab: &Tab) -> Vec<String> {
        let mine = self.sockets.iter().filter(|(s, _)| *s == tab.session);
        mine.map(|(_, url)| url.clone()).collect()
    }

    /// The HTTP requests `tab` made so far (as far as the events read up
    /// to now tell) whose URL's path ends with `endpoint`, each with the
    /// headers it went out with as `sentHeaders` where DevTools told them.
    fn requests_of(&self, tab: &Tab, endpoint: &str) -> Vec<Value> {
        let mine = self.requests.iter().filter(|(s, _)| *s == tab.session);
        mine.filter(|(_, request)| {
            let url = request["url"].as_str().unwrap_or_default();
            url.split('?')
                .next()
                .unwrap_or_default()
                .ends_with(endpoint)
        })
        .map(|(_, request)| {
            let mut request = request.clone();
            let id = request["requestId"].as_str().unwrap_or_default();
            if let Some(sent) = self.sent_headers.get(id) {
                request["sentHeaders"] = sent.clone();
            }
            request
        })
        .collect()
    }

    fn resize(&mut self, tab: &Tab, width: u32, height: u32) -> TestResult {
        let metrics =
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false });
        self.call(Some(tab), "Emulation.setDeviceMetricsOverride", metrics)?;
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    fn eval(&mut self, tab: &Tab, expression: &str) -> TestResult<Value> {
        let result = self.call(
            Some(tab),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!(
                "`{expression}` threw: {}",
                exception["exception"]["description"]
            )
            .into());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Polls `expression` until it is truthy; errors while the page is still
    /// loading just mean "not yet".
    fn wait_for(&mut self, tab: &Tab, what: &str, expression: &str) -> TestResult<Value> {
        poll(what, || {
            let value = self.eval(tab, expression)?;
            let falsy = matches!(&value, Value::Null | Value::Bool(false)) || value == "";
            Ok((!falsy).then_some(value))
        })
    }

    /// Waits until the page shows a message with exactly this text.
    fn wait_for_message(&mut self, tab: &Tab, text: &str) -> TestResult<Row> {
        poll(&format!("the message {text:?}"), || {
            let rows: Vec<(String, String, bool)> = serde_json::from_value(self.eval(tab, ROWS)?)?;
            Ok(rows
                .into_iter()
                .rfind(|(_, shown, _)| shown == text)
                .map(|(from, _, mine)| Row { from, mine }))
        })
    }

    /// Types `lines` into the message box the way a person does: real key
    /// events, Shift+Enter between lines and Enter to send, so the page's own
    /// keyboard handling is what gets tested.
    fn send_message(&mut self, tab: &Tab, lines: &[&str]) -> TestResult {
        self.eval(tab, "document.getElementById('input').focus()")?;
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                self.press_enter(tab, true)?;
            }
            self.call(Some(tab), "Input.insertText", json!({ "text": line }))?;
        }
        self.press_enter(tab, false)
    }

    fn press_enter(&mut self, tab: &Tab, shift: bool) -> TestResult {
        const SHIFT: u32 = 8;
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({
                "type": kind, "key": "Enter", "code": "Enter",
                "windowsVirtualKeyCode": 13, "modifiers": if shift { SHIFT } else { 0 },
            });
            if kind == "keyDown" {
                event["text"] = json!("\r");
            }
            self.call(Some(tab), "Input.dispatchKeyEvent", event)?;
        }
        Ok(())
    }

    fn screenshot(&mut self, tab: &Tab, path: &Path) -> TestResult {
        let shot = self.call(
            Some(tab),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        )?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().ok_or("no image data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        println!("screenshot: {}", path.display());
        Ok(())
    }
}

/// Reads Chromium's stderr until it prints where its DevTools endpoint
/// listens (`--remote-debugging-port=0` picks a free port). A thread keeps
/// draining stderr afterwards so the browser never blocks on a full pipe.
fn devtools_url(child: &mut Child) -> TestResult<String> {
    let stderr = child
        .stderr
        .take()
        .ok_or("Chromium's stderr is not piped")?;
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => match line.strip_prefix("DevTools listening on ") {
                Some(url) => return Ok(url.trim().to_owned()),
                None => seen.push(line),
            },
            Err(_) => {
                let log = seen.join("\n");
                return Err(format!(
                    "Chromium did not report a DevTools address; its stderr:\n{log}"
                )
                .into());
            }
        }
    }
}
