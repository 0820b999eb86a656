//! Serial consoles (console.md §1-§3, §6) on real pseudo-terminals: the
//! test holds the device's end of a pty (or drives `--sim`'s simulated
//! device through its control port), lagerd captures the other end, and
//! readers and writers use the real HTTP routes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::console::{Decoder, Kind};
use lager_testsupport::{request, wait_until, TempDir};
use lagerd::sim::serial::open_pty;
use serde_json::{json, Value};

use crate::{start, Box_};

/// A pty whose device end (the master) the test writes as the device
/// would. The slave is set raw first, as a UART has no line discipline:
/// bytes written before lagerd opens it are kept as they are.
fn pty() -> (File, String) {
    let (master, slave) = open_pty().expect("pty");
    let fd = File::options()
        .read(true)
        .write(true)
        .open(&slave)
        .expect("open slave");
    unsafe {
        let mut tio: libc::termios = std::mem::zeroed();
        libc::tcgetattr(fd.as_raw_fd(), &mut tio);
        libc::cfmakeraw(&mut tio);
        libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &tio);
    }
    (master, slave)
}

/// One decoded frame.
#[derive(Debug, Clone)]
struct Frame {
    kind: Kind,
    offset: u64,
    payload: Vec<u8>,
}

impl Frame {
    fn event(&self) -> Option<Value> {
        (self.kind == Kind::Event)
            .then(|| serde_json::from_slice(&self.payload).expect("JSON event"))
    }

    fn is_event(&self, name: &str) -> bool {
        self.event().is_some_and(|e| e["event"] == name)
    }
}

/// A console stream read as a client would: chunked HTTP, then frames.
struct Stream {
    reader: BufReader<TcpStream>,
    decoder: Decoder,
    /// Bytes left in the current chunk.
    left: usize,
}

impl Stream {
    fn open(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Stream, (u16, Value)> {
        Stream::open_on(
            TcpStream::connect(addr).expect("connect"),
            addr,
            method,
            path,
            headers,
        )
    }

    /// A reader with a small receive buffer, set before connecting (a
    /// window shrunk later makes the kernel drop data and back off).
    fn small(addr: SocketAddr, path: &str) -> Stream {
        let SocketAddr::V4(v4) = addr else {
            panic!("loopback v4 expected")
        };
        let conn = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            let size: libc::c_int = 4096;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            let connected = libc::connect(
                fd,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
            <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
        };
        Stream::open_on(conn, addr, "GET", path, &[]).expect("stream opens")
    }

    fn open_on(
        mut conn: TcpStream,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Stream, (u16, Value)> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        conn.write_all(head.as_bytes()).expect("send");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(conn);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status line");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        if status != 200 {
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            return Err((status, serde_json::from_slice(&body).unwrap()));
        }
        Ok(Stream {
            reader,
            decoder: Decoder::new(),
            left: 0,
        })
    }

    fn get(addr: SocketAddr, query: &str) -> Stream {
        Stream::open(addr, "GET", &format!("/uart/stream?{query}"), &[]).expect("stream opens")
    }

