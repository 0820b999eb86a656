//! Scripts that import the on-box `lager` package (scripts.md; issue 13),
//! end to end: the real `lager python` uploads a real script to a real
//! `lagerd --sim`, the script's `from lager import Net, NetType` is the
//! package lagerd embeds, and its calls go through lagerd's shared sessions
//! to the simulated Keithley 2281S and Rigol DP832. The scripts assert
//! what they see (values, return types, exception classes and texts) and
//! print a last line; faults come from the simulators' control ports, which
//! a script reaches through `SIM_CONTROL` / `RIGOL_CONTROL`.

use lager_testsupport::{request, Daemon, TempDir};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::{entry, lagerd_path, Cli, Run};

/// Helpers every test script starts with.
const PRELUDE: &str = r#"
import os, socket, sys, time
from lager import (Net, NetType, LagerError, InvalidNetError, RoleMismatchError,
                   InstrumentError, LimitError, LockedError)

def sim(command, env="SIM_CONTROL"):
    host, port = os.environ[env].rsplit(":", 1)
    with socket.create_connection((host, int(port)), 5) as s:
        s.sendall((command + "\n").encode())
        return s.makefile().readline().strip()

def near(got, want, tol=0.02):
    assert isinstance(got, float), (got, type(got))
    assert abs(got - want) <= tol * max(abs(want), 1e-3), (got, want)

def raises(kind, call, *texts):
    try:
        call()
    except kind as e:
        for text in texts:
            assert text in str(e), (str(e), text)
        return e
    raise AssertionError("%s was not raised" % kind.__name__)

def floats(state, *keys):
    for key in keys:
        assert isinstance(state[key], float), (key, state[key])

def flags(state, *keys):
    for key in keys:
        assert isinstance(state[key], bool), (key, state[key])
"#;

/// A `lagerd --sim` with its own state dir and a CLI whose box `b1` is it.
struct ScriptBox {
    state: TempDir,
    daemon: Option<Daemon>,
    args: Vec<String>,
    cli: Cli,
    control: String,
    rigol_address: String,
    rigol_control: String,
}

impl ScriptBox {
    fn start(tag: &str, extra: &[&str]) -> ScriptBox {
        let mut args = vec!["--sim", "--health-interval-secs", "0"];
        args.extend_from_slice(extra);
        let mut b = ScriptBox {
            state: TempDir::new("lagerd-scripts"),
            daemon: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            cli: Cli::new(tag),
            control: String::new(),
            rigol_address: String::new(),
            rigol_control: String::new(),
        };
        b.restart();
        b
    }

    /// Starts (again) on the same state dir, as a reboot or an update would.
    fn restart(&mut self) {
        self.daemon = None;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let daemon = Daemon::start(&lagerd_path(), self.state.path(), &args);
        let status: Value =
            serde_json::from_str(&request(daemon.addr(), "GET", "/status", None).text())
                .expect("status JSON");
        let caps = &status["capabilities"];
        self.control = caps["simulator"]["control"].as_str().unwrap().into();
        self.rigol_address = caps["rigol_simulator"]["address"].as_str().unwrap().into();
        self.rigol_control = caps["rigol_simulator"]["control"].as_str().unwrap().into();
        let mut box_entry = entry(daemon.addr().port());
        if let Some(token) = self.token() {
            box_entry["token"] = json!(token);
        }
        self.cli.write_config(&json!({"BOXES": {"b1": box_entry}}));
        self.daemon = Some(daemon);
    }

    fn token(&self) -> Option<String> {
        let at = self.args.iter().position(|a| a == "--token-file")?;
        Some(
            std::fs::read_to_string(&self.args[at + 1])
                .ok()?
                .trim()
                .into(),
        )
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("lagerd runs")
    }

    fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Writes PRELUDE + `body` as `name` in the CLI's working dir.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.cli.work_dir().join(name);
        std::fs::write(&path, format!("{PRELUDE}\n{body}")).expect("write script");
        path
    }

    fn python_args(&self, script: &Path) -> Vec<String> {
        vec![
            "python".into(),
            script.display().to_string(),
            "--box".into(),
            "b1".into(),
            "--env".into(),
            format!("SIM_CONTROL={}", self.control),
            "--env".into(),
            format!("RIGOL_CONTROL={}", self.rigol_control),
            "--env".into(),
            format!("RIGOL_ADDRESS={}", self.rigol_address),
        ]
    }

    /// `lager python <script>` to completion.
    fn python(&self, name: &str, body: &str) -> Run {
        self.python_with(name, body, &[])
    }

    fn python_with(&self, name: &str, body: &str, env: &[(&str, &str)]) -> Run {
        let script = self.script(name, body);
        let args = self.python_args(&script);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli.run_with(&args, env)
    }

    fn lager(&self, args: &[&str]) -> Run {
        self.cli.run(args)
    }

    /// One line to a simulator's control port.
    fn sim(&self, control: &str, command: &str) -> String {
        let mut stream = TcpStream::connect(control).expect("control port");
        writeln!(stream, "{command}").expect("send");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("reply");
        line.trim().to_string()
    }

    fn add_rigol_net(&self, name: &str, pin: &str) {
        self.lager(&[
            "nets",
            "add",
            name,
            "--role",
            "supply",
            "--instrument",
            "Rigol_DP832",
            "--address",
            &self.rigol_address,
            "--pin",
            pin,
            "--box",
            "b1",
        ])
        .expect_code(0);
    }
}

