//! Issue 15's benchmark: serial consoles that never lose a byte.
//!
//! The device is this tool: it writes sequence-numbered 64-byte lines into
//! the far end of a pseudo-terminal whose other end lagerd captures (a
//! `uart` net) or ser2net serves (the baseline, one client, same traffic).
//! Readers check every line end to end: each sequence number exactly once,
//! in order. Measured, in one run:
//!
//! 1. the 921,600-baud byte rate (92,160 B/s) with 8 lagerd readers, and
//!    the same through ser2net: lines lost or reordered, lagerd CPU per MB;
//! 2. as fast as a pty carries, 8 readers, and the same through ser2net:
//!    throughput, loss, CPU per MB;
//! 3. a reader that attaches after the device printed 2,000 lines, the
//!    device behaving as a UART (what nobody reads is dropped, not held):
//!    what lagerd (from the ring) and ser2net deliver;
//! 4. keystroke to echo through `lager uart -i` in a pty, next to the bare
//!    pty round trip measured the same way;
//! 5. 64 readers at the 921,600-baud rate: lagerd's RSS above idle and its
//!    capture rate.
//!
//! Prints `METRIC` lines for BENCHMARKS.md; everything else on stderr.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use argh::FromArgs;
use common::console::{Decoder, Kind};
use lager_bench::daemon::Daemon;
use lager_bench::stats::Latencies;
use lager_bench::{fail, main_with, metric, require_binary, BenchError, WorkDir};
use serde_json::Value;

/// One line on the wire: 10 digits, a space, filler, a newline.
const LINE: usize = 64;
/// 921,600 baud, 8N1: ten bits a byte.
const BAUD_921600_BYTES_PER_SEC: u64 = 92_160;

/// uartbench: issue 15's console benchmark (see the source header).
#[derive(FromArgs)]
struct Args {
    /// lagerd binary (release build)
    #[argh(option)]
    lagerd: PathBuf,
    /// lager binary (release build)
    #[argh(option)]
    lager: PathBuf,
    /// ser2net binary, or "none" to skip the baseline (default: ser2net)
    #[argh(option, default = "String::from(\"ser2net\")")]
    ser2net: String,
    /// seconds of traffic at the 921,600-baud rate (default 8)
    #[argh(option, default = "8")]
    paced_secs: u64,
    /// megabytes written at full pty speed (default 64)
    #[argh(option, default = "64")]
    flood_mb: u64,
    /// keystrokes timed through lager uart -i (default 400)
    #[argh(option, default = "400")]
    keys: usize,
    /// parent of the scratch directory (default: $TMPDIR or /tmp)
    #[argh(option)]
    tmpdir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    main_with("uartbench", || run(argh::from_env()))
}

