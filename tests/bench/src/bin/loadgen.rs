//! loadgen: latency and throughput of lagerd's lock routes under N
//! concurrent keep-alive clients (issue 3, targets 2 and 3).
//!
//! Each client thread holds one persistent TCP connection, writes raw
//! HTTP/1.1 and reads `Content-Length`-framed replies, timing every request
//! with `Instant` from the first byte written to the last byte read. The
//! per-thread samples are merged into exact percentiles (p50/p90/p99/max)
//! plus requests per second. A run is bounded by both `--requests` and
//! `--duration-secs`, whichever ends first, and only ever targets loopback.
//!
//! Workloads (`--mode`):
//! * `get`: `GET /lock` (lock reads; what every `lager` command and
//!   dashboard polls).
//! * `conflict`: `POST /lock` while another user holds the box, so every
//!   request is a 409 refusal (CI jobs polling for a busy box).
//! * `cycle`: each client, with its own user, acquires; when granted it
//!   heartbeats and releases. With one client every request is a durable
//!   write; with eight, most acquires are refused while one holder writes.
//!   Writes (200s) and refusals are reported separately and together.
//!
//! By default clients are closed-loop (send, wait, send): that finds the
//! saturation throughput, but then latency is just clients / throughput
//! (Little's law) and says little about the server. `--rate` paces the same
//! clients to a fixed total request rate, which is how latency targets
//! "at ≥ N requests/s" are checked.
//!
//! Why closed-loop clients on raw sockets: the targets are about the
//! server's own cost per request on a keep-alive connection, so the client
//! must add as little as possible (no allocation per request, no HTTP
//! library), and the latency of each request is what a real client sees.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use argh::FromArgs;
use lager_bench::daemon::Daemon;
use lager_bench::http::{render, Connection};
use lager_bench::net::loopback_addr;
use lager_bench::stats::Latencies;
use lager_bench::{fail, main_with, metric, require_binary, BenchError, WorkDir};

/// Load lagerd's lock routes from N keep-alive clients (loopback only).
#[derive(FromArgs)]
struct Args {
    /// address of a running lagerd, IP:PORT on loopback (127.0.0.0/8 or ::1)
    #[argh(option)]
    addr: Option<String>,
    /// instead of --addr: start this lagerd binary on 127.0.0.1:0 with a
    /// fresh state dir, and stop it afterwards
    #[argh(option)]
    lagerd: Option<PathBuf>,
    /// parent of the fresh state dir (default: the system temp dir); put it
    /// on the file system you want lock writes measured on
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// workload: get, conflict or cycle (see the tool's documentation)
    #[argh(option)]
    mode: Mode,
    /// concurrent clients, one keep-alive connection each (default 8)
    #[argh(option, default = "8")]
    clients: usize,
    /// stop after this many measured requests in total (cycle mode counts
    /// acquires; a granted one still heartbeats and releases) (default 200000)
    #[argh(option, default = "200_000")]
    requests: u64,
    /// stop after this many seconds of measuring (default 10)
    #[argh(option, default = "10.0")]
    duration_secs: f64,
    /// unmeasured warm-up requests per client before measuring (default 200)
    #[argh(option, default = "200")]
    warmup: u64,
    /// prefix of the METRIC keys printed on stdout (default: the mode)
    #[argh(option)]
    label: Option<String>,
    /// also report how many requests took longer than this (microseconds)
    #[argh(option)]
    limit_us: Option<u64>,
    /// pace the clients to this many requests per second in total instead
    /// of sending as fast as they can (latency at a given load, not at
    /// saturation); latency is still measured per request
    #[argh(option)]
    rate: Option<f64>,
    /// get mode: have another user hold the box first, so reads return the
    /// full record (as on a box in use) instead of `{"locked":false}`
    #[argh(switch)]
    held: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Get,
    Conflict,
    Cycle,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "get" => Ok(Mode::Get),
            "conflict" => Ok(Mode::Conflict),
            "cycle" => Ok(Mode::Cycle),
            other => Err(format!(
                "unknown mode {other:?}: use get, conflict or cycle"
            )),
        }
    }
}

/// What a measured request was, by route and outcome.
#[derive(Clone, Copy)]
enum Bucket {
    /// `GET /lock`, 200.
    Read = 0,
    /// `POST /lock` refused with 409.
    Refused = 1,
    /// `POST /lock` granted (a durable write).
    Acquire = 2,
    /// `POST /lock/heartbeat`, 200 (a durable write).
    Heartbeat = 3,
    /// `POST /unlock`, 200 (a durable delete).
    Release = 4,
}

