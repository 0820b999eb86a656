//! Crash safety: `kill -9` at arbitrary moments while clients lock and
//! unlock. The state file always parses, and every acknowledged change
//! survives the restart.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lager_testsupport::{read_reply, Daemon, TempDir};
use serde_json::Value;

use crate::lagerd;

/// What the writer knows: the last acknowledged holder, and the change it
/// has sent but not seen answered (which may or may not have landed).
#[derive(Clone, Debug, Default)]
struct Known {
    acked: Option<String>,
    in_flight: Option<Option<String>>,
}

fn send(addr: std::net::SocketAddr, path: &str, body: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: lagerd\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    read_reply(&mut stream).ok().map(|r| r.status)
}

fn holder_on_disk(dir: &std::path::Path) -> Option<String> {
    match std::fs::read(dir.join("lock.json")) {
        Err(_) => None,
        Ok(bytes) => {
            let record: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "lock.json does not parse after kill -9 ({e}): {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            record["user"].as_str().map(str::to_string)
        }
    }
}

#[test]
fn kill_9_in_a_loop_never_loses_an_acknowledged_lock() {
    let dir = TempDir::new("crash");
    let mut acknowledged_changes = 0;
    for round in 0..25 {
        let mut daemon = Daemon::start(&lagerd(), dir.path(), &[]);
        let addr = daemon.addr();
        // Whatever survived the last crash is what the restarted box serves.
        let served = lager_testsupport::request(addr, "GET", "/lock", None);
        let served: Value = serde_json::from_slice(&served.body).unwrap();
        assert_eq!(
            served["user"].as_str().map(str::to_string),
            holder_on_disk(dir.path())
        );
        if let Some(user) = served["user"].as_str() {
            send(
                addr,
                "/unlock",
                &format!(r#"{{"user":"{user}","force":true}}"#),
            );
        }

        let known = Arc::new(Mutex::new(Known::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (known, stop) = (known.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acks = 0;
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let user = format!("round{round}-user{i}");
                    known.lock().unwrap().in_flight = Some(Some(user.clone()));
                    let body =
                        format!(r#"{{"user":"{user}","holder_type":"ci","ttl_seconds":600}}"#);
                    if send(addr, "/lock", &body) != Some(200) {
                        break;
                    }
                    *known.lock().unwrap() = Known {
                        acked: Some(user.clone()),
                        in_flight: None,
                    };
                    known.lock().unwrap().in_flight = Some(None);
                    if send(addr, "/unlock", &format!(r#"{{"user":"{user}"}}"#)) != Some(200) {
                        break;
                    }
                    *known.lock().unwrap() = Known {
                        acked: None,
                        in_flight: None,
                    };
                    acks += 2;
                }
                acks
            })
        };
        // Readers add load so the kill lands amid concurrent traffic. They
        // wait for each reply: a flood of bare connects would only fill the
        // accept backlog, and a dropped SYN costs a 1 s retransmit.
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(mut stream) =
                            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                        else {
                            continue;
                        };
                        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                        let request =
                            b"GET /lock HTTP/1.1\r\nHost: lagerd\r\nConnection: close\r\n\r\n";
                        if stream.write_all(request).is_ok() {
                            let _ = read_reply(&mut stream);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + (round * 7) % 60));
        unsafe { libc::kill(daemon.pid(), libc::SIGKILL) };
        let _ = daemon.child.wait();
        stop.store(true, Ordering::SeqCst);
        acknowledged_changes += writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }

        let known = known.lock().unwrap().clone();
        let on_disk = holder_on_disk(dir.path());
        let allowed = match &known.in_flight {
            None => vec![known.acked.clone()],
            Some(next) => vec![known.acked.clone(), next.clone()],
        };
        assert!(
            allowed.contains(&on_disk),
            "round {round}: disk has {on_disk:?}, client knew {known:?}"
        );
    }
    assert!(
        acknowledged_changes > 50,
        "the loop must actually exercise writes ({acknowledged_changes})"
    );
}
