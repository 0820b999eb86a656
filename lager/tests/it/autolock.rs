//! `lager::autolock` (locking.md B.4–B.6) driven as a library against a
//! real lagerd: acquire, the wait queue, heartbeat and the release guard.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lager::autolock::{self, acquire, AcquireState, Heartbeat, LockSettings, WarnSink};
use lager::client::Client;
use lager::CliError;
use lager_testsupport::{request, wait_until};
use serde_json::{json, Value};

use crate::{refused_port, Box_};

fn client(daemon: &Box_) -> Client {
    Client::new("127.0.0.1", daemon.port(), None)
}

#[test]
fn acquire_free_box_then_adopt_own_scope() {
    let daemon = Box_::start();
    let c = client(&daemon);
    let got = acquire(
        &c,
        "b1",
        "ci:generic:h:100",
        "ci",
        Some(120),
        Duration::ZERO,
    )
    .expect("acquire");
    assert_eq!(got.state, AcquireState::Acquired);
    let lock = daemon.lock();
    assert_eq!(lock["user"], "ci:generic:h:100");
    assert_eq!(lock["holder_type"], "ci");
    assert_eq!(lock["ttl_seconds"], 120);

    // Another process of the same job (other pid) adopts it without writing.
    let got =
        acquire(&c, "b1", "ci:generic:h:200", "ci", Some(60), Duration::ZERO).expect("acquire");
    assert_eq!(got.state, AcquireState::AlreadyOurs);
    assert_eq!(got.record.expect("record")["user"], "ci:generic:h:100");
    assert_eq!(daemon.lock()["ttl_seconds"], 120);
}

#[test]
fn collision_without_wait_fails_at_once() {
    let daemon = Box_::start();
    daemon.lock_as("ci:drone:org/proj#15:5@runner-7");
    let start = Instant::now();
    let err = acquire(
        &client(&daemon),
        "b1",
        "alice",
        "ephemeral",
        Some(60),
        Duration::ZERO,
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, CliError::Locked { .. }));
    assert_eq!(
        err.to_string(),
        "Error: Box 'b1' is locked by drone org/proj build 15\nTo force unlock: lager boxes unlock --box b1 --force"
    );
}

