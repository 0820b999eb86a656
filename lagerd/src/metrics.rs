//! `GET /metrics` (fleet.md §1): the Prometheus text format, version 0.0.4.
//!
//! This module owns every counter lagerd exports. They are process-wide
//! atomics, so the modules that count (the router, `lockbox`, the runner,
//! `instruments`) each need one line and take no lock on their hot path;
//! the lock routes are benchmarked at tens of thousands of requests per
//! second and a counter costs them a few relaxed atomic adds.
//!
//! Gauges are read at scrape time from their owners' cheap accessors
//! ([`Sources`]): the lock from `LockBox::snapshot` (a stat of `lock.json`,
//! never its flock), sessions from the session table, health from the last
//! background report. A scrape never talks to an instrument, never takes
//! the lock file's flock and never waits for a job.
//!
//! Labels are bounded: routes are the router's patterns (an unknown path is
//! `other`), codes a fixed list, nets and addresses the box's own. No label
//! ever carries a user name: the lock holder appears only as its type.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Status codes lagerd answers with; anything else counts as `other`.
const CODES: &[u16] = &[
    200, 400, 401, 403, 404, 405, 408, 409, 413, 422, 423, 431, 500, 502, 503, 504,
];
const CODE_SLOTS: usize = 17;

/// Upper bounds of the request-duration histogram, in seconds. Lock
/// requests take tens of microseconds, so the low end is finer than
/// Prometheus' default buckets.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const BUCKET_SLOTS: usize = 17;
/// Requests are counted by route pattern: the path of their line in
/// `http::ROUTES`, the one route table, so a new route is labelled without
/// a line here. The last slot is `other`, for any path the table lacks (a
/// 404 must not mint a series per scanned path). A path served for two
/// methods is counted at its first line; the second one's slot stays empty.
const ROUTE_SLOTS: usize = crate::http::ROUTES.len() + 1;

/// How a job ended (fleet.md §1, `lagerd_jobs_total{outcome}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Exit0,
    ExitNonzero,
    Signal,
    Timeout,
    /// Stopped by lagerd: `/python/kill`, or reaped after its client left.
    Killed,
}

impl JobOutcome {
    const ALL: [JobOutcome; 5] = [
        JobOutcome::Exit0,
        JobOutcome::ExitNonzero,
        JobOutcome::Signal,
        JobOutcome::Timeout,
        JobOutcome::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Exit0 => "exit0",
            JobOutcome::ExitNonzero => "exit_nonzero",
            JobOutcome::Signal => "signal",
            JobOutcome::Timeout => "timeout",
            JobOutcome::Killed => "killed",
        }
    }
}

/// How an instrument command ended (`lagerd_instrument_commands_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommandOutcome {
    Ok,
    Busy,
    Nodev,
    Timeout,
    Error,
}

impl CommandOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandOutcome::Ok => "ok",
            CommandOutcome::Busy => "busy",
            CommandOutcome::Nodev => "nodev",
            CommandOutcome::Timeout => "timeout",
            CommandOutcome::Error => "error",
        }
    }
}

struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKET_SLOTS],
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKET_SLOTS],
            sum_ns: AtomicU64::new(0),
        }
    }
}

struct Counters {
    lock_grants: AtomicU64,
    lock_refusals: AtomicU64,
    lock_reaped: AtomicU64,
    requests: [[AtomicU64; CODE_SLOTS]; ROUTE_SLOTS],
    durations: [Histogram; ROUTE_SLOTS],
    jobs_running: AtomicI64,
    jobs: [AtomicU64; 5],
    /// (net, outcome) → count. Instrument commands take milliseconds, so a
    /// mutex here costs nothing; nets are the box's own, a bounded set.
    commands: Mutex<BTreeMap<(String, CommandOutcome), u64>>,
}

