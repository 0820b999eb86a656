//! `lager diagnose` (diagnose.md §4): every classifier bucket end to end,
//! against the real `lagerd` on fixture trees (and, for the answers only an
//! older box gives, a stand-in serving canned §3 bodies), the step 2
//! failures, `--json`, the parallel fetch, and the real `lagerd` probing a
//! tiny SCPI responder.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{entry, refused_port, silent_listener, Box_, Cli, Run};

const USB_ADDR: &str = "USB0::0x05E6::0x2281::4587429::INSTR";
const USB_ADDR_QUERY: &str = "USB0%3A%3A0x05E6%3A%3A0x2281%3A%3A4587429%3A%3AINSTR";

/// A stand-in box: answers `/lock`, `/status`, `/nets/list` and the three
/// `/diagnose/*` routes with canned bodies, each connection on its own
/// thread (so parallel requests really overlap), recording request targets.
struct StandIn {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

struct Views {
    nets: (u16, String),
    usb: (u16, String),
    visa: (u16, String),
    dispatcher: (u16, String),
    /// Added to every `/diagnose/*` answer.
    delay: Duration,
}

impl Views {
    fn ok(nets: Value, usb: Value, visa: Value, dispatcher: Value) -> Views {
        Views {
            nets: (200, nets.to_string()),
            usb: (200, usb.to_string()),
            visa: (200, visa.to_string()),
            dispatcher: (200, dispatcher.to_string()),
            delay: Duration::ZERO,
        }
    }
}

impl StandIn {
    fn start(views: Views) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let views = Arc::new(views);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (views, log) = (views.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &views, &log));
            }
        });
        StandIn { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("log").clone()
    }
}

