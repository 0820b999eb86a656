//! The lock and info routes as an old client sees them (locking.md A.8–A.9,
//! boxes.md §6), on every listener.

use lager_testsupport::{raw_request, request, Daemon, TempDir};
use serde_json::json;

use crate::{lagerd, start};

#[test]
fn lock_lifecycle_matches_the_status_matrix() {
    let b = start("matrix", &[]);
    assert_eq!(
        b.call("GET", "/lock", None),
        (200, json!({"locked": false}))
    );

    let (status, got) = b.call(
        "POST",
        "/lock",
        Some(r#"{"user":"alice","holder_type":"user","ttl_seconds":null}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(
        (got["user"].as_str(), got["previous_user"].is_null()),
        (Some("alice"), true)
    );
    assert_eq!(got["ttl_seconds"], serde_json::Value::Null);

    let (status, got) = b.call("POST", "/lock", Some(r#"{"user":"bob"}"#));
    assert_eq!(status, 409);
    assert_eq!(got["error"], "Box is locked by alice");
    assert_eq!(got["lock"]["user"], "alice");

    assert_eq!(
        b.call("POST", "/lock/heartbeat", Some(r#"{"user":"bob"}"#))
            .0,
        403
    );
    let (status, got) = b.call("POST", "/lock/heartbeat", Some(r#"{"user":"alice"}"#));
    assert_eq!((status, got.get("previous_user")), (200, None));

    let (status, got) = b.call("POST", "/unlock", Some(r#"{"user":"bob"}"#));
    assert_eq!(
        (status, got["error"].as_str()),
        (403, Some("Box is locked by alice"))
    );
    assert_eq!(
        b.call("POST", "/unlock", Some(r#"{"user":"bob","force":true}"#)),
        (200, json!({"locked": false, "message": "Box unlocked"}))
    );
    assert_eq!(
        b.call("POST", "/unlock", Some(r#"{"user":"bob"}"#)),
        (
            200,
            json!({"locked": false, "message": "Box is already unlocked"})
        )
    );
    assert_eq!(
        b.call("POST", "/lock/heartbeat", Some(r#"{"user":"alice"}"#)),
        (404, json!({"error": "Box is not locked"}))
    );
}

#[test]
fn every_listener_serves_the_same_state() {
    let dir = TempDir::new("two-listeners");
    let daemon =
        Daemon::start_listening(&lagerd(), dir.path(), &["127.0.0.1:0", "127.0.0.1:0"], &[]);
    let (a, b) = (daemon.addrs[0], daemon.addrs[1]);
    assert_ne!(a, b);
    assert_eq!(
        request(a, "POST", "/lock", Some(r#"{"user":"alice"}"#)).status,
        200
    );
    let reply = request(b, "GET", "/lock", None);
    assert!(
        reply.text().contains("\"user\":\"alice\""),
        "{}",
        reply.text()
    );
    assert_eq!(
        request(b, "POST", "/lock", Some(r#"{"user":"bob"}"#)).status,
        409
    );
    assert_eq!(
        request(b, "GET", "/hello", None).text(),
        request(a, "GET", "/hello", None).text()
    );
}

#[test]
fn info_routes_report_the_version() {
    let b = start("info", &["--sim"]);
    let (status, got) = b.call("GET", "/status", None);
    assert_eq!(status, 200);
    assert_eq!(got["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(got["box_version"], got["version"]);
    assert_eq!(got["healthy"], true);
    // --sim serves the simulated Keithley as two nets, and the simulated
    // device's serial console (issue 15).
    assert_eq!(
        got["nets"],
        json!([{"name": "supply1", "type": "power-supply"}, {"name": "battery1", "type": "battery"}, {"name": "console1", "type": "uart"}])
    );
    assert_eq!(got["capabilities"]["sim"], true);
    assert_eq!(
        b.call("GET", "/health", None),
        (
            200,
            json!({"status": "healthy", "service": "lager-python-box", "version": env!("CARGO_PKG_VERSION")})
        )
    );
    assert_eq!(
        b.call("GET", "/hello", None),
        (
            200,
            json!({"message": "Hello from Lager Python Box!", "service": "lager-python-box"})
        )
    );
    let version = request(b.addr(), "GET", "/version", None);
    assert_eq!(version.header("content-type"), Some("text/plain"));
    assert_eq!(
        version.text(),
        format!("lager-python-box {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        b.call("GET", "/cli-version", None),
        (404, json!({"error": "Version file not found"}))
    );

    // Install/update stamps a version (text up to the first `|`) and nets.
    std::fs::write(b.dir.path().join("version"), "0.9.3 | deadbeef\n").unwrap();
    std::fs::write(b.dir.path().join("cli_version.json"), r#"{"cli": "0.9.3"}"#).unwrap();
    std::fs::write(
        b.dir.path().join("saved_nets.json"),
        r#"[{"name":"supply1","role":"power-supply","address":"x"},{"name":"battery1","role":"battery"}]"#,
    )
    .unwrap();
    let (_, got) = b.call("GET", "/status", None);
    assert_eq!(got["version"], "0.9.3");
    // Saved nets replace the simulated ones of their names only.
    assert_eq!(
        got["nets"],
        json!([{"name": "console1", "type": "uart"}, {"name": "supply1", "type": "power-supply"}, {"name": "battery1", "type": "battery"}])
    );
    assert_eq!(
        b.call("GET", "/cli-version", None),
        (200, json!({"cli": "0.9.3"}))
    );
}

#[test]
fn unknown_paths_and_methods_are_json_errors() {
    let b = start("routes", &[]);
    assert_eq!(
        b.call("GET", "/nope", None),
        (404, json!({"error": "Not found"}))
    );
    assert_eq!(
        b.call("DELETE", "/lock", None),
        (405, json!({"error": "Method not allowed"}))
    );
    assert_eq!(
        b.call("POST", "/status", Some("{}")),
        (405, json!({"error": "Method not allowed"}))
    );
    // Query strings do not change the route (`requests` adds none, curl may).
    assert_eq!(
        b.call("GET", "/lock?x=1", None),
        (200, json!({"locked": false}))
    );
}

#[test]
fn http10_clients_and_keep_alive_both_work() {
    let b = start("http10", &[]);
    let reply = raw_request(b.addr(), b"GET /lock HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, r#"{"locked":false}"#)
    );
    assert_eq!(reply.header("connection"), Some("close"));

    // Two pipelined requests on one keep-alive connection, answered in order.
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(b.addr()).unwrap();
    let body = r#"{"user":"kat"}"#;
    write!(
        stream,
        "POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: {}\r\n\r\n{body}GET /lock HTTP/1.1\r\nHost: lagerd\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let first = lager_testsupport::read_reply_buffered(&mut reader).unwrap();
    let second = lager_testsupport::read_reply_buffered(&mut reader).unwrap();
    assert_eq!(
        (first.status, first.header("connection")),
        (200, Some("keep-alive"))
    );
    assert!(second.text().contains("\"user\":\"kat\""));
}

#[test]
fn a_taken_port_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("taken");
    let out = std::process::Command::new(lagerd())
        .args(["--listen", &addr, "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}
