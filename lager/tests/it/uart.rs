//! `lager uart` (console.md §4) and the uart cases of `lager nets`,
//! `lager diagnose` and `lager boxes`, against a real `lagerd --sim` whose
//! simulated device prints on a pty. `-i` runs with a real pseudo-terminal
//! as its terminal, so raw mode and its restoration are what a person's
//! terminal would see.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lager_testsupport::{request, wait_until};
use serde_json::{json, Value};

use crate::{entry, Box_, Cli};

const WAIT: Duration = Duration::from_secs(10);

/// A `lagerd --sim` with a CLI whose saved box `b1` points at it.
struct Bench {
    daemon: Box_,
    cli: Cli,
    control: String,
}

impl Bench {
    fn start(tag: &str) -> Bench {
        let daemon = Box_::start_with(&["--sim", "--health-interval-secs", "0"]);
        let mut cli = Cli::new(tag);
        cli.write_config(&json!({"BOXES": {"b1": entry(daemon.port())}}));
        cli.set("NO_COLOR", "1");
        let status: Value =
            serde_json::from_str(&request(daemon.addr(), "GET", "/status", None).text()).unwrap();
        let control = status["capabilities"]["dut_simulator"]["control"]
            .as_str()
            .expect("the simulated device's control port")
            .to_string();
        let bench = Bench {
            daemon,
            cli,
            control,
        };
        // The boot banner is in the ring before any test looks.
        assert!(wait_until(WAIT, || bench.console("console1")["bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)));
        bench
    }

    /// One line to the simulated device's control port, one line back.
    fn sim(&self, command: &str) -> String {
        let mut stream = TcpStream::connect(&self.control).expect("control port");
        writeln!(stream, "{command}").expect("send");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("reply");
        line.trim().to_string()
    }

    fn console(&self, net: &str) -> Value {
        let reply = request(
            self.daemon.addr(),
            "GET",
            &format!("/uart/status?netname={net}"),
            None,
        );
        serde_json::from_str(&reply.text()).unwrap()
    }

    fn lager(&self, args: &[&str]) -> Command {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--box", "b1"]);
        self.cli.command(&full)
    }
}

/// A lager left running, its output collected as it comes.
struct Running {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let into = Arc::new(Mutex::new(Vec::new()));
    let sink = into.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    });
    into
}

impl Running {
    fn spawn(mut command: Command, stdin: Stdio) -> Running {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lager");
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Running { child, out, err }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Waits until stdout contains `needle`; returns stdout.
    fn wait_for(&self, needle: &str) -> String {
        assert!(
            wait_until(WAIT, || self.stdout().contains(needle)),
            "no {needle:?} in stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// The exit code, waited for (bounded).
    fn exit_code(&mut self) -> i32 {
        let mut status = None;
        wait_until(WAIT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let status = status.unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!("lager did not exit; stderr:\n{}", self.stderr())
        });
        status.code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn from_start_shows_what_the_device_printed_while_nobody_watched() {
    let b = Bench::start("uart-from-start");
    let watch = Running::spawn(
        b.lager(&["uart", "console1", "--from-start"]),
        Stdio::null(),
    );
    let shown = watch.wait_for("sim> ");
    assert!(shown.contains("Lager simulated DUT, boot #1"), "{shown}");
    // Without --from-start only what comes next: the reboot's banner.
    let live = Running::spawn(b.lager(&["uart", "console1"]), Stdio::null());
    assert!(wait_until(WAIT, || b.console("console1")["readers"] == 2));
    assert!(b.sim("reboot").starts_with("ok"));
    let shown = live.wait_for("boot #2");
    assert!(!shown.contains("boot #1"), "{shown}");
    // --json: one object per chunk or event; --timestamps; --log.
    let log = b.cli.work_dir().join("console.log");
    let json = Running::spawn(
        b.lager(&["uart", "console1", "--tail", "2000", "--json"]),
        Stdio::null(),
    );
    json.wait_for("boot #2");
    let first: Value = serde_json::from_str(json.stdout().lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["event"].as_str(), first["state"].as_str()),
        (Some("status"), Some("open"))
    );
    let data: Value = serde_json::from_str(json.stdout().lines().nth(1).unwrap()).unwrap();
    assert!(data["offset"].is_u64() && data["time"].as_str().unwrap().ends_with('Z'));
    assert!(data["data"].is_string());
    let stamped = Running::spawn(
        b.lager(&[
            "uart",
            "console1",
            "--from-start",
            "--timestamps",
            "--log",
            log.to_str().unwrap(),
        ]),
        Stdio::null(),
    );
    let shown = stamped.wait_for("boot #2");
    let line = shown.lines().find(|l| l.contains("boot #1")).unwrap();
    assert!(
        line.starts_with('[') && line.as_bytes()[13] == b']',
        "{line:?}"
    );
    assert!(wait_until(WAIT, || std::fs::read_to_string(&log)
        .is_ok_and(|text| text.contains("boot #2"))));
}

#[test]
fn gone_and_back_print_one_line_each() {
    let b = Bench::start("uart-replug");
    let watch = Running::spawn(b.lager(&["uart", "console1"]), Stdio::null());
    assert!(wait_until(WAIT, || b.console("console1")["readers"] == 1));
    assert_eq!(b.sim("unplug"), "ok unplugged");
    watch.wait_for(" console1 gone (unplugged) --");
    let device = b.sim("replug").strip_prefix("ok ").unwrap().to_string();
    let shown = watch.wait_for(&format!(" console1 back on {device} --"));
    assert_eq!(shown.matches("gone").count(), 1, "{shown}");
    assert_eq!(shown.matches("back on").count(), 1, "{shown}");
    b.sim("say after the replug");
    watch.wait_for("after the replug");
    // serial-port names the device the link leads to now.
    let run = b
        .cli
        .run(&["uart", "console1", "serial-port", "--box", "b1"]);
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), device);
    // Without NET: the uart-net default, else a usage error saying so.
    let run = b.cli.run(&["uart", "serial-port", "--box", "b1"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--uart-net"), "{}", run.stderr);
    b.cli
        .run(&["defaults", "add", "--uart-net", "console1"])
        .expect_code(0);
    let run = b.cli.run(&["uart", "serial-port", "--box", "b1"]);
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), device);
    b.sim("unplug");
    assert!(wait_until(WAIT, || b.console("console1")["state"] == "gone"));
    let run = b
        .cli
        .run(&["uart", "console1", "serial-port", "--box", "b1"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("console console1 is not connected (unplugged)"),
        "{}",
        run.stderr
    );
    // A watcher attaching now is told, and waits for it.
    let late = Running::spawn(b.lager(&["uart", "console1"]), Stdio::null());
    late.wait_for(" console1 not connected (unplugged); it shows up here when it is --");
}

/// A pseudo-terminal for lager to run in, as a person's terminal.
struct Terminal {
    master: File,
    slave: String,
}

impl Terminal {
    fn open() -> Terminal {
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(fd >= 0);
            assert_eq!(libc::grantpt(fd), 0);
            assert_eq!(libc::unlockpt(fd), 0);
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
            let slave = std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned();
            Terminal {
                master: File::from_raw_fd(fd),
                slave,
            }
        }
    }

    fn end(&self) -> File {
        File::options()
            .read(true)
            .write(true)
            .open(&self.slave)
            .unwrap()
    }

    /// The terminal's local flags (ICANON, ECHO, ISIG, ...).
    fn lflag(&self) -> libc::tcflag_t {
        unsafe {
            let mut tio: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(self.master.as_raw_fd(), &mut tio), 0);
            tio.c_lflag
        }
    }

