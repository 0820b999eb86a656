//! Time and process lifecycle: reaping without a request, the FIFO wait
//! queue over HTTP, and a clean stop on SIGTERM.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lager_testsupport::{read_reply, wait_until, Daemon};
use serde_json::json;

use crate::{lagerd, start};

#[test]
fn an_expired_lock_is_reaped_even_if_nobody_asks() {
    let b = start("reaper", &[]);
    b.call(
        "POST",
        "/lock",
        Some(r#"{"user":"crashed-ci","holder_type":"ci","ttl_seconds":1}"#),
    );
    let lock_file = b.dir.path().join("lock.json");
    assert!(lock_file.exists());
    // No request touches the box: only the reaper thread can free it.
    assert!(wait_until(Duration::from_secs(4), || !lock_file.exists()));
}

#[test]
fn waiters_get_the_box_in_arrival_order() {
    let b = start("queue", &[]);
    let addr = b.addr();
    b.call("POST", "/lock", Some(r#"{"user":"holder"}"#));
    let mut waiters = Vec::new();
    for name in ["ci-job-1", "ci-job-2"] {
        let body = format!(
            r#"{{"user":"{name}","holder_type":"ci","ttl_seconds":600,"wait_seconds":20}}"#
        );
        waiters.push(std::thread::spawn(move || {
            let reply = lager_testsupport::request(addr, "POST", "/lock", Some(&body));
            (reply.status, lager_testsupport::json_of(&reply))
        }));
        std::thread::sleep(Duration::from_millis(300));
    }
    // A poller that arrives later cannot overtake the queue.
    assert_eq!(
        b.call("POST", "/lock", Some(r#"{"user":"latecomer"}"#)).0,
        409
    );
    b.call("POST", "/unlock", Some(r#"{"user":"holder"}"#));
    let (status, got) = waiters.remove(0).join().unwrap();
    assert_eq!(
        (status, got["user"].as_str(), got["previous_user"].clone()),
        (200, Some("ci-job-1"), json!(null))
    );
    assert_eq!(b.call("GET", "/lock", None).1["user"], "ci-job-1");
    b.call("POST", "/unlock", Some(r#"{"user":"ci-job-1"}"#));
    let (status, got) = waiters.remove(0).join().unwrap();
    assert_eq!((status, got["user"].as_str()), (200, Some("ci-job-2")));
}

#[test]
fn a_waiter_that_hangs_up_does_not_get_the_box() {
    let b = start("hangup", &[]);
    b.call("POST", "/lock", Some(r#"{"user":"holder"}"#));
    let body = r#"{"user":"quitter","wait_seconds":60}"#;
    let mut stream = TcpStream::connect(b.addr()).unwrap();
    write!(
        stream,
        "POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    std::thread::sleep(Duration::from_millis(600));
    b.call("POST", "/unlock", Some(r#"{"user":"holder"}"#));
    assert_eq!(
        b.call("GET", "/lock", None),
        (200, json!({"locked": false}))
    );
}

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_cleanly() {
    let dir = lager_testsupport::TempDir::new("sigterm");
    let mut daemon = Daemon::start(&lagerd(), dir.path(), &[]);
    // A request whose body is still arriving when the signal comes.
    let body = r#"{"user":"mid-flight"}"#;
    let mut stream = TcpStream::connect(daemon.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..5]
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(daemon.pid(), libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(&body.as_bytes()[5..]).unwrap();
    let reply = read_reply(&mut stream).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let started = Instant::now();
    let status = daemon
        .signal_and_wait(0, Duration::from_secs(5))
        .expect("lagerd exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // New connections are refused once it is gone; the lock is on disk.
    assert!(TcpStream::connect(daemon.addr()).is_err());
    let restarted = Daemon::start(&lagerd(), dir.path(), &[]);
    let reply = lager_testsupport::request(restarted.addr(), "GET", "/lock", None);
    assert!(
        reply.text().contains("\"user\":\"mid-flight\""),
        "{}",
        reply.text()
    );
}

#[test]
fn an_eternal_lock_survives_restarts_and_startup_does_not_touch_the_file() {
    let dir = lager_testsupport::TempDir::new("restart");
    let lock_file = dir.path().join("lock.json");
    {
        let daemon = Daemon::start(&lagerd(), dir.path(), &[]);
        let reply =
            lager_testsupport::request(daemon.addr(), "POST", "/lock", Some(r#"{"user":"alice"}"#));
        assert_eq!(reply.status, 200);
    }
    let before = std::fs::read(&lock_file).unwrap();
    let modified = std::fs::metadata(&lock_file).unwrap().modified().unwrap();
    let daemon = Daemon::start(&lagerd(), dir.path(), &[]);
    let reply = lager_testsupport::request(daemon.addr(), "GET", "/lock", None);
    assert!(reply.text().contains("\"user\":\"alice\""));
    assert_eq!(std::fs::read(&lock_file).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&lock_file).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn a_garbage_state_file_at_start_is_kept_aside_and_the_box_starts_unlocked() {
    let dir = lager_testsupport::TempDir::new("garbage-start");
    std::fs::write(dir.path().join("lock.json"), "{\"locked\": true, \"us").unwrap();
    let daemon = Daemon::start(&lagerd(), dir.path(), &[]);
    let reply = lager_testsupport::request(daemon.addr(), "GET", "/lock", None);
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, r#"{"locked":false}"#)
    );
    let kept: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("lock.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let aside = std::fs::read_to_string(dir.path().join(&kept[0])).unwrap();
    assert_eq!(aside, "{\"locked\": true, \"us");
    let reply = lager_testsupport::request(daemon.addr(), "POST", "/lock", Some(r#"{"user":"b"}"#));
    assert_eq!(reply.status, 200);
}

/// Issue 12 defect 5: valid JSON with the wrong types was served verbatim
/// by `GET /lock` after a restart, as if it were somebody's lock.
#[test]
fn a_state_file_with_wrong_types_is_corrupt_at_start() {
    let dir = lager_testsupport::TempDir::new("wrong-types-start");
    let wrong = r#"{"locked":"yes","locked_at":7,"ttl_seconds":"x","user":5}"#;
    std::fs::write(dir.path().join("lock.json"), wrong).unwrap();
    let daemon = Daemon::start(&lagerd(), dir.path(), &[]);
    for _ in 0..2 {
        let reply = lager_testsupport::request(daemon.addr(), "GET", "/lock", None);
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, r#"{"locked":false}"#)
        );
    }
    let kept: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("lock.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "kept aside once: {kept:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(&kept[0])).unwrap(),
        wrong
    );
    let reply = lager_testsupport::request(daemon.addr(), "POST", "/lock", Some(r#"{"user":"b"}"#));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains(r#""previous_user":null"#));
}
