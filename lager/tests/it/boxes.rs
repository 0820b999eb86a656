//! `lager boxes` listing (locking.md B.11), inventory commands
//! (boxes.md §5) and the config file (boxes.md §1–2).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{entry, refused_port, silent_listener, Box_, Cli};

#[test]
fn no_boxes() {
    let cli = Cli::new("list-empty");
    let run = cli.run(&["boxes"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "No boxes found. Add boxes with: lager boxes add --name [NAME] --ip [IP_ADDRESS]\n"
    );
    assert_eq!(cli.run(&["boxes", "list", "--json"]).stdout, "[]\n");
}

#[test]
fn table_shows_locks_unreachable_boxes_and_footer() {
    let daemon = Box_::start();
    let other = Box_::start();
    std::fs::write(
        other.state_dir().join("version"),
        "0.0.1|stamped by a test\n",
    )
    .expect("stamp");
    daemon.lock_as("ci:drone:org/proj#15:5@runner-7");
    let silent = silent_listener();
    let silent_port = silent.local_addr().expect("addr").port();
    let dead_port = refused_port();
    let cli = Cli::new("list-table");
    cli.write_config(&json!({"BOXES": {
        "bench-10": entry(daemon.port()),
        "bench-2": entry(other.port()),
        "dead": entry(dead_port),
        "hung": entry(silent_port),
        "noip": {"ip": ""},
    }}));
    let run = cli.run_with(&["boxes"], &[("LAGER_BOX_TIMEOUT_MS", "700")]);
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let dp = daemon.port();
    // Natural order: bench-2 before bench-10.
    assert!(lines[0].starts_with("name       ip"), "{}", run.stdout);
    assert!(
        lines[0].ends_with("status         locked by"),
        "{}",
        run.stdout
    );
    assert!(lines[1].chars().all(|c| c == '='), "{}", run.stdout);
    let names: Vec<&str> = lines[2..7]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["bench-2", "bench-10", "dead", "hung", "noip"],
        "{}",
        run.stdout
    );
    assert!(
        lines[2].contains("0.0.1") && lines[2].contains("needs update"),
        "{}",
        run.stdout
    );
    assert!(
        lines[3].contains(&format!("127.0.0.1:{dp}"))
            && lines[3].contains("current")
            && lines[3].ends_with("drone org/proj build 15"),
        "{}",
        run.stdout
    );
    assert!(lines[4].contains("unreachable"), "{}", run.stdout);
    assert!(lines[5].contains("timeout"), "{}", run.stdout);
    assert!(lines[6].contains("no IP"), "{}", run.stdout);
    let footer = lines[7..].join("\n");
    assert_eq!(
        footer,
        format!(
            "\nYour CLI: {}\n1 box needs updating\n2 boxes could not be reached",
            env!("CARGO_PKG_VERSION")
        ),
        "{}",
        run.stdout
    );
    // The hung box costs one budget (700 ms), not status + lock timeouts.
    assert!(
        run.elapsed < Duration::from_millis(2500),
        "{:?}",
        run.elapsed
    );
    drop(silent);
}

#[test]
fn json_listing() {
    let daemon = Box_::start();
    daemon.lock_as("alice");
    let dead_port = refused_port();
    let cli = Cli::new("list-json");
    cli.write_config(
        &json!({"BOXES": {"a": entry(daemon.port()), "b": "127.0.0.1", "z": entry(dead_port)}}),
    );
    let run = cli.run_with(
        &["boxes", "list", "--json"],
        &[("LAGER_BOX_TIMEOUT_MS", "500")],
    );
    run.expect_code(0);
    let rows: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["name"], "a");
    assert_eq!(rows[0]["ip"], "127.0.0.1");
    assert_eq!(rows[0]["port"], daemon.port());
    assert_eq!(rows[0]["user"], "pi");
    assert_eq!(rows[0]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(rows[0]["status"], "current");
    assert_eq!(rows[0]["locked_by"], "alice");
    assert_eq!(rows[0]["lock"]["user"], "alice");
    assert_eq!(rows[1]["port"], Value::Null);
    assert_eq!(rows[1]["user"], "lagerdata");
    assert_eq!(rows[2]["status"], "unreachable");
    assert_eq!(rows[2]["version"], Value::Null);
    assert_eq!(rows[2]["lock"], Value::Null);
    assert!(!run.stdout.contains('\u{1b}'));
}