fn run(args: Args) -> Result<(), BenchError> {
    let lagerd = require_binary(&args.lagerd)?;
    let lager = require_binary(&args.lager)?;
    let work = WorkDir::new(args.tmpdir.as_deref(), "uartbench")?;
    let state = work.path().join("state");
    std::fs::create_dir_all(&state)?;
    let daemon =
        Daemon::start_with_args(&lagerd, &state, 1, &["--health-interval-secs", "0"], &[])?;
    let addr = daemon.addr();
    let ser2net = (args.ser2net != "none").then(|| args.ser2net.clone());
    let paced_bytes = args.paced_secs * BAUD_921600_BYTES_PER_SEC / LINE as u64 * LINE as u64;
    let mut table = Table::default();

    eprintln!(
        "== 1. the 921,600-baud byte rate, {} s, 8 readers",
        args.paced_secs
    );
    let paced = Pty::open()?;
    add_net(addr, "paced", &paced.slave, 921_600)?;
    let lagerd_paced = through_lagerd(&daemon, "paced", &paced, 8, Traffic::Paced(paced_bytes))?
        .report("paced_lagerd");
    table.loss(
        "921,600 baud, 8 readers: lines lost or reordered",
        &lagerd_paced,
    );
    table.info(
        "921,600 baud: lagerd CPU per MB",
        format!("{:.0} ms", lagerd_paced.cpu_ms_per_mb),
    );
    if let Some(ser2net) = &ser2net {
        let s = through_ser2net(ser2net, work.path(), Traffic::Paced(paced_bytes))?
            .report("paced_ser2net");
        table.info(
            "921,600 baud through ser2net, 1 client: lost, rate",
            format!("{} lines lost, {:.3} MB/s", s.lost + s.disorder, s.mb_per_s),
        );
    }

    eprintln!(
        "== 2. as fast as a pty carries, {} MB, 8 readers",
        args.flood_mb
    );
    let flood = Pty::open()?;
    add_net(addr, "flood", &flood.slave, 921_600)?;
    let flood_bytes = args.flood_mb * 1_000_000 / LINE as u64 * LINE as u64;
    let lagerd_flood = through_lagerd(&daemon, "flood", &flood, 8, Traffic::Flood(flood_bytes))?
        .report("flood_lagerd");
    table.loss(
        "pty speed, 8 readers: lines lost or reordered",
        &lagerd_flood,
    );
    table.info(
        "pty speed, 8 readers: lagerd throughput, CPU per MB",
        format!(
            "{:.1} MB/s, {:.0} ms",
            lagerd_flood.mb_per_s, lagerd_flood.cpu_ms_per_mb
        ),
    );
    if let Some(ser2net) = &ser2net {
        let s = through_ser2net(ser2net, work.path(), Traffic::Flood(flood_bytes))?
            .report("flood_ser2net");
        table.info(
            "pty speed through ser2net, 1 client: lost, throughput",
            format!("{} lines lost, {:.1} MB/s", s.lost + s.disorder, s.mb_per_s),
        );
    }

    eprintln!("== 3. a reader attaching after 2,000 lines (the device drops what nobody reads)");
    let late = Pty::open()?;
    add_net(addr, "late", &late.slave, 921_600)?;
    let (taken, delivered) = late_lagerd(addr, "late", &late)?;
    table.check(
        "reader attaching after 2,000 lines: of those, delivered by lagerd",
        "all the port took",
        format!("{delivered} of {EARLY_LINES} (the port took {taken})"),
        delivered == taken,
    );
    if let Some(ser2net) = &ser2net {
        let (taken, delivered) = late_ser2net(ser2net, work.path())?;
        table.info(
            "client attaching after 2,000 lines: of those, delivered by ser2net",
            format!(
                "{delivered} of {EARLY_LINES} (the pty held {taken} while ser2net had it closed)"
            ),
        );
    }

    eprintln!(
        "== 4. keystroke to echo through lager uart -i, {} keys",
        args.keys
    );
    let (floor, timed) = keystrokes(&lager, addr, work.path(), args.keys)?;
    table.info(
        "keystroke to echo, bare pty round trip, p50",
        format!("{floor:.0} µs"),
    );
    table.check(
        "keystroke to echo through lager uart -i, p50",
        "≤ 2 ms",
        format!("{timed:.0} µs"),
        timed <= 2000.0,
    );

    eprintln!("== 5. 64 readers at the 921,600-baud rate");
    let many = Pty::open()?;
    add_net(addr, "many", &many.slave, 921_600)?;
    wait_open(addr, "many")?;
    std::thread::sleep(Duration::from_millis(500));
    let (idle_kib, _) = daemon.memory_kib()?;
    let outcome = through_lagerd(&daemon, "many", &many, 64, Traffic::Paced(paced_bytes))?;
    let peak = outcome.peak_rss_kib.max(idle_kib);
    let readers64 = outcome.report("readers64_lagerd");
    metric("readers64_rss_idle_kib", idle_kib);
    metric("readers64_rss_peak_kib", peak);
    metric("readers64_rss_above_idle_kib", peak - idle_kib);
    eprintln!(
        "   lagerd RSS idle {idle_kib} KiB, peak with 64 readers {peak} KiB: {} KiB above idle",
        peak - idle_kib
    );
    table.check(
        "64 readers: lagerd RSS above idle",
        "≤ 8 MiB",
        format!("{:.2} MiB", (peak - idle_kib) as f64 / 1024.0),
        peak - idle_kib <= 8 * 1024,
    );
    table.loss("64 readers: lines lost or reordered", &readers64);
    let ratio = readers64.mb_per_s / lagerd_paced.mb_per_s;
    table.check(
        "64 readers: capture rate / the 8-reader run's",
        "unchanged (≥ 0.98)",
        format!(
            "{:.3} MB/s / {:.3} MB/s = {ratio:.3}",
            readers64.mb_per_s, lagerd_paced.mb_per_s
        ),
        ratio >= 0.98,
    );
    table.print();
    Ok(())
}