const BUCKETS: [(&str, Bucket); 5] = [
    ("read", Bucket::Read),
    ("refused", Bucket::Refused),
    ("acquire", Bucket::Acquire),
    ("heartbeat", Bucket::Heartbeat),
    ("release", Bucket::Release),
];

/// Unexpected statuses and I/O errors are counted; the first few are kept.
const ERRORS_KEPT: usize = 5;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HOLDER: &str = "bench-holder";

struct Plan {
    addr: SocketAddr,
    mode: Mode,
    requests: u64,
    duration: Duration,
    warmup: u64,
    clients: usize,
    /// Paced runs: each client sends one request per `interval`.
    interval: Option<Duration>,
    /// Measured requests claimed so far, across clients.
    issued: AtomicU64,
    barrier: Barrier,
}

#[derive(Default)]
struct ClientResult {
    samples: [Vec<u64>; 5],
    errors: u64,
    first_errors: Vec<String>,
    started: Option<Instant>,
    ended: Option<Instant>,
    /// Paced runs: the latest a request was sent after its slot.
    worst_lag: Duration,
}

impl ClientResult {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_errors.len() < ERRORS_KEPT {
            self.first_errors.push(what);
        }
    }
}

/// The pre-rendered requests of one client.
struct Requests {
    get: Vec<u8>,
    acquire: Vec<u8>,
    heartbeat: Vec<u8>,
    release: Vec<u8>,
}