static COUNTERS: Counters = Counters {
    lock_grants: AtomicU64::new(0),
    lock_refusals: AtomicU64::new(0),
    lock_reaped: AtomicU64::new(0),
    requests: [const { [const { AtomicU64::new(0) }; CODE_SLOTS] }; ROUTE_SLOTS],
    durations: [const { Histogram::new() }; ROUTE_SLOTS],
    jobs_running: AtomicI64::new(0),
    jobs: [const { AtomicU64::new(0) }; 5],
    commands: Mutex::new(BTreeMap::new()),
};

/// Unix time lagerd started, set by [`mark_start`].
static START_TIME: OnceLock<f64> = OnceLock::new();

/// Records lagerd's start time (`lagerd_start_time_seconds`).
pub fn mark_start() {
    START_TIME.get_or_init(unix_now);
}

// ---------------------------------------------------------------------------
// Hooks: one line at each counting site.

/// A lock was granted (a free box taken, or handed to a queued waiter).
pub fn lock_granted() {
    COUNTERS.lock_grants.fetch_add(1, Ordering::Relaxed);
}

/// `POST /lock` answered 409: someone else holds the box.
pub fn lock_refused() {
    COUNTERS.lock_refusals.fetch_add(1, Ordering::Relaxed);
}

/// An expired lock was reaped (A.7).
pub fn lock_reaped() {
    COUNTERS.lock_reaped.fetch_add(1, Ordering::Relaxed);
}

/// The slot of `path`'s route; `other` when the router has no such route.
pub fn route_index(path: &str) -> usize {
    crate::http::ROUTES
        .iter()
        .position(|route| route.path == path)
        .unwrap_or(ROUTE_SLOTS - 1)
}

/// The `route` label of a slot.
fn route_label(slot: usize) -> &'static str {
    crate::http::ROUTES
        .get(slot)
        .map_or("other", |route| route.path)
}

/// One answered request: its route (an index from [`route_index`]), its
/// status and how long the router took to produce the response head
/// (a streamed body is not timed: it lasts as long as its job or watch).
pub fn request_done(route: usize, status: u16, took: Duration) {
    let route = route.min(ROUTE_SLOTS - 1);
    request_refused(route, status);
    let secs = took.as_secs_f64();
    let bucket = BUCKETS
        .iter()
        .position(|bound| secs <= *bound)
        .unwrap_or(BUCKET_SLOTS - 1);
    let histogram = &COUNTERS.durations[route];
    histogram.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    histogram.sum_ns.fetch_add(nanos, Ordering::Relaxed);
}

/// A request the transport refused before routing (400, 408, 413, 431,
/// 503): counted, not timed. [`request_done`] counts through it too.
pub fn request_refused(route: usize, status: u16) {
    let route = route.min(ROUTE_SLOTS - 1);
    let code = CODES
        .iter()
        .position(|c| *c == status)
        .unwrap_or(CODE_SLOTS - 1);
    COUNTERS.requests[route][code].fetch_add(1, Ordering::Relaxed);
}

pub fn job_started() {
    COUNTERS.jobs_running.fetch_add(1, Ordering::Relaxed);
}

pub fn job_finished(outcome: JobOutcome) {
    COUNTERS.jobs_running.fetch_sub(1, Ordering::Relaxed);
    let slot = JobOutcome::ALL
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(0);
    COUNTERS.jobs[slot].fetch_add(1, Ordering::Relaxed);
}

/// An instrument command on `net` ended with `outcome`.
pub fn instrument_command(net: &str, outcome: CommandOutcome) {
    let mut commands = COUNTERS
        .commands
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    *commands.entry((net.to_string(), outcome)).or_insert(0) += 1;
}

// ---------------------------------------------------------------------------
// Rendering

/// The lock as a scrape sees it: no flock, no queue mutex.
pub struct LockGauge {
    /// `holder_type` of the held lock, as a label value (see [`holder_class`]).
    pub held_by: Option<&'static str>,
    /// Seconds since `locked_at` (0 when free or unknown).
    pub held_secs: f64,
    pub queue_length: usize,
}