/// The summary table printed last (stdout), one row per figure.
#[derive(Default)]
struct Table(Vec<(String, String, String, Option<bool>)>);

impl Table {
    fn check(&mut self, what: &str, target: &str, measured: String, pass: bool) {
        self.0
            .push((what.into(), target.into(), measured, Some(pass)));
    }

    fn info(&mut self, what: &str, measured: String) {
        self.0
            .push((what.into(), "baseline / info".into(), measured, None));
    }

    fn loss(&mut self, what: &str, summary: &Summary) {
        let bad = summary.lost + summary.disorder + summary.gap_bytes;
        self.check(
            what,
            "0",
            format!(
                "{} lost, {} reordered, {} gap bytes, of {} lines x {} readers",
                summary.lost, summary.disorder, summary.gap_bytes, summary.lines, summary.readers
            ),
            bad == 0,
        );
    }

    fn print(&self) {
        println!("| measurement | target | measured | result |");
        println!("|---|---|---|---|");
        for (what, target, measured, pass) in &self.0 {
            let verdict = match pass {
                Some(true) => "PASS",
                Some(false) => "**FAIL**",
                None => "info",
            };
            println!("| {what} | {target} | {measured} | {verdict} |");
        }
    }
}

// ---------------------------------------------------------------------------
// The device

/// A pty whose master is the device's end; the slave is raw (a UART has no
/// line discipline) and left closed for lagerd or ser2net to open.
struct Pty {
    master: File,
    slave: String,
}