    /// The next frame, or `None` when none came within `within` (or the
    /// stream ended).
    fn frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("valid frames") {
                return Some(Frame {
                    kind: frame.kind,
                    offset: frame.offset,
                    payload: frame.payload.to_vec(),
                });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            if self.left == 0 {
                let mut size = String::new();
                match self.reader.read_line(&mut size) {
                    Ok(0) | Err(_) => return None,
                    Ok(_) if size.trim().is_empty() => continue,
                    Ok(_) => {}
                }
                self.left = usize::from_str_radix(size.trim(), 16).expect("chunk size");
                if self.left == 0 {
                    return None;
                }
            }
            let mut buffer = vec![0; self.left.min(64 * 1024)];
            match self.reader.read(&mut buffer) {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    self.decoder.feed(&buffer[..n]);
                    self.left -= n;
                    if self.left == 0 {
                        let mut crlf = [0u8; 2];
                        let _ = self.reader.read_exact(&mut crlf);
                    }
                }
            }
        }
    }

    /// Frames until `done` holds for one (included), bounded.
    fn until(&mut self, within: Duration, mut done: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        while let Some(frame) = self.frame(deadline.saturating_duration_since(Instant::now())) {
            let stop = done(&frame);
            frames.push(frame);
            if stop {
                return frames;
            }
        }
        let last: Vec<String> = frames
            .iter()
            .rev()
            .take(3)
            .map(|f| {
                format!(
                    "{:?}@{}: {:.200}",
                    f.kind,
                    f.offset,
                    String::from_utf8_lossy(&f.payload)
                )
            })
            .collect();
        panic!(
            "stream ended or went quiet after {} frames; the last: {last:?}",
            frames.len()
        );
    }

    /// Console bytes until they contain `needle`.
    fn text_until(&mut self, needle: &str, within: Duration) -> String {
        let mut text = String::new();
        self.until(within, |f| {
            if f.kind == Kind::Data {
                text.push_str(&String::from_utf8_lossy(&f.payload));
            }
            text.contains(needle)
        });
        text
    }
}

fn add_net(b: &Box_, name: &str, address: &str, params: Value) -> (u16, Value) {
    b.call(
        "POST",
        "/nets",
        Some(&json!({"action": "add", "net": {"name": name, "role": "uart", "address": address, "params": params}}).to_string()),
    )
}

fn status(b: &Box_, net: &str) -> Value {
    b.call("GET", &format!("/uart/status?netname={net}"), None)
        .1
}

fn wait_state(b: &Box_, net: &str, state: &str) -> Value {
    let mut last = Value::Null;
    let reached = wait_until(Duration::from_secs(5), || {
        last = status(b, net);
        last["state"] == state
    });
    assert!(reached, "{net} never became {state}: {last}");
    last
}

#[test]
fn bytes_printed_while_nobody_watched_are_kept_with_their_offsets() {
    let (mut device, slave) = pty();
    let b = start("uart-keep", &[]);
    assert_eq!(
        add_net(&b, "dut", &slave, json!({"baudrate": 921600})).0,
        200
    );
    wait_state(&b, "dut", "open");
    let printed = b"U-Boot 2024.01\r\nboot: \0\xff binary too\r\n";
    let n = printed.len() as u64;
    device.write_all(printed).unwrap();
    assert!(wait_until(Duration::from_secs(5), || status(&b, "dut")
        ["bytes"]
        == n));
    // Nobody was attached; a reader from offset 0 gets every byte, exactly.
    let mut early = Stream::get(b.addr(), "netname=dut&from=0");
    let hello = early
        .frame(Duration::from_secs(5))
        .unwrap()
        .event()
        .unwrap();
    assert_eq!(
        (hello["event"].as_str(), hello["state"].as_str()),
        (Some("status"), Some("open"))
    );
    let frames = early.until(Duration::from_secs(5), |f| f.kind == Kind::Data);
    let data = frames.last().unwrap();
    assert_eq!(data.offset, 0);
    assert_eq!(data.payload, printed);
    // A reader from now sees only what comes next, at the next offset;
    // --tail and a mid offset land where asked.
    let mut live = Stream::get(b.addr(), "netname=dut");
    live.frame(Duration::from_secs(5)).unwrap();
    device.write_all(b"login: ").unwrap();
    let next = live.until(Duration::from_secs(5), |f| f.kind == Kind::Data);
    assert_eq!(
        (
            next.last().unwrap().offset,
            &next.last().unwrap().payload[..]
        ),
        (n, &b"login: "[..])
    );
    let mut tail = Stream::get(b.addr(), "netname=dut&tail=7");
    tail.frame(Duration::from_secs(5)).unwrap();
    assert_eq!(
        tail.text_until("login: ", Duration::from_secs(5)),
        "login: "
    );
    let mut since = Stream::get(b.addr(), "netname=dut&since=60");
    since.frame(Duration::from_secs(5)).unwrap();
    assert!(since
        .text_until("login: ", Duration::from_secs(5))
        .starts_with("U-Boot"));
    // The on-disk log has it too (written just after the ring).
    let log_path = b.dir.path().join("uart/dut/console.log");
    let logged = || std::fs::read(&log_path).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || logged()
            .windows(7)
            .any(|w| w == b"login: ")),
        "{}",
        String::from_utf8_lossy(&logged())
    );
    for bad in ["from=-1", "since=x", "tail=1&from=2"] {
        let (code, body) = b.call("GET", &format!("/uart/stream?netname=dut&{bad}"), None);
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let (code, body) = b.call("GET", "/uart/stream?netname=nope", None);
    assert_eq!(
        (code, body["error"].as_str()),
        (
            404,
            Some("Net 'nope' not found. Create it with 'lager nets add'.")
        )
    );
}