/// What a scrape reads from the parts that own it.
pub struct Sources {
    pub version: String,
    pub lock: LockGauge,
    /// Open connections on every listener.
    pub connections: usize,
    /// (canonical address, session open?) for every instrument with a session.
    pub sessions: Vec<(String, bool)>,
    /// (net, bucket) from the last background health check.
    pub health: Vec<(String, String)>,
    /// (net, bytes captured since start) for every console: the console's
    /// own offset counter, so a scrape costs no hook on the capture path.
    pub uart_bytes: Vec<(String, u64)>,
}

/// `holder_type` as a bounded label (A.3): the spec's four classes; any
/// other type, or a legacy record without one, is a reservation (`user`).
pub fn holder_class(holder_type: Option<&str>) -> &'static str {
    match holder_type {
        Some("ci") => "ci",
        Some("ephemeral") => "ephemeral",
        Some("admin") => "admin",
        _ => "user",
    }
}

/// The whole exposition text.
pub fn render(sources: &Sources) -> String {
    let mut out = String::with_capacity(8 * 1024);
    family(&mut out, "lagerd_build_info", "gauge", "lagerd's version.");
    let _ = writeln!(
        out,
        "lagerd_build_info{{version=\"{}\"}} 1",
        escape(&sources.version)
    );
    family(
        &mut out,
        "lagerd_start_time_seconds",
        "gauge",
        "Unix time lagerd started.",
    );
    let start = START_TIME.get().copied().unwrap_or(0.0);
    let _ = writeln!(out, "lagerd_start_time_seconds {}", float(start));

    family(
        &mut out,
        "lagerd_lock_held",
        "gauge",
        "1 while the box lock is held, by holder type.",
    );
    for class in ["user", "ci", "ephemeral", "admin"] {
        let held = u8::from(sources.lock.held_by == Some(class));
        let _ = writeln!(out, "lagerd_lock_held{{holder_type=\"{class}\"}} {held}");
    }
    family(
        &mut out,
        "lagerd_lock_held_seconds",
        "gauge",
        "Seconds the current lock has been held (0 when free).",
    );
    let _ = writeln!(
        out,
        "lagerd_lock_held_seconds {}",
        float(sources.lock.held_secs)
    );
    family(
        &mut out,
        "lagerd_lock_queue_length",
        "gauge",
        "Requests queued for the box lock.",
    );
    let _ = writeln!(
        out,
        "lagerd_lock_queue_length {}",
        sources.lock.queue_length
    );
    for (name, help, counter) in [
        (
            "lagerd_lock_grants_total",
            "Locks granted (free box taken or handed to a queued waiter).",
            &COUNTERS.lock_grants,
        ),
        (
            "lagerd_lock_refusals_total",
            "Lock requests refused because someone else held the box.",
            &COUNTERS.lock_refusals,
        ),
        (
            "lagerd_lock_reaped_total",
            "Expired locks reaped.",
            &COUNTERS.lock_reaped,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
    }

    render_http(&mut out, sources.connections);

    family(
        &mut out,
        "lagerd_jobs_running",
        "gauge",
        "Script jobs running (attached and detached).",
    );
    let running = COUNTERS.jobs_running.load(Ordering::Relaxed).max(0);
    let _ = writeln!(out, "lagerd_jobs_running {running}");
    family(
        &mut out,
        "lagerd_jobs_total",
        "counter",
        "Script jobs finished, by outcome.",
    );
    for (slot, outcome) in JobOutcome::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "lagerd_jobs_total{{outcome=\"{}\"}} {}",
            outcome.as_str(),
            COUNTERS.jobs[slot].load(Ordering::Relaxed)
        );
    }

    family(
        &mut out,
        "lagerd_instrument_commands_total",
        "counter",
        "Supply and battery commands, by net and outcome.",
    );
    let commands = COUNTERS
        .commands
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for ((net, outcome), count) in &commands {
        let _ = writeln!(
            out,
            "lagerd_instrument_commands_total{{net=\"{}\",outcome=\"{}\"}} {count}",
            escape(net),
            outcome.as_str()
        );
    }
    family(
        &mut out,
        "lagerd_instrument_session_open",
        "gauge",
        "1 while lagerd holds an open session to the instrument.",
    );
    for (address, open) in &sources.sessions {
        let _ = writeln!(
            out,
            "lagerd_instrument_session_open{{address=\"{}\"}} {}",
            escape(address),
            u8::from(*open)
        );
    }
    family(
        &mut out,
        "lagerd_net_health",
        "gauge",
        "1 for each net's current diagnose bucket (background health check).",
    );
    for (net, bucket) in &sources.health {
        let _ = writeln!(
            out,
            "lagerd_net_health{{net=\"{}\",bucket=\"{}\"}} 1",
            escape(net),
            escape(bucket)
        );
    }
    let uart = &sources.uart_bytes;
    if !uart.is_empty() {
        family(
            &mut out,
            "lagerd_uart_bytes_total",
            "counter",
            "Bytes captured from serial consoles, by net.",
        );
        for (net, bytes) in uart {
            let _ = writeln!(
                out,
                "lagerd_uart_bytes_total{{net=\"{}\"}} {bytes}",
                escape(net)
            );
        }
    }

    render_process(&mut out);
    out
}

