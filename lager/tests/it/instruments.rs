//! `lager supply`, `lager battery` and `lager nets` (instruments.md §8,
//! §10; issue 6) against the real `lagerd --sim`: the simulated Keithley
//! 2281S serves `supply1` and `battery1` on one address, and faults come
//! from the simulator's control port. Answers lagerd never gives (a 423 in
//! the middle of a command, an old box) come from a stand-in.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use lager_testsupport::request;
use serde_json::{json, Value};

use crate::{entry, fake_box, refused_port, Box_, Cli, Run};

/// A `lagerd --sim` with a CLI whose saved box `b1` points at it.
struct Bench {
    daemon: Box_,
    cli: Cli,
    control: String,
}

impl Bench {
    fn start(tag: &str, extra: &[&str]) -> Bench {
        let mut args = vec!["--sim", "--health-interval-secs", "0"];
        args.extend_from_slice(extra);
        let daemon = Box_::start_with(&args);
        let cli = Cli::new(tag);
        cli.write_config(&json!({"BOXES": {"b1": entry(daemon.port())}}));
        let status = request(daemon.addr(), "GET", "/status", None);
        let status: Value = serde_json::from_str(&status.text()).expect("status JSON");
        let control = status["capabilities"]["simulator"]["control"]
            .as_str()
            .expect("simulator control address")
            .to_string();
        Bench {
            daemon,
            cli,
            control,
        }
    }

    /// One line to the simulator's control port, one line back.
    fn sim(&self, command: &str) -> String {
        let mut stream = TcpStream::connect(&self.control).expect("control port");
        writeln!(stream, "{command}").expect("send");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("reply");
        line.trim().to_string()
    }

    fn lager(&self, args: &[&str]) -> Run {
        self.cli.run(args)
    }

    fn lager_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.cli.run_with(args, env)
    }
}

fn ok(run: &Run, stdout: &str) {
    run.expect_code(0);
    assert_eq!(run.stdout, stdout, "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "");
}

#[test]
fn supply_sets_and_reads_voltage_and_current() {
    let b = Bench::start("supply-set", &[]);
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "voltage", "5", "--yes"]),
        "[OK] Voltage set to 5V\n",
    );
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "voltage"]),
        "[OK] Voltage: 5V\n",
    );
    // `--box` after the subcommand works too.
    ok(
        &b.lager(&[
            "supply", "supply1", "current", "0.5", "--yes", "--box", "b1",
        ]),
        "[OK] Current limit set to 0.5A\n",
    );
    ok(
        &b.lager(&["supply", "supply1", "current", "--box", "b1"]),
        "[OK] Current: 0.5A\n",
    );
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "ovp", "12"]),
        "[OK] OVP set to 12V\n",
    );
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "ocp"]),
        "[OK] OCP: 6.1A\n",
    );
    // Every auto-lock was released at exit.
    assert_eq!(b.daemon.lock()["locked"], false);
}

#[test]
fn changes_lock_the_box_and_reads_do_not() {
    let b = Bench::start("supply-locking", &[]);
    let run = b.lager(&[
        "-v", "supply", "supply1", "--box", "b1", "voltage", "3", "--yes",
    ]);
    run.expect_code(0);
    assert!(
        run.stderr.contains("lock on b1: Acquired"),
        "{}",
        run.stderr
    );
    let run = b.lager(&["-v", "supply", "supply1", "--box", "b1", "voltage"]);
    run.expect_code(0);
    assert!(!run.stderr.contains("lock on"), "{}", run.stderr);
    let run = b.lager(&["-v", "battery", "battery1", "--box", "b1", "state"]);
    run.expect_code(0);
    assert!(!run.stderr.contains("lock on"), "{}", run.stderr);
    let run = b.lager(&["-v", "battery", "battery1", "--box", "b1", "clear"]);
    run.expect_code(0);
    assert!(
        run.stderr.contains("lock on b1: Acquired"),
        "{}",
        run.stderr
    );
    assert_eq!(b.daemon.lock()["locked"], false);
}

#[test]
fn enable_then_state_shows_the_output_on() {
    let b = Bench::start("supply-enable", &[]);
    b.lager(&[
        "supply", "supply1", "--box", "b1", "voltage", "3.3", "--yes",
    ])
    .expect_code(0);
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "enable", "--yes"]),
        "[OK] Output enabled\n",
    );
    let run = b.lager(&["supply", "supply1", "--box", "b1", "state"]);
    run.expect_code(0);
    assert!(
        run.stdout.starts_with("[OK] Channel 1: ON, Set: 3.3V/"),
        "{}",
        run.stdout
    );
    let run = b.lager(&["supply", "supply1", "--box", "b1", "state", "--json"]);
    run.expect_code(0);
    let reply: Value = serde_json::from_str(&run.stdout).expect("--json prints the reply");
    assert_eq!(reply["success"], true);
    assert_eq!(reply["state"]["enabled"], true);
    assert_eq!(reply["state"]["voltage_set"], 3.3);
    assert_eq!(reply["state"]["netname"], "supply1");
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "disable", "--yes"]),
        "[OK] Output disabled\n",
    );
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "clear-ovp"]),
        "[OK] Protection cleared\n",
    );
}

