//! `GET /metrics` (fleet.md §1, issue 16): what a scrape says after the
//! test did things a user would do, read by the Prometheus project's own
//! parsers (`promtool check metrics` and `prometheus_client`), never only
//! by ours. `scripts/test.sh` installs both; with `LAGER_REQUIRE_PROMETHEUS`
//! set (as there and in CI) a missing one fails the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use lager_testsupport::{raw_request, request, wait_until, Daemon, Reply, TempDir};
use serde_json::{json, Value};

use crate::lagerd;
use crate::runner::multipart;

/// Sample key `name{a="x",b="y"}` (labels sorted) → value.
type Samples = BTreeMap<String, f64>;

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<_> = labels.to_vec();
    labels.sort();
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn required() -> bool {
    std::env::var_os("LAGER_REQUIRE_PROMETHEUS").is_some()
}

/// `promtool check metrics` on `text`: its complaints, if any. `None`
/// when promtool is not installed (and not required).
fn promtool(text: &str) -> Option<String> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if required() => panic!("promtool is required (LAGER_REQUIRE_PROMETHEUS): {e}"),
        Err(e) => {
            eprintln!("SKIPPED promtool check: {e}; install Debian's prometheus package");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() {
        said
    } else {
        format!("promtool failed ({}): {said}", out.status)
    })
}

