//! Token mode (locking.md A.9a, issue 12 defect 4): every route that changes
//! state or touches hardware answers 401 without the token, and nothing
//! changes. The routes come from lagerd's own table (`lagerd::http::ROUTES`),
//! so a route added there is walked here without a line of test code.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use lager_testsupport::{raw_request, request, Daemon, TempDir};
use lagerd::http::{Effect, Route, ROUTES};
use serde_json::{json, Value};

use crate::lagerd;

const TOKEN: &str = "s3cret-token";

/// Status and headers of one request; a streamed body is not waited for.
fn head_of(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reader = BufReader::new(stream);
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        text.push_str(&line);
    }
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: no status line in {text:?}"));
    (status, text.to_ascii_lowercase())
}

/// A request to `route` that would change something if it were let in:
/// (query string, extra headers, body). Routes without a sample get `{}`,
/// which token mode must refuse before reading it anyway.
fn sample(route: &Route, work: &Path) -> (String, String, Vec<u8>) {
    let json = |value: Value| (String::new(), String::new(), value.to_string().into_bytes());
    match route.path {
        "/lock" | "/lock/heartbeat" => json(json!({"user": "mallory"})),
        "/unlock" => json(json!({"user": "mallory", "force": true})),
        "/python" => {
            let marker = work.join("script-ran");
            let script = format!(
                "open({:?}, 'w').write('ran')\n",
                marker.display().to_string()
            );
            let boundary = "tokentestboundary";
            let mut body = Vec::new();
            for (name, data) in [("detach", "1"), ("script", script.as_str())] {
                write!(
                    body,
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n{data}\r\n"
                )
                .unwrap();
            }
            write!(body, "--{boundary}--\r\n").unwrap();
            (
                String::new(),
                format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
                body,
            )
        }
        // One id, not null: a kill of every job reaches other tests' scripts.
        "/python/kill" => {
            json(json!({"lager_process_id": "6f1c7f3a-1b2c-4d5e-8f90-0123456789ab", "signal": 9}))
        }
        "/python/continue" | "/python/attach" | "/python/breakpoint" => {
            json(json!({"lager_process_id": "6f1c7f3a-1b2c-4d5e-8f90-0123456789ab"}))
        }
        "/nets" => json(json!({"action": "add", "net": {
            "name": "intruder", "role": "power-supply", "instrument": "Keithley_2281S",
            "address": "TCPIP0::127.0.0.1::1::SOCKET"}})),
        "/supply/command" => {
            json(json!({"netname": "supply1", "action": "voltage", "params": {"value": 3}}))
        }
        "/battery/command" => {
            json(json!({"netname": "battery1", "action": "set_soc", "params": {"value": 50}}))
        }
        "/supply/monitor" => ("netname=supply1".into(), String::new(), Vec::new()),
        "/battery/monitor" => ("netname=battery1".into(), String::new(), Vec::new()),
        _ => json(json!({})),
    }
}

/// What a bystander can see of the box's state and the instrument's.
fn snapshot(addr: SocketAddr, sim: &dyn Fn(&str) -> String, work: &Path) -> Value {
    let get = |path: &str| -> Value {
        serde_json::from_slice(&request(addr, "GET", path, None).body).unwrap()
    };
    let runs: Vec<String> = std::fs::read_dir(work.join("runs"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "lock": get("/lock"),
        "nets": get("/nets/list"),
        "sessions": get("/cache/stats"),
        "instrument_connections": sim("connections?"),
        "instrument_log": sim("log?"),
        "runs": runs,
        "script_ran": work.join("script-ran").exists(),
    })
}

