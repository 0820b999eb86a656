//! soak: one `lagerd --sim` under a long mixed load with faults and
//! killed clients (issue 12, Soak). `scripts/soak.sh` builds and runs it.
//!
//! Load, all on loopback, for `--minutes`:
//! * 8 lock clients: acquire (TTL, sometimes a queued `wait_seconds`),
//!   heartbeat and read while holding, release. Each remembers what it was
//!   granted and checks it against the box (`GET /lock`, heartbeats); a
//!   shared ledger catches a second grant while an acknowledged lock is
//!   still alive. Now and then one "dies": it drops its socket mid-request,
//!   while queued, or while holding (the lock must then expire by TTL).
//! * 2 script runners: raw `POST /python` of short scripts with known
//!   output and exit code; one run in five is killed mid-stream (socket
//!   dropped), and lagerd must reap its job.
//! * 2 instrument clients on the simulated Keithley (`supply1`,
//!   `battery1`), sometimes a watch that is dropped after a few lines, and
//!   a fault injector on the simulator's control port (busy, drop/replug,
//!   mute, delay, garbled replies).
//! * 200 slow or silent connections: silent, a request head one byte a
//!   second, a body one byte a second, idle keep-alive; reopened when
//!   lagerd closes them.
//!
//! Afterwards it prints and checks: lagerd is the same process and
//! answers; no acknowledged lock was lost; every request got a status a
//! client can act on (counted by status; connection errors only where the
//! soak killed the client); scripts gave their exact output and no job
//! outlived its killed client; RSS after warm-up stayed flat (the medians
//! of ten windows within max/min ≤ 1.2); the thread count stayed bounded.
//! Exit 1 when a check fails.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argh::FromArgs;
use lager_bench::benchbox::resolve_python;
use lager_bench::daemon::Daemon;
use lager_bench::frames::{Dechunk, Frames};
use lager_bench::{fail, main_with, metric, require_binary, BenchError, WorkDir};
use serde_json::{json, Value};

/// Soak one `lagerd --sim` with locks, scripts, instrument faults, slow
/// connections and killed clients; check it stays whole.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary (a release build)
    #[argh(option)]
    lagerd: PathBuf,
    /// how long to run (default 10)
    #[argh(option, default = "10.0")]
    minutes: f64,
    /// RSS is judged after this many seconds (default: a fifth of the run,
    /// at least 20)
    #[argh(option)]
    warmup_secs: Option<f64>,
    /// the Python interpreter for the box (default /usr/bin/python3)
    #[argh(option)]
    python: Option<PathBuf>,
    /// parent of the scratch dir (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// slow or silent connections held open (default 200)
    #[argh(option, default = "200")]
    slow: usize,
    /// seed of the random choices (default: the clock)
    #[argh(option)]
    seed: Option<u64>,
    /// also write lagerd's samples here as CSV: seconds, RSS KiB, threads, fds
    #[argh(option)]
    samples: Option<PathBuf>,
}

/// Most threads lagerd may run: its 256 workers plus the poller, reaper,
/// health checker, simulators, instrument sessions and a few jobs.
const THREADS_MAX: u64 = 320;
const RSS_RATIO_MAX: f64 = 1.2;
const IO_TIMEOUT: Duration = Duration::from_secs(40);

fn main() -> std::process::ExitCode {
    main_with("soak", || {
        let args: Args = argh::from_env();
        run(args)
    })
}

/// SplitMix64: enough randomness for choosing actions, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