#[test]
fn a_reader_that_never_reads_delays_nobody_and_later_learns_its_gap() {
    let (mut device, slave) = pty();
    let b = start("uart-slow", &["--uart-ring", "1M"]);
    add_net(&b, "dut", &slave, json!({}));
    wait_state(&b, "dut", "open");
    // The silent reader: a tiny receive buffer, never read until the end.
    let mut silent = Stream::small(b.addr(), "/uart/stream?netname=dut");
    let mut keen = Stream::get(b.addr(), "netname=dut");
    keen.frame(Duration::from_secs(5)).unwrap();
    // 16 MB of numbered lines: more than the ring and every socket buffer
    // between lagerd and the silent reader.
    let lines: Vec<u8> = (0..500_000u32)
        .flat_map(|i| format!("line {i:08} of the boot log\r\n").into_bytes())
        .collect();
    let total = lines.len() as u64;
    // The device waits for the keen reader (never more than 256 KiB
    // ahead of it, well inside the ring); the silent one falls behind.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = progress.clone();
    let writer = std::thread::spawn(move || {
        for (i, block) in lines.chunks(64 * 1024).enumerate() {
            let ahead = (i * 64 * 1024) as u64;
            assert!(
                wait_until(Duration::from_secs(30), || ahead
                    .saturating_sub(seen.load(std::sync::atomic::Ordering::SeqCst))
                    < 256 * 1024),
                "the keen reader stalled"
            );
            device.write_all(block).unwrap();
        }
        device
    });
    let mut received = Vec::with_capacity(total as usize);
    let mut next = 0u64;
    keen.until(Duration::from_secs(60), |f| {
        assert!(
            !f.is_event("gap"),
            "a reader that keeps up never misses bytes"
        );
        if f.kind == Kind::Data {
            assert_eq!(f.offset, next, "in order, no hole");
            next += f.payload.len() as u64;
            received.extend_from_slice(&f.payload);
            progress.store(next, std::sync::atomic::Ordering::SeqCst);
        }
        next == total
    });
    let _device = writer.join().unwrap();
    assert!(
        received.starts_with(b"line 00000000")
            && received.ends_with(b"line 00499999 of the boot log\r\n")
    );
    assert_eq!(status(&b, "dut")["bytes"], total, "capture took everything");
    // The silent one now reads: what sat in its socket, then a gap naming
    // what the ring no longer had, then the rest, offsets adding up.
    let frames = silent.until(Duration::from_secs(30), |f| {
        f.kind == Kind::Data && f.offset + f.payload.len() as u64 == total
    });
    let gap = frames
        .iter()
        .find_map(|f| f.event().filter(|e| e["event"] == "gap"))
        .expect("a gap event");
    assert!(gap["missed"].as_u64().unwrap() > 1_000_000, "{gap}");
    let mut expected = None;
    for frame in &frames {
        if let Some(event) = frame.event() {
            if event["event"] == "gap" {
                expected = Some(frame.offset);
            }
            continue;
        }
        if let Some(at) = expected {
            assert_eq!(frame.offset, at);
        }
        expected = Some(frame.offset + frame.payload.len() as u64);
    }
}