    /// Starts `command` with this terminal as stdin, stdout and stderr;
    /// what it shows is collected.
    fn run(&self, mut command: Command) -> (Child, Arc<Mutex<Vec<u8>>>) {
        let child = command
            .stdin(self.end())
            .stdout(self.end())
            .stderr(self.end())
            .spawn()
            .expect("spawn lager");
        (child, collect(self.master.try_clone().unwrap()))
    }
}

fn shown(screen: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&screen.lock().unwrap()).into_owned()
}

/// `-i` in a real terminal: raw while typing, restored however it ends.
fn typing_session(ending: &str) {
    let b = Bench::start(&format!("uart-tty-{ending}"));
    let terminal = Terminal::open();
    let cooked = terminal.lflag();
    assert_ne!(cooked & libc::ICANON, 0, "a fresh terminal is cooked");
    let (mut child, screen) = terminal.run(b.lager(&["uart", "console1", "-i"]));
    assert!(
        wait_until(WAIT, || terminal.lflag()
            & (libc::ICANON | libc::ECHO | libc::ISIG)
            == 0),
        "the terminal never went raw; it shows:\n{}",
        shown(&screen)
    );
    assert!(wait_until(WAIT, || b.console("console1")["writer"] == "tester"));
    // Keys go to the device; Enter is the net's line ending; the device echoes.
    let mut keys = terminal.master.try_clone().unwrap();
    keys.write_all(b"help\r").unwrap();
    assert!(
        wait_until(WAIT, || shown(&screen).contains("commands: help, uptime")),
        "{}",
        shown(&screen)
    );
    // While typing, lager holds the box's lock for its user.
    let lock: Value =
        serde_json::from_str(&request(b.daemon.addr(), "GET", "/lock", None).text()).unwrap();
    assert_eq!(
        (lock["locked"].as_bool(), lock["user"].as_str()),
        (Some(true), Some("tester"))
    );
    let expected = match ending {
        "ctrl-]" => {
            keys.write_all(&[0x1d]).unwrap();
            0
        }
        "sigterm" => {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            128 + libc::SIGTERM
        }
        "sighup" => {
            unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
            128 + libc::SIGHUP
        }
        other => panic!("{other}"),
    };
    let mut status = None;
    assert!(wait_until(WAIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(expected), "{}", shown(&screen));
    assert_eq!(terminal.lflag(), cooked, "the terminal is as it was");
    // The writer claim and the box lock went with it.
    assert!(wait_until(WAIT, || b.console("console1")["writer"].is_null()));
    let lock: Value =
        serde_json::from_str(&request(b.daemon.addr(), "GET", "/lock", None).text()).unwrap();
    assert_eq!(lock["locked"], false, "{lock}");
}

#[test]
fn ctrl_bracket_quits_and_restores_the_terminal() {
    typing_session("ctrl-]");
}

#[test]
fn sigterm_restores_the_terminal() {
    typing_session("sigterm");
}

#[test]
fn sighup_restores_the_terminal() {
    typing_session("sighup");
}

#[test]
fn a_second_writer_is_refused_with_the_first_ones_name() {
    let b = Bench::start("uart-writers");
    let typing = |user: &str, extra: &[&str]| {
        let mut args = vec!["uart", "console1", "-i"];
        args.extend_from_slice(extra);
        let mut command = b.lager(&args);
        command
            .env("LAGER_USER", user)
            .env("LAGER_AUTO_LOCK_DISABLE", "1");
        command
    };
    let mut alice = Running::spawn(typing("alice", &[]), Stdio::piped());
    assert!(wait_until(WAIT, || b.console("console1")["writer"] == "alice"));
    // From a pipe, a line is a line: the device answers it.
    let mut keys = alice.child.stdin.take().unwrap();
    keys.write_all(b"uptime\n").unwrap();
    alice.wait_for("boot #1");
    let bob = b.cli.run_with(
        &["uart", "console1", "-i", "--box", "b1"],
        &[("LAGER_USER", "bob"), ("LAGER_AUTO_LOCK_DISABLE", "1")],
    );
    bob.expect_code(1);
    assert!(
        bob.stderr
            .contains("console console1 is being typed on by alice since "),
        "{}",
        bob.stderr
    );
    assert!(bob.stderr.contains("--takeover"), "{}", bob.stderr);
    // Bob takes over; alice is told and watches on.
    let mut bob = Running::spawn(typing("bob", &["--takeover"]), Stdio::piped());
    alice.wait_for(" console1 taken over by bob; you only watch now --");
    assert!(wait_until(WAIT, || b.console("console1")["writer"] == "bob"));
    // Bob vanishes (SIGKILL: no goodbye): the console is free again.
    bob.signal(libc::SIGKILL);
    bob.exit_code();
    assert!(
        wait_until(WAIT, || b.console("console1")["writer"].is_null()),
        "a vanished writer's claim is released"
    );
    drop(keys);
    drop(alice);
    // With the auto-lock (the default), typing holds the box: another
    // user is refused by the lock first.
    let mut carol = b.lager(&["uart", "console1", "-i"]);
    carol.env("LAGER_USER", "carol");
    let _carol = Running::spawn(carol, Stdio::piped());
    assert!(wait_until(WAIT, || b.console("console1")["writer"] == "carol"));
    let dave = b.cli.run_with(
        &["uart", "console1", "-i", "--box", "b1"],
        &[("LAGER_USER", "dave")],
    );
    dave.expect_code(1);
    assert!(
        dave.stderr.contains("Box 'b1' is locked by carol"),
        "{}",
        dave.stderr
    );
}

#[test]
fn nets_add_uart_refuses_bad_values_naming_the_allowed_ones() {
    let b = Bench::start("uart-nets");
    let add = |extra: &[&str]| {
        let mut args = vec![
            "nets",
            "add",
            "dut2",
            "--role",
            "uart",
            "--address",
            "FT4232H01:2",
            "--box",
            "b1",
        ];
        args.extend_from_slice(extra);
        b.cli.run(&args)
    };
    for (flags, allowed) in [
        (&["--baudrate", "12345"][..], "one of 50, 75, 110,"),
        (&["--baudrate", "fast"][..], "one of 50, 75, 110,"),
        (
            &["--parity", "purple"][..],
            "one of none, even, odd, mark, space",
        ),
        (&["--stopbits", "3"][..], "one of 1, 1.5, 2"),
        (
            &["--flow", "rts"][..],
            "one of none, xonxoff, rtscts, dsrdtr",
        ),
        (&["--line-ending", "nl"][..], "one of lf, crlf, cr"),
    ] {
        let run = add(flags);
        run.expect_code(1);
        assert!(run.stderr.contains(allowed), "{flags:?}: {}", run.stderr);
    }
    let listed = b.cli.run(&["nets", "--json", "--box", "b1"]);
    assert!(
        !listed.stdout.contains("dut2"),
        "nothing saved: {}",
        listed.stdout
    );
    add(&[
        "--baudrate",
        "921600",
        "--stopbits",
        "1.5",
        "--line-ending",
        "crlf",
    ])
    .expect_code(0);
    let nets: Value =
        serde_json::from_str(&b.cli.run(&["nets", "--json", "--box", "b1"]).stdout).unwrap();
    let dut2 = nets
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "dut2")
        .unwrap();
    assert_eq!(dut2["params"]["baudrate"], 921600);
    assert_eq!(dut2["params"]["stopbits"], 1.5);
    assert_eq!(dut2["params"]["line_ending"], "crlf");
    let wrong_role = b.cli.run(&[
        "nets",
        "add",
        "x",
        "--role",
        "supply",
        "--instrument",
        "Keithley_2281S",
        "--address",
        "TCPIP0::h::1::SOCKET",
        "--baudrate",
        "9600",
        "--box",
        "b1",
    ]);
    wrong_role.expect_code(2);
    // Diagnose a uart net nothing is plugged into.
    let run = b.cli.run(&["diagnose", "dut2", "--box", "b1"]);
    run.expect_code(2);
    assert!(run.stdout.contains("Classification: NOT PRESENT — nothing matches interface 2 of the USB serial adapter with serial number FT4232H01"), "{}", run.stdout);
}