/// Everything the load threads report.
#[derive(Default)]
struct Tally {
    /// (route, status) → count.
    statuses: Mutex<BTreeMap<(String, u16), u64>>,
    /// Answers a client cannot act on (no status, 5xx without a reason...).
    unclear: Mutex<Vec<String>>,
    /// Connection errors where the soak had not killed the client.
    broken: Mutex<Vec<String>>,
    /// Clients the soak killed, by how.
    killed: Mutex<BTreeMap<&'static str, u64>>,
    granted: AtomicU64,
    lost: Mutex<Vec<String>>,
    scripts_ok: AtomicU64,
    scripts_wrong: Mutex<Vec<String>>,
    slow_opened: AtomicU64,
    slow_closed: AtomicU64,
    faults: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tally {
    fn status(&self, route: &str, status: u16) {
        *lock(&self.statuses)
            .entry((route.to_string(), status))
            .or_default() += 1;
    }
    fn kill(&self, how: &'static str) {
        *lock(&self.killed).entry(how).or_default() += 1;
    }
    fn note(list: &Mutex<Vec<String>>, what: String) {
        let mut list = lock(list);
        if list.len() < 50 {
            eprintln!("soak: {what}");
        }
        list.push(what);
    }
}

/// One answered request.
struct Reply {
    status: u16,
    body: Vec<u8>,
    closing: bool,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// `request` rendered for a keep-alive connection.
fn render(method: &str, path: &str, body: Option<&Value>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: box\r\n");
    match body {
        Some(body) => {
            let text = body.to_string();
            out.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            ));
        }
        None => out.push_str("\r\n"),
    }
    out.into_bytes()
}

/// Reads one `Content-Length` framed reply.
fn read_reply(reader: &mut BufReader<TcpStream>) -> io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    let mut closing = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(io::Error::other)?;
            } else if name.eq_ignore_ascii_case("connection") {
                closing = value.trim().eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Reply {
        status,
        body,
        closing,
    })
}

/// A keep-alive client that reconnects after lagerd closes it.
struct Client {
    addr: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client { addr, reader: None }
    }

    fn connect(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        if self.reader.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            stream.set_nodelay(true)?;
            self.reader = Some(BufReader::new(stream));
        }
        Ok(self.reader.as_mut().expect("connected just above"))
    }

    /// Sends a request and reads its reply; counts it in `tally`.
    fn call(&mut self, tally: &Tally, route: &str, request: &[u8]) -> Option<Reply> {
        let outcome = self.connect().and_then(|reader| {
            reader.get_mut().write_all(request)?;
            read_reply(reader)
        });
        match outcome {
            Ok(reply) => {
                if reply.closing {
                    self.reader = None;
                }
                tally.status(route, reply.status);
                check_clear(tally, route, &reply);
                Some(reply)
            }
            Err(e) => {
                self.reader = None;
                Tally::note(&tally.broken, format!("{route}: {e}"));
                None
            }
        }
    }

    /// The client dies: its socket closes with whatever was in flight.
    fn die(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.get_ref().shutdown(Shutdown::Both);
        }
    }
}

/// A status a client can act on: a success, or a refusal whose JSON body
/// says why.
fn check_clear(tally: &Tally, route: &str, reply: &Reply) {
    let known = matches!(
        reply.status,
        200 | 400 | 401 | 403 | 404 | 408 | 409 | 413 | 422 | 423 | 429 | 502 | 503 | 504
    );
    let body = reply.json();
    let says_why = reply.status == 200
        || body
            .get("error")
            .and_then(Value::as_str)
            .is_some_and(|e| !e.is_empty());
    if !known || !says_why {
        Tally::note(
            &tally.unclear,
            format!(
                "{route}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
        );
    }
}

/// Who holds the box by the soak's own account, to catch a second grant
/// while an acknowledged lock still lives.
#[derive(Default)]
struct Ledger {
    /// (user, the instant after which its TTL may have run out).
    holder: Option<(String, Instant)>,
}

struct Ctx {
    addr: SocketAddr,
    control: SocketAddr,
    deadline: Instant,
    tally: Tally,
    ledger: Mutex<Ledger>,
    stop: AtomicBool,
    soak_id: String,
}

impl Ctx {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst) && Instant::now() < self.deadline
    }
}