fn render_http(out: &mut String, connections: usize) {
    family(
        out,
        "lagerd_http_requests_total",
        "counter",
        "HTTP requests answered, by route pattern and status code.",
    );
    for route_slot in 0..ROUTE_SLOTS {
        let route = route_label(route_slot);
        for code_slot in 0..CODE_SLOTS {
            let count = COUNTERS.requests[route_slot][code_slot].load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let code = CODES
                .get(code_slot)
                .map_or_else(|| "other".to_string(), u16::to_string);
            let _ = writeln!(
                out,
                "lagerd_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {count}"
            );
        }
    }
    family(
        out,
        "lagerd_http_request_duration_seconds",
        "histogram",
        "Time to produce a response head, by route pattern.",
    );
    for route_slot in 0..ROUTE_SLOTS {
        let route = route_label(route_slot);
        let histogram = &COUNTERS.durations[route_slot];
        let counts: Vec<u64> = histogram
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (slot, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = BUCKETS
                .get(slot)
                .map_or_else(|| "+Inf".to_string(), |b| float(*b));
            let _ = writeln!(
                out,
                "lagerd_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = histogram.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "lagerd_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
            float(sum)
        );
        let _ = writeln!(
            out,
            "lagerd_http_request_duration_seconds_count{{route=\"{route}\"}} {cumulative}"
        );
    }
    family(
        out,
        "lagerd_http_connections",
        "gauge",
        "Open HTTP connections on every listener.",
    );
    let _ = writeln!(out, "lagerd_http_connections {connections}");
}

/// Prometheus' own process collector names, from `/proc/self` (the real
/// one: `--proc-root` points at fixtures for the holder scan, not at us).
fn render_process(out: &mut String) {
    let Some(stat) = ProcStat::read() else {
        return;
    };
    family(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    );
    let _ = writeln!(out, "process_cpu_seconds_total {}", float(stat.cpu_secs));
    family(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    let _ = writeln!(out, "process_resident_memory_bytes {}", stat.rss_bytes);
    if let Some(fds) = open_fds() {
        family(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {fds}");
    }
    if let Some(start) = stat.start_time {
        family(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        let _ = writeln!(out, "process_start_time_seconds {}", float(start));
    }
}

struct ProcStat {
    cpu_secs: f64,
    rss_bytes: u64,
    start_time: Option<f64>,
}

impl ProcStat {
    fn read() -> Option<ProcStat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces and parentheses; fields after
        // the last `)` do not. Field 3 (state) is index 0 here.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let number = |index: usize| fields.get(index)?.parse::<u64>().ok();
        let ticks = clock_ticks();
        let cpu_secs = (number(11)? + number(12)?) as f64 / ticks;
        // SAFETY: sysconf only reads a configuration value; no pointers.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096);
        let rss_bytes = number(21)?.saturating_mul(page);
        let start_time = boot_time().map(|boot| boot + number(19).unwrap_or(0) as f64 / ticks);
        Some(ProcStat {
            cpu_secs,
            rss_bytes,
            start_time,
        })
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value; no pointers.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// `btime` of `/proc/stat`, read once: it never changes while we run.
fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|secs| secs.trim().parse::<f64>().ok())
    })
}

fn open_fds() -> Option<usize> {
    // The directory handle itself is one of the entries read; leave it out.
    let count = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(count.saturating_sub(1))
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: `\`, `"` and newline escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

/// A sample value: Go's `strconv` forms for the special values, else Rust's
/// shortest round-trip form (which never uses an exponent Prometheus rejects).
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("line\nbreak"), "line\\nbreak");
        assert_eq!(escape("plain-net_1"), "plain-net_1");
    }

    #[test]
    fn unknown_paths_share_one_route() {
        assert_eq!(CODES.len() + 1, CODE_SLOTS);
        assert_eq!(BUCKETS.len() + 1, BUCKET_SLOTS);
        assert_eq!(route_label(route_index("/lock")), "/lock");
        assert_eq!(route_label(route_index("/etc/passwd")), "other");
        assert_eq!(route_label(route_index("/lock/")), "other");
        assert_eq!(route_label(ROUTE_SLOTS - 1), "other");
        // Every route of the table has its own label, so none is forgotten.
        for route in crate::http::ROUTES {
            assert_eq!(route_label(route_index(route.path)), route.path);
        }
    }

    #[test]
    fn holder_types_map_to_four_classes() {
        assert_eq!(holder_class(Some("ci")), "ci");
        assert_eq!(holder_class(Some("ephemeral")), "ephemeral");
        assert_eq!(holder_class(Some("admin")), "admin");
        assert_eq!(holder_class(Some("user")), "user");
        assert_eq!(holder_class(Some("dashboard-origin")), "user");
        assert_eq!(holder_class(None), "user");
    }

    #[test]
    fn rendering_has_every_family_and_escapes_labels() {
        request_done(route_index("/lock"), 200, Duration::from_micros(20));
        instrument_command("weird\"net", CommandOutcome::Timeout);
        let text = render(&Sources {
            version: "1.2.3".into(),
            lock: LockGauge {
                held_by: Some("ci"),
                held_secs: 12.5,
                queue_length: 2,
            },
            connections: 3,
            sessions: vec![("TCPIP::127.0.0.1::5025::SOCKET".into(), true)],
            health: vec![("supply1".into(), "reachable".into())],
            uart_bytes: vec![("console\n1".into(), 4096)],
        });
        for line in [
            "lagerd_build_info{version=\"1.2.3\"} 1",
            "lagerd_lock_held{holder_type=\"ci\"} 1",
            "lagerd_lock_held{holder_type=\"user\"} 0",
            "lagerd_lock_held_seconds 12.5",
            "lagerd_lock_queue_length 2",
            "lagerd_http_connections 3",
            "lagerd_http_request_duration_seconds_bucket{route=\"/lock\",le=\"0.0001\"}",
            "lagerd_http_request_duration_seconds_bucket{route=\"/lock\",le=\"+Inf\"}",
            "lagerd_instrument_commands_total{net=\"weird\\\"net\",outcome=\"timeout\"} 1",
            "lagerd_instrument_session_open{address=\"TCPIP::127.0.0.1::5025::SOCKET\"} 1",
            "lagerd_net_health{net=\"supply1\",bucket=\"reachable\"} 1",
            "# TYPE lagerd_uart_bytes_total counter",
            "lagerd_uart_bytes_total{net=\"console\\n1\"} 4096",
            "# TYPE lagerd_jobs_total counter",
            "lagerd_jobs_total{outcome=\"exit_nonzero\"}",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn floats_use_prometheus_spellings() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(float(1.0), "1");
    }
}