#[test]
fn a_change_without_yes_and_without_a_terminal_is_not_made() {
    let b = Bench::start("supply-confirm", &[]);
    let run = b.lager(&["supply", "supply1", "--box", "b1", "voltage", "7"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Aborted: nothing changed. To go ahead without a prompt, run: lager supply supply1 --box b1 voltage 7 --yes\n"
    );
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "voltage"]),
        "[OK] Voltage: 0V\n",
    );
    let run = b.lager(&["battery", "battery1", "--box", "b1", "enable"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("battery battery1 --box b1 enable --yes"),
        "{}",
        run.stderr
    );
    assert_eq!(
        b.daemon.lock()["locked"],
        false,
        "no lock for a declined change"
    );
}

#[test]
fn battery_on_the_dual_role_address() {
    let b = Bench::start("battery", &[]);
    b.lager(&["supply", "supply1", "--box", "b1", "voltage", "4", "--yes"])
        .expect_code(0);
    // SOC and VOC are one state (the model ties them): VOC last would
    // move the SOC.
    ok(
        &b.lager(&["battery", "battery1", "--box", "b1", "voc", "4.2"]),
        "[OK] VOC set to 4.2V\n",
    );
    ok(
        &b.lager(&["battery", "battery1", "--box", "b1", "soc", "80"]),
        "[OK] SOC set to 80%\n",
    );
    ok(
        &b.lager(&["battery", "battery1", "--box", "b1", "mode", "Dynamic"]),
        "[OK] Mode set to dynamic\n",
    );
    ok(
        &b.lager(&["battery", "battery1", "--box", "b1", "enable", "--yes"]),
        "[OK] Battery output enabled\n",
    );
    let run = b.lager(&["battery", "battery1", "--box", "b1", "state"]);
    run.expect_code(0);
    assert!(
        run.stdout.starts_with("[OK] Battery: ON, SOC 80"),
        "{}",
        run.stdout
    );
    let run = b.lager(&["battery", "battery1", "--box", "b1", "state", "--json"]);
    let reply: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(reply["state"]["soc"], 80.0);
    assert_eq!(
        reply["state"]["voc"], 3.96,
        "80 % of the way from 3 V to 4.2 V"
    );
    // Back to the supply role on the same instrument.
    let run = b.lager(&["supply", "supply1", "--box", "b1", "state"]);
    run.expect_code(0);
    assert!(run.stdout.starts_with("[OK] Channel 1: "), "{}", run.stdout);
}

/// Issue 12 defect 8: `lager battery NET soc` without a value was a usage
/// error; instruments.md §8 gives `soc [V]`, `voc [V]` and the other `[V]`
/// forms: without a value they read, and a read takes no lock.
#[test]
fn issue12_battery_setters_without_a_value_read_the_setting() {
    let b = Bench::start("battery-reads", &[]);
    // VOC first: the simulator ties SOC to VOC through the battery model,
    // so the SOC set last is the one read back.
    for (setter, value) in [
        ("voc", "3.9"),
        ("soc", "42"),
        ("batt-full", "4.1"),
        ("batt-empty", "3.1"),
        ("capacity", "2.5"),
        ("current-limit", "1.5"),
        ("ovp", "4.5"),
        ("ocp", "2"),
        ("mode", "dynamic"),
    ] {
        b.lager(&["battery", "battery1", "--box", "b1", setter, value, "--yes"])
            .expect_code(0);
    }
    // Someone else holds the box: a change would be refused, a read is not.
    b.daemon.lock_as("someone-else");
    for (setter, said) in [
        ("soc", "[OK] SOC: 42%\n"),
        ("batt-full", "[OK] Full voltage: 4.1V\n"),
        ("batt-empty", "[OK] Empty voltage: 3.1V\n"),
        ("capacity", "[OK] Capacity: 2.5Ah\n"),
        ("current-limit", "[OK] Current limit: 1.5A\n"),
        ("ovp", "[OK] OVP: 4.5V\n"),
        ("ocp", "[OK] OCP: 2A\n"),
        ("mode", "[OK] Mode: dynamic\n"),
    ] {
        ok(
            &b.lager(&["battery", "battery1", "--box", "b1", setter]),
            said,
        );
    }
    // VOC follows SOC through the model: the read shows the instrument's VOC.
    let voc = b.lager(&["battery", "battery1", "--box", "b1", "voc"]);
    voc.expect_code(0);
    assert!(
        voc.stdout.starts_with("[OK] VOC: ") && voc.stdout.ends_with("V\n"),
        "{}",
        voc.stdout
    );
    let run = b.lager(&["battery", "battery1", "--box", "b1", "soc", "--json"]);
    run.expect_code(0);
    let reply: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(reply["state"]["soc"], 42.0, "{reply}");
    assert_eq!(b.daemon.lock()["user"], "someone-else");
}

