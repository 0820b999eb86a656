//! Instruments (instruments.md §2–§10) against the simulated Keithley 2281S
//! of `lagerd --sim`, over real sockets; faults come from the simulator's
//! control port, never from mocks.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lager_testsupport::{request, Daemon, TempDir};
use serde_json::{json, Value};

use crate::lagerd;

struct Bench {
    daemon: Daemon,
    _dir: TempDir,
    control: String,
}

impl Bench {
    fn start(tag: &str, extra: &[&str]) -> Bench {
        let dir = TempDir::new(tag);
        let mut args = vec!["--sim", "--health-interval-secs", "0"];
        args.extend_from_slice(extra);
        let daemon = Daemon::start(&lagerd(), dir.path(), &args);
        let status: Value =
            serde_json::from_slice(&request(daemon.addr(), "GET", "/status", None).body).unwrap();
        let control = status["capabilities"]["simulator"]["control"]
            .as_str()
            .unwrap()
            .to_string();
        Bench {
            daemon,
            _dir: dir,
            control,
        }
    }

    fn command(&self, role: &str, body: Value) -> (u16, Value) {
        let reply = request(
            self.daemon.addr(),
            "POST",
            &format!("/{role}/command"),
            Some(&body.to_string()),
        );
        (reply.status, serde_json::from_slice(&reply.body).unwrap())
    }

    fn supply(&self, action: &str, value: Option<f64>) -> (u16, Value) {
        let params = value.map_or(json!({}), |v| json!({"value": v}));
        self.command(
            "supply",
            json!({"netname": "supply1", "action": action, "params": params}),
        )
    }

    fn battery(&self, action: &str, value: Option<Value>) -> (u16, Value) {
        let params = value.map_or(json!({}), |v| json!({"value": v}));
        self.command(
            "battery",
            json!({"netname": "battery1", "action": action, "params": params}),
        )
    }