#[test]
fn one_writer_at_a_time_named_refused_taken_over_and_released() {
    let (device, slave) = pty();
    let b = start("uart-writer", &[]);
    add_net(&b, "dut", &slave, json!({}));
    wait_state(&b, "dut", "open");
    let addr = b.addr();
    let claim = |who: &str, extra: &str| {
        Stream::open(
            addr,
            "POST",
            &format!("/uart/stream?netname=dut{extra}"),
            &[("Lager-Holder", who)],
        )
    };
    let mut alice = claim("alice", "").expect("alice types");
    let hello = alice
        .frame(Duration::from_secs(5))
        .unwrap()
        .event()
        .unwrap();
    let session = hello["session"].as_str().unwrap().to_string();
    assert_eq!(hello["writer"], "alice");
    // A second writer is refused with the first one's identity.
    let (code, refusal) = claim("ci:github:org/repo#7-1/test@runner:42", "")
        .err()
        .unwrap();
    assert_eq!(code, 409);
    assert_eq!(refusal["writer"], "alice");
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .contains("typed on by alice"),
        "{refusal}"
    );
    // Alice's bytes reach the device; a wrong session's do not.
    let write = |session: &str, bytes: &str| {
        b.call(
            "POST",
            &format!("/uart/write?netname=dut&session={session}"),
            Some(bytes),
        )
    };
    assert_eq!(
        write(&session, "reboot\n"),
        (200, json!({"success": true, "written": 7}))
    );
    let mut seen = [0u8; 7];
    let mut device_reader = device.try_clone().unwrap();
    device_reader.read_exact(&mut seen).unwrap();
    assert_eq!(&seen, b"reboot\n");
    assert_eq!(write("0000", "x").0, 409);
    // Bob takes over: alice is told on her stream and can no longer write.
    let mut bob = claim("bob", "&takeover=1").expect("takeover");
    bob.frame(Duration::from_secs(5)).unwrap();
    let told = alice.until(Duration::from_secs(5), |f| f.is_event("writer"));
    let told = told.last().unwrap().event().unwrap();
    assert_eq!(
        (told["state"].as_str(), told["by"].as_str()),
        (Some("taken"), Some("bob"))
    );
    let (code, body) = write(&session, "x");
    assert_eq!(code, 409);
    assert!(
        body["error"].as_str().unwrap().contains("bob took it over"),
        "{body}"
    );
    // Bob vanishes without a word: his claim goes with his connection.
    drop(bob);
    assert!(
        wait_until(Duration::from_secs(5), || status(&b, "dut")["writer"]
            .is_null()),
        "the claim of a vanished writer is released"
    );
    assert!(claim("carol", "").is_ok());
}