impl Requests {
    fn for_user(user: &str) -> Requests {
        let body = format!("{{\"user\":\"{user}\"}}");
        Requests {
            get: render("GET", "/lock", None),
            acquire: render("POST", "/lock", Some(&body)),
            heartbeat: render("POST", "/lock/heartbeat", Some(&body)),
            release: render("POST", "/unlock", Some(&body)),
        }
    }
}

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    // Paced clients sleep until their next slot; the default 50 µs timer
    // slack would add up to that much to every sleep.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    main_with("loadgen", || run(args))
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.clients == 0 || args.requests == 0 || args.duration_secs <= 0.0 {
        return Err(fail!(
            "--clients, --requests and --duration-secs must all be above zero"
        ));
    }
    let work = WorkDir::new(args.work_dir.as_deref(), "loadgen")?;
    let daemon = match (&args.addr, &args.lagerd) {
        (Some(_), Some(_)) => return Err(fail!("give either --addr or --lagerd, not both")),
        (None, None) => {
            return Err(fail!(
                "say which lagerd to load: --addr 127.0.0.1:PORT, or --lagerd PATH to start one"
            ))
        }
        (Some(_), None) => None,
        (None, Some(path)) => {
            let lagerd = require_binary(path)?;
            let state_dir = work.path().join("state");
            Some(Daemon::start(&lagerd, &state_dir, 1)?)
        }
    };
    let addr = match (&args.addr, &daemon) {
        (Some(text), _) => loopback_addr(text)?,
        (None, Some(daemon)) => daemon.addr(),
        (None, None) => unreachable!("checked above"),
    };
    let label = args.label.clone().unwrap_or_else(|| {
        match args.mode {
            Mode::Get => "get",
            Mode::Conflict => "conflict",
            Mode::Cycle => "cycle",
        }
        .to_string()
    });

    let held_by_us = if args.mode == Mode::Conflict || (args.mode == Mode::Get && args.held) {
        hold_the_box(addr)?
    } else {
        false
    };

    let plan = Arc::new(Plan {
        addr,
        mode: args.mode,
        requests: args.requests,
        duration: Duration::from_secs_f64(args.duration_secs),
        warmup: args.warmup,
        clients: args.clients,
        interval: args
            .rate
            .filter(|rate| *rate > 0.0)
            .map(|rate| Duration::from_secs_f64(args.clients as f64 / rate)),
        issued: AtomicU64::new(0),
        barrier: Barrier::new(args.clients),
    });
    eprintln!(
        "loadgen: {:?} on {addr}: {} clients, at most {} requests or {:.1}s, {} warm-up requests each",
        args.mode, args.clients, args.requests, args.duration_secs, args.warmup
    );
    let handles: Vec<_> = (0..args.clients)
        .map(|index| {
            let plan = plan.clone();
            std::thread::Builder::new()
                .name(format!("client-{index}"))
                .spawn(move || client(index, &plan))
                .map_err(|e| fail!("cannot start client thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut results = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(result) => results.push(result?),
            Err(_) => return Err(fail!("a client thread panicked")),
        }
    }

    if held_by_us {
        let mut conn = Connection::open(addr, CONNECT_TIMEOUT)?;
        let release = render(
            "POST",
            "/unlock",
            Some(&format!("{{\"user\":\"{HOLDER}\"}}")),
        );
        conn.call(&release)
            .map_err(|e| fail!("could not release {HOLDER}'s lock afterwards: {e}"))?;
    }
    if let Some(mut daemon) = daemon {
        if !daemon.alive() {
            return Err(fail!(
                "lagerd exited during the run; its log: {}",
                daemon.log_tail()
            ));
        }
    }
    report(
        &label,
        &results,
        args.limit_us.map(Duration::from_micros),
        args.rate,
    )
}

/// Conflict mode: someone else must hold the box. Takes it as `HOLDER`
/// unless another user already does; true if we took it.
fn hold_the_box(addr: SocketAddr) -> Result<bool, BenchError> {
    let mut conn = Connection::open(addr, CONNECT_TIMEOUT)?;
    let acquire = render("POST", "/lock", Some(&format!("{{\"user\":\"{HOLDER}\"}}")));
    let response = conn
        .call(&acquire)
        .map_err(|e| fail!("setting up the held box failed: {e}"))?;
    match response.status {
        200 => Ok(true),
        409 => Ok(false),
        other => Err(fail!(
            "could not make the box held: POST /lock answered {other}: {}",
            String::from_utf8_lossy(conn.body(&response))
        )),
    }
}

fn client(index: usize, plan: &Plan) -> Result<ClientResult, BenchError> {
    let mut conn = Connection::open(plan.addr, CONNECT_TIMEOUT)?;
    let requests = Requests::for_user(&format!("bench-client-{index}"));
    let mut result = ClientResult::default();
    let expected_per_client = (plan.requests as usize / plan.clients).saturating_add(1024);
    let main_bucket = match plan.mode {
        Mode::Get => Bucket::Read,
        Mode::Conflict | Mode::Cycle => Bucket::Refused,
    };
    result.samples[main_bucket as usize].reserve(expected_per_client.min(4_000_000));

    // Warm-up: same work, not recorded.
    let mut scratch = ClientResult::default();
    for _ in 0..plan.warmup {
        if !step(plan.mode, &mut conn, &requests, &mut scratch) {
            break;
        }
    }
    if scratch.errors > 0 {
        return Err(fail!(
            "client {index} failed during warm-up: {}",
            scratch.first_errors.join("; ")
        ));
    }
    plan.barrier.wait();
    let started = Instant::now();
    let deadline = started + plan.duration;
    result.started = Some(started);
    // Paced clients start staggered across one interval so that the
    // offered load is smooth rather than eight requests at once.
    let mut due = plan
        .interval
        .map(|interval| started + interval.mul_f64(index as f64 / plan.clients as f64));
    loop {
        if plan.issued.fetch_add(1, Ordering::Relaxed) >= plan.requests
            || Instant::now() >= deadline
        {
            break;
        }
        if let (Some(slot), Some(interval)) = (due, plan.interval) {
            let now = Instant::now();
            if slot > now {
                std::thread::sleep(slot - now);
            } else {
                result.worst_lag = result.worst_lag.max(now - slot);
            }
            due = Some(slot + interval);
        }
        if !step(plan.mode, &mut conn, &requests, &mut result) {
            break;
        }
    }
    result.ended = Some(Instant::now());
    Ok(result)
}

/// One unit of work: a request (get/conflict) or an acquire followed, when
/// granted, by heartbeat and release (cycle). False once the connection is
/// unusable.
fn step(mode: Mode, conn: &mut Connection, requests: &Requests, result: &mut ClientResult) -> bool {
    let outcome = match mode {
        Mode::Get => timed(conn, &requests.get, result, |status| {
            (status == 200).then_some(Bucket::Read)
        }),
        Mode::Conflict => timed(conn, &requests.acquire, result, |status| {
            (status == 409).then_some(Bucket::Refused)
        }),
        Mode::Cycle => {
            let acquired = timed(conn, &requests.acquire, result, |status| match status {
                200 => Some(Bucket::Acquire),
                409 => Some(Bucket::Refused),
                _ => None,
            });
            if !matches!(acquired, Outcome::Recorded(Bucket::Acquire)) {
                return !matches!(acquired, Outcome::Broken);
            }
            let beat = timed(conn, &requests.heartbeat, result, |status| {
                (status == 200).then_some(Bucket::Heartbeat)
            });
            if matches!(beat, Outcome::Broken) {
                return false;
            }
            // Release even after a failed heartbeat, so the box is free again.
            timed(conn, &requests.release, result, |status| {
                (status == 200).then_some(Bucket::Release)
            })
        }
    };
    !matches!(outcome, Outcome::Broken)
}

enum Outcome {
    /// The expected kind of reply; its latency went into this bucket.
    Recorded(Bucket),
    /// An unexpected status, counted as an error; the connection is usable.
    Unexpected,
    /// The connection failed.
    Broken,
}

/// Sends one request and records its latency in the bucket `classify`
/// picks for the status; anything else is counted as an error.
fn timed(
    conn: &mut Connection,
    request: &[u8],
    result: &mut ClientResult,
    classify: impl Fn(u16) -> Option<Bucket>,
) -> Outcome {
    let sent = Instant::now();
    let response = match conn.call(request) {
        Ok(response) => response,
        Err(e) => {
            result.error(format!("connection failed: {e}"));
            return Outcome::Broken;
        }
    };
    let elapsed_ns = sent.elapsed().as_nanos() as u64;
    match classify(response.status) {
        Some(bucket) => {
            result.samples[bucket as usize].push(elapsed_ns);
            Outcome::Recorded(bucket)
        }
        None => {
            let request_line = String::from_utf8_lossy(request)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            result.error(format!(
                "{request_line} answered {}: {}",
                response.status,
                String::from_utf8_lossy(conn.body(&response))
            ));
            Outcome::Unexpected
        }
    }
}

fn report(
    label: &str,
    results: &[ClientResult],
    limit: Option<Duration>,
    rate: Option<f64>,
) -> Result<(), BenchError> {
    let started = results.iter().filter_map(|r| r.started).min();
    let ended = results.iter().filter_map(|r| r.ended).max();
    let elapsed = match (started, ended) {
        (Some(s), Some(e)) => e.duration_since(s),
        _ => return Err(fail!("no client got to measure anything")),
    };
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let bucket =
        |b: Bucket| Latencies::merge(results.iter().map(|r| r.samples[b as usize].clone()));
    let all = Latencies::merge(results.iter().map(|r| r.samples.concat()));
    let writes = Latencies::merge(results.iter().map(|r| {
        [Bucket::Acquire, Bucket::Heartbeat, Bucket::Release]
            .iter()
            .flat_map(|b| r.samples[*b as usize].iter().copied())
            .collect::<Vec<u64>>()
    }));
    let rps = all.len() as f64 / elapsed.as_secs_f64();
    let worst_lag = results
        .iter()
        .map(|r| r.worst_lag)
        .max()
        .unwrap_or_default();

    eprintln!(
        "loadgen: {} requests in {:.2}s = {:.0} requests/s, {errors} errors",
        all.len(),
        elapsed.as_secs_f64(),
        rps
    );
    eprintln!("  {:<10} {}", "all", all.summary());
    for (name, b) in BUCKETS {
        let samples = bucket(b);
        if !samples.is_empty() {
            eprintln!("  {name:<10} {}", samples.summary());
            samples.emit(&format!("{label}.{name}"));
        }
    }
    if !writes.is_empty() {
        eprintln!("  {:<10} {}", "writes", writes.summary());
        writes.emit(&format!("{label}.write"));
    }
    for r in results {
        for e in &r.first_errors {
            eprintln!("  error: {e}");
        }
    }
    if let Some(rate) = rate {
        eprintln!(
            "  paced at {rate:.0} requests/s: achieved {rps:.0}; latest send after its slot {:.1}µs",
            worst_lag.as_secs_f64() * 1e6
        );
        metric(&format!("{label}.offered_rps"), format!("{rate:.0}"));
    }
    all.emit(&format!("{label}.all"));
    metric(&format!("{label}.rps"), format!("{rps:.0}"));
    metric(&format!("{label}.errors"), errors);
    if let Some(limit) = limit {
        let above = all.count_above(limit);
        eprintln!(
            "  {above} requests took longer than {}µs",
            limit.as_micros()
        );
        metric(&format!("{label}.all.above_limit"), above);
    }
    if all.is_empty() {
        return Err(fail!("no request succeeded"));
    }
    Ok(())
}