    /// One line to the simulator's control port, one line back.
    fn sim(&self, line: &str) -> String {
        let mut stream = TcpStream::connect(&self.control).unwrap();
        writeln!(stream, "{line}").unwrap();
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).unwrap();
        reply.trim().to_string()
    }

    fn log(&self) -> Vec<String> {
        self.sim("log?")
            .split(';')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn both_roles_share_one_session_and_switch_function_only_on_role_changes() {
    let b = Bench::start("dual-role", &[]);
    assert_eq!(
        b.supply("voltage", Some(5.0)),
        (
            200,
            json!({"success": true, "action": "voltage", "message": "Voltage set to 5V",
                   "state": {"voltage_set": 5.0, "netname": "supply1"}})
        )
    );
    assert_eq!(b.supply("enable", None).0, 200);
    assert_eq!(b.supply("voltage", None).1["message"], "Voltage: 5V");
    assert_eq!(
        b.battery("set_soc", Some(json!(42))).1["message"],
        "SOC set to 42%"
    );
    let (_, state) = b.battery("state", None);
    assert_eq!(
        (
            state["state"]["soc"].as_f64(),
            state["state"]["netname"].as_str()
        ),
        (Some(42.0), Some("battery1"))
    );
    assert_eq!(b.supply("voltage", Some(3.3)).0, 200);
    let (_, state) = b.supply("state", None);
    assert_eq!(state["state"]["voltage_set"], 3.3);

    assert_eq!(b.sim("connections?"), "1", "one session opened in total");
    let switches: Vec<String> = b
        .log()
        .into_iter()
        .filter(|c| c.starts_with(":ENTR:FUNC "))
        .collect();
    assert_eq!(
        switches,
        [":ENTR:FUNC BATT", ":ENTR:FUNC POW"],
        "switched exactly when the role changed"
    );
    let queries = b.log().iter().filter(|c| *c == ":ENTR:FUNC?").count();
    assert_eq!(
        queries, 3,
        "once to learn it, once after each switch to confirm it"
    );
}

#[test]
fn concurrent_clients_never_interleave_at_the_instrument() {
    let b = Bench::start("concurrent", &[]);
    let addr = b.daemon.addr();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                for round in 0..8 {
                    let (role, body, expect) = if (i + round) % 2 == 0 {
                        let volts = f64::from(i) + f64::from(round) / 10.0;
                        (
                            "supply",
                            json!({"netname": "supply1", "action": "voltage", "params": {"value": volts}}),
                            format!("Voltage set to {}V", format!("{volts:.1}").trim_end_matches(".0")),
                        )
                    } else {
                        ("battery", json!({"netname": "battery1", "action": "state"}), "Battery: ".to_string())
                    };
                    let reply = request(addr, "POST", &format!("/{role}/command"), Some(&body.to_string()));
                    let reply: Value = serde_json::from_slice(&reply.body).unwrap();
                    let message = reply["message"].as_str().unwrap_or_default();
                    if reply["success"] != true || !message.starts_with(&expect) {
                        errors.push(format!("{body} -> {reply}"));
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(b.sim("connections?"), "1");
    // Every battery state read is one uninterrupted run of queries.
    let log = b.log();
    for (at, command) in log.iter().enumerate() {
        if command == ":BATT:SIM:TVOL?" {
            let run = &log[at..at + 11];
            assert!(
                run.iter().all(|c| c.starts_with(":BATT:SIM:")),
                "interleaved: {run:?}"
            );
        }
    }
}

#[test]
fn a_busy_instrument_is_retried_with_backoff() {
    let b = Bench::start("busy", &[]);
    assert_eq!(b.sim("busy_ms 600"), "OK");
    std::thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    let (status, reply) = b.supply("voltage", Some(2.0));
    assert_eq!(status, 200, "{reply}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "succeeded only after the claim ended"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_vanished_instrument_fails_clearly_then_recovers_without_a_restart() {
    let b = Bench::start("nodev", &[]);
    assert_eq!(b.supply("voltage", Some(4.0)).0, 200);
    assert_eq!(b.sim("drop"), "OK");
    let (status, reply) = b.supply("voltage", None);
    assert_eq!(status, 502);
    let error = reply["error"].as_str().unwrap();
    assert!(error.starts_with("[Errno 19] No such device"), "{error}");
    assert!(
        error.contains("TCPIP0::127.0.0.1::"),
        "names the address: {error}"
    );
    // Replugged: the next command opens a new session and works.
    assert_eq!(b.sim("replug"), "OK");
    let (status, reply) = b.supply("voltage", Some(4.5));
    assert_eq!(
        (status, reply["message"].as_str()),
        (200, Some("Voltage set to 4.5V"))
    );
    assert_eq!(
        b.sim("connections?"),
        "2",
        "the dead session was closed and one new one opened"
    );
}

#[test]
fn a_stale_session_is_reopened_and_the_command_retried_once() {
    let b = Bench::start("stale", &[]);
    assert_eq!(b.supply("voltage", Some(4.0)).0, 200);
    // The link resets under an open session, but the instrument is back at
    // once (a quick re-enumeration): the user sees no error at all.
    assert_eq!(b.sim("drop"), "OK");
    assert_eq!(b.sim("replug"), "OK");
    let (status, reply) = b.supply("voltage", None);
    assert_eq!(
        (status, reply["message"].as_str()),
        (200, Some("Voltage: 4V")),
        "{reply}"
    );
    assert_eq!(
        b.sim("connections?"),
        "2",
        "one reopen, then the retried call"
    );
    // Gone for good: the retry's reopen fails and the error stands.
    assert_eq!(b.sim("drop"), "OK");
    let (status, reply) = b.supply("voltage", None);
    assert_eq!(status, 502, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("[Errno 19] No such device"),
        "{reply}"
    );
}

#[test]
fn a_silent_or_garbling_instrument_is_an_error_and_the_session_recovers() {
    let b = Bench::start("mute", &["--instrument-timeout-ms", "300"]);
    assert_eq!(b.supply("voltage", Some(1.0)).0, 200);
    b.sim("mute");
    let (status, reply) = b.supply("state", None);
    assert_eq!(status, 502);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("[Errno 110] Operation timed out"),
        "{reply}"
    );
    b.sim("unmute");
    assert_eq!(
        b.supply("voltage", None).1["message"],
        "Voltage: 1V",
        "a late reply never answers a later command"
    );

    b.sim("garble 1");
    let (status, reply) = b.supply("voltage", None);
    assert_eq!(status, 502);
    assert!(
        reply["error"].as_str().unwrap().contains("garbled"),
        "{reply}"
    );
    assert_eq!(b.supply("voltage", None).1["message"], "Voltage: 1V");
}

#[test]
fn bad_requests_are_refused_and_leave_the_instrument_alone() {
    let b = Bench::start("bad", &[]);
    assert_eq!(b.supply("voltage", Some(5.0)).0, 200);
    let before = b.log().len();
    let cases = [
        (
            "supply",
            json!({"action": "voltage"}),
            400,
            "netname and action are required",
        ),
        (
            "supply",
            json!({"netname": "ghost", "action": "voltage"}),
            404,
            "Net 'ghost' not found. Create it with 'lager nets add'.",
        ),
        (
            "supply",
            json!({"netname": "battery1", "action": "voltage"}),
            400,
            "Net 'battery1' is a 'battery' net, not 'power-supply'.",
        ),
        (
            "supply",
            json!({"netname": "supply1", "action": "warp"}),
            400,
            "Unknown action: warp",
        ),
        (
            "supply",
            json!({"netname": "supply1", "action": "voltage", "params": {"value": 25}}),
            400,
            "Voltage 25V is outside the instrument's range 0–20V",
        ),
        (
            "supply",
            json!({"netname": "supply1", "action": "current", "params": {"value": "lots"}}),
            400,
            "Current must be a number, not \"lots\"",
        ),
        (
            "battery",
            json!({"netname": "battery1", "action": "set_soc", "params": {"value": 120}}),
            400,
            "SOC 120% is outside the instrument's range 0–100%",
        ),
    ];
    for (role, body, status, error) in cases {
        let (got_status, got) = b.command(role, body.clone());
        assert_eq!(
            (got_status, got["error"].as_str()),
            (status, Some(error)),
            "{body}"
        );
        assert_eq!(got["success"], false);
    }
    assert_eq!(b.log().len(), before, "nothing reached the instrument");
    assert_eq!(b.supply("voltage", None).1["message"], "Voltage: 5V");
    let reply = request(b.daemon.addr(), "POST", "/supply/command", Some("not json"));
    assert_eq!(reply.status, 400);
}

#[test]
fn enforced_locks_guard_hardware_changes_but_not_reads() {
    let b = Bench::start("enforce", &["--enforce-locks"]);
    request(
        b.daemon.addr(),
        "POST",
        "/lock",
        Some(r#"{"user": "alice"}"#),
    );
    let (status, reply) = b.supply("voltage", Some(3.0));
    assert_eq!(
        (status, reply["error"].as_str()),
        (423, Some("Box is locked by alice"))
    );
    assert_eq!(b.supply("state", None).0, 200, "reads are not enforced");
    let body = json!({"netname": "supply1", "action": "voltage", "params": {"value": 3.0}, "holder": "alice"});
    assert_eq!(b.command("supply", body).0, 200);
}

/// Reads a chunked NDJSON stream incrementally, one object per line.
struct Ndjson {
    reader: BufReader<TcpStream>,
    pending: String,
}

impl Ndjson {
    fn open(addr: std::net::SocketAddr, path: &str, holder: &str) -> (u16, Ndjson) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: lagerd\r\nLager-Holder: {holder}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
        }
        let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
        (
            code,
            Ndjson {
                reader,
                pending: String::new(),
            },
        )
    }

    fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=end).collect();
                return serde_json::from_str(line.trim()).unwrap();
            }
            let mut size = String::new();
            self.reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            std::io::Read::read_exact(&mut self.reader, &mut chunk).unwrap();
            self.pending
                .push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
    }
}