#[test]
fn many_boxes_with_dead_ones_finish_within_one_budget() {
    let daemon = Box_::start();
    let silent = silent_listener();
    let silent_port = silent.local_addr().expect("addr").port();
    let mut boxes = serde_json::Map::new();
    for i in 0..40 {
        boxes.insert(format!("live-{i}"), entry(daemon.port()));
    }
    for i in 0..5 {
        boxes.insert(format!("refused-{i}"), entry(refused_port()));
        boxes.insert(format!("hung-{i}"), entry(silent_port));
    }
    let cli = Cli::new("list-many");
    cli.write_config(&json!({"BOXES": boxes}));
    let run = cli.run_with(&["boxes", "--json"], &[("LAGER_BOX_TIMEOUT_MS", "1000")]);
    run.expect_code(0);
    let rows: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let statuses: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "current").count(), 40);
    assert_eq!(statuses.iter().filter(|s| **s == "unreachable").count(), 5);
    assert_eq!(statuses.iter().filter(|s| **s == "timeout").count(), 5);
    // Target: one per-box timeout + 100 ms; allow for a loaded debug build.
    assert!(
        run.elapsed < Duration::from_millis(1800),
        "{:?}",
        run.elapsed
    );
    drop(silent);
}

#[test]
fn project_files_merge_and_closest_wins() {
    let a = Box_::start();
    let b = Box_::start();
    let cli = Cli::new("list-project");
    cli.write_config(&json!({"BOXES": {"g": entry(a.port()), "shared": "10.0.0.1"}}));
    let project = cli.work_dir().join("proj");
    let deep = project.join("sub");
    std::fs::create_dir_all(&deep).expect("mkdir");
    std::fs::write(
        project.join(".lager"),
        json!({"BOXES": {"shared": "10.0.0.2", "p": "10.0.0.3"}}).to_string(),
    )
    .expect("write");
    std::fs::write(
        deep.join(".lager"),
        json!({"BOXES": {"shared": entry(b.port())}}).to_string(),
    )
    .expect("write");
    let run = cli
        .command(&["boxes", "--json"])
        .current_dir(&deep)
        .env("LAGER_BOX_TIMEOUT_MS", "300")
        .output()
        .expect("run");
    assert!(run.status.success());
    let rows: Value = serde_json::from_slice(&run.stdout).expect("JSON");
    let by_name = |n: &str| {
        rows.as_array()
            .expect("array")
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
    };
    assert_eq!(by_name("shared").expect("shared")["port"], b.port());
    assert_eq!(by_name("p").expect("p")["ip"], "10.0.0.3");
    assert_eq!(by_name("g").expect("g")["status"], "current");

    // Project boxes resolve for commands but cannot be deleted from the CLI.
    let run = cli
        .command(&["boxes", "delete", "--name", "p", "--yes"])
        .current_dir(&deep)
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        format!(
            "Box 'p' is defined in {}; edit that file to remove it.\n",
            project.join(".lager").display()
        )
    );
}

#[test]
fn invalid_config_is_an_error_and_never_overwritten() {
    let cli = Cli::new("config-invalid");
    std::fs::write(cli.config_path(), "{\"BOXES\": ").expect("write");
    for args in [
        vec!["boxes"],
        vec![
            "boxes", "add", "--name", "x", "--ip", "10.0.0.1", "--user", "pi", "--yes",
        ],
        vec!["defaults", "add", "--user", "alice"],
    ] {
        let run = cli.run(&args);
        run.expect_code(1);
        assert!(
            run.stderr.starts_with(&format!(
                "Error: Config file {} is not valid JSON: ",
                cli.config_path().display()
            )),
            "{}",
            run.stderr
        );
        assert_eq!(
            std::fs::read_to_string(cli.config_path()).expect("read"),
            "{\"BOXES\": "
        );
    }
}