/// Sleeps in small steps so a stop is noticed.
fn nap(ctx: &Ctx, total: Duration) {
    let end = Instant::now() + total;
    while ctx.running() && Instant::now() < end {
        thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
}

fn lock_client(ctx: &Ctx, index: usize, seed: u64) {
    let mut rng = Rng(seed);
    let mut client = Client::new(ctx.addr);
    let mut life = 0;
    while ctx.running() {
        let user = format!("soak-{index}-{life}");
        let ttl = 10 + rng.below(10);
        let wait = if rng.chance(30) { 1 + rng.below(4) } else { 0 };
        let body =
            json!({"user": user, "holder_type": "ci", "ttl_seconds": ttl, "wait_seconds": wait});
        let request = render("POST", "/lock", Some(&body));
        if rng.chance(3) {
            // Killed while sending its request.
            if let Ok(reader) = client.connect() {
                let cut = 1 + rng.below(request.len() as u64 - 1) as usize;
                let _ = reader.get_mut().write_all(&request[..cut]);
            }
            client.die();
            ctx.tally.kill("lock client, mid-request");
            life += 1;
            nap(ctx, rng.millis(50, 300));
            continue;
        }
        if wait > 0 && rng.chance(10) {
            // Killed while queued for the lock.
            if let Ok(reader) = client.connect() {
                let _ = reader.get_mut().write_all(&request);
            }
            nap(ctx, rng.millis(50, 800));
            client.die();
            ctx.tally.kill("lock client, while queued");
            life += 1;
            continue;
        }
        let Some(reply) = client.call(&ctx.tally, "POST /lock", &request) else {
            nap(ctx, rng.millis(100, 300));
            continue;
        };
        if reply.status != 200 {
            nap(ctx, rng.millis(20, 200));
            continue;
        }
        ctx.tally.granted.fetch_add(1, Ordering::Relaxed);
        let mut acked = Instant::now();
        // Reaping compares whole-second stamps, and the answer took a while
        // to arrive: allow three seconds of slack.
        let lives_until = |acked: Instant| acked + Duration::from_secs(ttl.saturating_sub(3));
        {
            let mut ledger = lock(&ctx.ledger);
            if let Some((other, until)) = &ledger.holder {
                if Instant::now() < *until {
                    Tally::note(
                        &ctx.tally.lost,
                        format!("{user} was granted the box while {other}'s acknowledged lock was alive"),
                    );
                }
            }
            ledger.holder = Some((user.clone(), lives_until(acked)));
        }
        let hold_until = Instant::now() + rng.millis(200, 3000);
        let mut killed = false;
        while ctx.running() && Instant::now() < hold_until {
            nap(ctx, rng.millis(200, 1000));
            let request = if rng.chance(50) {
                render("POST", "/lock/heartbeat", Some(&json!({"user": user})))
            } else {
                render("GET", "/lock", None)
            };
            let route = if request.starts_with(b"GET") {
                "GET /lock"
            } else {
                "POST /lock/heartbeat"
            };
            let Some(reply) = client.call(&ctx.tally, route, &request) else {
                break;
            };
            let holder = reply.json()["user"].as_str().map(str::to_string);
            let ours = reply.status == 200 && holder.as_deref() == Some(user.as_str());
            if !ours && Instant::now() < lives_until(acked) {
                Tally::note(
                    &ctx.tally.lost,
                    format!(
                        "{user}'s acknowledged lock was lost: {route} answered {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    ),
                );
                break;
            }
            if ours && route.starts_with("POST") {
                acked = Instant::now();
                if let Some((who, until)) = &mut lock(&ctx.ledger).holder {
                    if *who == user {
                        *until = lives_until(acked);
                    }
                }
            }
            if rng.chance(3) {
                // Killed while holding: the lock stays until its TTL.
                client.die();
                ctx.tally.kill("lock client, while holding");
                killed = true;
                break;
            }
        }
        if !killed {
            {
                let mut ledger = lock(&ctx.ledger);
                if ledger.holder.as_ref().is_some_and(|(who, _)| *who == user) {
                    ledger.holder = None;
                }
            }
            let release = render("POST", "/unlock", Some(&json!({"user": user})));
            client.call(&ctx.tally, "POST /unlock", &release);
        }
        life += 1;
        nap(ctx, rng.millis(20, 300));
    }
}

const BOUNDARY: &str = "soak7c1d3e5f0b";

/// A `POST /python` of `script` with the soak's marker in its environment.
fn python_request(ctx: &Ctx, script: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in [
        ("stdout_is_stderr", "False"),
        ("detach", "0"),
        ("timeout", "60"),
        ("env", &format!("LAGER_SOAK={}", ctx.soak_id)),
    ] {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"script\"; filename=\"soak.py\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n{script}\r\n--{BOUNDARY}--\r\n"
        )
        .as_bytes(),
    );
    let mut request = format!(
        "POST /python HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

fn script_runner(ctx: &Ctx, seed: u64) {
    let mut rng = Rng(seed);
    while ctx.running() {
        let lines = 1 + rng.below(20);
        let code = rng.below(4);
        let pause = rng.below(150);
        let script = format!(
            "import sys, time\nfor i in range({lines}):\n    print('line', i, flush=True)\n    \
             time.sleep({pause} / 1000)\nsys.exit({code})\n"
        );
        let request = python_request(ctx, &script);
        let kill = rng.chance(20);
        match run_script(&request, kill.then(|| rng.millis(50, 1500))) {
            Ok(None) => ctx.tally.kill("script runner, mid-stream"),
            Ok(Some((status, frames))) => {
                ctx.tally.status("POST /python", status);
                let expected: String = (0..lines).map(|i| format!("line {i}\n")).collect();
                let stdout = frames.stdout.as_deref().unwrap_or_default();
                if status != 200
                    || frames.exit.as_deref() != Some(code.to_string().as_str())
                    || stdout != expected.as_bytes()
                {
                    Tally::note(
                        &ctx.tally.scripts_wrong,
                        format!(
                            "a script answered {status}, exit {:?}, {} stdout bytes (expected {code}, {})",
                            frames.exit,
                            stdout.len(),
                            expected.len()
                        ),
                    );
                } else {
                    ctx.tally.scripts_ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => Tally::note(&ctx.tally.broken, format!("POST /python: {e}")),
        }
        nap(ctx, rng.millis(50, 500));
    }
}

/// Runs one script; `kill_after`: drop the connection that long after the
/// answer began instead (`Ok(None)`).
fn run_script(
    request: &[u8],
    kill_after: Option<Duration>,
) -> Result<Option<(u16, Frames)>, String> {
    let addr = request_addr();
    let mut stream =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request)
        .map_err(|e| format!("send: {e}"))?;
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let head_end = loop {
        if let Some(pos) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream
            .read(&mut buf[filled..])
            .map_err(|e| format!("head: {e}"))?;
        if n == 0 {
            return Err("closed before answering".into());
        }
        filled += n;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut frames = Frames::new(true);
    if status != 200 {
        return Ok(Some((status, frames)));
    }
    let mut dechunk = Dechunk::default();
    dechunk.feed(&buf[head_end..filled], &mut frames)?;
    while !frames.done() {
        if kill_after.is_some_and(|after| started.elapsed() >= after) {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(None);
        }
        if kill_after.is_some() {
            stream
                .set_read_timeout(Some(Duration::from_millis(50)))
                .map_err(|e| e.to_string())?;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err("the stream ended without an exit marker".into()),
            Ok(n) => dechunk.feed(&buf[..n], &mut frames)?,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if kill_after.is_none() {
                    return Err(format!("stream: {e}"));
                }
            }
            Err(e) => return Err(format!("stream: {e}")),
        }
    }
    Ok(Some((status, frames)))
}

/// lagerd's address for the threads that open their own sockets.
static ADDR: Mutex<Option<SocketAddr>> = Mutex::new(None);

fn request_addr() -> SocketAddr {
    lock(&ADDR).expect("the address is set before any load starts")
}

fn instrument_client(ctx: &Ctx, seed: u64) {
    let mut rng = Rng(seed);
    let mut client = Client::new(ctx.addr);
    while ctx.running() {
        if rng.chance(5) {
            watch_briefly(ctx, &mut rng);
            continue;
        }
        let (route, body) = match rng.below(6) {
            0 => (
                "/supply/command",
                json!({"netname": "supply1", "action": "state"}),
            ),
            1 => (
                "/supply/command",
                json!({"netname": "supply1", "action": "voltage", "params": {"value": rng.below(50) as f64 / 10.0}}),
            ),
            2 => (
                "/battery/command",
                json!({"netname": "battery1", "action": "state"}),
            ),
            3 => (
                "/battery/command",
                json!({"netname": "battery1", "action": "set_soc", "params": {"value": rng.below(100)}}),
            ),
            4 => (
                "/supply/command",
                json!({"netname": "supply1", "action": "enable"}),
            ),
            _ => (
                "/supply/command",
                json!({"netname": "supply1", "action": "disable"}),
            ),
        };
        let request = render("POST", route, Some(&body));
        client.call(&ctx.tally, &format!("POST {route}"), &request);
        nap(ctx, rng.millis(20, 250));
    }
}

/// A `watch` that is killed after a few lines.
fn watch_briefly(ctx: &Ctx, rng: &mut Rng) {
    let net = if rng.chance(50) {
        "supply1"
    } else {
        "battery1"
    };
    let role = if net == "supply1" {
        "supply"
    } else {
        "battery"
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&ctx.addr, IO_TIMEOUT) else {
        Tally::note(&ctx.tally.broken, "watch: cannot connect".into());
        return;
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let request =
        format!("GET /{role}/monitor?netname={net}&interval=0.2 HTTP/1.1\r\nHost: box\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        Tally::note(&ctx.tally.broken, "watch: cannot send".into());
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        Tally::note(&ctx.tally.broken, "watch: no answer".into());
        return;
    }
    let status: u16 = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    ctx.tally.status(&format!("GET /{role}/monitor"), status);
    let lines = 2 + rng.below(6);
    for _ in 0..lines {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
    }
    let _ = reader.get_ref().shutdown(Shutdown::Both);
    ctx.tally.kill("watch, mid-stream");
}

/// One command on the simulator's control port.
fn control(ctx: &Ctx, command: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&ctx.control, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn fault_injector(ctx: &Ctx, seed: u64) {
    let mut rng = Rng(seed);
    while ctx.running() {
        nap(ctx, rng.millis(2000, 6000));
        if !ctx.running() {
            break;
        }
        let (fault, undo) = match rng.below(5) {
            0 => ("busy_ms 1500", None),
            1 => ("drop", Some("replug")),
            2 => ("mute", Some("unmute")),
            3 => ("delay_ms 300", Some("delay_ms 0")),
            _ => ("garble 1", None),
        };
        if control(ctx, fault).is_ok() {
            ctx.tally.faults.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(undo) = undo {
            nap(ctx, rng.millis(500, 2500));
            let _ = control(ctx, undo);
        }
    }
    for undo in ["replug", "unmute", "delay_ms 0"] {
        let _ = control(ctx, undo);
    }
}

#[derive(Clone, Copy)]
enum SlowKind {
    Silent,
    SlowHead,
    SlowBody,
    Idle,
}

struct Slow {
    stream: TcpStream,
    /// What is still to be sent, a byte a second.
    script: Vec<u8>,
    sent: usize,
    next_write: Instant,
}

fn open_slow(ctx: &Ctx, kind: SlowKind) -> Option<Slow> {
    let mut stream = TcpStream::connect_timeout(&ctx.addr, IO_TIMEOUT).ok()?;
    ctx.tally.slow_opened.fetch_add(1, Ordering::Relaxed);
    // A heartbeat, not an acquire: a slow client must not hold the box.
    let body = r#"{"user": "slow"}"#;
    let script: Vec<u8> = match kind {
        SlowKind::Silent => Vec::new(),
        SlowKind::Idle => {
            let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: box\r\n\r\n");
            Vec::new()
        }
        SlowKind::SlowHead => b"GET /lock HTTP/1.1\r\nHost: box\r\nX-Slow: 1\r\n\r\n".to_vec(),
        SlowKind::SlowBody => {
            // The head at once, then the body a byte a second.
            let head = format!(
                "POST /lock/heartbeat HTTP/1.1\r\nHost: box\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            body.as_bytes().to_vec()
        }
    };
    stream.set_nonblocking(true).ok()?;
    Some(Slow {
        stream,
        script,
        sent: 0,
        next_write: Instant::now(),
    })
}

fn slow_connections(ctx: &Ctx, count: usize, seed: u64) {
    let mut rng = Rng(seed);
    let kinds = [
        SlowKind::Silent,
        SlowKind::SlowHead,
        SlowKind::SlowBody,
        SlowKind::Idle,
    ];
    let mut slots: Vec<Option<Slow>> = (0..count)
        .map(|i| open_slow(ctx, kinds[i % kinds.len()]))
        .collect();
    let mut buf = [0u8; 4096];
    while ctx.running() {
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(slow) = slot else {
                *slot = open_slow(ctx, kinds[(i + rng.below(4) as usize) % kinds.len()]);
                continue;
            };
            let now = Instant::now();
            if slow.sent < slow.script.len() && now >= slow.next_write {
                if slow
                    .stream
                    .write(&slow.script[slow.sent..=slow.sent])
                    .is_ok()
                {
                    slow.sent += 1;
                }
                slow.next_write = now + Duration::from_secs(1);
            }
            let closed = match slow.stream.read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if let Some(status) = text
                        .strip_prefix("HTTP/1.1 ")
                        .and_then(|rest| rest.get(..3))
                        .and_then(|s| s.parse::<u16>().ok())
                    {
                        ctx.tally.status("slow connection", status);
                    }
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            if closed {
                ctx.tally.slow_closed.fetch_add(1, Ordering::Relaxed);
                *slot = None;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One reading of lagerd's /proc status.
#[derive(Clone, Copy)]
struct Sample {
    at: f64,
    rss_kib: u64,
    threads: u64,
    fds: u64,
}

fn sample(pid: u32, started: Instant) -> Option<Sample> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        at: started.elapsed().as_secs_f64(),
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
        fds,
    })
}

/// The median RSS of each of `windows` equal stretches of `samples`.
fn window_medians(samples: &[&Sample], windows: usize) -> Vec<u64> {
    let per = samples.len().div_ceil(windows).max(1);
    samples
        .chunks(per)
        .map(|chunk| {
            let mut rss: Vec<u64> = chunk.iter().map(|s| s.rss_kib).collect();
            rss.sort_unstable();
            rss[rss.len() / 2]
        })
        .collect()
}

/// Processes still running a soak script (their environment has the mark).
fn leftover_jobs(soak_id: &str) -> Vec<u32> {
    let mark = format!("LAGER_SOAK={soak_id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == mark.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn simulator_control(addr: SocketAddr) -> Result<SocketAddr, BenchError> {
    let mut client = Client::new(addr);
    let tally = Tally::default();
    let reply = client
        .call(&tally, "GET /status", &render("GET", "/status", None))
        .ok_or_else(|| fail!("GET /status failed"))?;
    let status = reply.json();
    status["capabilities"]["simulator"]["control"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| fail!("/status names no simulator control port: {status}"))
}

fn run(args: Args) -> Result<(), BenchError> {
    let lagerd = require_binary(&args.lagerd)?;
    let python = resolve_python(args.python.as_deref())?;
    let duration = Duration::try_from_secs_f64(args.minutes * 60.0)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(7 * 24 * 3600))
        .ok_or_else(|| fail!("--minutes must be more than 0 and at most a week"))?;
    let warmup = args
        .warmup_secs
        .unwrap_or_else(|| (duration.as_secs_f64() / 5.0).max(20.0));
    let work = WorkDir::new(args.work_dir.as_deref(), "lager-soak")?;
    let state = work.path().join("state");
    let runs = work.path().join("runs");
    let jobs = work.path().join("jobs");
    for dir in [&state, &runs, &jobs] {
        std::fs::create_dir_all(dir).map_err(|e| fail!("cannot create {}: {e}", dir.display()))?;
    }
    let env = [
        ("LAGERD_PYTHON", python.as_os_str()),
        ("LAGERD_RUN_DIR", runs.as_os_str()),
        ("TMPDIR", jobs.as_os_str()),
    ];
    let mut daemon = Daemon::start_with_args(&lagerd, &state, 1, &["--sim"], &env)?;
    let pid = daemon.pid();
    let addr = daemon.addr();
    *lock(&ADDR) = Some(addr);
    let control = simulator_control(addr)?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "soak: lagerd pid {pid} on {addr} (simulator control {control}), {:.1} min, warm-up {warmup:.0} s, seed {seed}, python {}",
        args.minutes,
        python.display()
    );
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        addr,
        control,
        deadline: started + duration,
        tally: Tally::default(),
        ledger: Mutex::new(Ledger::default()),
        stop: AtomicBool::new(false),
        soak_id: format!("{}-{seed}", std::process::id()),
    });

    let mut threads = Vec::new();
    let mut spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
        threads.push(
            thread::Builder::new()
                .name(name)
                .spawn(body)
                .map_err(|e| fail!("cannot start a load thread: {e}")),
        );
    };
    for i in 0..8 {
        let ctx = ctx.clone();
        spawn(
            format!("lock-{i}"),
            Box::new(move || lock_client(&ctx, i, seed ^ (i as u64 + 1))),
        );
    }
    for i in 0..2 {
        let ctx = ctx.clone();
        spawn(
            format!("runner-{i}"),
            Box::new(move || script_runner(&ctx, seed ^ (100 + i))),
        );
    }
    for i in 0..2 {
        let ctx = ctx.clone();
        spawn(
            format!("instrument-{i}"),
            Box::new(move || instrument_client(&ctx, seed ^ (200 + i))),
        );
    }
    {
        let ctx = ctx.clone();
        spawn(
            "faults".into(),
            Box::new(move || fault_injector(&ctx, seed ^ 300)),
        );
    }
    {
        let ctx = ctx.clone();
        let slow = args.slow;
        spawn(
            "slow".into(),
            Box::new(move || slow_connections(&ctx, slow, seed ^ 400)),
        );
    }

    let mut samples = Vec::new();
    let mut next_report = started + Duration::from_secs(60);
    while Instant::now() < ctx.deadline {
        if let Some(s) = sample(pid, started) {
            samples.push(s);
        }
        if !daemon.alive() {
            ctx.stop.store(true, Ordering::SeqCst);
            break;
        }
        if Instant::now() >= next_report {
            let last = samples.last().copied();
            eprintln!(
                "soak: {:.0} s: rss {} KiB, {} threads, {} fds, {} locks granted, {} scripts ok",
                started.elapsed().as_secs_f64(),
                last.map_or(0, |s| s.rss_kib),
                last.map_or(0, |s| s.threads),
                last.map_or(0, |s| s.fds),
                ctx.tally.granted.load(Ordering::Relaxed),
                ctx.tally.scripts_ok.load(Ordering::Relaxed)
            );
            next_report += Duration::from_secs(60);
        }
        thread::sleep(Duration::from_secs(1));
    }
    ctx.stop.store(true, Ordering::SeqCst);
    for handle in threads.into_iter().flatten() {
        let _ = handle.join();
    }

    // Killed runs: lagerd must reap their jobs (it probes a gone client
    // every second; a job then gets SIGTERM and, 5 s later, SIGKILL).
    let reap_deadline = Instant::now() + Duration::from_secs(15);
    let mut leftovers = leftover_jobs(&ctx.soak_id);
    while !leftovers.is_empty() && Instant::now() < reap_deadline {
        thread::sleep(Duration::from_millis(200));
        leftovers = leftover_jobs(&ctx.soak_id);
    }

    if let Some(path) = &args.samples {
        let csv: String = std::iter::once("secs,rss_kib,threads,fds\n".to_string())
            .chain(
                samples
                    .iter()
                    .map(|s| format!("{:.0},{},{},{}\n", s.at, s.rss_kib, s.threads, s.fds)),
            )
            .collect();
        std::fs::write(path, csv).map_err(|e| fail!("cannot write {}: {e}", path.display()))?;
    }
    let same_process = daemon.alive() && daemon.pid() == pid;
    let health = {
        let mut client = Client::new(addr);
        let tally = Tally::default();
        client
            .call(&tally, "GET /health", &render("GET", "/health", None))
            .map(|r| r.status)
    };
    report(
        &ctx,
        &samples,
        warmup,
        same_process,
        health,
        &leftovers,
        &daemon,
    )
}

fn report(
    ctx: &Ctx,
    samples: &[Sample],
    warmup: f64,
    same_process: bool,
    health: Option<u16>,
    leftovers: &[u32],
    daemon: &Daemon,
) -> Result<(), BenchError> {
    let tally = &ctx.tally;
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        println!("{} {what}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failures.push(what);
        }
    };
    println!("\nrequests by route and status:");
    let statuses = lock(&tally.statuses).clone();
    let total: u64 = statuses.values().sum();
    for ((route, status), count) in &statuses {
        println!("  {route:<28} {status}  {count:>8}");
    }
    println!("  {:<28} all  {total:>8}", "total");
    println!("clients killed by the soak:");
    for (how, count) in lock(&tally.killed).iter() {
        println!("  {how:<28} {count:>8}");
    }
    println!(
        "slow connections: {} opened, {} closed by lagerd; {} faults injected; {} locks granted; {} scripts ok",
        tally.slow_opened.load(Ordering::Relaxed),
        tally.slow_closed.load(Ordering::Relaxed),
        tally.faults.load(Ordering::Relaxed),
        tally.granted.load(Ordering::Relaxed),
        tally.scripts_ok.load(Ordering::Relaxed)
    );
    let judged: Vec<&Sample> = samples.iter().filter(|s| s.at >= warmup).collect();
    let rss_min = judged.iter().map(|s| s.rss_kib).min().unwrap_or(0);
    let rss_max = judged.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    // Flat means no growth: the judged time is cut into ten windows and
    // their median RSS compared, so a buffer that one sample caught in use
    // (a script's 256 KiB stream buffer is a tenth of a musl lagerd's RSS)
    // is not taken for growth; the raw extremes are printed beside it.
    let medians = window_medians(&judged, 10);
    let median_min = medians.iter().copied().min().unwrap_or(0);
    let median_max = medians.iter().copied().max().unwrap_or(0);
    let ratio = median_max as f64 / median_min.max(1) as f64;
    let threads_max = samples.iter().map(|s| s.threads).max().unwrap_or(0);
    let fds_max = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let warm_threads = judged.first().map_or(0, |s| s.threads);
    let end_threads = samples.last().map_or(0, |s| s.threads);
    println!(
        "lagerd: rss after warm-up {rss_min}..{rss_max} KiB ({} samples; medians of ten windows \
         {medians:?}), threads max {threads_max} (at warm-up end {warm_threads}, at the end \
         {end_threads}), fds max {fds_max}",
        judged.len()
    );
    metric("soak_requests", total);
    metric("soak_rss_ratio", format!("{ratio:.3}"));
    metric(
        "soak_rss_raw_ratio",
        format!("{:.3}", rss_max as f64 / rss_min.max(1) as f64),
    );
    metric("soak_rss_max_kib", rss_max);
    metric("soak_threads_max", threads_max);
    metric("soak_fds_max", fds_max);
    println!();
    check(
        same_process && health == Some(200),
        format!(
            "0 crashes: lagerd pid {} still running and GET /health answered {health:?}",
            daemon.pid()
        ),
    );
    let count = |list: &Mutex<Vec<String>>| lock(list).len();
    let (lost, unclear, broken, wrong) = (
        count(&tally.lost),
        count(&tally.unclear),
        count(&tally.broken),
        count(&tally.scripts_wrong),
    );
    check(
        lost == 0,
        format!(
            "0 acknowledged locks lost ({} granted, {lost} lost)",
            tally.granted.load(Ordering::Relaxed)
        ),
    );
    check(
        unclear == 0,
        format!("every request answered with a clear status ({unclear} of {total} unclear)"),
    );
    check(
        broken == 0,
        format!("connection errors only where the soak killed the client ({broken} others)"),
    );
    check(
        wrong == 0 && leftovers.is_empty(),
        format!(
            "scripts: exact output and exit code ({wrong} wrong), no job outlived its killed client ({} left: {leftovers:?})",
            leftovers.len()
        ),
    );
    check(
        medians.len() >= 2 && ratio <= RSS_RATIO_MAX,
        format!(
            "RSS flat after warm-up: max/min of window medians {ratio:.3} (≤ {RSS_RATIO_MAX}; raw {rss_min}..{rss_max} KiB)"
        ),
    );
    check(
        threads_max <= THREADS_MAX,
        format!("threads bounded: max {threads_max} (≤ {THREADS_MAX})"),
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(fail!(
            "{} check(s) failed: {}",
            failures.len(),
            failures.join("; ")
        ))
    }
}