#[test]
fn battery_setters_check_the_form_of_their_value() {
    let b = Bench::start("battery-usage", &[]);
    let run = b.lager(&["battery", "battery1", "--box", "b1", "mode", "fast"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .starts_with("Invalid mode 'fast': use static or dynamic"),
        "{}",
        run.stderr
    );
    let run = b.lager(&["supply", "supply1", "--box", "b1", "voltage", "five"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .starts_with("Invalid voltage 'five': expected a number of volts, e.g. 3.3"),
        "{}",
        run.stderr
    );
}

#[test]
fn out_of_range_values_are_the_box_s_answer() {
    let b = Bench::start("supply-range", &[]);
    let run = b.lager(&["supply", "supply1", "--box", "b1", "voltage", "25", "--yes"]);
    run.expect_code(1);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "Error: Voltage 25V is outside the instrument's range 0–20V\n"
    );
    // A negative value is a value, not an option.
    let run = b.lager(&["supply", "supply1", "--box", "b1", "voltage", "-1", "--yes"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Voltage -1V is outside the instrument's range 0–20V\n"
    );
    let run = b.lager(&["battery", "battery1", "--box", "b1", "soc", "150"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: SOC 150% is outside the instrument's range 0–100%\n"
    );
    // --json still prints the box's reply, and still fails.
    let run = b.lager(&[
        "supply", "supply1", "--box", "b1", "voltage", "25", "--yes", "--json",
    ]);
    run.expect_code(1);
    let reply: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(reply["success"], false);
    assert_eq!(b.daemon.lock()["locked"], false);
}

#[test]
fn unknown_net_and_role_mismatch() {
    let b = Bench::start("supply-nets", &[]);
    let run = b.lager(&["supply", "nope", "--box", "b1", "state"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Net 'nope' not found. Create it with 'lager nets add'.\n"
    );
    let run = b.lager(&["supply", "battery1", "--box", "b1", "state"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Net 'battery1' is a 'battery' net, not 'power-supply'.\n"
    );
}

#[test]
fn default_nets_come_from_lager_defaults() {
    let b = Bench::start("supply-default", &[]);
    let run = b.lager(&["battery", "--box", "b1", "state"]);
    run.expect_code(2);
    assert_eq!(
        run.stderr,
        "Error: No battery net given and no default is set. Name one: lager battery NET <command> --box BOX, or set a default: lager defaults add --battery-net NET\n"
    );
    b.lager(&[
        "defaults",
        "add",
        "--supply-net",
        "supply1",
        "--battery-net",
        "battery1",
    ])
    .expect_code(0);
    ok(
        &b.lager(&["supply", "--box", "b1", "voltage", "2", "--yes"]),
        "[OK] Voltage set to 2V\n",
    );
    let run = b.lager(&["battery", "--box", "b1", "state"]);
    run.expect_code(0);
    assert!(run.stdout.starts_with("[OK] Battery: "), "{}", run.stdout);
}

#[test]
fn without_a_command_the_role_s_nets_are_listed() {
    let b = Bench::start("supply-list", &[]);
    let run = b.lager(&["supply", "--box", "b1"]);
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines[0].starts_with("name "), "{}", run.stdout);
    assert!(lines[2].starts_with("supply1 "), "{}", run.stdout);
    assert!(lines[2].contains("power-supply"), "{}", run.stdout);
}

#[test]
fn a_vanished_instrument_prints_the_enodev_block_then_recovers() {
    let b = Bench::start("supply-enodev", &[]);
    b.lager(&["supply", "supply1", "--box", "b1", "voltage", "4", "--yes"])
        .expect_code(0);
    assert_eq!(b.sim("drop"), "OK");
    let run = b.lager(&["supply", "supply1", "--box", "b1", "voltage"]);
    run.expect_code(1);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "Error: Instrument disappeared from USB (re-enumeration).\n\
         \n  Try:\n\
         \x20   → The hardware service should auto-recover on the next call (0.20.0+).\n\
         \x20   → If it does not, `lager ssh b1` then `sudo docker restart lager`.\n\
         \x20 Run with --debug (or LAGER_DEBUG=1) for the full technical details.\n"
    );
    // The raw error under LAGER_DEBUG and under --debug.
    for run in [
        b.lager_with(
            &["supply", "supply1", "--box", "b1", "voltage"],
            &[("LAGER_DEBUG", "1")],
        ),
        b.lager(&["--debug", "supply", "supply1", "--box", "b1", "state"]),
    ] {
        run.expect_code(1);
        assert!(
            run.stderr
                .starts_with("Error: Instrument disappeared from USB (re-enumeration).\n"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("\n  --- raw error ---\n  [Errno 19] "),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("TCPIP0::127.0.0.1::"), "{}", run.stderr);
    }
    assert_eq!(b.sim("replug"), "OK");
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "voltage"]),
        "[OK] Voltage: 4V\n",
    );
}

#[test]
fn a_silent_instrument_prints_the_etimedout_block() {
    let b = Bench::start("supply-etimedout", &["--instrument-timeout-ms", "300"]);
    b.lager(&["supply", "supply1", "--box", "b1", "voltage", "1", "--yes"])
        .expect_code(0);
    assert_eq!(b.sim("mute"), "OK");
    let run = b.lager(&["battery", "battery1", "--box", "b1", "state"]);
    run.expect_code(1);
    assert!(
        run.stderr.starts_with(
            "Error: Instrument did not respond to SCPI within the timeout — firmware may be wedged.\n\n  Try:\n"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("→ Use `lager diagnose battery1 --box b1` to confirm before power-cycling."),
        "{}",
        run.stderr
    );
    assert_eq!(b.sim("unmute"), "OK");
    let run = b.lager(&["battery", "battery1", "--box", "b1", "state"]);
    run.expect_code(0);
}

#[test]
fn enforced_locks_refuse_changes_by_others_but_not_reads() {
    let b = Bench::start("supply-enforced", &["--enforce-locks"]);
    b.daemon.lock_as("bob");
    let run = b.lager(&["supply", "supply1", "--box", "b1", "voltage", "5", "--yes"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Box 'b1' is locked by bob\nTo force unlock: lager boxes unlock --box b1 --force\n"
    );
    // Reads take no lock and the box does not enforce them.
    let run = b.lager(&["supply", "supply1", "--box", "b1", "state"]);
    run.expect_code(0);
    // Our own lock: the command names its stored user and passes.
    let reply = request(
        b.daemon.addr(),
        "POST",
        "/unlock",
        Some(r#"{"user":"bob"}"#),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    b.lager(&["boxes", "lock", "--box", "b1"]).expect_code(0);
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "voltage", "5", "--yes"]),
        "[OK] Voltage set to 5V\n",
    );
    assert_eq!(
        b.daemon.lock()["locked"],
        true,
        "an adopted lock is kept at exit"
    );
}

#[test]
fn a_423_from_the_box_names_the_holder() {
    // A box that was free at the passive check, granted our lock, and
    // then refused the command: someone forced the lock in between.
    let port = fake_box(&[
        ("GET /lock ", 200, r#"{"locked":false}"#),
        (
            "POST /lock ",
            200,
            r#"{"locked":true,"user":"tester","ttl_seconds":60}"#,
        ),
        ("POST /unlock ", 200, r#"{"locked":false}"#),
        (
            "POST /supply/command ",
            423,
            r#"{"error":"Box is locked by ci:gitlab:acme/fw:42","lock":{"user":"ci:gitlab:acme/fw:42"}}"#,
        ),
    ]);
    let cli = Cli::new("supply-423");
    cli.write_config(&json!({"BOXES": {"b1": entry(port)}}));
    let run = cli.run(&["supply", "supply1", "--box", "b1", "enable", "--yes"]);
    run.expect_code(1);
    assert!(
        run.stderr.starts_with("Error: Box 'b1' is locked by "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .ends_with("\nTo force unlock: lager boxes unlock --box b1 --force\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn transport_failures_name_the_address_used() {
    // Accepted, never answered: the read timeout (capped for the test).
    let port = fake_box(&[("GET /lock ", 200, r#"{"locked":false}"#)]);
    let cli = Cli::new("supply-timeout");
    cli.write_config(&json!({"BOXES": {"b1": entry(port)}}));
    let run = cli.run_with(
        &["supply", "supply1", "--box", "b1", "state"],
        &[("LAGER_BOX_TIMEOUT_MS", "500")],
    );
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        format!(
            "Error: the box at 127.0.0.1:{port} accepted the request but did not answer within 500ms. The operation may just be slow and may still complete on the box; try again in a moment.\n"
        )
    );
    // Nothing listening: fails at the passive check for a change, at the
    // command for a read, both with the same message.
    let dead = refused_port();
    cli.write_config(&json!({"BOXES": {"b1": entry(dead)}}));
    for args in [
        &["supply", "supply1", "--box", "b1", "state"][..],
        &["battery", "battery1", "--box", "b1", "soc", "5"][..],
    ] {
        let run = cli.run(args);
        run.expect_code(1);
        assert_eq!(
            run.stderr,
            format!(
                "Error: cannot reach box at 127.0.0.1:{dead} (connection refused). Check network/Tailscale and that the box is online and updated.\n"
            )
        );
    }
}

#[test]
fn an_old_box_without_the_routes_says_update() {
    let port = fake_box(&[
        ("GET /lock ", 200, r#"{"locked":false}"#),
        ("POST /supply/command ", 404, r#"{"error":"Not found"}"#),
        ("POST /nets ", 404, r#"{"error":"Not found"}"#),
        ("GET /nets/list ", 200, "<html>"),
    ]);
    let cli = Cli::new("supply-old");
    cli.write_config(&json!({"BOXES": {"b1": entry(port)}}));
    let run = cli.run(&["supply", "supply1", "--box", "b1", "state"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Not found. This box image does not expose /supply/command; update the box.\n"
    );
    let run = cli.run(&["nets", "delete", "x", "--box", "b1"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Not found. This box image does not expose /nets; update the box.\n"
    );
    let run = cli.run(&["nets", "--box", "b1"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: box returned a non-JSON response (HTTP 200).\n"
    );
}

#[test]
fn nets_list_add_and_delete() {
    let b = Bench::start("nets", &[]);
    let run = b.lager(&["nets", "--box", "b1"]);
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", run.stdout);
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["name", "role", "instrument", "address"]
    );
    assert!(lines[2].starts_with("supply1 "), "{}", run.stdout);
    assert!(lines[3].starts_with("battery1 "), "{}", run.stdout);
    // The simulated device's serial console (issue 15).
    assert!(lines[4].starts_with("console1 "), "{}", run.stdout);

    ok(
        &b.lager(&[
            "nets",
            "add",
            "bench_psu",
            "--role",
            "supply",
            "--instrument",
            "Keithley_2281S",
            "--address",
            "USB0::0x05E6::0x2281::4587429::INSTR",
            "--box",
            "b1",
        ]),
        "[OK] Added net 'bench_psu'\n",
    );
    let run = b.lager(&["nets", "list", "--json", "--box", "b1"]);
    run.expect_code(0);
    let nets: Value = serde_json::from_str(&run.stdout).expect("JSON list");
    let added = nets
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "bench_psu"))
        .expect("listed")
        .clone();
    assert_eq!(added["role"], "power-supply");
    assert_eq!(added["pin"], 1);

    // The box judges roles and duplicates.
    let run = b.lager(&[
        "nets",
        "add",
        "bench_psu",
        "--role",
        "supply",
        "--instrument",
        "Keithley_2281S",
        "--address",
        "TCPIP0::10.0.0.5::5025::SOCKET",
        "--box",
        "b1",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr
            .starts_with("Error: Net 'bench_psu' already exists"),
        "{}",
        run.stderr
    );
    let run = b.lager(&[
        "nets",
        "add",
        "x",
        "--role",
        "toaster",
        "--instrument",
        "Keithley_2281S",
        "--address",
        "TCPIP0::10.0.0.5::5025::SOCKET",
        "--box",
        "b1",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.starts_with("Error: unknown role 'toaster'"),
        "{}",
        run.stderr
    );

    ok(
        &b.lager(&["nets", "delete", "bench_psu", "--box", "b1"]),
        "[OK] Deleted net 'bench_psu'\n",
    );
    let run = b.lager(&["nets", "delete", "bench_psu", "--box", "b1"]);
    run.expect_code(1);
    assert!(
        run.stderr.starts_with("Error: Net 'bench_psu' not found"),
        "{}",
        run.stderr
    );
}

#[test]
fn nets_add_checks_the_address_before_asking_the_box() {
    // No box at all: a bad address must fail before any request.
    let cli = Cli::new("nets-address");
    cli.write_config(&json!({"BOXES": {"b1": entry(refused_port())}}));
    let run = cli.run(&[
        "nets",
        "add",
        "x",
        "--role",
        "battery",
        "--instrument",
        "Keithley_2281S",
        "--address",
        "TCPIP::10.0.0.5::INSTR",
        "--box",
        "b1",
    ]);
    run.expect_code(2);
    assert!(
        run.stderr
            .starts_with("Invalid --address: \"TCPIP::10.0.0.5::INSTR\" is a VXI-11"),
        "{}",
        run.stderr
    );
}

#[test]
fn watch_prints_one_line_per_reading_and_stops_at_count() {
    let b = Bench::start("supply-watch", &[]);
    b.lager(&["supply", "supply1", "--box", "b1", "voltage", "5", "--yes"])
        .expect_code(0);
    let run = b.lager(&[
        "supply",
        "supply1",
        "watch",
        "--box",
        "b1",
        "--interval",
        "0.1",
        "--count",
        "2",
    ]);
    run.expect_code(0);
    assert_eq!(run.stderr, "");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for line in &lines {
        assert!(line.starts_with('+'), "{line}");
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(fields.contains(&"voltage_set=5.0"), "{line}");
        assert!(fields.contains(&"enabled=false"), "{line}");
    }
    // `--json` passes the box's NDJSON through, `tui` is the same command.
    let run = b.lager(&[
        "battery",
        "battery1",
        "tui",
        "--box",
        "b1",
        "--interval",
        "0.1",
        "--count",
        "1",
        "--json",
    ]);
    run.expect_code(0);
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    assert_eq!(events[0]["event"], "monitor_started");
    assert_eq!(events[0]["netname"], "battery1");
    assert_eq!(events[1]["event"], "driver_ready");
    assert_eq!(events[2]["event"], "state");
    assert!(events[2]["state"]["soc"].is_number(), "{}", events[2]);
    assert_eq!(events.len(), 3);
}

#[test]
fn a_watch_holds_the_2281s_for_its_role_until_interrupted() {
    let b = Bench::start("supply-watch-conflict", &[]);
    let mut watch = b
        .cli
        .command(&[
            "supply",
            "supply1",
            "watch",
            "--box",
            "b1",
            "--interval",
            "0.1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lager");
    let mut first = String::new();
    BufReader::new(watch.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first reading");
    assert!(first.contains("voltage_set="), "{first}");

    let run = b.lager(&[
        "battery", "battery1", "watch", "--box", "b1", "--count", "1",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(
            "'battery1' is on the same Keithley 2281S as 'supply1', which is currently in use as a power-supply."
        ),
        "{}",
        run.stderr
    );
    // Commands of the other role are refused too (§7); the watch's own
    // role is not.
    b.lager(&["battery", "battery1", "--box", "b1", "state"])
        .expect_code(1);
    b.lager(&["supply", "supply1", "--box", "b1", "state"])
        .expect_code(0);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    watch.wait().expect("watch exits");
    // The box notices the closed connection within an interval or so.
    assert!(
        lager_testsupport::wait_until(std::time::Duration::from_secs(5), || {
            b.lager(&[
                "battery", "battery1", "watch", "--box", "b1", "--count", "1",
            ])
            .code
                == 0
        }),
        "the battery watch stayed refused after the supply watch ended"
    );
}

#[test]
fn a_failed_reading_is_shown_and_sets_the_exit_code() {
    let b = Bench::start("supply-watch-mute", &["--instrument-timeout-ms", "300"]);
    assert_eq!(b.sim("mute"), "OK");
    let run = b.lager(&["supply", "supply1", "watch", "--box", "b1", "--count", "1"]);
    run.expect_code(1);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with('+'), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Instrument did not respond to SCPI within the timeout"),
        "{}",
        run.stderr
    );
    assert_eq!(b.sim("unmute"), "OK");
}

#[test]
fn watch_arguments_are_checked_before_anything_is_sent() {
    let cli = Cli::new("supply-watch-usage");
    let run = cli.run(&[
        "supply",
        "s",
        "watch",
        "--interval",
        "0.05",
        "--box",
        "10.0.0.1",
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("Invalid --interval 0.05"),
        "{}",
        run.stderr
    );
    let run = cli.run(&["battery", "b", "tui", "--count", "0", "--box", "10.0.0.1"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("--count 0 would read nothing"),
        "{}",
        run.stderr
    );
}

/// The state object of `lager supply|battery NET state --json`.
fn state_of(b: &Bench, noun: &str, net: &str) -> Value {
    let run = b.lager(&[noun, net, "--box", "b1", "state", "--json"]);
    run.expect_code(0);
    let body: Value = serde_json::from_str(&run.stdout).expect("state JSON");
    body["state"].clone()
}

#[test]
fn supply_protections_go_with_the_value_without_tripping() {
    let b = Bench::start("supply-protect", &[]);
    ok(
        &b.lager(&[
            "supply", "supply1", "--box", "b1", "voltage", "5", "--ovp", "6", "--ocp", "1", "--yes",
        ]),
        "[OK] Voltage set to 5V (OCP 1A, OVP 6V)\n",
    );
    b.lager(&["supply", "supply1", "--box", "b1", "enable", "--yes"])
        .expect_code(0);
    // Lowering OVP below the present setpoint works with the value, in
    // the right order: the output stays on and nothing trips.
    ok(
        &b.lager(&[
            "supply", "supply1", "--box", "b1", "voltage", "3", "--ovp", "4", "--yes",
        ]),
        "[OK] Voltage set to 3V (OVP 4V)\n",
    );
    let state = state_of(&b, "supply", "supply1");
    assert_eq!(
        (
            state["ovp_limit"].as_f64(),
            state["ocp_limit"].as_f64(),
            state["enabled"].as_bool(),
            state["ovp_tripped"].as_bool()
        ),
        (Some(4.0), Some(1.0), Some(true), Some(false)),
        "{state}"
    );
    // OVP alone below the setpoint is refused, and says what to do.
    let run = b.lager(&["supply", "supply1", "--box", "b1", "ovp", "2"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("Cannot set OVP (2V) below current voltage setpoint (3V). Lower voltage first or use voltage command with both values."),
        "{}",
        run.stderr
    );
    // The CLI's own ceiling stops a typo before the box sees it.
    let run = b.lager(&[
        "supply", "supply1", "--box", "b1", "voltage", "150", "--yes",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("Error: Voltage 150V exceeds maximum limit of 100.0V"),
        "{}",
        run.stderr
    );
    assert_eq!(
        state_of(&b, "supply", "supply1")["voltage_set"].as_f64(),
        Some(3.0)
    );
    ok(
        &b.lager(&["supply", "supply1", "--box", "b1", "set"]),
        "[OK] Power supply mode\n",
    );
}

#[test]
fn battery_limits_and_models_round_trip_through_a_csv_file() {
    let b = Bench::start("battery-models", &[]);
    let lager = |args: &[&str]| {
        let mut all = vec!["battery", "battery1", "--box", "b1"];
        all.extend_from_slice(args);
        b.lager(&all)
    };
    ok(
        &lager(&["set"]),
        "[OK] Battery simulator mode, output off, protections cleared\n",
    );
    ok(
        &lager(&["batt-full", "4.3"]),
        "[OK] Full voltage set to 4.3V\n",
    );
    ok(
        &lager(&["batt-empty", "3.1"]),
        "[OK] Empty voltage set to 3.1V\n",
    );
    ok(&lager(&["ovp", "5"]), "[OK] OVP set to 5V\n");
    ok(&lager(&["ocp", "2"]), "[OK] OCP set to 2A\n");
    let state = state_of(&b, "battery", "battery1");
    for (key, want) in [
        ("volt_full", 4.3),
        ("volt_empty", 3.1),
        ("ovp_limit", 5.0),
        ("ocp_limit", 2.0),
    ] {
        assert_eq!(state[key].as_f64(), Some(want), "{key} in {state}");
    }

    let run = lager(&["models"]);
    run.expect_code(0);
    assert!(run.stdout.contains("Slot 3: empty"), "{}", run.stdout);
    let run = lager(&["model", "3"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("Model slot 3 is empty"),
        "{}",
        run.stderr
    );

    let dir = b.cli.work_dir();
    let mut csv = String::from("soc,voc,esr\n");
    for soc in 0..=100 {
        csv.push_str(&format!(
            "{soc},{},{}\n",
            3.0 + 1.2 * soc as f64 / 100.0,
            0.3 - soc as f64 / 1000.0
        ));
    }
    std::fs::write(dir.join("model.csv"), &csv).unwrap();
    let path = dir.join("model.csv");
    let path = path.to_str().unwrap();
    ok(
        &lager(&["model-create", "3", "--csv", path]),
        "[OK] Model 3 stored (101 points)\n",
    );
    let run = lager(&["model-create", "3", "--csv", path]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("Model slot 3 already holds a model") && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    ok(
        &lager(&["model-create", "3", "--csv", path, "--force"]),
        "[OK] Model 3 stored (101 points)\n",
    );
    let out = dir.join("export.csv");
    let out = out.to_str().unwrap();
    ok(
        &lager(&["model-export", "3", "--csv", out]),
        &format!("[OK] Model 3: 101 points, written to {out}\n"),
    );
    // The exported file is a model file: it stores into another slot as is.
    ok(
        &lager(&["model-create", "4", "--csv", out]),
        "[OK] Model 4 stored (101 points)\n",
    );
    let exported = std::fs::read_to_string(out).unwrap();
    let row = |text: &str, soc: usize| -> Vec<f64> {
        text.lines()
            .nth(soc + 1)
            .unwrap()
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect()
    };
    for soc in [0, 37, 100] {
        let (want, got) = (row(&csv, soc), row(&exported, soc));
        assert!(
            want.iter().zip(&got).all(|(a, b)| (a - b).abs() < 1e-6),
            "SOC {soc}: {want:?} vs {got:?}"
        );
    }
    let run = lager(&["models"]);
    assert!(
        run.stdout.contains("Slot 3: 101 points, VOC 3–4.2V"),
        "{}",
        run.stdout
    );
    ok(&lager(&["model", "3"]), "[OK] Model 3 recalled\n");
    assert_eq!(state_of(&b, "battery", "battery1")["model"], "3");

    // A broken file is refused before anything is sent, naming its line.
    std::fs::write(dir.join("bad.csv"), csv.replace("\n50,", "\n51,")).unwrap();
    let bad = dir.join("bad.csv");
    let run = lager(&["model-create", "5", "--csv", bad.to_str().unwrap()]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("line 52: SOC 51 where 50 was expected"),
        "{}",
        run.stderr
    );
    lager(&["model-create", "12", "--csv", path]).expect_code(2);
}

/// An `ASRL…` net: the simulated DP832 behind a pseudo-terminal, driven
/// through the serial transport exactly as a USB-serial adapter would be.
#[test]
fn a_serial_instrument_works_and_reports_its_loss_as_enodev() {
    let b = Bench::start("serial", &[]);
    let status: Value =
        serde_json::from_str(&request(b.daemon.addr(), "GET", "/status", None).text()).unwrap();
    let serial = &status["capabilities"]["serial_simulator"];
    let address = serial["address"]
        .as_str()
        .expect("serial simulator under --sim");
    assert!(
        address.starts_with("ASRL/dev/pts/") && address.ends_with("::INSTR"),
        "{address}"
    );
    b.lager(&[
        "nets",
        "add",
        "bench_psu",
        "--role",
        "supply",
        "--instrument",
        "Rigol_DP832",
        "--address",
        address,
        "--pin",
        "2",
        "--box",
        "b1",
    ])
    .expect_code(0);
    ok(
        &b.lager(&[
            "supply",
            "bench_psu",
            "--box",
            "b1",
            "voltage",
            "12.5",
            "--yes",
        ]),
        "[OK] Voltage set to 12.5V\n",
    );
    let state = state_of(&b, "supply", "bench_psu");
    assert_eq!(
        (state["channel"].as_u64(), state["voltage_set"].as_f64()),
        (Some(2), Some(12.5)),
        "{state}"
    );

    // The adapter is pulled: the far end of the tty closes.
    let mut control = TcpStream::connect(serial["control"].as_str().unwrap()).unwrap();
    writeln!(control, "drop").unwrap();
    let mut line = String::new();
    BufReader::new(control).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ok");
    let run = b.lager_with(
        &["supply", "bench_psu", "--box", "b1", "voltage"],
        &[("LAGER_DEBUG", "1")],
    );
    run.expect_code(1);
    assert!(
        run.stderr
            .starts_with("Error: Instrument disappeared from USB (re-enumeration).\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("[Errno 19] No such device: {address}")),
        "{}",
        run.stderr
    );
}

/// Issue 12 defect 1: numbers from flags and variables are range-checked
/// before they become durations. `--interval 1e20` panicked the CLI in
/// `Duration::from_secs_f64`; huge `LAGER_LOCK_WAIT`/`LAGER_LOCK_HEARTBEAT`
/// overflowed the deadline they became.
#[test]
fn issue12_huge_numbers_from_flags_and_variables_never_panic_the_cli() {
    let b = Bench::start("huge-numbers", &[]);
    for interval in ["1e20", "inf", "NaN", "0.01"] {
        let run = b.lager(&[
            "supply",
            "supply1",
            "watch",
            "--box",
            "b1",
            "--interval",
            interval,
        ]);
        run.expect_code(2);
        assert!(
            run.stderr.contains("Invalid --interval")
                && run
                    .stderr
                    .contains("use a number of seconds from 0.1 to 3600")
                && !run.stderr.contains("panicked"),
            "{interval}: {}",
            run.stderr
        );
    }
    let huge = "9223372036854775807";
    let run = b.lager_with(
        &["supply", "supply1", "--box", "b1", "voltage", "2", "--yes"],
        &[("LAGER_LOCK_WAIT", huge), ("LAGER_LOCK_HEARTBEAT", huge)],
    );
    run.expect_code(0);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(run.stdout, "[OK] Voltage set to 2V\n");
}

/// Issue 12 defect 7: an instrument that stops listening (connection
/// refused) is ENODEV, so `lager supply` prints diagnose.md §6's ENODEV
/// block, never the EBUSY one that sends users hunting for a holder.
#[test]
fn issue12_a_refusing_instrument_prints_the_enodev_block() {
    let b = Bench::start("supply-refused", &[]);
    let address = format!("TCPIP0::127.0.0.1::{}::SOCKET", crate::refused_port());
    b.lager(&[
        "nets",
        "add",
        "offpsu",
        "--box",
        "b1",
        "--role",
        "supply",
        "--instrument",
        "Keithley_2281S",
        "--address",
        &address,
    ])
    .expect_code(0);
    let run = b.lager(&["supply", "offpsu", "--box", "b1", "voltage"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Instrument disappeared from USB (re-enumeration).\n\
         \n  Try:\n\
         \x20   → The hardware service should auto-recover on the next call (0.20.0+).\n\
         \x20   → If it does not, `lager ssh b1` then `sudo docker restart lager`.\n\
         \x20 Run with --debug (or LAGER_DEBUG=1) for the full technical details.\n"
    );
    let run = b.lager_with(
        &["supply", "offpsu", "--box", "b1", "voltage"],
        &[("LAGER_DEBUG", "1")],
    );
    assert!(
        run.stderr.contains(&format!(
            "[Errno 19] No such device: {address} refused the connection"
        )) && !run.stderr.contains("held by another client"),
        "{}",
        run.stderr
    );
}

/// Issue 12 defect 4: in token mode a monitor opens an instrument session,
/// so it needs the token; `lager … watch` sends it (the entry's `token` or
/// `LAGER_BOX_TOKEN`), and without one says how to set it.
#[test]
fn issue12_watch_sends_the_token_a_token_mode_box_requires() {
    let state = lager_testsupport::TempDir::new("watch-token");
    let token_file = state.path().join("token");
    std::fs::write(&token_file, "w4tch\n").unwrap();
    let b = Bench::start(
        "watch-token",
        &["--token-file", token_file.to_str().unwrap()],
    );
    let watch = ["supply", "supply1", "watch", "--box", "b1", "--count", "1"];
    let refused = b.lager(&watch);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("requires a token") && refused.stderr.contains("LAGER_BOX_TOKEN"),
        "{}",
        refused.stderr
    );
    assert_eq!(b.sim("connections?"), "0", "a refused watch opened nothing");
    let run = b.lager_with(&watch, &[("LAGER_BOX_TOKEN", "w4tch")]);
    run.expect_code(0);
    assert!(run.stdout.contains("voltage_set="), "{}", run.stdout);
    let mut entry = entry(b.daemon.port());
    entry["token"] = json!("w4tch");
    b.cli.write_config(&json!({"BOXES": {"b1": entry}}));
    b.lager(&watch).expect_code(0);
}