/// Every sample as `prometheus_client` parses it; `None` when the venv
/// `scripts/test.sh` makes is missing (and not required).
fn official_samples(text: &str) -> Option<Samples> {
    let python = std::env::var_os("LAGER_PROM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/fleet-venv/bin/python"));
    if !python.exists() {
        assert!(
            !required(),
            "{} is missing: run scripts/test.sh, which makes the venv",
            python.display()
        );
        eprintln!(
            "SKIPPED prometheus_client parse: no {}; scripts/test.sh makes it",
            python.display()
        );
        return None;
    }
    let mut child = Command::new(&python)
        .arg(workspace().join("tests/fleet/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut samples = Samples::new();
    for sample in parsed {
        let labels: Vec<(String, String)> = sample["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let value = match &sample["value"] {
            Value::String(s) if s == "inf" => f64::INFINITY,
            other => other.as_f64().unwrap(),
        };
        samples.insert(key(sample["name"].as_str().unwrap(), &labels), value);
    }
    Some(samples)
}

/// Our own reading of the text, label values unescaped, to compare with
/// the official parser's and to check values when it is not installed.
fn own_samples(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            other => other.parse().unwrap(),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
        };
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        samples.insert(key(name, &labels), value);
    }
    samples
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => {}
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.push((name, value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

fn scrape(addr: std::net::SocketAddr) -> (Reply, String) {
    let reply = request(addr, "GET", "/metrics", None);
    let text = reply.text();
    (reply, text)
}

fn post(addr: std::net::SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let reply = request(addr, "POST", path, Some(&body.to_string()));
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
    )
}

#[test]
fn issue16_a_scrape_counts_what_happened_in_the_official_parsers() {
    let dir = TempDir::new("metrics");
    let daemon = Daemon::start_with_env(
        &lagerd(),
        &dir.path().join("state"),
        &["127.0.0.1:0"],
        &[
            "--sim",
            "--instrument-timeout-ms",
            "300",
            "--health-interval-secs",
            "1",
        ],
        &[("LAGERD_RUN_DIR", dir.path().join("runs").to_str().unwrap())],
    );
    let addr = daemon.addr();
    let status: Value =
        serde_json::from_slice(&request(addr, "GET", "/status", None).body).unwrap();
    let control = status["capabilities"]["simulator"]["control"]
        .as_str()
        .unwrap()
        .to_string();
    let rigol = status["capabilities"]["rigol_simulator"]["address"]
        .as_str()
        .unwrap()
        .to_string();

    // A net whose name needs escaping in a label value.
    let odd = "odd\"net\\x";
    let (code, reply) = post(
        addr,
        "/nets",
        &json!({"action": "add", "net": {"name": odd, "role": "power-supply",
                "instrument": "Rigol_DP832", "address": rigol}}),
    );
    assert_eq!(code, 200, "{reply}");
    let (code, _) = post(
        addr,
        "/supply/command",
        &json!({"netname": odd, "action": "voltage", "params": {"value": 1.5}}),
    );
    assert_eq!(code, 200);

    // A lock by a CI holder, and somebody else refused.
    let ci = "ci:github:lager/lager#999-2/integration@bench-3:42";
    let (code, _) = post(
        addr,
        "/lock",
        &json!({"user": ci, "holder_type": "ci", "ttl_seconds": 600}),
    );
    assert_eq!(code, 200);
    let (code, _) = post(addr, "/lock", &json!({"user": "alice"}));
    assert_eq!(code, 409);

    // A job that exits 3.
    let (content_type, body) = multipart(&[("script", b"import sys\nsys.exit(3)\n")]);
    let mut head = format!(
        "POST /python HTTP/1.1\r\nHost: lagerd\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body);
    let run = raw_request(addr, &head).unwrap();
    assert!(run.text().ends_with("- 1 3"), "{}", run.text());

    // An instrument fault: the simulated Keithley stops answering.
    let sim = |line: &str| {
        let mut stream = TcpStream::connect(&control).unwrap();
        writeln!(stream, "{line}").unwrap();
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).unwrap();
    };
    let supply = json!({"netname": "supply1", "action": "voltage", "params": {"value": 2.0}});
    assert_eq!(post(addr, "/supply/command", &supply).0, 200);
    sim("mute");
    assert_eq!(post(addr, "/supply/command", &supply).0, 502);
    sim("unmute");

    // A path nobody routes, which must not become a label.
    assert_eq!(request(addr, "GET", "/no/such/page", None).status, 404);

    // Somebody queued behind the CI job while we scrape.
    let mut waiter = TcpStream::connect(addr).unwrap();
    let wait_body = json!({"user": "bob", "wait_seconds": 60}).to_string();
    write!(
        waiter,
        "POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: {}\r\n\r\n{wait_body}",
        wait_body.len()
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        own_samples(&scrape(addr).1)["lagerd_lock_queue_length"] == 1.0
    }));
    // The background health check has classified the nets.
    assert!(wait_until(Duration::from_secs(10), || {
        scrape(addr).1.contains("lagerd_net_health{net=\"supply1\"")
    }));
    // The simulated device's boot banner, captured by its console.
    assert!(wait_until(Duration::from_secs(10), || {
        scrape(addr)
            .1
            .contains("lagerd_uart_bytes_total{net=\"console1\"}")
    }));

    let (reply, text) = scrape(addr);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    if let Some(complaints) = promtool(&text) {
        assert!(
            complaints.trim().is_empty(),
            "promtool check metrics: {complaints}\n{text}"
        );
    }
    let ours = own_samples(&text);
    if let Some(official) = official_samples(&text) {
        assert_eq!(
            official.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "prometheus_client and the test read different series"
        );
        // serde_json reads floats fast rather than correctly rounded, so
        // the JSON hop may move a value by an ulp; anything more is a bug.
        for (series, value) in &official {
            let close = ours[series] == *value
                || (ours[series] - value).abs() <= 1e-12 * value.abs().max(1.0);
            assert!(
                close,
                "{series}: ours {} vs prometheus_client {value}",
                ours[series]
            );
        }
    }

    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        *ours
            .get(&key(name, labels))
            .unwrap_or_else(|| panic!("no {} in:\n{text}", key(name, labels)))
    };
    assert_eq!(
        value("lagerd_build_info", &[("version", common::VERSION)]),
        1.0
    );
    assert_eq!(value("lagerd_lock_held", &[("holder_type", "ci")]), 1.0);
    for other in ["user", "ephemeral", "admin"] {
        assert_eq!(value("lagerd_lock_held", &[("holder_type", other)]), 0.0);
    }
    assert_eq!(value("lagerd_lock_grants_total", &[]), 1.0);
    assert_eq!(value("lagerd_lock_refusals_total", &[]), 1.0);
    assert_eq!(value("lagerd_lock_queue_length", &[]), 1.0);
    assert!(value("lagerd_lock_held_seconds", &[]) < 600.0);
    assert_eq!(
        value(
            "lagerd_http_requests_total",
            &[("route", "/lock"), ("code", "409")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "lagerd_http_requests_total",
            &[("route", "other"), ("code", "404")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "lagerd_http_request_duration_seconds_count",
            &[("route", "/python")]
        ),
        1.0
    );
    assert!(
        value("lagerd_http_connections", &[]) >= 2.0,
        "scrape + waiter"
    );
    assert_eq!(
        value("lagerd_jobs_total", &[("outcome", "exit_nonzero")]),
        1.0
    );
    assert_eq!(value("lagerd_jobs_total", &[("outcome", "exit0")]), 0.0);
    assert_eq!(value("lagerd_jobs_running", &[]), 0.0);
    assert_eq!(
        value(
            "lagerd_instrument_commands_total",
            &[("net", "supply1"), ("outcome", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "lagerd_instrument_commands_total",
            &[("net", "supply1"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "lagerd_instrument_commands_total",
            &[("net", odd), ("outcome", "ok")]
        ),
        1.0,
        "label values are escaped and read back exactly"
    );
    assert!(ours
        .keys()
        .any(|k| k.starts_with("lagerd_instrument_session_open{")));
    assert!(value("lagerd_uart_bytes_total", &[("net", "console1")]) > 100.0);
    assert!(value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(value("process_open_fds", &[]) > 3.0);
    assert!(value("process_start_time_seconds", &[]) > 1.6e9);
    assert!(
        value("lagerd_start_time_seconds", &[]) >= value("process_start_time_seconds", &[]) - 1.0
    );
    for absent in ["/no/such", "alice", "bob", "github", "lager/lager"] {
        assert!(!text.contains(absent), "{absent:?} leaked into /metrics");
    }
    drop(waiter);
}

/// Scraping never waits for the lock file's flock: another process that
/// holds it (an operator's tool, a wedged writer) cannot stall Prometheus.
#[test]
fn issue16_a_scrape_never_takes_the_lock_files_flock() {
    let dir = TempDir::new("metrics-flock");
    let daemon = Daemon::start(&lagerd(), dir.path(), &[]);
    let addr = daemon.addr();
    assert_eq!(
        request(addr, "POST", "/lock", Some(r#"{"user":"carol"}"#)).status,
        200
    );
    let flock = std::fs::File::open(dir.path().join("lock.json.flock")).unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(unsafe { libc::flock(flock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let started = std::time::Instant::now();
    let (reply, text) = scrape(addr);
    assert_eq!(reply.status, 200);
    assert!(
        text.contains("lagerd_lock_held{holder_type=\"user\"} 1"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a scrape waited {:?} behind the flock",
        started.elapsed()
    );
    drop(flock);
}

#[test]
fn issue16_metrics_token_guards_only_the_scrape() {
    let dir = TempDir::new("metrics-token");
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "scrape-s3cret\n").unwrap();
    let daemon = Daemon::start(
        &lagerd(),
        &dir.path().join("state"),
        &["--metrics-token", token_file.to_str().unwrap()],
    );
    let addr = daemon.addr();
    let refused = request(addr, "GET", "/metrics", None);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    let wrong = raw_request(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: lagerd\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let right = raw_request(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: lagerd\r\nAuthorization: Bearer scrape-s3cret\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(right.status, 200);
    assert!(right.text().contains("lagerd_build_info"));
    assert_eq!(request(addr, "GET", "/lock", None).status, 200);
    assert_eq!(request(addr, "GET", "/", None).status, 200);
}

/// The example scrape config and alert rules in `image/prometheus/` are
/// valid, and each alert fires on the series lagerd exports (promtool's
/// own rule unit tests, `lager-alerts.test.yml`).
#[test]
fn issue16_example_prometheus_config_and_alerts_hold() {
    let dir = workspace().join("image/prometheus");
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "lager-alerts.yml"],
        &["test", "rules", "lager-alerts.test.yml"],
    ] {
        let out = match Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
        {
            Ok(out) => out,
            Err(e) if !required() => {
                eprintln!("SKIPPED promtool {args:?}: {e}");
                return;
            }
            Err(e) => panic!("promtool is required (LAGER_REQUIRE_PROMETHEUS): {e}"),
        };
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