#[test]
fn diagnose_says_whether_a_console_is_captured_or_held_and_by_whom() {
    let b = Bench::start("uart-diagnose");
    let run = b.cli.run(&["diagnose", "console1", "--box", "b1"]);
    run.expect_code(0);
    assert!(run.stdout.contains("NetType: uart"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("Classification: CAPTURING — lagerd reads console1 from "),
        "{}",
        run.stdout
    );
    // A port another process holds.
    let terminal = Terminal::open();
    let _holder = terminal.end();
    b.cli
        .run(&[
            "nets",
            "add",
            "held1",
            "--role",
            "uart",
            "--address",
            &terminal.slave,
            "--box",
            "b1",
        ])
        .expect_code(0);
    assert!(wait_until(WAIT, || b.console("held1")["state"] == "held"));
    let run = b.cli.run(&["diagnose", "held1", "--box", "b1"]);
    run.expect_code(2);
    let me = std::process::id();
    assert!(
        run.stdout
            .contains("Classification: HELD BY ANOTHER PROCESS"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("({me})")),
        "the holder's pid: {}",
        run.stdout
    );
    let json: Value = serde_json::from_str(
        &b.cli
            .run(&["diagnose", "held1", "--box", "b1", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(json["bucket"], "held");
    // The console's state in lager boxes --json, under health.
    let boxes: Value = serde_json::from_str(&b.cli.run(&["boxes", "--json"]).stdout).unwrap();
    let consoles = boxes[0]["health"]["consoles"].as_array().unwrap();
    let state = |net: &str| consoles.iter().find(|c| c["net"] == net).unwrap()["state"].clone();
    assert_eq!(
        (state("console1"), state("held1")),
        (json!("open"), json!("held"))
    );
}

/// A script through `lager python` that drives `console1` with the on-box
/// package's UART net (console.md §5), against the simulated device.
const UART_SCRIPT: &str = r#"
import os, re, socket, time
from lager import Net, NetType, LagerError
from lager.uart import UartTimeout

def dut(command):
    host, port = os.environ["DUT_CONTROL"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), 5) as s:
        s.sendall((command + "\n").encode())
        return s.makefile().readline().strip()

def within(seconds, check):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within %ss" % seconds
        time.sleep(0.02)

console = Net.get("console1", type=NetType.UART)
config = console.get_config()
assert console.get_baudrate() == 115200 and config["bytesize"] == 8 and config["parity"] == "N", config
assert config["port"].startswith("/dev/pts/") and console.get_path() == config["port"], config
start = console.mark()
with console.connect(timeout=5) as port:
    assert port.is_open and port.in_waiting == 0
    assert port.write(b"help\n") == 5
    found = port.expect(b"commands: help")
    assert found.string == b"help\r\ncommands: help", found.string
    assert port.read_until(b"sim> ").endswith(b"sim> ")
    port.write(b"uptime\n")
    assert port.readline() == b"uptime\r\n"
    line = port.readline()
    assert line.startswith(b"up ") and line.endswith(b"boot #1\r\n"), line
    port.read_until(b"sim> ")
    # What the device printed after a mark, exactly.
    before = console.mark()
    port.write(b"reboot\n")
    assert port.expect(re.compile(rb"boot #(\d+)")).group(1) == b"2"
    port.expect("sim> ")
    after = console.since(before)
    assert after.startswith(b"reboot\r\nrebooting...\r\n") and after.endswith(b"boot #2\r\n"
        b"[    0.000000] Booting on the simulated CPU\r\n[    0.000412] console: ttyS0 at 115200 baud\r\n"
        b"[    0.001024] sim: ready\r\nType 'help' for commands.\r\nsim> "), after
    # Timeouts: a short read, and expect() raises with what came.
    port.timeout = 0.3
    began = time.monotonic()
    assert port.read(10) == b"" and 0.25 <= time.monotonic() - began < 3
    try:
        port.expect(b"never printed")
        raise AssertionError("expect did not time out")
    except UartTimeout as e:
        assert isinstance(e, TimeoutError) and e.data == b""
    # in_waiting, reset_input_buffer, readlines.
    dut("say hello from the device")
    within(5, lambda: port.in_waiting == len(b"hello from the device\r\n"))
    port.reset_input_buffer()
    assert port.in_waiting == 0
    dut("say one")
    dut("say two")
    within(5, lambda: port.in_waiting == 10)
    assert port.readlines() == [b"one\r\n", b"two\r\n"]
    try:
        port.write("text")
        raise AssertionError("str accepted")
    except TypeError:
        pass
assert not port.is_open
whole = console.since(start)
assert whole.startswith(b"help\r\ncommands: help") and b"one\r\ntwo\r\n" in whole, whole[:80]
# One writer: a second connection's write names who types.
first = console.connect(timeout=2)
first.write(b"\n")
second = console.connect(timeout=2)
try:
    second.write(b"x")
    raise AssertionError("a second writer was let in")
except LagerError as e:
    assert "is being typed on by " in str(e) and e.status == 409, str(e)
first.close()
def second_writes():
    try:
        second.write(b"\n")
        return True
    except LagerError:
        return False
within(5, second_writes)
second.close()
try:
    console.connect(baudrate=9600)
    raise AssertionError("a script changed the port's baud rate")
except LagerError as e:
    assert "runs at baudrate=115200" in str(e), str(e)
print("UART OK")
"#;

#[test]
fn scripts_read_and_write_a_console_through_lagerd() {
    let b = Bench::start("uart-script");
    let script = b.cli.work_dir().join("uart_script.py");
    std::fs::write(&script, UART_SCRIPT).unwrap();
    let dut = format!("DUT_CONTROL={}", b.control);
    let run = b.cli.run(&[
        "python",
        script.to_str().unwrap(),
        "--box",
        "b1",
        "--env",
        &dut,
    ]);
    run.expect_code(0);
    assert_eq!(run.stdout.lines().last(), Some("UART OK"), "{}", run.stderr);
    // What the script typed is in the one capture everyone sees.
    let watch = Running::spawn(
        b.lager(&["uart", "console1", "--from-start"]),
        Stdio::null(),
    );
    watch.wait_for("commands: help, uptime");
}