#[test]
fn a_watch_streams_state_and_holds_the_instrument_for_its_role() {
    let b = Bench::start("monitor", &[]);
    let (status, mut watch) = Ndjson::open(
        b.daemon.addr(),
        "/supply/monitor?netname=supply1&interval=0.2",
        "alice-laptop",
    );
    assert_eq!(status, 200);
    assert_eq!(
        watch.next(),
        json!({"event": "monitor_started", "netname": "supply1", "interval": 0.2})
    );
    assert_eq!(watch.next(), json!({"event": "driver_ready"}));
    let state = watch.next();
    assert_eq!(
        (state["event"].as_str(), state["state"]["enabled"].as_bool()),
        (Some("state"), Some(false))
    );
    assert_eq!(watch.next()["event"], "state", "it keeps refreshing");

    // The other role on the same Keithley is refused, naming the watch.
    let (status, reply) = b.battery("set_soc", Some(json!(50)));
    assert_eq!((status, reply["success"].as_bool()), (200, Some(false)));
    let error = reply["error"].as_str().unwrap();
    assert!(error.starts_with("'battery1' is on the same Keithley 2281S as 'supply1', which is currently in use as a power-supply. The 2281S supports one role at a time — close the power-supply session first."), "{error}");
    assert!(
        error.contains("alice-laptop") && error.contains("Ctrl+C"),
        "{error}"
    );
    let (status, _) = Ndjson::open(b.daemon.addr(), "/battery/monitor?netname=battery1", "bob");
    assert_eq!(status, 409);
    // The same role is fine alongside the watch.
    assert_eq!(b.supply("voltage", Some(2.0)).0, 200);

    // The watcher leaves: the conflict goes with it.
    drop(watch);
    assert!(lager_testsupport::wait_until(
        Duration::from_secs(3),
        || b.battery("set_soc", Some(json!(50))).1["success"] == true
    ));
}