/// The script ran to its end: exit 0 and its last line.
fn passed(run: &Run, last_line: &str) {
    run.expect_code(0);
    assert_eq!(
        run.stdout.lines().last(),
        Some(last_line),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn a_supply_net_has_every_method_with_its_return_type() {
    let b = ScriptBox::start("scripts-supply", &[]);
    let run = b.python(
        "supply.py",
        r#"
psu = Net.get("supply1", type=NetType.PowerSupply)
for text in (str(psu), repr(psu)):
    for part in ("supply1", "power-supply", "Keithley_2281S", psu.address):
        assert part in text, (text, part)
assert psu.set_voltage(5) is None and psu.set_current(1) is None
assert psu.set_ovp(6) is None and psu.set_ocp(2) is None
assert psu.get_ovp_limit() == 6.0 and psu.get_ocp_limit() == 2.0
assert psu.get_channel_limits() == {"voltage_max": 20.0, "current_max": 6.0}
assert psu.enable() is None and psu.output_is_enabled() is True
# Output on, no load: constant voltage at the set-point, no current.
v, i = psu.voltage(), psu.current()
near(v, 5.0)
assert isinstance(i, float) and i < 0.1, i
assert psu.get_output_mode() == "CV"
assert abs(psu.power() - v * i) < 1e-6
# A load past the limit: constant current, the voltage gives way, P = V x I.
sim("set_load_current 2.5")
assert psu.get_output_mode() == "CC"
near(psu.current(), 1.0)
assert psu.voltage() < 4.9
near(psu.power(), psu.voltage() * psu.current())
sim("set_load_current 0")
state = psu.get_monitor_state()
assert sorted(state) == sorted(["voltage", "current", "power", "enabled", "mode", "voltage_set",
    "current_set", "voltage_max", "current_max", "ocp_limit", "ocp_tripped", "ovp_limit",
    "ovp_tripped"]), state
floats(state, "voltage", "current", "power", "voltage_set", "current_set", "voltage_max",
       "current_max", "ocp_limit", "ovp_limit")
flags(state, "enabled", "ocp_tripped", "ovp_tripped")
assert psu.get_full_state()["netname"] == "supply1"
assert psu.state() is None
assert psu.is_ovp() is False and psu.is_ocp() is False
# Drawing more than the OCP level trips it as the output comes on.
psu.disable()
psu.set_ocp(0.5)
sim("set_load_current 2")
raises(InstrumentError, psu.enable, "protection tripped (OCP)")
assert psu.is_ocp() is True and psu.output_is_enabled() is False
assert psu.clear_ocp() is None and psu.is_ocp() is False
sim("set_load_current 0")
psu.set_ocp(2)
# OVP below the set-point trips it as the output comes on.
psu.set_voltage(3)
psu.set_ovp(4)
psu.set_voltage(5)
raises(InstrumentError, psu.enable, "protection tripped (OVP)")
assert psu.is_ovp() is True and psu.output_is_enabled() is False
assert psu.clear_ovp() is None and psu.is_ovp() is False
psu.set_ovp(6)
for n in range(25):
    psu.enable()
    psu.disable()
psu.enable()
assert psu.output_is_enabled() is True
psu.disable()
assert psu.output_is_enabled() is False
# With an argument, voltage() and current() set.
assert psu.voltage(4) is None and psu.current(0.25) is None
psu.enable()
near(psu.voltage(), 4.0)
psu.disable()
assert psu.set_mode() is None
print("SUPPLY OK")
"#,
    );
    passed(&run, "SUPPLY OK");
    assert!(
        run.stdout
            .contains("Channel 1: ON, Set: 5.0V/1.0A, Measured: 5.0V/0.0A"),
        "state() prints the state line: {}",
        run.stdout
    );
}

#[test]
fn a_battery_net_has_every_method_with_its_return_type() {
    let b = ScriptBox::start("scripts-battery", &[]);
    let run = b.python(
        "battery.py",
        r#"
bat = Net.get("battery1", type=NetType.Battery)
assert "battery1" in str(bat) and "battery" in repr(bat)
assert bat.set_mode_battery() is None
bat.voltage_full(4.2)
bat.voltage_empty(3.0)
# SOC and VOC are one state: the model ties them.
assert bat.soc(50) is None
near(bat.voc(), 3.6)
bat.voc(3.9)
near(bat.soc(), 75.0)
assert bat.voltage_full() == 4.2 and bat.voltage_empty() == 3.0
bat.capacity(2.5)
assert bat.capacity() == 2.5
bat.current_limit(1.5)
assert bat.current_limit() == 1.5
bat.ovp(5)
assert bat.ovp() == 5.0
bat.ocp(2)
assert bat.ocp() == 2.0
bat.mode("dynamic")
assert bat.mode() == "dynamic"
bat.mode("static")
assert bat.mode() == "static"
bat.model("NIMH1_2")
assert bat.model() == "NIMH1_2"
assert bat.enable() is None
sim("set_load_current 0.5")
i, esr, voc, vt = bat.current(), bat.esr(), bat.voc(), bat.terminal_voltage()
near(i, 0.5)
near(esr, 0.067)
near(vt, voc - i * esr, 0.0005)
state = bat.get_monitor_state()
assert len(state) == 16, state
floats(state, "terminal_voltage", "current", "esr", "soc", "voc", "capacity", "current_limit",
       "ocp_limit", "ovp_limit", "volt_full", "volt_empty")
flags(state, "enabled", "ocp_tripped", "ovp_tripped")
assert state["enabled"] is True
assert bat.print_state() is None
sim("set_load_current 0")
assert bat.disable() is None
assert bat.get_monitor_state()["enabled"] is False
assert bat.clear() is None and bat.clear_ovp() is None and bat.clear_ocp() is None
# The driver-level names.
bat.set_to_battery_mode()
bat.set_volt_full(4.2)
bat.set_volt_empty(3.0)
bat.set_soc(80)
near(bat.get_monitor_state()["voc"], 3.96)
bat.set_voc(4.08)
near(bat.get_monitor_state()["soc"], 90.0)
bat.set_capacity(3)
bat.set_current_limit(1)
bat.set_ovp(4.5)
bat.set_ocp(1.5)
bat.set_mode("dynamic")
bat.set_model("LI-ION4_2")
bat.enable_battery()
state = bat.get_monitor_state()
assert (state["capacity"], state["current_limit"], state["ovp_limit"], state["ocp_limit"],
        state["mode"], state["model"], state["enabled"]) == (
        3.0, 1.0, 4.5, 1.5, "Dynamic", "LI-ION4_2", True), state
bat.disable_battery()
print("BATTERY OK")
"#,
    );
    passed(&run, "BATTERY OK");
    for printed in [
        "SOC: 75%",
        "VOC: 3.6V",
        "Mode: dynamic",
        "Model: NIMH1_2",
        "Battery: ON",
    ] {
        assert!(run.stdout.contains(printed), "{printed}: {}", run.stdout);
    }
}

#[test]
fn a_rigol_channel_net_has_the_supply_methods_per_channel() {
    let b = ScriptBox::start("scripts-rigol", &[]);
    b.add_rigol_net("rail", "2");
    b.add_rigol_net("rail5", "3");
    let run = b.python(
        "rigol.py",
        r#"
rail = Net.get("rail", type=NetType.PowerSupply)
assert "Rigol_DP832" in str(rail) and "channel 2" in str(rail), str(rail)
assert rail.get_channel_limits() == {"voltage_max": 30.0, "current_max": 3.0}
rail.set_voltage(12)
rail.set_current(1)
rail.enable()
assert rail.output_is_enabled() is True
near(rail.voltage(), 12.0)
assert rail.current() < 0.1 and rail.get_output_mode() == "CV"
sim("set_load_current 2", "RIGOL_CONTROL")
assert rail.get_output_mode() == "CC"
near(rail.current(), 1.0)
near(rail.power(), rail.voltage() * rail.current())
sim("set_load_current 0", "RIGOL_CONTROL")
rail.disable()
# OVP below the set-point: the DP800 trips as the output comes on.
rail.set_ovp(10)
assert rail.get_ovp_limit() == 10.0
raises(InstrumentError, rail.enable, "protection tripped (OVP)")
assert rail.is_ovp() is True and rail.output_is_enabled() is False
rail.clear_ovp()
assert rail.is_ovp() is False
rail.set_ovp(20)
rail.set_ocp(0.5)
assert rail.get_ocp_limit() == 0.5
sim("set_load_current 2", "RIGOL_CONTROL")
raises(InstrumentError, rail.enable, "protection tripped (OCP)")
assert rail.is_ocp() is True
rail.clear_ocp()
assert rail.is_ocp() is False
sim("set_load_current 0", "RIGOL_CONTROL")
rail.set_ocp(3)
for n in range(10):
    rail.enable()
    rail.disable()
state = rail.get_monitor_state()
assert len(state) == 13 and state["voltage_max"] == 30.0, state
flags(state, "enabled", "ocp_tripped", "ovp_tripped")
assert rail.get_full_state()["channel"] == 2
rail.state()
raises(LimitError, lambda: rail.set_voltage(31), "Voltage 31V is outside the instrument's range 0–30V")
five = Net.get("rail5", type=NetType.PowerSupply)
assert five.get_channel_limits() == {"voltage_max": 5.0, "current_max": 3.0}
raises(LimitError, lambda: five.set_voltage(6), "Voltage 6V is outside the instrument's range 0–5V")
print("RIGOL OK")
"#,
    );
    passed(&run, "RIGOL OK");
    assert!(run.stdout.contains("Channel 2: OFF"), "{}", run.stdout);
}

#[test]
fn every_failure_reaches_the_script_as_its_exception() {
    let b = ScriptBox::start("scripts-errors", &["--instrument-timeout-ms", "500"]);
    let run = b.python(
        "errors.py",
        r#"
raises(InvalidNetError, lambda: Net.get("nope", type=NetType.PowerSupply),
       "Net 'nope' not found. Create it with 'lager nets add'.",
       "Saved nets: supply1 (power-supply), battery1 (battery)")
raises(RoleMismatchError, lambda: Net.get("battery1", type=NetType.PowerSupply),
       "Net 'battery1' is a 'battery' net, not 'power-supply'.")
raises(NotImplementedError, lambda: Net.get("supply1", type=NetType.GPIO),
       "does not drive NetType.GPIO nets; it drives NetType.PowerSupply, NetType.Battery")
psu = Net.get("supply1", type=NetType.PowerSupply)
e = raises(LimitError, lambda: psu.set_voltage(25),
           "Voltage 25V is outside the instrument's range 0–20V")
assert isinstance(e, ValueError) and isinstance(e, LagerError)
bat = Net.get("battery1", type=NetType.Battery)
raises(LimitError, lambda: bat.soc(101), "SOC 101% is outside the instrument's range 0–100%")
# The instrument accepts and resets every open (instruments.md §10.8) for
# longer than lagerd retries (3.7 s).
assert sim("busy_ms 8000") == "OK"
e = raises(InstrumentError, psu.voltage, "[Errno 16] Resource busy")
assert e.errno == 16, e.errno
sim("busy_ms 0")
psu.voltage()
assert sim("drop") == "OK"
e = raises(InstrumentError, psu.voltage, "[Errno 19] No such device")
assert e.errno == 19, e.errno
sim("replug")
psu.voltage()
assert sim("mute") == "OK"
e = raises(InstrumentError, psu.voltage, "[Errno 110] Operation timed out")
assert e.errno == 110, e.errno
sim("unmute")
assert isinstance(psu.voltage(), float)
print("ERRORS OK")
"#,
    );
    passed(&run, "ERRORS OK");
}

#[test]
fn a_watch_of_the_other_role_reaches_the_script_as_the_conflict() {
    let b = ScriptBox::start("scripts-watch", &[]);
    let mut watch = b
        .cli
        .command(&[
            "battery",
            "battery1",
            "watch",
            "--box",
            "b1",
            "--interval",
            "0.2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn lager battery watch");
    let mut first = String::new();
    BufReader::new(watch.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first reading");
    let run = b.python(
        "conflict.py",
        r#"
psu = Net.get("supply1", type=NetType.PowerSupply)
e = raises(InstrumentError, lambda: psu.set_voltage(1),
    "'supply1' is on the same Keithley 2281S as 'battery1', which is currently in use as a "
    "battery. The 2281S supports one role at a time — close the battery session first.")
assert e.errno is None
raises(InstrumentError, psu.voltage, "currently in use as a battery")
# The watch's own role is not refused.
near(Net.get("battery1").soc(), 100.0)
print("CONFLICT OK")
"#,
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    watch.wait().expect("watch exits");
    passed(&run, "CONFLICT OK");
}

#[test]
fn a_script_and_the_cli_share_one_session_and_switch_role_only_on_change() {
    let b = ScriptBox::start("scripts-interleave", &[]);
    let control = b.control.clone();
    // Open the session, then count from here.
    b.lager(&["supply", "supply1", "voltage", "--box", "b1"])
        .expect_code(0);
    let connections = b.sim(&control, "connections?");
    b.sim(&control, "clear_log");

    // A script reading in a loop while CLI commands of the same role run.
    let script = b.script(
        "loop.py",
        r#"
psu = Net.get("supply1", type=NetType.PowerSupply)
for n in range(300):
    assert isinstance(psu.voltage(), float)
print("LOOP OK")
"#,
    );
    let args = b.python_args(&script);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let looping = b
        .cli
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lager python");
    for volts in ["1", "2", "3"] {
        b.lager(&[
            "supply", "supply1", "voltage", volts, "--yes", "--box", "b1",
        ])
        .expect_code(0);
        b.lager(&["supply", "supply1", "state", "--box", "b1"])
            .expect_code(0);
    }
    let out = looping.wait_with_output().expect("script ends");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).ends_with("LOOP OK\n"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Then the roles alternate: script (supply), CLI (battery), script
    // (battery), CLI (supply), script (supply).
    passed(
        &b.python(
            "s1.py",
            "Net.get('supply1', type=NetType.PowerSupply).set_voltage(2.5)\nprint('S1')",
        ),
        "S1",
    );
    b.lager(&["battery", "battery1", "soc", "60", "--box", "b1"])
        .expect_code(0);
    passed(
        &b.python(
            "s2.py",
            "near(Net.get('battery1', type=NetType.Battery).soc(), 60.0)\nprint('S2')",
        ),
        "S2",
    );
    b.lager(&["supply", "supply1", "voltage", "2", "--yes", "--box", "b1"])
        .expect_code(0);
    passed(
        &b.python(
            "s3.py",
            "assert Net.get('supply1').voltage() == 2.0\nprint('S3')",
        ),
        "S3",
    );
    assert_eq!(
        b.sim(&control, "connections?"),
        connections,
        "one connection for the script and the CLI"
    );
    let log = b.sim(&control, "log?");
    let switches: Vec<&str> = log
        .split(';')
        .filter(|c| c.starts_with(":ENTR:FUNC ") || c.starts_with("ENTR:FUNC "))
        .collect();
    assert_eq!(
        switches,
        [":ENTR:FUNC BATT", ":ENTR:FUNC POW"],
        "entry-function writes only on the two role changes"
    );
}

#[test]
fn the_net_store_is_the_boxs_through_lagerd() {
    let b = ScriptBox::start("scripts-store", &[]);
    let run = b.python(
        "store.py",
        r#"
names = lambda nets: [n["name"] for n in nets]
# --sim: the Keithley's two roles and the simulated device's console.
assert names(Net.list_saved()) == ["supply1", "battery1", "console1"], Net.list_saved()
assert Net.get_local_nets() == []
keithley = [n for n in Net.list_saved() if n["name"] == "supply1"][0]
rail = {"name": "rail", "role": "power-supply", "instrument": "Rigol_DP832",
        "address": os.environ["RIGOL_ADDRESS"], "pin": 1}
assert Net.save_local_net(rail) is True
assert names(Net.get_local_nets()) == ["rail"]
Net.get("rail", type=NetType.PowerSupply).set_voltage(2)
assert Net.rename_local_net("rail", "vbus") is True
assert Net.rename_local_net("ghost", "x") is False
raises(LagerError, lambda: Net.rename_local_net("vbus", "supply1"), "already exists")
assert names(Net.list_saved()) == ["supply1", "battery1", "console1", "vbus"]
vbat = dict(keithley, name="vbat", role="battery")
Net.save_local_nets([rail, vbat])
assert names(Net.get_local_nets()) == ["rail", "vbat"]
assert Net.delete_local_net("rail", role="battery") is False
assert Net.delete_local_net("rail", role=NetType.PowerSupply) is True
assert Net.filter_nets(Net.list_saved(), "vbat", role="battery")[0]["name"] == "vbat"
assert Net.delete_all_local_nets() is True
assert Net.get_local_nets() == [] and len(Net.list_saved()) == 3
Net.save_local_net(dict(vbat, name="kept"))
print("STORE OK")
"#,
    );
    passed(&run, "STORE OK");
    let saved: Value = serde_json::from_slice(
        &std::fs::read(b.state_dir().join("saved_nets.json")).expect("saved_nets.json"),
    )
    .expect("JSON");
    assert_eq!(saved[0]["name"], "kept");
    assert_eq!(saved.as_array().map(Vec::len), Some(1));
}

#[test]
fn with_a_token_the_job_is_let_in_and_the_token_shows_nowhere() {
    let dir = TempDir::new("scripts-token");
    let token_file = dir.path().join("token");
    let token = "box-token-b7c1e0d9f3a24c85";
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let b = ScriptBox::start(
        "scripts-token",
        &["--token-file", token_file.to_str().unwrap()],
    );
    // Token mode is on: a change without it is refused.
    let body = json!({"netname": "supply1", "action": "voltage", "params": {"value": 1}});
    let reply = request(
        b.daemon().addr(),
        "POST",
        "/supply/command",
        Some(&body.to_string()),
    );
    assert_eq!(reply.status, 401);
    let run = b.python(
        "token.py",
        r#"
import json
job_token = open(os.environ["LAGER_JOB_TOKEN_FILE"]).read().strip()
assert len(job_token) >= 32
assert not any(job_token in value for value in os.environ.values())
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            assert job_token.encode() not in f.read(), pid
    except OSError:
        pass
print(json.dumps(dict(os.environ), sort_keys=True))
psu = Net.get("supply1", type=NetType.PowerSupply)
psu.set_voltage(1.5)
assert psu.voltage() == 1.5
print("JOBTOKEN " + job_token)
print("TOKEN OK")
"#,
    );
    passed(&run, "TOKEN OK");
    assert!(!run.stdout.contains(token) && !run.stderr.contains(token));
    assert!(run.stdout.contains("\"LAGER_JOB_TOKEN_FILE\""));
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(token),
                "{:?}",
                entry.path()
            );
        }
    }
    // The job's token died with the job.
    let job_token = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("JOBTOKEN "))
        .expect("job token line");
    let reply = lager_testsupport::raw_request(
        b.daemon().addr(),
        format!(
            "POST /supply/command HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {job_token}\r\nContent-Length: {}\r\n\r\n{body}",
            body.to_string().len()
        )
        .as_bytes(),
    )
    .expect("request");
    assert_eq!(reply.status, 401, "{}", reply.text());
}

#[test]
fn with_enforced_locks_a_job_acts_as_its_runs_holder() {
    let b = ScriptBox::start("scripts-enforce", &["--enforce-locks"]);
    // An auto-locked run: the box is held for the CLI's holder, and the
    // job's requests carry that holder.
    let run = b.python(
        "held.py",
        r#"
from lager.daemon import daemon
lock = daemon().get("/lock")
assert lock["locked"] is True and lock["user"] == "tester", lock
psu = Net.get("supply1", type=NetType.PowerSupply)
psu.set_voltage(2)
psu.enable()
psu.disable()
print("HELD OK")
"#,
    );
    passed(&run, "HELD OK");
    assert_eq!(
        json!({"locked": false}),
        serde_json::from_str::<Value>(&request(b.daemon().addr(), "GET", "/lock", None).text())
            .unwrap()
    );

    // A run that took no lock is refused like anyone else once someone
    // else holds the box; its reads still work.
    let script = b.script(
        "unheld.py",
        r#"
from lager.daemon import daemon
psu = Net.get("supply1", type=NetType.PowerSupply)
psu.set_voltage(3)
print("READY", flush=True)
deadline = time.time() + 30
while not daemon().get("/lock").get("locked"):
    assert time.time() < deadline, "nobody locked the box"
    time.sleep(0.05)
e = raises(LockedError, lambda: psu.set_voltage(4), "Box is locked by alice")
assert e.status == 423
assert psu.voltage() == 3.0
print("ENFORCED OK")
"#,
    );
    let args = b.python_args(&script);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = b
        .cli
        .command(&args)
        .env("LAGER_AUTO_LOCK_DISABLE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lager python");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("READY");
    assert_eq!(line, "READY\n");
    let reply = request(
        b.daemon().addr(),
        "POST",
        "/lock",
        Some(r#"{"user": "alice"}"#),
    );
    assert_eq!(reply.status, 200);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("rest of stdout");
    let status = child.wait().expect("lager python ends");
    assert!(
        status.success() && rest.ends_with("ENFORCED OK\n"),
        "{rest}"
    );
}

/// A real wheel, made with Python's zipfile and hashlib: `name/__init__.py`
/// holding `body`, METADATA, WHEEL and a RECORD with hashes.
fn make_wheel(dir: &Path, name: &str, version: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("{name}-{version}-py3-none-any.whl"));
    let status = std::process::Command::new("python3")
        .args(["-c", MAKE_WHEEL, name, version, body])
        .arg(&path)
        .status()
        .expect("python3");
    assert!(status.success());
    path
}

const MAKE_WHEEL: &str = r#"
import sys, zipfile, base64, hashlib
name, version, body, out = sys.argv[1:5]
info = "%s-%s.dist-info" % (name, version)
files = {
    name + "/__init__.py": body,
    info + "/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version),
    info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: lager-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for path, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append("%s,sha256=%s,%d" % (path, digest, len(text.encode())))
record.append(info + "/RECORD,,")
files[info + "/RECORD"] = "\n".join(record) + "\n"
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for path, text in files.items():
        z.writestr(path, text)
"#;

#[test]
fn installed_wheels_are_imported_survive_restarts_and_a_broken_one_changes_nothing() {
    let mut b = ScriptBox::start("scripts-wheels", &[]);
    let dir = b.cli.work_dir();
    let v1 = make_wheel(&dir, "bench_helpers", "1.0", "GREETING = 'one'\n");
    let v2 = make_wheel(&dir, "bench_helpers", "2.0", "GREETING = 'two'\n");
    let v1 = v1.to_str().unwrap();
    let run = b.lager(&["install-wheel", v1, "--box", "b1"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Successfully installed bench-helpers 1.0\n");
    let greet = "import bench_helpers\nprint(bench_helpers.GREETING)";
    passed(&b.python("greet.py", greet), "one");

    // A restart (as after a reboot or `lager update`) keeps it.
    b.restart();
    passed(&b.python("greet.py", greet), "one");
    let run = b.lager(&["install-wheel", "--list", "--box", "b1"]);
    assert_eq!(run.stdout, "bench-helpers 1.0\n");

    let run = b.lager(&["install-wheel", v2.to_str().unwrap(), "--box", "b1"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "Uninstalled previous version of bench-helpers\nSuccessfully installed bench-helpers 2.0\n"
    );
    passed(&b.python("greet.py", greet), "two");

    // A wheel pip refuses (no WHEEL file): named, pip's words shown, exit
    // 1, and version 2 stays.
    let broken = dir.join("bench_helpers-3.0-py3-none-any.whl");
    {
        let file = std::fs::File::create(&broken).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        zip.start_file(
            "bench_helpers-3.0.dist-info/METADATA",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(b"Name: bench_helpers\nVersion: 3.0\n")
            .unwrap();
        zip.finish().unwrap();
    }
    let run = b.lager(&["install-wheel", broken.to_str().unwrap(), "--box", "b1"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(
            "pip could not install bench_helpers-3.0-py3-none-any.whl; nothing was changed"
        ) && run.stderr.contains("WHEEL"),
        "{}",
        run.stderr
    );
    passed(&b.python("greet.py", greet), "two");
    assert_eq!(
        b.lager(&["install-wheel", "--list", "--box", "b1"]).stdout,
        "bench-helpers 2.0\n"
    );
    // Not a wheel at all: refused here, nothing sent.
    let run = b.lager(&["install-wheel", "notes.txt", "--box", "b1"]);
    run.expect_code(1);
    assert!(run.stderr.contains("is not a wheel"), "{}", run.stderr);

    let run = b.lager(&[
        "install-wheel",
        "--uninstall",
        "bench_helpers",
        "--box",
        "b1",
    ]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Uninstalled bench-helpers 2.0\n");
    let run = b.python("greet.py", greet);
    run.expect_code(1);
    assert!(
        run.stderr.contains("No module named 'bench_helpers'"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_modules_requirements_install_into_the_same_site_dir_once() {
    let b = ScriptBox::start("scripts-requirements", &[]);
    let module = b.cli.work_dir().join("module");
    std::fs::create_dir_all(&module).unwrap();
    make_wheel(&module, "req_helper", "1.5", "VALUE = 15\n");
    // Offline, as on an air-gapped box: the wheel ships in the module.
    std::fs::write(
        module.join("requirements.txt"),
        "--no-index\nreq_helper==1.5\n",
    )
    .unwrap();
    std::fs::write(
        module.join("main.py"),
        "import req_helper\nprint('value', req_helper.VALUE)\n",
    )
    .unwrap();
    let module_arg = module.display().to_string();
    let run = b.lager(&["python", &module_arg, "--box", "b1"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "value 15\n", "{}", run.stderr);
    // Installed where every job (and --list) sees it.
    let run = b.lager(&["install-wheel", "--list", "--box", "b1"]);
    assert_eq!(run.stdout, "req-helper 1.5\n");
    passed(
        &b.python("uses.py", "import req_helper\nprint(req_helper.VALUE)"),
        "15",
    );
    // The same requirements again: no pip, no new generation.
    let generations = || {
        std::fs::read_dir(b.state_dir().join("python"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("site-"))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .max()
    };
    let before = generations();
    b.lager(&["python", &module_arg, "--box", "b1"])
        .expect_code(0);
    assert_eq!(generations(), before);
}

#[test]
fn lagerd_python_path_gives_a_box_shell_the_package() {
    let b = ScriptBox::start("scripts-python-path", &[]);
    let out = std::process::Command::new(lagerd_path())
        .arg("python-path")
        .arg("--state-dir")
        .arg(b.state_dir())
        .output()
        .expect("lagerd python-path");
    assert!(out.status.success());
    let path = String::from_utf8(out.stdout).unwrap();
    let package_dir = path.trim().split(':').next().unwrap().to_string();
    assert!(
        Path::new(&package_dir).join("lager/__init__.py").is_file(),
        "{path}"
    );
    let url = format!("http://{}", b.daemon().addr());
    let run = std::process::Command::new("python3")
        .args([
            "-c",
            "from lager import Net, NetType; print(len(NetType), Net.get('supply1'))",
        ])
        .env("PYTHONPATH", path.trim())
        .env("LAGER_DAEMON_URL", &url)
        .output()
        .expect("python3");
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        printed.starts_with("24 power-supply net 'supply1' (Keithley_2281S at TCPIP0::127.0.0.1::"),
        "{printed}{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
