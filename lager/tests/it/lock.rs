//! `lager boxes lock|unlock` (locking.md B.9, B.10, A.9a).

use serde_json::{json, Value};

use crate::{entry, refused_port, Box_, Cli};

fn cli_with_box(tag: &str, daemon: &Box_) -> Cli {
    let cli = Cli::new(tag);
    cli.write_config(&json!({"BOXES": {"b1": entry(daemon.port())}}));
    cli
}

#[test]
fn lock_and_unlock_as_the_plain_user() {
    let daemon = Box_::start();
    let mut cli = cli_with_box("lock-basic", &daemon);
    cli.set("LAGER_USER", "alice");
    let run = cli.run(&["boxes", "lock", "--box", "b1"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Box 'b1' is locked by alice\n");
    let lock = daemon.lock();
    assert_eq!(lock["user"], "alice");
    assert_eq!(lock["holder_type"], "user");
    assert_eq!(lock["ttl_seconds"], Value::Null);

    let run = cli.run(&["boxes", "unlock", "--box", "b1"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Box 'b1' is now unlocked\n");
    assert_eq!(daemon.lock(), json!({"locked": false}));

    // Already unlocked is still success.
    cli.run(&["boxes", "unlock", "--box", "b1"]).expect_code(0);
}

#[test]
fn lock_held_by_another_is_409_with_since() {
    let daemon = Box_::start();
    let cli = cli_with_box("lock-409", &daemon);
    daemon.lock_as("bob");
    let since = daemon.lock()["locked_at"]
        .as_str()
        .expect("locked_at")
        .to_string();
    let run = cli.run_with(
        &["boxes", "lock", "--box", "b1"],
        &[("LAGER_USER", "alice")],
    );
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        format!("Box 'b1' is already locked by bob (since {since})\n")
    );
    assert_eq!(run.stdout, "");
    assert_eq!(daemon.lock()["user"], "bob");
}

#[test]
fn unlock_of_anothers_lock_needs_force() {
    let daemon = Box_::start();
    let cli = cli_with_box("unlock-403", &daemon);
    daemon.lock_as("ci:github:o/r#9-1/build@run-3:42");
    let run = cli.run_with(
        &["boxes", "unlock", "--box", "b1"],
        &[("LAGER_USER", "alice")],
    );
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Box 'b1' is locked by github o/r run 9 job build on run-3. To force unlock: lager boxes unlock --box b1 --force\n"
    );
    assert_eq!(daemon.lock()["locked"], true);

    let run = cli.run_with(
        &["boxes", "unlock", "--box", "b1", "--force"],
        &[("LAGER_USER", "alice")],
    );
    run.expect_code(0);
    assert_eq!(run.stdout, "Box 'b1' is now unlocked\n");
    assert_eq!(daemon.lock()["locked"], false);
}

#[test]
fn json_prints_the_daemon_body_and_keeps_exit_codes() {
    let daemon = Box_::start();
    let cli = cli_with_box("lock-json", &daemon);
    let run = cli.run_with(
        &["boxes", "lock", "--box", "b1", "--json"],
        &[("LAGER_USER", "alice")],
    );
    run.expect_code(0);
    let body: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(body["user"], "alice");
    assert_eq!(body["previous_user"], Value::Null);

    let run = cli.run_with(
        &["boxes", "lock", "--box", "b1", "--json"],
        &[("LAGER_USER", "bob")],
    );
    run.expect_code(1);
    let body: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(body["error"], "Box is locked by alice");
    assert_eq!(body["lock"]["user"], "alice");

    let run = cli.run_with(
        &["boxes", "unlock", "--box", "b1", "--json"],
        &[("LAGER_USER", "bob")],
    );
    run.expect_code(1);
    let body: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(body["error"], "Box is locked by alice");

    let run = cli.run_with(
        &["boxes", "unlock", "--box", "b1", "--json"],
        &[("LAGER_USER", "alice")],
    );
    run.expect_code(0);
    let body: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(body, json!({"locked": false, "message": "Box unlocked"}));
}

#[test]
fn relocking_your_own_lock_refreshes_it() {
    let daemon = Box_::start();
    let cli = cli_with_box("lock-relock", &daemon);
    let user = [("LAGER_USER", "alice")];
    cli.run_with(&["boxes", "lock", "--box", "b1"], &user)
        .expect_code(0);
    let run = cli.run_with(&["boxes", "lock", "--box", "b1", "--json"], &user);
    run.expect_code(0);
    let body: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(body["previous_user"], "alice");
}

#[test]
fn user_option_and_defaults_user_and_root_warning() {
    let daemon = Box_::start();
    let cli = cli_with_box("lock-user", &daemon);
    cli.run(&["defaults", "add", "--user", "carol"])
        .expect_code(0);
    let run = cli.run(&["boxes", "lock", "--box", "b1"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Box 'b1' is locked by carol\n");
    // LAGER_USER beats the configured default.
    let run = cli.run_with(
        &["boxes", "unlock", "--box", "b1"],
        &[("LAGER_USER", "dave")],
    );
    run.expect_code(1);
    cli.run(&["boxes", "unlock", "--box", "b1"]).expect_code(0);

    let run = cli.run(&["boxes", "lock", "--box", "b1", "--user", "root"]);
    run.expect_code(0);
    assert_eq!(
        run.stderr,
        "Warning: locking as root (likely running inside a Docker container).\n\
         To lock as yourself, use: lager boxes lock --box b1 --user [USERNAME]\n\
         Or set permanently: lager defaults add --user [USERNAME]\n\n"
    );
    assert_eq!(daemon.lock()["user"], "root");
}

#[test]
fn os_login_name_is_the_fallback_user() {
    let daemon = Box_::start();
    let cli = cli_with_box("lock-login", &daemon);
    let run = cli.run_with(&["boxes", "lock", "--box", "b1"], &[("LOGNAME", "erin")]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Box 'b1' is locked by erin\n");
}

#[test]
fn address_with_port_works_without_saving() {
    let daemon = Box_::start();
    let cli = Cli::new("lock-addr");
    let addr = format!("127.0.0.1:{}", daemon.port());
    let run = cli.run_with(
        &["boxes", "lock", "--box", &addr],
        &[("LAGER_USER", "alice")],
    );
    run.expect_code(0);
    assert_eq!(run.stdout, format!("Box '{addr}' is locked by alice\n"));
}

#[test]
fn usage_errors_exit_2() {
    let cli = Cli::new("lock-usage");
    cli.run(&["boxes", "lock"]).expect_code(2);
    cli.run(&["boxes", "unlock", "--box", "b1", "--user", "x"])
        .expect_code(2);
    cli.run(&["boxes", "frobnicate"]).expect_code(2);
    let run = cli.run(&["boxes", "lock", "--box", ""]);
    run.expect_code(1);
    assert_eq!(run.stderr, "Box name cannot be empty.\n");
}

#[test]
fn unknown_box_lists_saved_ones() {
    let cli = Cli::new("lock-unknown");
    cli.write_config(&json!({"BOXES": {"bench-10": "10.0.0.10", "bench-2": "10.0.0.2"}}));
    let run = cli.run(&["boxes", "lock", "--box", "nope"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "No box named 'nope'.\nSaved boxes: bench-2, bench-10\nAdd it: lager boxes add --name nope --ip [IP_ADDRESS]\n"
    );
}

#[test]
fn unreachable_box_is_one_line_and_fast() {
    let cli = Cli::new("lock-dead");
    let port = refused_port();
    cli.write_config(&json!({"BOXES": {"dead": entry(port)}}));
    let run = cli.run(&["boxes", "lock", "--box", "dead"]);
    run.expect_code(1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "Error: Could not reach box 'dead': connection refused at 127.0.0.1:{port}"
        )),
        "{}",
        run.stderr
    );
    assert!(run.elapsed.as_secs() < 5, "{:?}", run.elapsed);
}

#[test]
fn token_from_entry_or_env() {
    let token_dir = lager_testsupport::TempDir::new("token");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("write token");
    let daemon = Box_::start_with(&["--token-file", token_file.to_str().expect("utf-8 path")]);
    let cli = cli_with_box("lock-token", &daemon);
    let run = cli.run_with(
        &["boxes", "lock", "--box", "b1"],
        &[("LAGER_USER", "alice")],
    );
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Box 'b1' requires a token (HTTP 401). Set \"token\" in its ~/.lager entry or LAGER_BOX_TOKEN.\n"
    );
    let run = cli.run_with(
        &["boxes", "lock", "--box", "b1"],
        &[("LAGER_USER", "alice"), ("LAGER_BOX_TOKEN", "s3cret")],
    );
    run.expect_code(0);

    // The entry's token wins over the environment.
    let mut with_token = entry(daemon.port());
    with_token["token"] = json!("s3cret");
    cli.write_config(&json!({"BOXES": {"b1": with_token}}));
    let run = cli.run_with(
        &["boxes", "unlock", "--box", "b1"],
        &[("LAGER_USER", "alice"), ("LAGER_BOX_TOKEN", "wrong")],
    );
    run.expect_code(0);
    assert_eq!(daemon.lock()["locked"], false);
}