#[test]
fn config_file_name_applies_to_reads_and_writes() {
    let mut cli = Cli::new("config-name");
    cli.set("LAGER_CONFIG_FILE_NAME", "alt.json");
    cli.run(&[
        "boxes", "add", "--name", "x", "--ip", "10.0.0.1", "--user", "pi", "--yes",
    ])
    .expect_code(0);
    let alt = cli.dir.path().join("config").join("alt.json");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&alt).expect("alt written")).expect("JSON");
    assert_eq!(written["BOXES"]["x"]["ip"], "10.0.0.1");
    // Created by lager: private, as it may hold tokens.
    let mode = std::fs::metadata(&alt).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!cli.config_path().exists());
    assert!(!cli.dir.path().join("home").join(".lager").exists());
}

#[test]
fn add_replace_and_delete() {
    let cli = Cli::new("add-delete");
    cli.write_config(
        &json!({"DUTS": {"old": "10.0.0.5"}, "LAGER": {"gateway_id": "old"}, "NETS": {"n": 1}}),
    );
    let run = cli.run(&[
        "boxes", "add", "--name", "b1", "--ip", "10.0.0.1", "--user", "pi", "--port", "9100",
        "--yes",
    ]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Added box 'b1' (10.0.0.1)\n");
    let config = cli.read_config();
    assert_eq!(
        config["BOXES"]["b1"],
        json!({"ip": "10.0.0.1", "user": "pi", "port": 9100})
    );
    assert_eq!(
        config["BOXES"]["old"], "10.0.0.5",
        "legacy DUTS migrated to BOXES"
    );
    assert_eq!(config["DEFAULTS"]["gateway_id"], "old");
    assert_eq!(config["NETS"]["n"], 1);
    assert!(config.get("DUTS").is_none() && config.get("LAGER").is_none());
    // An existing file keeps its mode.
    let mode = std::fs::metadata(cli.config_path())
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);

    // Same name: replaced, with a warning. Same address under another name: removed.
    let run = cli.run(&[
        "boxes", "add", "--name", "b1", "--ip", "10.0.0.5", "--user", "pi", "--yes",
    ]);
    run.expect_code(0);
    assert_eq!(
        run.stderr,
        "Box 'b1' already exists (10.0.0.1:9100); it will be replaced.\nBox 'old' already uses 10.0.0.5; it will be removed.\n"
    );
    let config = cli.read_config();
    assert_eq!(
        config["BOXES"],
        json!({"b1": {"ip": "10.0.0.5", "user": "pi"}})
    );

    let run = cli.run(&[
        "boxes",
        "add",
        "--name",
        "x",
        "--ip",
        "not an ip",
        "--user",
        "pi",
        "--yes",
    ]);
    run.expect_code(1);
    assert_eq!(run.stderr, "Invalid IP address or hostname: not an ip\n");
    cli.run(&[
        "boxes",
        "add",
        "--name",
        "h",
        "--ip",
        "bench.local",
        "--user",
        "pi",
        "--yes",
    ])
    .expect_code(0);

    // Without --yes and without a terminal nothing changes.
    let run = cli.run(&[
        "boxes", "add", "--name", "y", "--ip", "10.0.0.9", "--user", "pi",
    ]);
    run.expect_code(1);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert!(cli.read_config()["BOXES"].get("y").is_none());

    cli.run(&["defaults", "add", "--box", "b1"]).expect_code(0);
    let run = cli.run(&["boxes", "delete", "--name", "b1", "--yes"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Deleted box 'b1'\n");
    let config = cli.read_config();
    assert!(config["BOXES"].get("b1").is_none());
    assert!(
        config["DEFAULTS"].get("gateway_id").is_none(),
        "default box removed with it"
    );

    let run = cli.run(&["boxes", "delete", "--name", "b1", "--yes"]);
    run.expect_code(1);
    assert_eq!(run.stderr, "No box named 'b1'.\n");
}

#[test]
fn version_and_help_are_fast_and_need_no_config() {
    let cli = Cli::new("version");
    std::fs::write(cli.config_path(), "garbage").expect("write");
    let run = cli.run(&["--version"]);
    run.expect_code(0);
    assert_eq!(run.stdout, format!("lager {}\n", env!("CARGO_PKG_VERSION")));
    let run = cli.run(&["boxes", "--help"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("LAGER_BOX_TIMEOUT_MS"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_hung_lock_probe_keeps_the_status() {
    let body = format!(
        r#"{{"healthy":true,"version":"{}","nets":[],"capabilities":{{}}}}"#,
        env!("CARGO_PKG_VERSION")
    );
    let port = crate::fake_box(&[("GET /status ", 200, &body)]);
    let cli = Cli::new("list-hung-lock");
    cli.write_config(&json!({"BOXES": {"half": entry(port)}}));
    let run = cli.run_with(&["boxes", "--json"], &[("LAGER_BOX_TIMEOUT_MS", "500")]);
    run.expect_code(0);
    let rows: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(rows[0]["status"], "current");
    assert_eq!(rows[0]["lock"], Value::Null);
    assert!(
        run.elapsed < Duration::from_millis(1500),
        "{:?}",
        run.elapsed
    );
}

#[test]
fn odd_status_answers_map_to_statuses() {
    let cases = [
        (404, r#"{"error":"Not found"}"#, "old box"),
        (500, "{}", "HTTP 500"),
        (200, "<html>", "invalid JSON"),
        (200, r#"{"version":"unknown"}"#, "bad response"),
        (200, r#"{"box_version":"9.0.0"}"#, "newer"),
    ];
    let mut boxes = serde_json::Map::new();
    for (i, (status, body, _)) in cases.iter().enumerate() {
        let port = crate::fake_box(&[
            ("GET /status ", *status, body),
            ("GET /lock ", 200, r#"{"locked":false}"#),
        ]);
        boxes.insert(format!("b{i}"), entry(port));
    }
    let cli = Cli::new("list-odd");
    cli.write_config(&json!({"BOXES": boxes}));
    let run = cli.run_with(&["boxes"], &[("LAGER_BOX_TIMEOUT_MS", "2000")]);
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    for (i, (_, _, want)) in cases.iter().enumerate() {
        assert!(lines[2 + i].ends_with(want), "{want}: {}", run.stdout);
    }
    assert!(
        run.stdout.ends_with(&format!(
            "Your CLI: {}\n1 box newer than your CLI\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn a_box_with_a_stuck_instrument_shows_as_degraded() {
    // The active probe finds a muted instrument; passive checks cannot.
    let daemon = Box_::start_with(&["--sim", "--health-interval-secs", "1", "--health-probe"]);
    let status: Value = serde_json::from_str(
        &lager_testsupport::request(daemon.addr(), "GET", "/status", None).text(),
    )
    .expect("status JSON");
    let control = status["capabilities"]["simulator"]["control"]
        .as_str()
        .expect("simulator control")
        .to_string();
    let cli = Cli::new("list-health");
    cli.write_config(&json!({"BOXES": {"bench": entry(daemon.port())}}));
    // Healthy: no health column at all.
    let healthy = lager_testsupport::wait_until(Duration::from_secs(10), || {
        let run = cli.run(&["boxes", "--json"]);
        let rows: Value = serde_json::from_str(&run.stdout).unwrap_or_default();
        rows[0]["health"]["state"] == "ok"
    });
    assert!(healthy);
    assert!(!cli.run(&["boxes"]).stdout.contains("health"));
    // The simulated Keithley stops answering.
    let mut stream = std::net::TcpStream::connect(control).expect("control port");
    std::io::Write::write_all(&mut stream, b"mute\n").expect("mute");
    let degraded = lager_testsupport::wait_until(Duration::from_secs(15), || {
        cli.run(&["boxes"]).stdout.contains("degraded: wedged")
    });
    let run = cli.run(&["boxes"]);
    assert!(degraded, "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .next()
            .unwrap_or("")
            .ends_with("status    health"),
        "{}",
        run.stdout
    );
}

/// `lager ... | head -1`: a reader that goes away ends lager quietly.
#[test]
fn a_closed_stdout_ends_lager_quietly() {
    let cli = crate::Cli::new("closed-stdout");
    for _ in 0..5 {
        let mut child = cli
            .command(&["boxes", "--help"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.status.success(), "{:?}", out.status);
    }
}