#[test]
fn waiting_is_granted_from_the_queue_when_released() {
    let daemon = Box_::start();
    daemon.lock_as("bob");
    let addr = daemon.addr();
    let start = Instant::now();
    let releaser = std::thread::spawn(move || {
        // Release once the waiter is queued (lagerd defers its response).
        std::thread::sleep(Duration::from_millis(300));
        request(addr, "POST", "/unlock", Some(r#"{"user":"bob"}"#))
    });
    let got = acquire(
        &client(&daemon),
        "b1",
        "alice",
        "ephemeral",
        Some(60),
        Duration::from_secs(20),
    )
    .expect("acquire");
    assert_eq!(got.state, AcquireState::Acquired);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(releaser.join().expect("releaser").status, 200);
    assert_eq!(daemon.lock()["user"], "alice");
}

#[test]
fn waiting_gives_up_at_the_deadline() {
    let daemon = Box_::start();
    daemon.lock_as("bob");
    let start = Instant::now();
    let err = acquire(
        &client(&daemon),
        "b1",
        "alice",
        "ephemeral",
        Some(60),
        Duration::from_secs(1),
    )
    .unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_eq!(
        err.to_string(),
        "Error: Box 'b1' is locked by bob\nGave up after waiting 1s.\nTo force unlock: lager boxes unlock --box b1 --force"
    );
}

#[test]
fn unreachable_box_is_not_an_error() {
    let c = Client::new("127.0.0.1", refused_port(), None);
    let got =
        acquire(&c, "dead", "alice", "ephemeral", Some(60), Duration::ZERO).expect("no error");
    assert_eq!(got.state, AcquireState::Unreachable);
}

fn capture() -> (WarnSink, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = Arc::clone(&seen);
    let sink: WarnSink =
        Arc::new(move |text: &str| sink_seen.lock().expect("lock").push(text.to_string()));
    (sink, seen)
}

#[test]
fn heartbeat_renews_the_lock() {
    let daemon = Box_::start();
    let c = client(&daemon);
    acquire(&c, "b1", "alice", "ephemeral", Some(60), Duration::ZERO).expect("acquire");
    let locked_at = daemon.lock()["locked_at"].clone();
    let (sink, seen) = capture();
    let beat = Heartbeat::start(
        c,
        "alice",
        Duration::from_millis(100),
        Some(60),
        "test lock heartbeat",
        sink,
    );
    // Timestamps have whole seconds: a renewal shows within ~1 s.
    assert!(wait_until(Duration::from_secs(5), || daemon.lock()
        ["last_heartbeat"]
        != locked_at));
    beat.stop();
    assert!(seen.lock().expect("lock").is_empty());
}

#[test]
fn heartbeat_warns_once_per_outage_and_pause_stops_counting() {
    let daemon = Box_::start();
    // Not our lock: every heartbeat is a 404, an ordinary failure.
    let (sink, seen) = capture();
    let beat = Heartbeat::start(
        client(&daemon),
        "alice",
        Duration::from_millis(50),
        Some(1),
        "test lock heartbeat",
        sink,
    );
    assert!(wait_until(Duration::from_secs(5), || !seen
        .lock()
        .expect("lock")
        .is_empty()));
    beat.pause();
    let warned = seen.lock().expect("lock").clone();
    assert_eq!(warned.len(), 1);
    assert!(
        warned[0].starts_with("Warning: test lock heartbeat has not renewed for ")
            && warned[0].ends_with(" of its 1s TTL; the lock will expire if this continues."),
        "{warned:?}"
    );
    // Unpausing starts a new window, so the outage warns again.
    beat.unpause();
    assert!(wait_until(Duration::from_secs(5), || seen
        .lock()
        .expect("lock")
        .len()
        == 2));
    beat.stop();
}

#[test]
fn guard_releases_what_it_took_once_and_keeps_adopted_locks() {
    // One test: the guard is process-wide.
    let daemon = Box_::start();
    let c = client(&daemon);
    let settings = LockSettings {
        disabled: false,
        wait: Duration::ZERO,
        ttl_secs: Some(60),
        heartbeat: Duration::from_secs(60),
        holder_type: "ephemeral",
    };
    let got = autolock::engage(&c, "b1", "alice", &settings).expect("engage");
    assert_eq!(got.state, AcquireState::Acquired);
    assert_eq!(daemon.lock()["user"], "alice");
    autolock::release();
    assert_eq!(daemon.lock(), json!({"locked": false}));

    // Released at most once: a later lock by someone else is not touched.
    daemon.lock_as("alice");
    autolock::release();
    assert_eq!(daemon.lock()["user"], "alice");

    // An adopted lock (already ours) is never released.
    let got = autolock::engage(&c, "b1", "alice", &settings).expect("engage");
    assert_eq!(got.state, AcquireState::AlreadyOurs);
    autolock::release();
    assert_eq!(daemon.lock()["user"], "alice");
    request(
        daemon.addr(),
        "POST",
        "/unlock",
        Some(r#"{"user":"alice"}"#),
    );

    // keep() (a successful --detach) leaves the lock on the box.
    let detached = LockSettings {
        ttl_secs: None,
        ..settings
    };
    autolock::engage(&c, "b1", "alice", &detached).expect("engage");
    autolock::keep();
    autolock::release();
    let lock: Value = daemon.lock();
    assert_eq!(lock["user"], "alice");
    assert_eq!(lock["ttl_seconds"], Value::Null);
}

/// Child half of the signal tests: engages the lock on the box at
/// `LAGER_TEST_SIGNAL_PORT`, says `engaged`, then idles until signalled.
/// Run only by [`signal_releases_the_lock_and_exits_128_plus_signo`].
#[test]
#[ignore = "helper process for the signal tests"]
fn signal_child() {
    let Ok(port) = std::env::var("LAGER_TEST_SIGNAL_PORT") else {
        return;
    };
    let port: u16 = port.parse().expect("port");
    let wait: u64 = std::env::var("LAGER_TEST_SIGNAL_WAIT")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    let settings = LockSettings {
        disabled: false,
        wait: Duration::from_secs(wait),
        ttl_secs: Some(60),
        heartbeat: Duration::from_secs(60),
        holder_type: "ephemeral",
    };
    // Handlers first, so the parent's signal never meets the default action.
    lager::signals::install(autolock::on_signal);
    println!("engaging");
    let c = Client::new("127.0.0.1", port, None);
    let got = autolock::engage(&c, "b1", "child", &settings).expect("engage");
    println!("engaged {:?}", got.state);
    std::thread::sleep(Duration::from_secs(60));
}

fn spawn_signal_child(daemon: &Box_, wait_secs: u64) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "autolock::signal_child",
            "--ignored",
            "--nocapture",
        ])
        .env("LAGER_TEST_SIGNAL_PORT", daemon.port().to_string())
        .env("LAGER_TEST_SIGNAL_WAIT", wait_secs.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// Reads the child's stdout up to its `engaging` line (handlers installed).
fn wait_engaging(child: &mut std::process::Child) {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    assert!(
        lines.any(|l| l.map(|l| l == "engaging").unwrap_or(false)),
        "child never engaged"
    );
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
}

fn exit_code_within(child: &mut std::process::Child, within: Duration) -> Option<i32> {
    let mut status = None;
    wait_until(within, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status.and_then(|s| s.code())
}

#[test]
fn signal_releases_the_lock_and_exits_128_plus_signo() {
    let daemon = Box_::start();
    let mut child = spawn_signal_child(&daemon, 0);
    wait_engaging(&mut child);
    assert!(wait_until(Duration::from_secs(10), || daemon.lock()
        ["user"]
        == "child"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let code = exit_code_within(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    assert_eq!(code, Some(128 + libc::SIGTERM));
    assert_eq!(daemon.lock(), json!({"locked": false}));
}

#[test]
fn signal_while_queued_leaves_the_other_holder_alone() {
    let daemon = Box_::start();
    daemon.lock_as("bob");
    let mut child = spawn_signal_child(&daemon, 30);
    wait_engaging(&mut child);
    // Only makes it likely the signal lands while queued; the outcome must
    // be the same if it lands just before the POST.
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let code = exit_code_within(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    assert_eq!(code, Some(128 + libc::SIGINT));
    assert_eq!(daemon.lock()["user"], "bob");
}