#[test]
fn issue12_every_route_that_changes_state_or_touches_hardware_needs_the_token() {
    let dir = TempDir::new("route-tokens");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("runs")).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let daemon = Daemon::start_with_env(
        &lagerd(),
        &dir.path().join("state"),
        &["127.0.0.1:0"],
        &[
            "--sim",
            "--health-interval-secs",
            "0",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[("LAGERD_RUN_DIR", work.join("runs").to_str().unwrap())],
    );
    let addr = daemon.addr();
    let status: Value =
        serde_json::from_slice(&request(addr, "GET", "/status", None).body).unwrap();
    let control = status["capabilities"]["simulator"]["control"]
        .as_str()
        .unwrap()
        .to_string();
    let sim_address = status["capabilities"]["simulator"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let sim = move |line: &str| {
        let mut stream = TcpStream::connect(&control).unwrap();
        writeln!(stream, "{line}").unwrap();
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).unwrap();
        reply.trim().to_string()
    };
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    // The box is held, so a refused unlock or heartbeat would show.
    let (locked, _) = head_of(addr, "POST", "/lock", &bearer, br#"{"user":"owner"}"#);
    assert_eq!(locked, 200);
    let before = snapshot(addr, &sim, &work);

    let mut guarded = 0;
    for route in ROUTES {
        let (query, headers, body) = sample(route, &work);
        let target = |query: &str| {
            if query.is_empty() {
                route.path.to_string()
            } else {
                format!("{}?{query}", route.path)
            }
        };
        if route.effect == Effect::Probe {
            // Any address but a saved net's opens an instrument: guarded.
            let probe = target("address=TCPIP0::127.0.0.1::9::SOCKET");
            let (status, head) = head_of(addr, route.method, &probe, "", b"");
            assert_eq!(status, 401, "{} {probe}", route.method);
            assert!(head.contains("www-authenticate: bearer"), "{head}");
            guarded += 1;
            continue;
        }
        let target = target(&query);
        if !route.needs_token() {
            let (status, _) = head_of(addr, route.method, &target, &headers, &body);
            assert_ne!(status, 401, "{} {target} is a read", route.method);
            continue;
        }
        guarded += 1;
        for credentials in [
            "",
            "Authorization: Bearer wrong\r\n",
            "Authorization: s3cret-token\r\n",
        ] {
            let (status, head) = head_of(
                addr,
                route.method,
                &target,
                &format!("{headers}{credentials}"),
                &body,
            );
            assert_eq!(
                status, 401,
                "{} {target} with {credentials:?} was let in",
                route.method
            );
            assert!(head.contains("www-authenticate: bearer"), "{head}");
        }
    }
    assert!(
        guarded >= 16,
        "the table lost its guarded routes: {guarded}"
    );
    assert_eq!(
        snapshot(addr, &sim, &work),
        before,
        "a refused request changed something"
    );

    // A saved net's own address may be probed without the token.
    let probe = format!("/diagnose/visa?address={sim_address}");
    let (status, _) = head_of(addr, "GET", &probe, "", b"");
    assert_eq!(status, 200, "{probe}");

    // With the token every guarded route is let in (the samples are real);
    // the script goes last, so the sample kill cannot stop it.
    let mut with_token: Vec<&Route> = ROUTES.iter().filter(|r| r.needs_token()).collect();
    with_token.sort_by_key(|r| r.path == "/python");
    for route in with_token {
        let (query, headers, body) = sample(route, &work);
        let target = if query.is_empty() {
            route.path.to_string()
        } else {
            format!("{}?{query}", route.path)
        };
        let (status, _) = head_of(
            addr,
            route.method,
            &target,
            &format!("{headers}{bearer}"),
            &body,
        );
        assert_ne!(status, 401, "{} {target} refused the token", route.method);
    }
    assert!(
        lager_testsupport::wait_until(Duration::from_secs(10), || work.join("script-ran").exists()),
        "the authorized script ran"
    );
}

/// A.9a's refusal as an old client sees it (the exact body and header),
/// and the token file's own rules: surrounding white space is not part of
/// the token, and an empty file stops lagerd from starting. Which routes
/// need the token is the test above, over the whole route table.
#[test]
fn the_token_file_is_read_trimmed_and_a_refusal_is_the_a9a_401() {
    let dir = TempDir::new("token");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "  s3cret\n").unwrap();
    let state = dir.path().join("state");
    let token_arg = token_file.to_str().unwrap();
    let daemon = Daemon::start(&lagerd(), &state, &["--token-file", token_arg]);
    let addr = daemon.addr();

    let refused = request(addr, "POST", "/lock", Some(r#"{"user":"a"}"#));
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (401, r#"{"error":"Authorization required"}"#)
    );
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    let wrong = format!("POST /lock HTTP/1.1\r\nHost: lagerd\r\nAuthorization: Bearer nope\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{}", r#"{"user":"a"}"#);
    assert_eq!(raw_request(addr, wrong.as_bytes()).unwrap().status, 401);
    // The file's white space is not part of the token.
    let right = wrong.replace("Bearer nope", "Bearer s3cret");
    assert_eq!(raw_request(addr, right.as_bytes()).unwrap().status, 200);
    assert_eq!(
        request(addr, "GET", "/lock", None).status,
        200,
        "GETs stay open"
    );
    assert_eq!(request(addr, "GET", "/status", None).status, 200);

    // An empty token file is a configuration error: exit 2, naming the file.
    std::fs::write(&token_file, "\n").unwrap();
    let out = std::process::Command::new(lagerd())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            token_arg,
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(token_arg) && stderr.contains("empty"),
        "{stderr}"
    );
}
