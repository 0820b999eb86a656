//! `lager defaults` (locking.md B.13).

use serde_json::{json, Value};

use crate::Cli;

#[test]
fn add_list_delete_round_trip() {
    let cli = Cli::new("defaults");
    cli.write_config(&json!({"BOXES": {"b1": "10.0.0.1"}}));
    let run = cli.run(&["defaults"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "No defaults are currently set. Add one with: lager defaults add\n"
    );

    let run = cli.run(&["defaults", "add", "--user", "alice"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Set default user: alice\n");
    let run = cli.run(&[
        "defaults",
        "add",
        "--box",
        "b1",
        "--supply-net",
        "vbus",
        "--serial-port",
        "/dev/ttyUSB0",
    ]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "Set defaults:\n  - box: b1\n  - serial-port: /dev/ttyUSB0\n  - supply-net: vbus\n"
    );
    assert_eq!(
        cli.read_config()["DEFAULTS"],
        json!({"user": "alice", "gateway_id": "b1", "net_power_supply": "vbus", "serial_device": "/dev/ttyUSB0"})
    );

    let run = cli.run(&["defaults", "list"]);
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "Default     | Value");
    assert!(lines.contains(&"box         | b1"), "{}", run.stdout);
    assert!(lines.contains(&"supply-net  | vbus"), "{}", run.stdout);
    assert!(
        lines.contains(&"serial-port | /dev/ttyUSB0"),
        "{}",
        run.stdout
    );

    let run = cli.run(&["defaults", "--json"]);
    let raw: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(raw["net_power_supply"], "vbus");

    let run = cli.run(&["defaults", "delete", "user", "--yes"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Deleted default user 'alice'\n");
    let run = cli.run(&["defaults", "delete", "user", "--yes"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "No default user is currently set.\n");

    // No terminal, no --yes: nothing is deleted.
    let run = cli.run(&["defaults", "delete", "box"]);
    run.expect_code(1);
    assert_eq!(cli.read_config()["DEFAULTS"]["gateway_id"], "b1");

    let run = cli.run(&["defaults", "delete-all", "--yes"]);
    run.expect_code(0);
    assert_eq!(cli.read_config()["DEFAULTS"], json!({}));
    assert_eq!(cli.read_config()["BOXES"]["b1"], "10.0.0.1");
    let run = cli.run(&["defaults", "delete-all", "--yes"]);
    assert_eq!(run.stdout, "No defaults are currently set.\n");
}

#[test]
fn add_errors() {
    let cli = Cli::new("defaults-errors");
    let run = cli.run(&["defaults", "add"]);
    run.expect_code(1);
    assert_eq!(run.stderr, "Error: You must specify at least one setting\n");
    let run = cli.run(&["defaults", "add", "--box", "zz"]);
    run.expect_code(1);
    assert_eq!(run.stderr, "Error: Box 'zz' not found in saved boxes.\n");
    assert!(!cli.config_path().exists(), "nothing written on error");
    cli.run(&["defaults", "delete", "nonsense", "--yes"])
        .expect_code(2);
}
