//! `lager hello` (locking.md B.12) with box resolution (boxes.md §4), the
//! passive lock check (B.8), CI holders (B.1) and the skew warning
//! (diagnose.md §5).

use std::time::Duration;

use serde_json::json;

use crate::{entry, hostname, refused_port, silent_listener, Box_, Cli};

fn cli_with_box(tag: &str, daemon: &Box_) -> Cli {
    let cli = Cli::new(tag);
    cli.write_config(&json!({"BOXES": {"b1": entry(daemon.port())}}));
    cli
}

#[test]
fn hello_reports_version_and_online() {
    let daemon = Box_::start();
    let cli = cli_with_box("hello-ok", &daemon);
    let run = cli.run(&["hello", "--box", "b1"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        format!(
            "\nBox: b1\nIP: 127.0.0.1:{}\nVersion: {}\n\nb1 is online and responding!\n",
            daemon.port(),
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn default_box_from_env_then_defaults() {
    let daemon = Box_::start();
    let cli = cli_with_box("hello-default", &daemon);
    let run = cli.run(&["hello"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "No box specified, and no default box is configured.\nUse --box NAME, or set one: lager defaults add --box NAME\n"
    );
    let run = cli.run_with(&["hello"], &[("LAGER_BOX", "b1")]);
    run.expect_code(0);
    assert!(run.stdout.contains("Box: b1\n"), "{}", run.stdout);
    cli.run(&["defaults", "add", "--box", "b1"]).expect_code(0);
    cli.run(&["hello"]).expect_code(0);
    // LAGER_BOX beats the configured default.
    let run = cli.run_with(&["hello"], &[("LAGER_BOX", "zzz")]);
    run.expect_code(1);
    assert!(
        run.stderr
            .starts_with("No box named 'zzz'.\nSaved boxes: b1\n"),
        "{}",
        run.stderr
    );

    let empty = Cli::new("hello-nothing");
    let run = empty.run(&["hello"]);
    assert_eq!(
        run.stderr,
        "No box specified, and you have no saved boxes yet.\nUse --box NAME, or set one: lager defaults add --box NAME\n"
    );
}

#[test]
fn passive_check_blocks_anothers_lock() {
    let daemon = Box_::start();
    let cli = cli_with_box("hello-locked", &daemon);
    daemon.lock_as("bob");
    let run = cli.run_with(&["hello", "--box", "b1"], &[("LAGER_USER", "alice")]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Box 'b1' is locked by bob\nTo force unlock: lager boxes unlock --box b1 --force\n"
    );
    assert_eq!(run.stdout, "");
    // The plain user's own lock passes.
    cli.run_with(&["hello", "--box", "b1"], &[("LAGER_USER", "bob")])
        .expect_code(0);
}

#[test]
fn ci_holder_scope_passes_the_passive_check_only_under_ci() {
    let daemon = Box_::start();
    let cli = cli_with_box("hello-ci", &daemon);
    // Another process of the same generic CI job on this host.
    daemon.lock_as(&format!("ci:generic:{}:1", hostname()));
    cli.run_with(&["hello", "--box", "b1"], &[("CI", "true")])
        .expect_code(0);
    // On a dev host (no CI, or CI overridden) the lock is someone else's.
    let run = cli.run(&["hello", "--box", "b1"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .starts_with("Error: Box 'b1' is locked by ci on "),
        "{}",
        run.stderr
    );
    cli.run_with(
        &["hello", "--box", "b1"],
        &[("CI", "true"), ("LAGER_CI_OVERRIDE", "1")],
    )
    .expect_code(1);
}

#[test]
fn github_holder_scope_ignores_the_pid() {
    let daemon = Box_::start();
    let cli = cli_with_box("hello-github", &daemon);
    daemon.lock_as("ci:github:lager/lager#999-2/integration@bench-3:1");
    let github = [
        ("CI", "true"),
        ("GITHUB_RUN_ID", "999"),
        ("GITHUB_RUN_ATTEMPT", "2"),
        ("GITHUB_REPOSITORY", "lager/lager"),
        ("GITHUB_JOB", "integration"),
        ("RUNNER_NAME", "bench-3"),
    ];
    cli.run_with(&["hello", "--box", "b1"], &github)
        .expect_code(0);
    let mut other_run = github.to_vec();
    other_run[1] = ("GITHUB_RUN_ID", "1000");
    let run = cli.run_with(&["hello", "--box", "b1"], &other_run);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Box 'b1' is locked by github lager/lager run 999 job integration on bench-3\nTo force unlock: lager boxes unlock --box b1 --force\n"
    );
    // LAGER_LOCK_HOLDER shares a reservation on purpose.
    cli.run_with(
        &["hello", "--box", "b1"],
        &[(
            "LAGER_LOCK_HOLDER",
            "ci:github:lager/lager#999-2/integration@bench-3:77",
        )],
    )
    .expect_code(0);
}

#[test]
fn unreachable_box_fails_fast_with_one_line() {
    let cli = Cli::new("hello-dead");
    let port = refused_port();
    cli.write_config(&json!({"BOXES": {"dead": entry(port)}}));
    let run = cli.run(&["hello", "--box", "dead"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        format!("Error: Could not reach box 'dead': connection refused at 127.0.0.1:{port}; check that the box is powered on, on the network, and running lagerd\n")
    );
    assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
}

#[test]
fn silent_box_times_out_once() {
    let silent = silent_listener();
    let port = silent.local_addr().expect("addr").port();
    let cli = Cli::new("hello-hung");
    let addr = format!("127.0.0.1:{port}");
    let run = cli.run_with(
        &["hello", "--box", &addr],
        &[("LAGER_BOX_TIMEOUT_MS", "400")],
    );
    run.expect_code(1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "Error: Could not reach box '{addr}': no answer from {addr} within 400ms"
        )),
        "{}",
        run.stderr
    );
    // The passive check's timeout is not followed by a second one on /status.
    assert!(
        run.elapsed < Duration::from_millis(1500),
        "{:?}",
        run.elapsed
    );
    drop(silent);
}

#[test]
fn skew_warning_once_for_an_older_box() {
    let daemon = Box_::start();
    std::fs::write(daemon.state_dir().join("version"), "0.0.3").expect("stamp");
    let cli = cli_with_box("hello-skew", &daemon);
    let run = cli.run(&["hello", "--box", "b1"]);
    run.expect_code(0);
    assert!(run.stdout.contains("Version: 0.0.3\n"), "{}", run.stdout);
    assert_eq!(
        run.stderr,
        format!(
            "\n[warning] Box b1 is on lager 0.0.3; CLI is on {}.\n          Some commands may behave unexpectedly. To update the box:\n          lager box update --box b1\n\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    std::fs::write(daemon.state_dir().join("version"), "9.0.0").expect("stamp");
    let run = cli.run(&["hello", "--box", "b1"]);
    assert_eq!(run.stderr, "", "a newer box is not a problem");
}

#[test]
fn old_image_without_lock_api_warns_and_goes_on() {
    let status = &format!(
        r#"{{"healthy":true,"version":"{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    let hello = r#"{"message":"Hello from Lager Python Box!","service":"lager-python-box"}"#;
    let port = crate::fake_box(&[
        ("GET /lock ", 404, r#"{"error":"Not found"}"#),
        ("GET /status ", 200, status),
        ("GET /hello ", 200, hello),
    ]);
    let cli = Cli::new("hello-old");
    cli.write_config(&json!({"BOXES": {"old": entry(port)}}));
    let run = cli.run(&["hello", "--box", "old"]);
    run.expect_code(0);
    assert_eq!(
        run.stderr,
        "Warning: Box 'old' is running an old image without lock support on its :9000 API — lock checks are skipped. Run: lager box update --box old\n"
    );
    assert!(
        run.stdout.ends_with("old is online and responding!\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn hello_non_200_is_reported() {
    let port = crate::fake_box(&[
        ("GET /lock ", 200, r#"{"locked":false}"#),
        ("GET /status ", 404, "{}"),
        ("GET /hello ", 503, "{}"),
    ]);
    let cli = Cli::new("hello-503");
    let addr = format!("127.0.0.1:{port}");
    let run = cli.run(&["hello", "--box", &addr]);
    run.expect_code(1);
    assert!(run.stdout.contains("Version: Unknown\n"), "{}", run.stdout);
    assert!(
        run.stdout
            .ends_with(&format!("{addr} responded with HTTP 503\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("does not report a version on its :9000 API"),
        "{}",
        run.stderr
    );
}