impl Pty {
    fn open() -> Result<Pty, BenchError> {
        // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on our own fd.
        let (master, slave) = unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if fd < 0 || libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
                return Err(fail!(
                    "cannot open a pty: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let mut name = [0 as libc::c_char; 128];
            libc::ptsname_r(fd, name.as_mut_ptr(), name.len());
            (
                File::from_raw_fd(fd),
                std::ffi::CStr::from_ptr(name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        let end = File::options().read(true).write(true).open(&slave)?;
        raw(end.as_raw_fd());
        Ok(Pty { master, slave })
    }
}

fn raw(fd: i32) {
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    unsafe {
        let mut tio: libc::termios = std::mem::zeroed();
        libc::tcgetattr(fd, &mut tio);
        libc::cfmakeraw(&mut tio);
        libc::tcsetattr(fd, libc::TCSANOW, &tio);
    }
}

fn line(seq: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(format!("{seq:010} ").as_bytes());
    out.resize(start + LINE - 1, b'.');
    out.push(b'\n');
}

#[derive(Clone, Copy)]
enum Traffic {
    /// At the 921,600-baud byte rate.
    Paced(u64),
    /// As fast as the pty takes it.
    Flood(u64),
}

impl Traffic {
    fn bytes(self) -> u64 {
        match self {
            Traffic::Paced(n) | Traffic::Flood(n) => n,
        }
    }
}

/// Writes lines `first..` for `traffic` into `master`. Blocking writes: a
/// pty makes the writer wait for its reader, so nothing is dropped here.
/// Returns when the last byte went in.
fn device(master: File, traffic: Traffic, first: u64) -> JoinHandle<(File, Instant)> {
    std::thread::spawn(move || {
        let mut master = master;
        let lines = traffic.bytes() / LINE as u64;
        let mut seq = first;
        let started = Instant::now();
        let mut block = Vec::with_capacity(64 * 1024);
        while seq < first + lines {
            block.clear();
            let batch = match traffic {
                // Bursts every 10 ms at the byte rate, as a UART's FIFO drains.
                Traffic::Paced(_) => {
                    let due = (started.elapsed().as_secs_f64() * BAUD_921600_BYTES_PER_SEC as f64
                        / LINE as f64) as u64;
                    let owed = (first + due).saturating_sub(seq);
                    if owed == 0 {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    owed
                }
                Traffic::Flood(_) => 1024,
            };
            for _ in 0..batch.min(first + lines - seq) {
                line(seq, &mut block);
                seq += 1;
            }
            if master.write_all(&block).is_err() {
                break;
            }
        }
        (master, Instant::now())
    })
}

// ---------------------------------------------------------------------------
// Checking lines end to end

#[derive(Default, Clone)]
struct Check {
    next: Option<u64>,
    lines: u64,
    /// Sequence numbers skipped (lost), and lines out of order or repeated.
    lost: u64,
    disorder: u64,
    /// Bytes a lagerd reader was told it missed (gap events).
    gap_bytes: u64,
    carry: Vec<u8>,
    first: Option<u64>,
}

impl Check {
    fn feed(&mut self, bytes: &[u8]) {
        self.carry.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.carry[start..].iter().position(|b| *b == b'\n') {
            let text = &self.carry[start..start + end];
            start += end + 1;
            let Some(seq) = std::str::from_utf8(text.get(..10).unwrap_or_default())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|_| text.len() == LINE - 1)
            else {
                self.disorder += 1;
                continue;
            };
            self.first.get_or_insert(seq);
            match self.next {
                Some(next) if seq > next => self.lost += seq - next,
                Some(next) if seq < next => self.disorder += 1,
                _ => {}
            }
            self.next = Some(seq + 1);
            self.lines += 1;
        }
        self.carry.drain(..start);
    }
}

/// What one run through lagerd or ser2net gave.
struct Outcome {
    expected_lines: u64,
    readers: Vec<Check>,
    bytes: u64,
    /// From the device's first write to the last reader's last line.
    elapsed: Duration,
    cpu_secs: Option<f64>,
    peak_rss_kib: u64,
}

/// The figures of one run.
struct Summary {
    readers: usize,
    lines: u64,
    lost: u64,
    disorder: u64,
    gap_bytes: u64,
    mb_per_s: f64,
    cpu_ms_per_mb: f64,
}

impl Outcome {
    fn report(&self, key: &str) -> Summary {
        let lost: u64 = self
            .readers
            .iter()
            .map(|r| r.lost + r.expected_lines_missing(self.expected_lines))
            .sum();
        let disorder: u64 = self.readers.iter().map(|r| r.disorder).sum();
        let gaps: u64 = self.readers.iter().map(|r| r.gap_bytes).sum();
        let mb = self.bytes as f64 / 1e6;
        let rate = mb / self.elapsed.as_secs_f64();
        metric(&format!("{key}_readers"), self.readers.len());
        metric(&format!("{key}_lines_lost"), lost);
        metric(&format!("{key}_lines_disordered"), disorder);
        metric(&format!("{key}_gap_bytes"), gaps);
        metric(&format!("{key}_mb_per_s"), format!("{rate:.3}"));
        let cpu = self.cpu_secs.map(|cpu| cpu / mb * 1000.0);
        if let Some(per_mb) = cpu {
            metric(&format!("{key}_cpu_ms_per_mb"), format!("{per_mb:.1}"));
        }
        eprintln!(
            "   {key}: {} reader(s) x {} lines ({mb:.1} MB) in {:.2} s = {rate:.3} MB/s; lost {lost}, out of order {disorder}, gap bytes {gaps}{}",
            self.readers.len(),
            self.expected_lines,
            self.elapsed.as_secs_f64(),
            cpu.map(|c| format!("; lagerd CPU {c:.1} ms/MB")).unwrap_or_default()
        );
        Summary {
            readers: self.readers.len(),
            lines: self.expected_lines,
            lost,
            disorder,
            gap_bytes: gaps,
            mb_per_s: rate,
            cpu_ms_per_mb: cpu.unwrap_or(f64::NAN),
        }
    }
}

impl Check {
    fn expected_lines_missing(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.lines + self.lost)
    }
}

// ---------------------------------------------------------------------------
// lagerd

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, Value), BenchError> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn add_net(addr: SocketAddr, name: &str, slave: &str, baudrate: u32) -> Result<(), BenchError> {
    let body = serde_json::json!({"action": "add", "net": {"name": name, "role": "uart", "address": slave, "params": {"baudrate": baudrate}}});
    match http(addr, "POST", "/nets", &body.to_string())? {
        (200, _) => wait_open(addr, name),
        (status, body) => Err(fail!("adding uart net {name}: HTTP {status} {body}")),
    }
}

fn console(addr: SocketAddr, net: &str) -> Result<Value, BenchError> {
    Ok(http(addr, "GET", &format!("/uart/status?netname={net}"), "")?.1)
}

fn wait_open(addr: SocketAddr, net: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if console(addr, net)?["state"] == "open" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(fail!("console {net} never opened: {}", console(addr, net)?))
}

/// A lagerd console stream: the chunked body, decoded into frames.
struct Stream {
    reader: BufReader<TcpStream>,
    decoder: Decoder,
    left: usize,
}

impl Stream {
    fn open(addr: SocketAddr, query: &str) -> Result<Stream, BenchError> {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(conn, "GET /uart/stream?{query} HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut reader = BufReader::with_capacity(256 * 1024, conn);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if !line.contains(" 200 ") {
            return Err(fail!("GET /uart/stream?{query}: {line}"));
        }
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
        }
        Ok(Stream {
            reader,
            decoder: Decoder::new(),
            left: 0,
        })
    }

    /// Feeds frames to `each` until it returns false or the stream ends.
    fn run(&mut self, mut each: impl FnMut(Kind, u64, &[u8]) -> bool) -> Result<(), BenchError> {
        let mut buffer = vec![0u8; 128 * 1024];
        loop {
            while let Some(frame) = self.decoder.next_frame().map_err(|e| fail!("{e}"))? {
                if !each(frame.kind, frame.offset, frame.payload) {
                    return Ok(());
                }
            }
            if self.left == 0 {
                let mut size = String::new();
                if self.reader.read_line(&mut size)? == 0 {
                    return Err(fail!("the stream ended"));
                }
                if size.trim().is_empty() {
                    continue;
                }
                self.left = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| fail!("bad chunk size {size:?}"))?;
                if self.left == 0 {
                    return Err(fail!("the stream ended"));
                }
            }
            let want = self.left.min(buffer.len());
            let n = self.reader.read(&mut buffer[..want])?;
            if n == 0 {
                return Err(fail!("the stream ended"));
            }
            self.decoder.feed(&buffer[..n]);
            self.left -= n;
            if self.left == 0 {
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf)?;
            }
        }
    }
}