fn serve(mut stream: TcpStream, views: &Views, log: &Mutex<Vec<String>>) {
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    log.lock().expect("log").push(target.clone());
    let version = json!({"version": env!("CARGO_PKG_VERSION")}).to_string();
    let (status, body) = if target == "/lock" {
        (200, r#"{"locked":false}"#.to_string())
    } else if target == "/status" {
        (200, version)
    } else if target == "/nets/list" {
        views.nets.clone()
    } else if target.starts_with("/diagnose/") {
        std::thread::sleep(views.delay);
        if target.starts_with("/diagnose/usb?") {
            views.usb.clone()
        } else if target.starts_with("/diagnose/visa?") {
            views.visa.clone()
        } else if target.starts_with("/diagnose/dispatcher?") {
            views.dispatcher.clone()
        } else {
            (404, r#"{"error":"Not found"}"#.to_string())
        }
    } else {
        (404, r#"{"error":"Not found"}"#.to_string())
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

fn nets() -> Value {
    json!([
        {"name": "supply1", "role": "power-supply", "instrument": "Keithley_2281S", "address": USB_ADDR, "pin": 1},
        {"name": "bat1", "role": "battery", "instrument": "Keithley_2281S", "address": USB_ADDR, "pin": 1},
    ])
}

fn usb_ok() -> Value {
    json!({
        "address": USB_ADDR, "enumerated": true,
        "sysfs_path": "/sys/bus/usb/devices/1-1.4", "device_path": "/dev/bus/usb/001/004",
        "vid": "05e6", "pid": "2281", "serial": "4587429", "is_usbtmc": true,
        "lsof": [], "usbtmc_loaded": false,
        "dmesg_tail": "(no USB lines in the kernel ring buffer for this boot)",
        "blacklist_installed": true, "usbtmc_bound": false, "interfaces": []
    })
}

fn visa_idn() -> Value {
    json!({"address": USB_ADDR, "idn": "KEITHLEY INSTRUMENTS,MODEL 2281S-20-6,4587429,1.07", "elapsed_ms": 31})
}

fn visa_error(error: &str, class: &str) -> Value {
    json!({"address": USB_ADDR, "error": error, "error_class": class, "elapsed_ms": 2003})
}

fn no_session() -> Value {
    json!({"address": USB_ADDR, "cached_session": false, "cached_drivers": [], "shared_pool_size": 0})
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

fn cli_for(tag: &str, port: u16) -> Cli {
    let cli = Cli::new(tag);
    cli.write_config(&json!({"BOXES": {"b1": entry(port)}}));
    cli
}

fn diagnose(cli: &Cli, args: &[&str]) -> Run {
    let mut full = vec!["diagnose"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--box", "b1"]);
    cli.run(&full)
}

#[test]
fn reachable_instrument_prints_every_section_and_exits_0() {
    let box_ = StandIn::start(Views::ok(nets(), usb_ok(), visa_idn(), no_session()));
    let cli = cli_for("diag-reachable", box_.port);
    let run = diagnose(&cli, &["bat1"]);
    run.expect_code(0);
    assert_eq!(run.stderr, "");
    assert_eq!(
        run.stdout,
        format!(
            "lager diagnose — b1 → bat1\n  NetType: battery    address: {USB_ADDR}\n\
             \n== USB (host-side) ==\n\
             \x20  enumerated:   true\n\
             \x20  sysfs:        /sys/bus/usb/devices/1-1.4\n\
             \x20  device:       /dev/bus/usb/001/004\n\
             \x20  usb-tmc class: yes\n\
             \x20  usbtmc kmod:  not loaded (good)\n\
             \x20  lsof:         no holders\n\
             \x20  dmesg tail:   (no USB lines in the kernel ring buffer for this boot)\n\
             \n== VISA (instrument-side) ==\n\
             \x20  idn:         KEITHLEY INSTRUMENTS,MODEL 2281S-20-6,4587429,1.07\n\
             \x20  elapsed:     31 ms\n\
             \x20  error:       —\n\
             \x20  error_class: —\n\
             \x20  skipped:     —\n\
             \n== Dispatcher (hw_service in-process) ==\n\
             \x20  cached_session:  false\n\
             \x20  cached_drivers:  —\n\
             \x20  shared_pool:     0 entries\n\
             \nClassification: REACHABLE — IDN: KEITHLEY INSTRUMENTS,MODEL 2281S-20-6,4587429,1.07. USB, the VISA session and *IDN? are all good. This does not exercise the instrument's function (e.g. whether a supply will actually enable its output).\n"
        )
    );
    // All on the box's one port, the address percent-encoded.
    let requests = box_.requests();
    for route in ["usb", "visa", "dispatcher"] {
        let want = format!("/diagnose/{route}?address={USB_ADDR_QUERY}");
        assert!(requests.contains(&want), "{requests:?}");
    }
    assert!(requests.contains(&"/nets/list".to_string()), "{requests:?}");
}

/// A real lagerd on a fixture tree (`tests/fixtures/boxes/<name>`'s sys
/// and dev, and `proc` from `proc_tree`), with `args` and these saved nets.
fn box_on(name: &str, proc_tree: &str, args: &[&str], nets: Value) -> Box_ {
    let root = |tree: &str, sub: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/boxes")
            .join(tree)
            .join(sub)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    };
    let (sys, proc, dev) = (
        root(name, "sys"),
        root(proc_tree, "proc"),
        root(name, "dev"),
    );
    let mut all = vec![
        "--sys-root",
        &sys,
        "--proc-root",
        &proc,
        "--dev-root",
        &dev,
        "--health-interval-secs",
        "0",
    ];
    all.extend_from_slice(args);
    let box_ = Box_::start_with(&all);
    std::fs::write(box_.state_dir().join("saved_nets.json"), nets.to_string()).expect("write nets");
    box_
}

/// One line to the simulator's fault control port; its answer.
fn sim_control(control: &str, line: &str) -> String {
    let mut stream = TcpStream::connect(control).expect("control port");
    writeln!(stream, "{line}").expect("send");
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).expect("reply");
    reply.trim().to_string()
}

/// Holds the cross-process device lock of `address` (diagnose.md §1) in
/// this process, as another program opening the instrument would.
struct DeviceLockHeld {
    _file: std::fs::File,
}

impl DeviceLockHeld {
    fn take(state_dir: &Path, address: &str) -> DeviceLockHeld {
        use std::os::fd::AsRawFd;
        let safe: String = address
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = state_dir.join("lager_device_locks");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join(format!("device_{safe}.lock")))
            .expect("lock file");
        // SAFETY: flock on a descriptor this File owns.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        write!(file, "{}", std::process::id()).expect("pid");
        DeviceLockHeld { _file: file }
    }
}

/// `lager diagnose NET --json` for box b1 on `port`: its exit code and report.
fn bucket_of(tag: &str, port: u16, net: &str) -> (i32, Value) {
    let cli = cli_for(tag, port);
    let run = diagnose(&cli, &[net, "--json"]);
    let report = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{tag}: {e}: {}{}", run.stdout, run.stderr));
    (run.code, report)
}

/// Every bucket lagerd can report, end to end: the real lagerd on fixture
/// trees (`--sys-root`, `--proc-root`, `--dev-root`), the real CLI, and
/// behind each net what makes the bucket: the simulator with a fault
/// injected at its socket, a device lock held by another process, a tty
/// that is no instrument, a session lagerd already holds. (The buckets
/// only an older box reports are `older_box_buckets_end_to_end`.)
#[test]
fn every_bucket_end_to_end() {
    let usb_net = |name: &str, address: &str| json!({"name": name, "role": "power-supply", "instrument": "Keithley_2281S", "address": address, "pin": 1});
    let check = |tag: &str, port: u16, net: &str, bucket: &str, code: i32, headline: &str| {
        let (got_code, report) = bucket_of(tag, port, net);
        assert_eq!(
            (report["bucket"].as_str(), got_code),
            (Some(bucket), code),
            "{tag}: {report:#}"
        );
        let shown = report["headline"].as_str().unwrap_or_default();
        assert!(shown.starts_with(headline), "{tag}: {shown}");
    };

    // The usbtmc kernel module is loaded and bound: the host's problem first.
    let kmod = box_on(
        "usbtmc-bound",
        "usbtmc-bound",
        &[],
        json!([usb_net("usb1", USB_ADDR)]),
    );
    check(
        "diag-kmod",
        kmod.port(),
        "usb1",
        "usbtmc_loaded",
        2,
        "HOST-SIDE: usbtmc kernel module loaded — `lager box update` to install the blacklist.",
    );
    drop(kmod);

    let tty = "ASRL/dev/null::INSTR";
    let b = box_on(
        "free",
        "claimed-twice",
        &["--sim"],
        json!([usb_net("usb1", USB_ADDR), usb_net("tty1", tty)]),
    );
    let port = b.port();
    let status: Value =
        serde_json::from_slice(&lager_testsupport::request(b.addr(), "GET", "/status", None).body)
            .expect("status JSON");
    let control = status["capabilities"]["simulator"]["control"]
        .as_str()
        .expect("--sim's control port")
        .to_string();

    check(
        "diag-reachable",
        port,
        "battery1",
        "reachable",
        0,
        "REACHABLE — IDN: KEITHLEY INSTRUMENTS,MODEL 2281S-20-6",
    );
    // Faults at the simulator's socket, as an instrument shows them.
    assert_eq!(sim_control(&control, "busy_ms 60000"), "OK");
    check(
        "diag-busy",
        port,
        "battery1",
        "busy",
        2,
        "HOST-SIDE: USB device busy — another process holds it.",
    );
    assert_eq!(sim_control(&control, "busy_ms 0"), "OK");
    assert_eq!(sim_control(&control, "drop"), "OK");
    check(
        "diag-nodev",
        port,
        "battery1",
        "nodev",
        2,
        "TRANSIENT: device disappeared from USB (re-enumeration).",
    );
    assert_eq!(sim_control(&control, "replug"), "OK");
    assert_eq!(sim_control(&control, "mute"), "OK");
    check("diag-wedged", port, "battery1", "wedged", 2,
        "INSTRUMENT WEDGED: device enumerates and accepts session open, but won't respond to *IDN?.");
    assert_eq!(sim_control(&control, "unmute"), "OK");

    // Two processes hold the USB device (the fixture's /proc) and one of
    // them its device lock.
    let held = DeviceLockHeld::take(b.state_dir(), "USB0::0x05e6::0x2281::4587429::INSTR");
    check(
        "diag-multi",
        port,
        "usb1",
        "busy_multiple",
        2,
        "HOST-SIDE: USB device claimed by multiple processes (python3(4121), hw_service(4200)).",
    );
    drop(held);

    // A tty that is no instrument: nothing the table names.
    check(
        "diag-unclear",
        port,
        "tty1",
        "unclear",
        2,
        "UNCLEAR — review the per-section output above and rerun if needed.",
    );

    // Once a command has opened the session, the fresh probe is skipped.
    let reply = lager_testsupport::request(
        b.addr(),
        "POST",
        "/battery/command",
        Some(r#"{"netname":"battery1","action":"state"}"#),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    check(
        "diag-cached",
        port,
        "battery1",
        "reachable_cached",
        0,
        "REACHABLE (hw_service has an active shared session for this address;",
    );
}

/// The buckets that only an older (Python) box's answers lead to, against
/// a stand-in serving them: lagerd reports a device missing from the bus
/// as ENODEV (row 4 wins over row 6) and never words a probe failure as
/// pyvisa does (rows 9 and 10), but the CLI still talks to such boxes.
#[test]
fn older_box_buckets_end_to_end() {
    let cases: Vec<(&str, Value, Value, Value, i32, &str)> = vec![
        ("gone", json!({"address": USB_ADDR, "enumerated": false, "sysfs_path": null, "device_path": null,
                        "is_usbtmc": false, "lsof": [], "usbtmc_loaded": false, "dmesg_tail": "x",
                        "classification_hint": "instrument not enumerated on USB — check power and cabling"}),
         visa_error("VI_ERROR_RSRC_NFOUND", "other"), no_session(), 2,
         "NOT ENUMERATED: device does not show up on USB. Check power, cable, and (if behind an Acroname hub) the upstream port."),
        ("transient", usb_ok(), visa_error("No device found.", "other"), no_session(), 2,
         "TRANSIENT: device is enumerated as USB-TMC but the fresh pyvisa probe couldn't reach it — Run any command for this net so the daemon caches a session; if it persists restart lagerd."),
        ("vendor", with(usb_ok(), "is_usbtmc", json!(false)), visa_error("Invalid resource name", "other"), no_session(), 2,
         "NOT USB-TMC: this instrument uses a vendor SDK"),
    ];
    for (name, usb, visa, dispatcher, code, headline) in cases {
        let box_ = StandIn::start(Views::ok(nets(), usb, visa, dispatcher));
        let cli = cli_for(&format!("diag-old-{name}"), box_.port);
        let run = diagnose(&cli, &["bat1"]);
        assert_eq!(run.code, code, "{name}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stdout
                .contains(&format!("\n\nClassification: {headline}")),
            "{name}: {}",
            run.stdout
        );
        assert!(
            run.stdout.ends_with(".\n") || run.stdout.ends_with(").\n"),
            "{name}: {}",
            run.stdout
        );
        assert!(!run.stdout.contains('\x1b'), "no colour without a TTY");
    }
}

#[test]
fn json_report_has_bucket_advice_and_raw_views() {
    let usb = with(
        usb_ok(),
        "lsof",
        json!([{"command": "python3", "pid": "4121", "user": "pi"}]),
    );
    let visa = visa_error("[Errno 16] Resource busy", "busy");
    let box_ = StandIn::start(Views::ok(nets(), usb.clone(), visa.clone(), no_session()));
    let cli = cli_for("diag-json", box_.port);
    let run = diagnose(&cli, &["supply1", "--json"]);
    run.expect_code(2);
    assert_eq!(run.stderr, "");
    let report: Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert_eq!(report["box"], "b1");
    assert_eq!(report["net"], "supply1");
    assert_eq!(report["role"], "power-supply");
    assert_eq!(report["address"], USB_ADDR);
    assert_eq!(report["bucket"], "busy");
    assert!(report["headline"]
        .as_str()
        .is_some_and(|h| h.starts_with("HOST-SIDE: USB device busy")));
    assert!(report["advice"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(report["usb"], usb);
    assert_eq!(report["visa"], visa);
    assert_eq!(report["dispatcher"], no_session());

    let box_ = StandIn::start(Views::ok(nets(), usb_ok(), visa_idn(), no_session()));
    let cli = cli_for("diag-json-ok", box_.port);
    let run = diagnose(&cli, &["bat1", "--json"]);
    run.expect_code(0);
    let report: Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert_eq!(report["bucket"], "reachable");
    assert_eq!(report.get("advice"), None);
}

#[test]
fn the_three_fetches_overlap() {
    let mut views = Views::ok(nets(), usb_ok(), visa_idn(), no_session());
    views.delay = Duration::from_millis(400);
    let box_ = StandIn::start(views);
    let cli = cli_for("diag-parallel", box_.port);
    let run = diagnose(&cli, &["bat1"]);
    run.expect_code(0);
    // In series the three would take 1.2 s.
    assert!(
        run.elapsed < Duration::from_millis(1000),
        "{:?}",
        run.elapsed
    );
}

#[test]
fn old_box_sections_say_unavailable() {
    let views = Views {
        nets: (200, json!({"nets": nets()}).to_string()),
        usb: (404, r#"{"error":"Not found"}"#.into()),
        visa: (500, "x".repeat(300)),
        dispatcher: (404, "{}".into()),
        delay: Duration::ZERO,
    };
    let box_ = StandIn::start(views);
    let cli = cli_for("diag-old", box_.port);
    let run = diagnose(&cli, &["bat1"]);
    run.expect_code(2);
    let unavailable = "   endpoint not served by this box; update the box to use this section\n";
    assert!(
        run.stdout
            .contains(&format!("== USB (host-side) ==\n{unavailable}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "== VISA (instrument-side) ==\n   transport error: HTTP 500: {}\n",
            "x".repeat(200)
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(&format!(
            "== Dispatcher (hw_service in-process) ==\n{unavailable}\nClassification: UNCLEAR — review the per-section output above and rerun if needed.\n"
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn role_selection_and_warning() {
    let nets = json!([
        {"name": "k1", "role": "power-supply", "address": "USB0::0x05E6::0x2281::1::INSTR"},
        {"name": "k1", "role": "battery", "address": USB_ADDR},
    ]);
    let box_ = StandIn::start(Views::ok(nets, usb_ok(), visa_idn(), no_session()));
    let cli = cli_for("diag-role", box_.port);
    let run = diagnose(&cli, &["k1", "--type", "battery"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("  NetType: battery    address: {USB_ADDR}\n")),
        "{}",
        run.stdout
    );
    let run = diagnose(&cli, &["k1", "--type", "scope"]);
    run.expect_code(0);
    assert_eq!(
        run.stderr,
        "Net 'k1' exists but no entry has role='scope'. Available roles: power-supply, battery\n"
    );
    assert!(
        run.stdout
            .contains("  NetType: power-supply    address: USB0::0x05E6::0x2281::1::INSTR\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn missing_net_lists_what_exists() {
    let box_ = StandIn::start(Views::ok(nets(), usb_ok(), visa_idn(), no_session()));
    let cli = cli_for("diag-missing", box_.port);
    let run = diagnose(&cli, &["nope"]);
    run.expect_code(1);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "Net 'nope' not found on box. Available: supply1, bat1\nCannot diagnose without a VISA address.\n"
    );
    // Nothing was asked about an instrument.
    assert!(
        !box_.requests().iter().any(|r| r.starts_with("/diagnose/")),
        "{:?}",
        box_.requests()
    );
}

#[test]
fn refused_box_names_its_real_port() {
    let port = refused_port();
    let cli = cli_for("diag-refused", port);
    let run = diagnose(&cli, &["bat1"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        format!(
            "Box 'b1' unreachable at 127.0.0.1:{port} (connection refused). The lager container may be stopped. Check with:\n  lager ssh --box b1 -- \"sudo docker ps\"\nCannot diagnose without a VISA address.\n"
        )
    );
    assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
}

#[test]
fn silent_box_times_out_once() {
    let silent = silent_listener();
    let port = silent.local_addr().expect("addr").port();
    let cli = cli_for("diag-silent", port);
    let run = cli.run_with(
        &["diagnose", "bat1", "--box", "b1"],
        &[("LAGER_BOX_TIMEOUT_MS", "400")],
    );
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        format!(
            "Box 'b1' did not respond within 400ms at 127.0.0.1:{port}. Check network/Tailscale connectivity, then `lager hello --box b1`.\nCannot diagnose without a VISA address.\n"
        )
    );
    assert!(
        run.elapsed < Duration::from_millis(1500),
        "{:?}",
        run.elapsed
    );
    drop(silent);
}

/// A one-line SCPI responder: answers `*IDN?` on every connection.
fn scpi_responder(idn: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let Ok(mut writer) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    if line.trim().eq_ignore_ascii_case("*IDN?") {
                        let _ = writer.write_all(format!("{idn}\n").as_bytes());
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

fn box_with_nets(nets: &Value) -> Box_ {
    let daemon = Box_::start();
    std::fs::write(daemon.state_dir().join("saved_nets.json"), nets.to_string())
        .expect("write saved_nets.json");
    daemon
}

#[test]
fn real_daemon_reaches_a_socket_instrument() {
    let scpi = scpi_responder("SIM,Keithley2281S,0,1.0");
    let address = format!("TCPIP0::127.0.0.1::{scpi}::SOCKET");
    let daemon = box_with_nets(&json!([
        {"name": "sim1", "role": "power-supply", "instrument": "Keithley_2281S", "address": address, "pin": 1}
    ]));
    let cli = cli_for("diag-real-ok", daemon.port());
    let run = diagnose(&cli, &["sim1"]);
    run.expect_code(0);
    assert!(
        run.stdout.starts_with(&format!(
            "lager diagnose — b1 → sim1\n  NetType: power-supply    address: {address}\n"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("   idn:         SIM,Keithley2281S,0,1.0\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\nClassification: REACHABLE — IDN: SIM,Keithley2281S,0,1.0. "),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr, "");

    let run = diagnose(&cli, &["sim1", "--json"]);
    run.expect_code(0);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(report["bucket"], "reachable");
    assert_eq!(report["visa"]["idn"], "SIM,Keithley2281S,0,1.0");
    assert_eq!(report["dispatcher"]["cached_session"], false);
}

#[test]
fn real_daemon_with_nothing_listening_is_not_reachable() {
    let dead = refused_port();
    let address = format!("TCPIP0::127.0.0.1::{dead}::SOCKET");
    let daemon = box_with_nets(&json!([
        {"name": "sim1", "role": "power-supply", "instrument": "Keithley_2281S", "address": address}
    ]));
    let cli = cli_for("diag-real-dead", daemon.port());
    let run = diagnose(&cli, &["sim1"]);
    run.expect_code(2);
    assert!(
        run.stdout
            .contains("\n== VISA (instrument-side) ==\n   idn:         —\n"),
        "{}",
        run.stdout
    );
    let classification = run
        .stdout
        .lines()
        .find(|l| l.starts_with("Classification: "))
        .expect("a classification line");
    assert!(!classification.contains("REACHABLE"), "{classification}");

    // And a net the daemon does not have.
    let run = diagnose(&cli, &["other"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Net 'other' not found on box. Available: sim1\nCannot diagnose without a VISA address.\n"
    );
}

#[test]
fn real_daemon_twenty_nets_stays_fast() {
    let scpi = scpi_responder("SIM,FAST,0,1");
    let nets: Vec<Value> = (0..20)
        .map(|i| {
            json!({"name": format!("n{i}"), "role": "power-supply", "instrument": "Keithley_2281S",
                   "address": format!("TCPIP0::127.0.0.1::{scpi}::SOCKET")})
        })
        .collect();
    let daemon = box_with_nets(&Value::Array(nets));
    let cli = cli_for("diag-real-fast", daemon.port());
    // Warm up (page cache, first exec), then take the best of three.
    diagnose(&cli, &["n19"]).expect_code(0);
    let best = (0..3)
        .map(|_| {
            let run = diagnose(&cli, &["n19"]);
            run.expect_code(0);
            run.elapsed
        })
        .min()
        .unwrap_or(Duration::MAX);
    // The target is 50 ms on a quiet machine; leave room for a loaded CI box.
    assert!(best < Duration::from_millis(500), "{best:?}");
}

/// A device node lagerd may not open (EACCES, the udev rules missing) is
/// its own bucket, and `lager supply` says the same, from a real lagerd
/// refused by the real kernel: an unprivileged lagerd (uid 65534 when the
/// tests run as root) and a node with mode 0000.
#[test]
fn a_device_node_lagerd_may_not_open_is_the_permission_bucket() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let cli = Cli::new("diag-eacces");
    let state = cli.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let node = cli.dir.path().join("ttyUSB7");
    std::fs::write(&node, "").unwrap();
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut command = std::process::Command::new(crate::lagerd_path());
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--health-interval-secs",
            "0",
            "--state-dir",
        ])
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    // SAFETY: geteuid/chown only read credentials and change an owner.
    if unsafe { libc::geteuid() } == 0 {
        let path = std::ffi::CString::new(state.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
        let dir = std::ffi::CString::new(cli.dir.path().to_str().unwrap()).unwrap();
        unsafe { libc::chmod(dir.as_ptr(), 0o755) };
        command.uid(65534).gid(65534);
    }
    let mut child = command.spawn().expect("spawn lagerd");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("lagerd's address line")
        .to_string();
    let box_arg = addr.as_str();
    let address = format!("ASRL{}::INSTR", node.display());
    let run = cli.run(&[
        "nets",
        "add",
        "psu",
        "--role",
        "supply",
        "--instrument",
        "Rigol_DP832",
        "--address",
        &address,
        "--box",
        box_arg,
    ]);
    let result = std::panic::catch_unwind(|| {
        run.expect_code(0);
        let run = cli.run(&["diagnose", "psu", "--box", box_arg]);
        run.expect_code(2);
        assert!(
            run.stdout.contains("[Errno 13] Permission denied"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains("HOST-SIDE: permission denied opening the instrument"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains(&format!("lager update --box {box_arg}")),
            "{}",
            run.stdout
        );
        let run = cli.run(&["diagnose", "psu", "--box", box_arg, "--json"]);
        let body: Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert_eq!(body["bucket"], "permission", "{body}");
        let run = cli.run(&["supply", "psu", "voltage", "--box", box_arg]);
        run.expect_code(1);
        assert!(
            run.stderr
                .starts_with("Error: USB permission denied — udev rules not installed."),
            "{}",
            run.stderr
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Issue 12 defect 9: on a TCPIP net the USB section printed the box's
/// 400 raw (`transport error: HTTP 400: {"address":…,"error":"not a USB
/// VISA address…"}`). It now says in one line that USB checks do not apply.
#[test]
fn issue12_diagnose_of_a_tcp_net_says_usb_checks_do_not_apply() {
    let scpi = scpi_responder("SIM,Keithley2281S,0,1.0");
    let address = format!("TCPIP0::127.0.0.1::{scpi}::SOCKET");
    let daemon = box_with_nets(&json!([
        {"name": "sim1", "role": "power-supply", "instrument": "Keithley_2281S", "address": address, "pin": 1}
    ]));
    let cli = cli_for("diag-tcp-usb", daemon.port());
    let run = diagnose(&cli, &["sim1"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            "\n== USB (host-side) ==\n   USB checks do not apply to a TCPIP instrument (reached over the network)\n\n== VISA (instrument-side) ==\n"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("transport error"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("not a USB VISA address"),
        "{}",
        run.stdout
    );
    let run = diagnose(&cli, &["sim1", "--json"]);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        report["usb"]["not_applicable"],
        "USB checks do not apply to a TCPIP instrument (reached over the network)"
    );
}
