//! Bad input gets a clear error and loses nothing (locking.md A.5, issue 3).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lager_testsupport::{raw_request, read_reply, request};
use serde_json::json;

use crate::start;

#[test]
fn malformed_bodies_get_the_spec_messages() {
    let b = start("bodies", &[]);
    b.call("POST", "/lock", Some(r#"{"user":"owner"}"#));
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/lock", "", 400, "user is required"),
        ("/lock", "not json", 400, "Invalid JSON"),
        ("/lock", "{\"user\": \"a\"", 400, "Invalid JSON"),
        ("/lock", "null", 400, "Expected a JSON object"),
        ("/lock", "[\"user\"]", 400, "Expected a JSON object"),
        ("/lock", "\"user\"", 400, "Expected a JSON object"),
        ("/lock", "42", 400, "Expected a JSON object"),
        ("/lock", r#"{"user": 42}"#, 400, "user must be a string"),
        ("/lock", r#"{"user": ""}"#, 400, "user is required"),
        (
            "/lock",
            r#"{"user": "a", "wait_seconds": "5"}"#,
            400,
            "wait_seconds must be an integer between 0 and 300",
        ),
        ("/lock/heartbeat", "[]", 400, "Expected a JSON object"),
        (
            "/unlock",
            r#"{"user": "owner", "force": "false"}"#,
            400,
            "force must be a JSON boolean (true or false)",
        ),
        ("/unlock", r#"{"force": true}"#, 400, "user is required"),
    ];
    for (path, body, status, message) in cases {
        let (got_status, got) = b.call("POST", path, Some(body));
        assert_eq!(
            (got_status, got["error"].as_str()),
            (*status, Some(*message)),
            "{path} {body:?}"
        );
    }
    let invalid_utf8 = b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"user\":\"\xff\"}";
    assert_eq!(
        raw_request(b.addr(), invalid_utf8).unwrap().text(),
        r#"{"error":"Invalid JSON"}"#
    );
    // Nothing above changed the lock.
    assert_eq!(b.call("GET", "/lock", None).1["user"], "owner");
}

#[test]
fn oversized_bodies_are_refused_before_they_are_read() {
    let b = start("oversized", &[]);
    // Announce 10 MB and send none of it: the 413 must come anyway.
    let mut stream = TcpStream::connect(b.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: 10485760\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut stream).unwrap();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (413, r#"{"error":"Request body too large"}"#)
    );

    // A client that sends the whole 10 MB still reads the 413, not a reset.
    let big = vec![b'x'; 10 * 1024 * 1024];
    let mut stream = TcpStream::connect(b.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST /unlock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .unwrap();
    let _ = stream.write_all(&big);
    assert_eq!(read_reply(&mut stream).unwrap().status, 413);

    // Chunked bodies are counted as they arrive.
    let mut stream = TcpStream::connect(b.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b' '; 40 * 1024];
    for _ in 0..2 {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    assert_eq!(read_reply(&mut stream).unwrap().status, 413);

    // Exactly at the limit is fine (and is whitespace, so `{}`).
    let body = format!("{{\"user\":\"edge\"}}{}", " ".repeat(64 * 1024 - 15));
    assert_eq!(body.len(), 64 * 1024);
    assert_eq!(request(b.addr(), "POST", "/lock", Some(&body)).status, 200);
}

#[test]
fn a_small_chunked_body_is_accepted() {
    let b = start("chunked", &[]);
    let req = b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{\"use\r\n9\r\nr\":\"ann\"}\r\n0\r\n\r\n";
    let reply = raw_request(b.addr(), req).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(b.call("GET", "/lock", None).1["user"], "ann");
}

#[test]
fn malformed_requests_get_400_and_the_daemon_stays_up() {
    let b = start("garbage", &[]);
    let garbage: &[&[u8]] = &[
        b"HELLO\r\n\r\n",
        b"GET /lock HTTP/9.9\r\n\r\n",
        b"GET /lock HTTP/1.1\r\nHost: lagerd\r\nno colon here\r\n\r\n",
        b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: banana\r\n\r\n",
        b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ];
    for bytes in garbage {
        let reply = raw_request(b.addr(), bytes).unwrap();
        assert_eq!(
            reply.status,
            400,
            "{:?} -> {}",
            String::from_utf8_lossy(bytes),
            reply.text()
        );
        assert!(
            reply.text().starts_with(r#"{"error":"Bad request: "#),
            "{}",
            reply.text()
        );
    }
    let huge_head = format!(
        "GET /lock HTTP/1.1\r\nHost: lagerd\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(
        raw_request(b.addr(), huge_head.as_bytes()).unwrap().status,
        431
    );
    // Clients that connect and vanish, or send half a request and vanish.
    for partial in [
        &b""[..],
        b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: 50\r\n\r\n{\"us",
    ] {
        let mut stream = TcpStream::connect(b.addr()).unwrap();
        stream.write_all(partial).unwrap();
    }
    assert_eq!(
        b.call("GET", "/lock", None),
        (200, json!({"locked": false}))
    );
}

#[test]
fn slow_clients_are_cut_off() {
    let b = start("slow", &["--head-timeout-ms", "300"]);
    let mut stream = TcpStream::connect(b.addr()).unwrap();
    stream
        .write_all(b"GET /lock HTTP/1.1\r\nHost: slow")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let reply = read_reply(&mut stream).unwrap();
    assert_eq!(reply.status, 408);
    assert!(started.elapsed() < Duration::from_secs(3));
    // Meanwhile everyone else is served.
    assert_eq!(b.call("GET", "/lock", None).0, 200);

    // A body that stops arriving is dropped too, without an answer to wait on.
    let mut stream = TcpStream::connect(b.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: 100\r\n\r\n{\"user\"")
        .unwrap();
    let mut rest = Vec::new();
    let started = Instant::now();
    let _ = stream.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "connection closed by the daemon"
    );
    assert_eq!(
        b.call("GET", "/lock", None),
        (200, json!({"locked": false}))
    );
}

#[test]
fn a_thousand_idle_connections_do_not_block_a_lock_request() {
    let b = start("idle", &[]);
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(b.addr()).unwrap())
        .collect();
    // Half of them even started a keep-alive conversation and went quiet.
    for stream in idle.iter().step_by(2) {
        let mut s = stream;
        s.write_all(b"GET /lock HTTP/1.1\r\nHost: lagerd\r\n\r\n")
            .unwrap();
    }
    let started = Instant::now();
    let (status, got) = b.call("POST", "/lock", Some(r#"{"user":"busy-bench"}"#));
    assert_eq!((status, got["user"].as_str()), (200, Some("busy-bench")));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[test]
fn over_the_connection_cap_clients_get_a_clear_503() {
    let b = start("cap", &["--max-connections", "8"]);
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(b.addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let reply = raw_request(b.addr(), b"GET /lock HTTP/1.1\r\nHost: lagerd\r\n\r\n").unwrap();
    assert_eq!(reply.status, 503);
    assert!(
        reply
            .text()
            .contains("Too many open connections to this box (limit 8)"),
        "{}",
        reply.text()
    );
    drop(held);
    assert!(lager_testsupport::wait_until(
        Duration::from_secs(5),
        || {
            raw_request(
                b.addr(),
                b"GET /lock HTTP/1.1\r\nHost: lagerd\r\nConnection: close\r\n\r\n",
            )
            .is_ok_and(|r| r.status == 200)
        }
    ));
}

/// Thousands of randomly corrupted requests (seeded, so a failure replays):
/// every one is answered or closed, the daemon never dies, and the lock it
/// held before is still there, untouched.
#[test]
fn mutated_requests_never_take_the_daemon_down() {
    let mut b = start("mutate", &["--head-timeout-ms", "200"]);
    b.call(
        "POST",
        "/lock",
        Some(r#"{"user":"keeper","holder_type":"user"}"#),
    );
    let seeds: &[&[u8]] = &[
        b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: 31\r\n\r\n{\"user\":\"x\",\"wait_seconds\":0}",
        b"POST /unlock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: 29\r\n\r\n{\"user\":\"x\",\"force\":false}",
        b"POST /lock/heartbeat HTTP/1.1\r\nHost: lagerd\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"u\"\r\n0\r\n\r\n",
        b"GET /lock?x=%zz HTTP/1.1\r\nHost: lagerd\r\nConnection: keep-alive\r\n\r\n",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut bytes = seeds[(next() % seeds.len() as u64) as usize].to_vec();
        for _ in 0..(next() % 4 + 1) {
            if bytes.is_empty() {
                break;
            }
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 4 {
                0 => bytes[at] = next() as u8,
                1 => bytes.insert(at, next() as u8),
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        let Ok(mut stream) = TcpStream::connect(b.addr()) else {
            panic!("lagerd stopped accepting")
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
    assert!(b.daemon_alive(), "lagerd died on mutated input");
    let (status, got) = b.call("GET", "/lock", None);
    assert_eq!((status, got["user"].as_str()), (200, Some("keeper")));
}

/// Issue 12 defect 1: one unauthenticated GET with a huge interval
/// panicked in `Duration::from_secs_f64` and aborted lagerd.
#[test]
fn issue12_a_monitor_interval_out_of_range_is_refused_and_lagerd_lives() {
    let mut b = start(
        "monitor-interval",
        &["--sim", "--health-interval-secs", "0"],
    );
    for interval in ["1e20", "inf", "3601", "1e308"] {
        let (status, body) = b.call(
            "GET",
            &format!("/supply/monitor?netname=supply1&interval={interval}"),
            None,
        );
        assert_eq!(status, 400, "{interval}: {body}");
        assert_eq!(
            body["error"].as_str(),
            Some(
                format!(
                    "interval {interval} is out of range: use a number of seconds from 0.1 to 3600"
                )
                .as_str()
            )
        );
    }
    assert!(b.daemon_alive(), "lagerd survived every request");
    assert_eq!(b.call("GET", "/health", None).0, 200);
}

/// Issue 12 defect 1: a flag (or `lagerd.conf`, which holds flags) whose
/// number would overflow a deadline later is refused at start, exit 2,
/// naming the flag and the range.
#[test]
fn issue12_numeric_flags_out_of_range_are_startup_errors() {
    let dir = lager_testsupport::TempDir::new("flag-ranges");
    let huge = u64::MAX.to_string();
    for (flag, value, range) in [
        (
            "--instrument-timeout-ms",
            huge.as_str(),
            "milliseconds from 1 to 600000",
        ),
        ("--head-timeout-ms", "0", "milliseconds from 1 to 600000"),
        (
            "--health-interval-secs",
            huge.as_str(),
            "seconds from 0 to 86400",
        ),
        ("--max-connections", "0", "connections from 1 to 65536"),
        ("--max-jobs", "0", "jobs from 1 to 1024"),
    ] {
        let mut child = std::process::Command::new(crate::lagerd())
            .args(["--listen", "127.0.0.1:0", flag, value, "--state-dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let exited = lager_testsupport::wait_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid {flag} {value}: use a number of {range}")),
            "{stderr}"
        );
    }
}