/// A reader thread: from the live end, checks lines until `lines` arrived.
fn reader(
    addr: SocketAddr,
    net: &str,
    lines: u64,
    ready: Arc<AtomicU64>,
) -> JoinHandle<Result<(Check, Instant), BenchError>> {
    let net = net.to_string();
    std::thread::spawn(move || {
        let mut stream = Stream::open(addr, &format!("netname={net}"))?;
        let mut check = Check::default();
        let mut hello = true;
        stream.run(|kind, _offset, payload| {
            if hello {
                hello = false;
                ready.fetch_add(1, Ordering::SeqCst);
                return true;
            }
            match kind {
                Kind::Data => check.feed(payload),
                Kind::Event => {
                    let event: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                    if event["event"] == "gap" {
                        check.gap_bytes += event["missed"].as_u64().unwrap_or(0);
                    }
                }
            }
            check.lines + check.lost < lines && check.gap_bytes == 0
        })?;
        Ok((check, Instant::now()))
    })
}

fn through_lagerd(
    daemon: &Daemon,
    net: &str,
    pty: &Pty,
    readers: usize,
    traffic: Traffic,
) -> Result<Outcome, BenchError> {
    let addr = daemon.addr();
    let lines = traffic.bytes() / LINE as u64;
    let ready = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..readers)
        .map(|_| reader(addr, net, lines, ready.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::SeqCst) < readers as u64 {
        if Instant::now() > deadline {
            return Err(fail!(
                "only {} of {readers} readers attached",
                ready.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), daemon.pid());
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                if let Some(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let cpu_before = daemon.cpu_secs();
    let started = Instant::now();
    let master = pty.master.try_clone()?;
    let writer = device(master, traffic, 0);
    let mut checks = Vec::new();
    let mut last = started;
    for handle in handles {
        let (check, at) = handle.join().map_err(|_| fail!("a reader panicked"))??;
        last = last.max(at);
        checks.push(check);
    }
    let _ = writer.join();
    let cpu = match (cpu_before, daemon.cpu_secs()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    Ok(Outcome {
        expected_lines: lines,
        readers: checks,
        bytes: lines * LINE as u64,
        elapsed: last - started,
        cpu_secs: cpu,
        peak_rss_kib: peak.load(Ordering::SeqCst),
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---------------------------------------------------------------------------
// ser2net, the baseline

struct Ser2net {
    child: Child,
    port: u16,
}

impl Drop for Ser2net {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ser2net serving `slave` on a loopback port, one client at a time.
fn start_ser2net(binary: &str, dir: &Path, slave: &str) -> Result<Ser2net, BenchError> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.join(format!("ser2net-{port}.yaml"));
    std::fs::write(
        &config,
        format!(
            "%YAML 1.1\n---\nconnection: &bench\n  accepter: tcp,127.0.0.1,{port}\n  connector: serialdev,{slave},921600n81,local\n  options:\n    kickolduser: true\n"
        ),
    )?;
    let child = Command::new(binary)
        .args(["-n", "-u", "-P"])
        .arg(dir.join(format!("ser2net-{port}.pid")))
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            fail!("cannot start {binary}: {e}; apt-get install ser2net, or --ser2net none")
        })?;
    let server = Ser2net { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(fail!("ser2net did not listen on {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The probe connection above was a client; let ser2net see it leave.
    std::thread::sleep(Duration::from_millis(200));
    Ok(server)
}

fn through_ser2net(binary: &str, dir: &Path, traffic: Traffic) -> Result<Outcome, BenchError> {
    let pty = Pty::open()?;
    let server = start_ser2net(binary, dir, &pty.slave)?;
    let lines = traffic.bytes() / LINE as u64;
    let mut client = TcpStream::connect(("127.0.0.1", server.port))?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    // ser2net opens the port when a client connects.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let writer = device(pty.master.try_clone()?, traffic, 0);
    let mut check = Check::default();
    let mut buffer = vec![0u8; 128 * 1024];
    while check.lines + check.lost < lines {
        match client.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => check.feed(&buffer[..n]),
        }
    }
    let last = Instant::now();
    let _ = writer.join();
    Ok(Outcome {
        expected_lines: lines,
        readers: vec![check],
        bytes: lines * LINE as u64,
        elapsed: last - started,
        cpu_secs: None,
        peak_rss_kib: 0,
    })
}

// ---------------------------------------------------------------------------
// 3. A late reader; the device drops what the port does not take

/// Writes lines `range` at the 921,600-baud rate without ever blocking:
/// what the pty will not take is dropped, as a UART's FIFO overflows.
/// Returns which lines went in.
fn uart_device(master: &File, range: std::ops::Range<u64>) -> Vec<u64> {
    // SAFETY: fcntl flags on our own descriptor.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let started = Instant::now();
    let mut written = Vec::new();
    let mut block = Vec::new();
    for seq in range.clone() {
        let due = started
            + Duration::from_secs_f64(
                (seq - range.start) as f64 * LINE as f64 / BAUD_921600_BYTES_PER_SEC as f64,
            );
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        block.clear();
        line(seq, &mut block);
        // SAFETY: writes from our buffer to our own descriptor. A pty
        // takes a line whole or not at all when it is full.
        let n = unsafe { libc::write(master.as_raw_fd(), block.as_ptr().cast(), block.len()) };
        if n == block.len() as isize {
            written.push(seq);
        }
    }
    written
}

const EARLY_LINES: u64 = 2_000;
const LATE_LINES: u64 = 1_000;

/// Which line numbers a late reader got.
struct Seen {
    lines: Vec<bool>,
    carry: Vec<u8>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            lines: vec![false; (EARLY_LINES + LATE_LINES) as usize],
            carry: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.carry.extend_from_slice(bytes);
        while let Some(end) = self.carry.iter().position(|b| *b == b'\n') {
            let seq = std::str::from_utf8(self.carry.get(..10).unwrap_or_default())
                .ok()
                .and_then(|s| s.parse::<usize>().ok());
            if let Some(slot) = seq.and_then(|seq| self.lines.get_mut(seq)) {
                *slot = true;
            }
            self.carry.drain(..=end);
        }
    }

    fn has_last(&self) -> bool {
        self.lines.last() == Some(&true)
    }
}

fn late_lagerd(addr: SocketAddr, net: &str, pty: &Pty) -> Result<(usize, usize), BenchError> {
    let mut written = uart_device(&pty.master, 0..EARLY_LINES);
    let mut stream = Stream::open(addr, &format!("netname={net}&from=0"))?;
    let master = pty.master.try_clone()?;
    let writer =
        std::thread::spawn(move || uart_device(&master, EARLY_LINES..EARLY_LINES + LATE_LINES));
    let mut seen = Seen::new();
    let mut hello = true;
    let deadline = Instant::now() + Duration::from_secs(10);
    stream.run(|kind, _, payload| {
        if std::mem::take(&mut hello) {
            return true;
        }
        if kind == Kind::Data {
            seen.feed(payload);
        }
        !seen.has_last() && Instant::now() < deadline
    })?;
    written.extend(writer.join().unwrap_or_default());
    Ok(report_late("late_lagerd", &seen, &written))
}

fn late_ser2net(binary: &str, dir: &Path) -> Result<(usize, usize), BenchError> {
    let pty = Pty::open()?;
    let server = start_ser2net(binary, dir, &pty.slave)?;
    let mut written = uart_device(&pty.master, 0..EARLY_LINES);
    let mut client = TcpStream::connect(("127.0.0.1", server.port))?;
    client.set_read_timeout(Some(Duration::from_secs(3)))?;
    let master = pty.master.try_clone()?;
    let writer =
        std::thread::spawn(move || uart_device(&master, EARLY_LINES..EARLY_LINES + LATE_LINES));
    let mut seen = Seen::new();
    let mut buffer = vec![0u8; 64 * 1024];
    while !seen.has_last() {
        match client.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.feed(&buffer[..n]),
        }
    }
    written.extend(writer.join().unwrap_or_default());
    Ok(report_late("late_ser2net", &seen, &written))
}

/// What a reader that attached after line `EARLY_LINES` got: of the lines
/// the device printed before, how many the port took (the rest the device
/// dropped: nobody was reading it) and how many were delivered. Returns
/// (taken by the port, delivered).
fn report_late(key: &str, seen: &Seen, written: &[u64]) -> (usize, usize) {
    let split = |early: bool| {
        let lines: Vec<u64> = written
            .iter()
            .copied()
            .filter(|seq| (*seq < EARLY_LINES) == early)
            .collect();
        let got = lines
            .iter()
            .filter(|seq| seen.lines[**seq as usize])
            .count();
        (lines.len(), got)
    };
    let (early_taken, early_got) = split(true);
    let (late_taken, late_got) = split(false);
    metric(&format!("{key}_early_lines_taken"), early_taken);
    metric(&format!("{key}_early_lines_delivered"), early_got);
    metric(&format!("{key}_late_lines_delivered"), late_got);
    eprintln!(
        "   {key}: the device printed {EARLY_LINES} lines before the reader attached; the port took {early_taken} (the rest were dropped, nobody reading) and {early_got} were delivered; of {late_taken} after, {late_got}"
    );
    (early_taken, early_got)
}

// ---------------------------------------------------------------------------
// 4. Keystroke to echo

/// The echoing device: every byte read from the pty goes straight back.
fn echo_device(master: File, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut master = master;
        let mut buffer = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            let mut pfd = libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                continue;
            }
            match master.read(&mut buffer) {
                Ok(n) if n > 0 => {
                    let _ = master.write_all(&buffer[..n]);
                }
                _ => return,
            }
        }
    })
}

/// Types `keys` keys into `terminal` (the master of the pty a program
/// runs in) and times each until it shows on that terminal.
fn time_keys(terminal: &mut File, keys: usize) -> Result<Latencies, BenchError> {
    let mut samples = Vec::with_capacity(keys);
    let mut buffer = [0u8; 4096];
    for i in 0..keys {
        let key = b'a' + (i % 26) as u8;
        let sent = Instant::now();
        terminal.write_all(&[key])?;
        loop {
            let mut pfd = libc::pollfd {
                fd: terminal.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 5000) } <= 0 {
                return Err(fail!("key {i} never came back"));
            }
            let n = terminal.read(&mut buffer)?;
            if buffer[..n].contains(&key) {
                break;
            }
        }
        samples.push(sent.elapsed().as_nanos() as u64);
    }
    Ok(Latencies::new(samples))
}