#[test]
fn cache_clear_keeps_sessions_and_clear_all_closes_them() {
    let b = Bench::start("cache", &[]);
    assert_eq!(b.supply("voltage", Some(1.5)).0, 200);
    let post = |path: &str| {
        serde_json::from_slice::<Value>(&request(b.daemon.addr(), "POST", path, Some("{}")).body)
            .unwrap()
    };
    let stats: Value =
        serde_json::from_slice(&request(b.daemon.addr(), "GET", "/cache/stats", None).body)
            .unwrap();
    assert_eq!(stats["cached_devices"], 1);
    assert!(stats["devices"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("TCPIP0::127.0.0.1::"));
    assert_eq!(
        post("/cache/clear"),
        json!({"status": "success", "cleared": 1, "closed": 0, "errors": [], "shared_retained": 1})
    );
    assert_eq!(b.supply("voltage", None).1["message"], "Voltage: 1.5V");
    assert_eq!(b.sim("connections?"), "1", "clear keeps the shared session");
    assert_eq!(
        post("/cache/clear_all"),
        json!({"status": "success", "cleared": 1, "closed": 1, "errors": [], "shared_closed": 1})
    );
    assert_eq!(b.supply("voltage", None).1["message"], "Voltage: 1.5V");
    assert_eq!(
        b.sim("connections?"),
        "2",
        "clear_all closed it; the next command reopened"
    );
}

#[test]
fn a_rigol_dp800_serves_each_channel_as_its_own_net_over_one_session() {
    let b = Bench::start("rigol", &[]);
    let status: Value =
        serde_json::from_slice(&request(b.daemon.addr(), "GET", "/status", None).body).unwrap();
    let rigol = &status["capabilities"]["rigol_simulator"];
    let address = rigol["address"].as_str().unwrap();
    for (name, pin) in [("rail12", 1), ("rail3v3", 3)] {
        let net = json!({"name": name, "role": "power-supply", "instrument": "Rigol_DP832", "address": address, "pin": pin});
        let reply = request(
            b.daemon.addr(),
            "POST",
            "/nets",
            Some(&json!({"action": "add", "net": net}).to_string()),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let run = |net: &str, action: &str, value: Option<f64>| {
        let params = value.map_or(json!({}), |v| json!({"value": v}));
        b.command(
            "supply",
            json!({"netname": net, "action": action, "params": params}),
        )
    };
    assert_eq!(
        run("rail12", "voltage", Some(12.0)).1["message"],
        "Voltage set to 12V"
    );
    assert_eq!(
        run("rail3v3", "voltage", Some(3.3)).1["message"],
        "Voltage set to 3.3V"
    );
    let (status, reply) = run("rail3v3", "voltage", Some(6.0));
    assert_eq!(
        (status, reply["error"].as_str()),
        (
            400,
            Some("Voltage 6V is outside the instrument's range 0–5V")
        ),
        "channel 3 is the 5 V one"
    );
    assert_eq!(
        run("rail12", "enable", None).1["message"],
        "Channel 1 output enabled"
    );
    let (_, state) = run("rail12", "state", None);
    assert_eq!(
        (
            state["state"]["channel"].as_u64(),
            state["state"]["enabled"].as_bool()
        ),
        (Some(1), Some(true))
    );
    assert_eq!(state["state"]["voltage"], 12.0);
    let (_, state) = run("rail3v3", "state", None);
    assert_eq!(
        (
            state["state"]["voltage_set"].as_f64(),
            state["state"]["enabled"].as_bool()
        ),
        (Some(3.3), Some(false))
    );
    let message = state["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Channel 3: OFF, Set: 3.3V/"),
        "{message}"
    );
    // The battery role has no driver on a DP800.
    let net = json!({"name": "fakebat", "role": "battery", "instrument": "Rigol_DP832", "address": address});
    let reply = request(
        b.daemon.addr(),
        "POST",
        "/nets",
        Some(&json!({"action": "add", "net": net}).to_string()),
    );
    assert_eq!(reply.status, 400);
    // Both channels share the instrument's one session.
    let mut control = TcpStream::connect(rigol["control"].as_str().unwrap()).unwrap();
    writeln!(control, "connections?").unwrap();
    let mut count = String::new();
    BufReader::new(control).read_line(&mut count).unwrap();
    assert_eq!(count.trim(), "1");
}

/// Issue 8: a USB address goes through the USB-TMC transport; with no such
/// device on the bus the user gets the ENODEV wording, and the session does
/// not stay open, so the next command looks again.
#[test]
fn a_usb_instrument_that_is_not_attached_is_reported_gone() {
    let b = Bench::start("usb-gone", &[]);
    let net = json!({"name": "usb_psu", "role": "power-supply", "instrument": "Keithley_2281S",
        "address": "USB0::0x05E6::0x2281::NOT-ATTACHED::INSTR"});
    let reply = request(
        b.daemon.addr(),
        "POST",
        "/nets",
        Some(&json!({"action": "add", "net": net}).to_string()),
    );
    assert_eq!(reply.status, 200);
    for _ in 0..2 {
        let (status, reply) = b.command(
            "supply",
            json!({"netname": "usb_psu", "action": "voltage", "params": {}}),
        );
        assert_eq!(status, 502, "{reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.starts_with("[Errno 19] No such device"), "{error}");
        assert!(
            error.contains("USB0::0x05e6::0x2281::NOT-ATTACHED::INSTR"),
            "{error}"
        );
    }
    let dispatcher = request(
        b.daemon.addr(),
        "GET",
        "/diagnose/dispatcher?address=USB0::0x05E6::0x2281::NOT-ATTACHED::INSTR",
        None,
    );
    let dispatcher: Value = serde_json::from_slice(&dispatcher.body).unwrap();
    assert_eq!(dispatcher["cached_session"], false, "{dispatcher}");
}

/// A setter's reply carries the value it wrote under the key the battery
/// `state` uses (§10.2, §6.2), so clients read one vocabulary.
#[test]
fn battery_setters_answer_with_the_state_keys_of_the_spec() {
    let b = Bench::start("battery-keys", &[]);
    let (_, full) = b.battery("state", None);
    for (action, value, key) in [
        ("set_soc", 55.0, "soc"),
        ("set_voc", 4.1, "voc"),
        ("set_capacity", 3.0, "capacity"),
        ("set_current_limit", 2.0, "current_limit"),
        ("set_volt_full", 4.3, "volt_full"),
        ("set_volt_empty", 3.1, "volt_empty"),
        ("set_ovp", 5.0, "ovp_limit"),
        ("set_ocp", 2.5, "ocp_limit"),
    ] {
        assert!(full["state"].get(key).is_some(), "state has no {key}");
        let (status, reply) = b.battery(action, Some(json!(value)));
        assert_eq!(status, 200, "{reply}");
        assert_eq!(
            reply["state"][key].as_f64(),
            Some(value),
            "{action}: {reply}"
        );
    }
    let (status, reply) = b.battery("set_volt_full", Some(json!(70)));
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("VOC 70V is outside the instrument's range 0–60V"))
    );
}

/// Issue 12 defect 7, instruments.md §10.8: an instrument that stops
/// listening (connection refused) is ENODEV at once, never "held by
/// another client" (which sent users hunting for a process that does not
/// exist) and never retried as busy; one that accepts and resets at once
/// is EBUSY, retried, and says so.
#[test]
fn issue12_refused_is_enodev_and_accepted_then_reset_is_ebusy() {
    let b = Bench::start("tcp-wording", &[]);
    let port = lager_testsupport::refused_port();
    let add = json!({"action": "add", "net": {
        "name": "offpsu", "role": "power-supply", "instrument": "Keithley_2281S",
        "address": format!("TCPIP0::127.0.0.1::{port}::SOCKET"),
    }});
    let reply = request(b.daemon.addr(), "POST", "/nets", Some(&add.to_string()));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let started = Instant::now();
    let (status, reply) = b.command(
        "supply",
        json!({"netname": "offpsu", "action": "voltage", "params": {}}),
    );
    let error = reply["error"].as_str().unwrap();
    assert_eq!(status, 502, "{reply}");
    assert!(
        error.starts_with(&format!(
            "[Errno 19] No such device: TCPIP0::127.0.0.1::{port}::SOCKET refused the connection"
        )),
        "{error}"
    );
    assert!(!error.contains("held by another client"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not retried as busy: {:?}",
        started.elapsed()
    );

    // Busy for longer than the §4 backoff (≈ 3.7 s): EBUSY in the end.
    assert_eq!(b.sim("busy_ms 8000"), "OK");
    let (status, reply) = b.supply("voltage", None);
    let error = reply["error"].as_str().unwrap();
    assert_eq!(status, 502, "{reply}");
    assert!(
        error.starts_with("[Errno 16] Resource busy: TCPIP0::127.0.0.1::")
            && error.contains("accepted the connection and reset it at once"),
        "{error}"
    );
    assert_eq!(b.sim("connections?"), "0", "a reset open is no session");
}

/// Found while walking the route table for issue 12: a monitor registered
/// for the cross-role check (§7) before its stream ran, and only the
/// running stream unregistered it. A `HEAD` (or any reply whose body is
/// never produced) left the instrument's other role refused for good.
#[test]
fn issue12_a_monitor_whose_stream_never_runs_leaves_no_registration() {
    let b = Bench::start("monitor-head", &[]);
    let mut stream = TcpStream::connect(b.daemon.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"HEAD /supply/monitor?netname=supply1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (status, reply) = b.battery("state", None);
    assert_eq!(
        (status, reply["success"].as_bool()),
        (200, Some(true)),
        "{reply}"
    );
}

/// Found by the `router` fuzz target: the simulator kept a copy of every
/// instrument connection it ever accepted (for its `drop` fault), so each
/// session reopen (`/cache/clear_all`, a garbled reply, a timeout) cost
/// `lagerd --sim` a descriptor for good, until it ran out ("Too many open
/// files") and could not even write `lock.json`.
#[test]
fn issue12_reopened_simulator_sessions_leave_no_descriptors_behind() {
    let b = Bench::start("sim-fds", &[]);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", b.daemon.pid()))
            .unwrap()
            .count()
    };
    assert_eq!(b.supply("state", None).0, 200);
    let before = fds();
    for _ in 0..60 {
        let reply = request(b.daemon.addr(), "POST", "/cache/clear_all", Some("{}"));
        assert_eq!(reply.status, 200);
        assert_eq!(b.supply("state", None).0, 200, "the session reopens");
    }
    // Closed sessions are noticed by the simulator's own threads: wait for
    // them, as a user would, rather than count the instant after.
    let settled = lager_testsupport::wait_until(Duration::from_secs(5), || fds() < before + 10);
    assert!(
        settled,
        "{before} descriptors before, {} after 60 reopens",
        fds()
    );
}
