//! Issue 12, defect 2: HTTP framing against the real daemon, where the
//! behaviour is about time and sockets. The grammar's table tests are in
//! `lagerd/src/server/framing.rs`.

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use lager_testsupport::{raw_request, read_reply, read_reply_buffered};
use serde_json::json;

use crate::start;

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// 256 chunked bodies whose trailer section never ends (a line every
/// 300 ms) used to hold every worker: `/health` went unanswered. Now they
/// wait in the poller, `/health` is answered at once, and each of them gets
/// 408 at its body deadline although it never stops sending.
#[test]
fn issue12_never_ending_trailers_hold_no_worker() {
    let b = start("trailers", &["--head-timeout-ms", "2000"]);
    let mut drippers: Vec<TcpStream> = (0..256)
        .map(|_| {
            let mut stream = connect(b.addr());
            stream
                .write_all(b"POST /lock HTTP/1.1\r\nHost: lagerd\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n")
                .unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    let mut answered = vec![None; drippers.len()];
    let mut health_checked = 0;
    while started.elapsed() < Duration::from_secs(6) && answered.iter().any(Option::is_none) {
        for stream in &mut drippers {
            let _ = stream.write_all(b"X: 1\r\n");
        }
        if health_checked < 3 {
            let asked = Instant::now();
            let reply = raw_request(
                b.addr(),
                b"GET /health HTTP/1.1\r\nHost: lagerd\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            assert_eq!(reply.status, 200);
            assert!(
                asked.elapsed() < Duration::from_millis(1500),
                "/health took {:?} behind 256 trailer drippers",
                asked.elapsed()
            );
            health_checked += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
        for (stream, answer) in drippers.iter_mut().zip(&mut answered) {
            if answer.is_none() && started.elapsed() > Duration::from_millis(1500) {
                stream
                    .set_read_timeout(Some(Duration::from_millis(1)))
                    .unwrap();
                if let Ok(reply) = read_reply(stream) {
                    *answer = Some(reply.status);
                }
            }
        }
    }
    assert_eq!(health_checked, 3);
    let statuses: Vec<_> = answered.iter().flatten().collect();
    assert_eq!(
        statuses.len(),
        256,
        "answered by the deadline: {}",
        statuses.len()
    );
    assert!(statuses.iter().all(|s| **s == 408), "{statuses:?}");
    assert_eq!(
        b.call("GET", "/lock", None),
        (200, json!({"locked": false}))
    );
}

/// What the grammar refuses, over the wire, and the absolute form it takes.
#[test]
fn issue12_strict_grammar_on_the_wire() {
    let b = start("grammar", &[]);
    let refused: &[&[u8]] = &[
        b"POST /lock HTTP/1.1\r\nHost: l\r\nContent-Length: +14\r\n\r\n{\"user\":\"x\"}",
        b"POST /lock HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: chunked\r\n\r\n+d\r\n{\"user\":\"eve\"}\r\n0\r\n\r\n",
        b"POST /lock HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
        b"GET /lock HTTP/1.1\r\nHost: l\r\nX-A: 1\nX-B: 2\r\n\r\n",
        b"GET /lock HTTP/1.1\r\nHost: l\r\nX-A: a\0b\r\n\r\n",
        b"GET /lock HTTP/1.1\r\n\r\n",
        b"GET /lock HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for bytes in refused {
        let reply = raw_request(b.addr(), bytes).unwrap();
        assert_eq!(
            reply.status,
            400,
            "{:?} -> {}",
            String::from_utf8_lossy(bytes),
            reply.text()
        );
    }
    // Nothing above took the lock.
    assert_eq!(b.call("GET", "/lock", None).1, json!({"locked": false}));
    let absolute = format!(
        "POST http://{}/lock?x HTTP/1.1\r\nHost: ignored\r\nConnection: close\r\nContent-Length: 12\r\n\r\n{{\"user\":\"a\"}}",
        b.addr()
    );
    let reply = raw_request(b.addr(), absolute.as_bytes()).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(b.call("GET", "/lock", None).1["user"], "a");
    // HTTP/1.0 without Host is fine.
    let reply = raw_request(b.addr(), b"GET /lock HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(reply.status, 200);
}

/// A client that half-closes after sending is still there: its queued lock
/// request gets the lock when it frees up (it used to get 408 at once).
#[test]
fn issue12_a_half_closed_waiter_gets_its_answer() {
    let b = start("halfclose", &[]);
    b.call("POST", "/lock", Some(r#"{"user":"holder"}"#));
    let body = r#"{"user":"patient","wait_seconds":10}"#;
    let mut stream = connect(b.addr());
    write!(
        stream,
        "POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    b.call("POST", "/unlock", Some(r#"{"user":"holder"}"#));
    let reply = read_reply_buffered(&mut BufReader::new(&mut stream)).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(b.call("GET", "/lock", None).1["user"], "patient");
}

/// A refused client that keeps sending is drained for a bounded time from
/// the refusal, not from its last byte (which let it hold the slot forever).
#[test]
fn issue12_a_refused_client_is_drained_for_a_bounded_time() {
    let b = start("drain", &["--max-connections", "2"]);
    let held = [connect(b.addr()), connect(b.addr())];
    std::thread::sleep(Duration::from_millis(100));
    // Over the connection cap: the poller's 503.
    let (status, drained_for) = refuse_and_keep_sending(b.addr(), b"");
    assert_eq!(status, 503);
    assert!(drained_for < Duration::from_secs(5), "{drained_for:?}");
    drop(held);
    assert!(lager_testsupport::wait_until(
        Duration::from_secs(5),
        || { raw_request(b.addr(), b"GET /lock HTTP/1.0\r\n\r\n").is_ok_and(|r| r.status == 200) }
    ));
    // A bad request: a worker's 400. (Two slots: the probe's connection
    // above may not be closed on the daemon's side yet.)
    let (status, drained_for) = refuse_and_keep_sending(b.addr(), b"GET /lock HTTP/1.1\r\n\r\n");
    assert_eq!(status, 400);
    assert!(drained_for < Duration::from_secs(5), "{drained_for:?}");
}

/// Sends `request`, reads the refusal, then keeps sending 16 bytes every
/// 100 ms until the daemon closes the socket (a write fails); returns the
/// status and how long that took (at most about 8 s).
fn refuse_and_keep_sending(addr: std::net::SocketAddr, request: &[u8]) -> (u16, Duration) {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let started = Instant::now();
    let status = read_reply(&mut stream.try_clone().unwrap()).unwrap().status;
    while started.elapsed() < Duration::from_secs(8) {
        if stream.write_all(&[b'x'; 16]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (status, started.elapsed())
}