/// Returns the p50s (µs) of the bare pty round trip and of `lager uart -i`.
fn keystrokes(
    lager: &Path,
    addr: SocketAddr,
    dir: &Path,
    keys: usize,
) -> Result<(f64, f64), BenchError> {
    // Baseline: the bare pty round trip, a relay thread in place of lager.
    let terminal = Pty::open()?;
    let stop = Arc::new(AtomicBool::new(false));
    let relay_end = File::options()
        .read(true)
        .write(true)
        .open(&terminal.slave)?;
    let relay = echo_device(relay_end, stop.clone());
    let mut master = terminal.master.try_clone()?;
    let floor = time_keys(&mut master, keys)?;
    stop.store(true, Ordering::SeqCst);
    let _ = relay.join();
    eprintln!("   bare pty round trip:    {}", floor.summary());
    metric(
        "keys_pty_floor_p50_us",
        format!("{:.0}", floor.percentile_us(50.0)),
    );

    let device = Pty::open()?;
    add_net(addr, "echo", &device.slave, 115_200)?;
    let stop = Arc::new(AtomicBool::new(false));
    let echo = echo_device(device.master.try_clone()?, stop.clone());
    let terminal = Pty::open()?;
    // Its terminal starts cooked, as a person's does; lager makes it raw.
    let end = File::options()
        .read(true)
        .write(true)
        .open(&terminal.slave)?;
    // SAFETY: termios is plain data; a sane cooked terminal.
    unsafe {
        let mut tio: libc::termios = std::mem::zeroed();
        libc::tcgetattr(end.as_raw_fd(), &mut tio);
        tio.c_lflag |= libc::ICANON | libc::ECHO | libc::ISIG;
        libc::tcsetattr(end.as_raw_fd(), libc::TCSANOW, &tio);
    }
    let home = dir.join("home");
    std::fs::create_dir_all(&home)?;
    let mut child = Command::new(lager)
        .args(["uart", "echo", "-i", "--box", &addr.to_string()])
        .env_clear()
        .env("HOME", &home)
        .env("LAGER_CONFIG_FILE_DIR", &home)
        .env("LAGER_USER", "bench")
        .env("NO_COLOR", "1")
        .stdin(end.try_clone()?)
        .stdout(end.try_clone()?)
        .stderr(end)
        .spawn()
        .map_err(|e| fail!("cannot start {}: {e}", lager.display()))?;
    let mut master = terminal.master.try_clone()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if console(addr, "echo")?["writer"] == "bench" {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(fail!("lager uart -i never claimed the console"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Drain its banner before timing.
    std::thread::sleep(Duration::from_millis(200));
    let mut sink = [0u8; 4096];
    let mut pfd = libc::pollfd {
        fd: master.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    while unsafe { libc::poll(&mut pfd, 1, 0) } > 0 {
        let _ = master.read(&mut sink);
    }
    let timed = time_keys(&mut master, keys);
    master.write_all(&[0x1d])?;
    let _ = child.wait();
    stop.store(true, Ordering::SeqCst);
    let _ = echo.join();
    let timed = timed?;
    eprintln!("   through lager uart -i:  {}", timed.summary());
    metric(
        "keys_lager_p50_us",
        format!("{:.0}", timed.percentile_us(50.0)),
    );
    metric(
        "keys_lager_p99_us",
        format!("{:.0}", timed.percentile_us(99.0)),
    );
    Ok((floor.percentile_us(50.0), timed.percentile_us(50.0)))
}