#[test]
fn writes_need_the_token_and_obey_enforced_locks() {
    let (_device, slave) = pty();
    let dir = TempDir::new("uart-token");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let daemon = lager_testsupport::Daemon::start(
        &crate::lagerd(),
        &state,
        &["--token-file", token.to_str().unwrap(), "--enforce-locks"],
    );
    let addr = daemon.addr();
    let post = |path: &str, body: &str, headers: &[(&str, &str)]| {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        lager_testsupport::raw_request(addr, req.as_bytes()).unwrap()
    };
    let auth = ("Authorization", "Bearer s3cret");
    let net = json!({"action": "add", "net": {"name": "dut", "role": "uart", "address": slave}})
        .to_string();
    assert_eq!(post("/nets", &net, &[auth]).status, 200);
    assert!(wait_until(Duration::from_secs(5), || {
        let reply = request(addr, "GET", "/uart/status?netname=dut", None);
        serde_json::from_slice::<Value>(&reply.body).unwrap()["state"] == "open"
    }));
    // Reading is open; claiming the writer is a change.
    assert!(Stream::open(addr, "GET", "/uart/stream?netname=dut", &[]).is_ok());
    let refused = Stream::open(
        addr,
        "POST",
        "/uart/stream?netname=dut",
        &[("Lager-Holder", "bob")],
    )
    .err()
    .unwrap();
    assert_eq!(refused.0, 401);
    assert_eq!(
        post("/lock", r#"{"user":"alice","ttl_seconds":null}"#, &[auth]).status,
        200
    );
    let locked = Stream::open(
        addr,
        "POST",
        "/uart/stream?netname=dut",
        &[auth, ("Lager-Holder", "bob")],
    )
    .err()
    .unwrap();
    assert_eq!(
        (locked.0, locked.1["error"].as_str()),
        (423, Some("Box is locked by alice"))
    );
    let mut alice = Stream::open(
        addr,
        "POST",
        "/uart/stream?netname=dut",
        &[auth, ("Lager-Holder", "alice")],
    )
    .expect("the holder types");
    let session = alice
        .frame(Duration::from_secs(5))
        .unwrap()
        .event()
        .unwrap()["session"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/uart/write?netname=dut&session={session}");
    assert_eq!(post(&path, "x", &[("Lager-Holder", "alice")]).status, 401);
    assert_eq!(
        post(&path, "x", &[auth, ("Lager-Holder", "mallory")]).status,
        423
    );
    assert_eq!(
        post(&path, "x", &[auth, ("Lager-Holder", "alice")]).status,
        200
    );
}

#[test]
fn an_unplugged_device_is_gone_then_back_within_a_second_of_reappearing() {
    let dir = TempDir::new("uart-replug");
    let link = dir.path().join("by-id-usb-FTDI-if00");
    let (device, slave) = pty();
    std::os::unix::fs::symlink(&slave, &link).unwrap();
    let b = start("uart-replug-box", &[]);
    add_net(&b, "dut", link.to_str().unwrap(), json!({}));
    wait_state(&b, "dut", "open");
    let mut reader = Stream::get(b.addr(), "netname=dut");
    reader.frame(Duration::from_secs(5)).unwrap();
    // The replacement, made first so it is another /dev/pts/N.
    let (mut device2, slave2) = pty();
    // Unplugged: the device's end closes and the link goes, as udev's would.
    drop(device);
    std::fs::remove_file(&link).unwrap();
    let gone = reader.until(Duration::from_secs(5), |f| f.is_event("gone"));
    assert_eq!(gone.last().unwrap().event().unwrap()["reason"], "unplugged");
    assert_eq!(status(&b, "dut")["state"], "gone");
    let (code, body) = b.call("POST", "/uart/write?netname=dut&session=x", Some("x"));
    assert_eq!(code, 409, "{body}");
    // Replugged under another pty: back within a second of the link appearing.
    assert_ne!(slave, slave2);
    std::os::unix::fs::symlink(&slave2, &link).unwrap();
    let appeared = Instant::now();
    let back = reader.until(Duration::from_secs(5), |f| f.is_event("back"));
    let waited = appeared.elapsed();
    assert!(waited < Duration::from_secs(1), "back after {waited:?}");
    assert_eq!(back.last().unwrap().event().unwrap()["device"], slave2);
    device2.write_all(b"after replug\n").unwrap();
    assert_eq!(
        reader.text_until("after replug\n", Duration::from_secs(5)),
        "after replug\n"
    );
    let now = status(&b, "dut");
    assert_eq!(
        (now["opens"].as_u64(), now["gone"].as_u64()),
        (Some(2), Some(1))
    );
    let log = std::fs::read_to_string(b.dir.path().join("uart/dut/console.log")).unwrap();
    assert!(
        log.contains("-- lager: gone at") && log.contains("-- lager: back at"),
        "{log}"
    );
}

/// A fixture sysfs with one FT4232H-like adapter: serial `FT4232H01`,
/// interface 1 as `tty` (a link under `dev/` to `pty_slave`), and another
/// adapter's tty to be ignored.
fn adapter(root: &Path, tty: &str, pty_slave: &str) {
    let usb = root.join("sys/devices/pci0/usb1/1-1.4");
    for (dir, attrs) in [
        (
            usb.clone(),
            vec![
                ("idVendor", "0403"),
                ("idProduct", "6011"),
                ("serial", "FT4232H01"),
                ("product", "Quad RS232-HS"),
            ],
        ),
        (usb.join("1-1.4:1.1"), vec![("bInterfaceNumber", "01")]),
    ] {
        std::fs::create_dir_all(&dir).unwrap();
        for (k, v) in attrs {
            std::fs::write(dir.join(k), format!("{v}\n")).unwrap();
        }
    }
    let node = usb.join("1-1.4:1.1").join(tty).join("tty").join(tty);
    std::fs::create_dir_all(&node).unwrap();
    let _ = std::os::unix::fs::symlink(usb.join("1-1.4:1.1").join(tty), node.join("device"));
    std::fs::create_dir_all(root.join("sys/class/tty")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::os::unix::fs::symlink(&node, root.join("sys/class/tty").join(tty)).unwrap();
    std::os::unix::fs::symlink(pty_slave, root.join("dev").join(tty)).unwrap();
}

fn unplug_adapter(root: &Path, tty: &str) {
    std::fs::remove_file(root.join("sys/class/tty").join(tty)).unwrap();
    std::fs::remove_file(root.join("dev").join(tty)).unwrap();
    std::fs::remove_dir_all(root.join("sys/devices/pci0/usb1/1-1.4")).unwrap();
}

#[test]
fn a_usb_adapter_is_found_again_by_serial_number_after_reenumerating() {
    let fixture = TempDir::new("uart-sysfs");
    let root = fixture.path();
    let (device, slave) = pty();
    adapter(root, "ttyUSB1", &slave);
    // A second adapter on the box, another serial number: never touched.
    let (_other, other_slave) = pty();
    let other = root.join("sys/devices/pci0/usb1/1-1.2");
    std::fs::create_dir_all(other.join("1-1.2:1.0/ttyUSB0/tty/ttyUSB0")).unwrap();
    std::fs::write(other.join("idVendor"), "0403\n").unwrap();
    std::fs::write(other.join("idProduct"), "6001\n").unwrap();
    std::fs::write(other.join("serial"), "OTHER\n").unwrap();
    std::fs::write(other.join("1-1.2:1.0/bInterfaceNumber"), "00\n").unwrap();
    std::os::unix::fs::symlink(
        other.join("1-1.2:1.0/ttyUSB0"),
        other.join("1-1.2:1.0/ttyUSB0/tty/ttyUSB0/device"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        other.join("1-1.2:1.0/ttyUSB0/tty/ttyUSB0"),
        root.join("sys/class/tty/ttyUSB0"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&other_slave, root.join("dev/ttyUSB0")).unwrap();
    let sys = root.join("sys");
    let dev = root.join("dev");
    let b = start(
        "uart-sysfs-box",
        &[
            "--sys-root",
            sys.to_str().unwrap(),
            "--dev-root",
            dev.to_str().unwrap(),
        ],
    );
    assert_eq!(
        add_net(&b, "dut", "ft4232h01:1", json!({})).0,
        200,
        "serial numbers match in any case"
    );
    let open = wait_state(&b, "dut", "open");
    assert_eq!(open["path"], dev.join("ttyUSB1").to_str().unwrap());
    let facts = b.call("GET", "/diagnose/uart?net=dut", None).1;
    assert_eq!(
        (
            facts["usb"]["serial"].as_str(),
            facts["usb"]["interface_number"].as_u64()
        ),
        (Some("FT4232H01"), Some(1))
    );
    assert_eq!(facts["usb"]["product"], "Quad RS232-HS");
    let mut reader = Stream::get(b.addr(), "netname=dut");
    reader.frame(Duration::from_secs(5)).unwrap();
    // Unplugged, then back as ttyUSB3 on a new pty: found by its serial.
    drop(device);
    unplug_adapter(root, "ttyUSB1");
    reader.until(Duration::from_secs(5), |f| f.is_event("gone"));
    let (mut device, slave2) = pty();
    adapter(root, "ttyUSB3", &slave2);
    let back = reader.until(Duration::from_secs(5), |f| f.is_event("back"));
    assert_eq!(
        back.last().unwrap().event().unwrap()["path"],
        dev.join("ttyUSB3").to_str().unwrap()
    );
    device.write_all(b"hello again\n").unwrap();
    assert_eq!(
        reader.text_until("hello again\n", Duration::from_secs(5)),
        "hello again\n"
    );
}

#[test]
fn a_port_another_process_holds_is_reported_with_its_holder_not_fought_over() {
    let (mut device, slave) = pty();
    let holder = File::options().read(true).write(true).open(&slave).unwrap();
    let b = start("uart-held", &[]);
    add_net(&b, "dut", &slave, json!({}));
    let held = wait_state(&b, "dut", "held");
    let me = std::process::id().to_string();
    assert!(
        held["holders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["pid"] == me.as_str()),
        "{held}"
    );
    assert!(
        held["reason"].as_str().unwrap().starts_with("held by "),
        "{held}"
    );
    let facts = b.call("GET", "/diagnose/uart?net=dut", None).1;
    assert!(
        facts["holders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["pid"] == me.as_str()),
        "{facts}"
    );
    // It was not opened behind the holder's back: the holder reads alone.
    device.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    let mut holder_reader = holder.try_clone().unwrap();
    holder_reader.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
    drop((holder, holder_reader));
    wait_state(&b, "dut", "open");
}

#[test]
fn uart_nets_are_validated_and_a_refusal_saves_nothing() {
    let b = start("uart-nets", &[]);
    let saved = b.dir.path().join("saved_nets.json");
    for (params, allowed) in [
        (json!({"baudrate": 12345}), "one of 50, 75, 110"),
        (json!({"bytesize": 9}), "one of 5, 6, 7, 8"),
        (
            json!({"parity": "purple"}),
            "one of none, even, odd, mark, space",
        ),
        (json!({"stopbits": 3}), "one of 1, 1.5, 2"),
        (
            json!({"flow": "rts"}),
            "one of none, xonxoff, rtscts, dsrdtr",
        ),
        (
            json!({"xonxoff": true, "rtscts": true}),
            "at most one flow control",
        ),
        (json!({"line_ending": "nl"}), "one of lf, crlf, cr"),
    ] {
        let (code, body) = add_net(&b, "c", "/dev/ttyUSB0", params.clone());
        assert_eq!(code, 400, "{params}");
        assert!(
            body["error"].as_str().unwrap().contains(allowed),
            "{params}: {body}"
        );
        assert!(!saved.exists(), "nothing saved for {params}");
    }
    assert_eq!(add_net(&b, "c", "FT01:x", json!({})).0, 400);
    let (code, _) = add_net(
        &b,
        "c",
        "A50285BI",
        json!({"baudrate": "9600", "parity": "E", "line_ending": "crlf"}),
    );
    assert_eq!(code, 200);
    let nets: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(
        nets[0],
        json!({"name": "c", "role": "uart", "instrument": "uart", "address": "A50285BI",
               "params": {"baudrate": 9600, "bytesize": 8, "parity": "even", "stopbits": 1, "flow": "none", "line_ending": "crlf"}})
    );
    // Not plugged in: known, gone, and saying so.
    let now = wait_state(&b, "c", "gone");
    assert_eq!(now["reason"], "not present");
    let (code, body) = b.call("GET", "/uart/stream?netname=supply1", None);
    assert_eq!(code, 404, "{body}");
}

#[test]
fn the_simulated_device_boots_echoes_reboots_and_replugs() {
    let b = start("uart-sim", &["--sim", "--health-interval-secs", "0"]);
    let st: Value =
        serde_json::from_slice(&request(b.addr(), "GET", "/status", None).body).unwrap();
    let control = st["capabilities"]["dut_simulator"]["control"]
        .as_str()
        .unwrap()
        .to_string();
    let ctl = |line: &str| {
        let mut conn = TcpStream::connect(&control).unwrap();
        writeln!(conn, "{line}").unwrap();
        let mut reply = String::new();
        BufReader::new(conn).read_line(&mut reply).unwrap();
        reply.trim().to_string()
    };
    // The banner was printed before anyone attached; the ring has it.
    let mut reader = Stream::get(b.addr(), "netname=console1&from=0");
    reader.frame(Duration::from_secs(5)).unwrap();
    let banner = reader.text_until("sim> ", Duration::from_secs(5));
    assert!(banner.contains("Lager simulated DUT, boot #1"), "{banner}");
    // Typing: echo, then the answer.
    let mut typist = Stream::open(
        b.addr(),
        "POST",
        "/uart/stream?netname=console1",
        &[("Lager-Holder", "t")],
    )
    .unwrap();
    let session = typist
        .frame(Duration::from_secs(5))
        .unwrap()
        .event()
        .unwrap()["session"]
        .as_str()
        .unwrap()
        .to_string();
    b.call(
        "POST",
        &format!("/uart/write?netname=console1&session={session}"),
        Some("help\r"),
    );
    let answer = reader.text_until("sim> ", Duration::from_secs(5));
    assert!(
        answer.starts_with("help\r\ncommands: help, uptime"),
        "{answer:?}"
    );
    assert!(ctl("reboot").starts_with("ok boot 2"));
    assert!(reader
        .text_until("sim> ", Duration::from_secs(5))
        .contains("boot #2"));
    assert_eq!(ctl("unplug"), "ok unplugged");
    reader.until(Duration::from_secs(5), |f| f.is_event("gone"));
    let replugged = ctl("replug");
    let device = replugged.strip_prefix("ok ").unwrap().to_string();
    let back = reader.until(Duration::from_secs(5), |f| f.is_event("back"));
    assert_eq!(
        back.last().unwrap().event().unwrap()["device"],
        device.as_str()
    );
    assert_eq!(ctl("spam 200"), "ok spam 200");
    let spam = reader.text_until("spam 20 ", Duration::from_secs(5));
    for n in 1..20 {
        assert!(spam.contains(&format!(" spam {n} ")), "line {n} in {spam}");
    }
    ctl("spam 0");
    // The console in /status's health.
    let st: Value =
        serde_json::from_slice(&request(b.addr(), "GET", "/status", None).body).unwrap();
    let consoles = st["health"]["consoles"].as_array().unwrap();
    let console1 = consoles.iter().find(|c| c["net"] == "console1").unwrap();
    assert_eq!(
        (console1["state"].as_str(), console1["gone"].as_u64()),
        (Some("open"), Some(1))
    );
    assert!(console1["bytes"].as_u64().unwrap() > 300);
    assert_eq!(console1["readers"], 2);
    assert_eq!(console1["writer"], "t");
}

#[test]
fn deleting_a_uart_net_ends_its_streams_and_frees_the_port() {
    let (_device, slave) = pty();
    let b = start("uart-delete", &[]);
    add_net(&b, "dut", &slave, json!({}));
    wait_state(&b, "dut", "open");
    let mut reader = Stream::get(b.addr(), "netname=dut");
    reader.frame(Duration::from_secs(5)).unwrap();
    let (code, _) = b.call("POST", "/nets", Some(r#"{"action":"delete","name":"dut"}"#));
    assert_eq!(code, 200);
    reader.until(Duration::from_secs(5), |f| f.is_event("closed"));
    // The port is free for anyone again (flock and TIOCEXCL let go).
    let fd = File::options().read(true).write(true).open(&slave).unwrap();
    assert_eq!(
        unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
}
