//! boxfleet: wall time of `lager boxes` over 50 boxes, 10 of them
//! unreachable (issue 3, target 4).
//!
//! A lab's inventory always has a few boxes that are off or wedged, and
//! `lager boxes` must still answer in about one per-box timeout, not one per
//! dead box. The fleet, all on loopback: 40 live boxes served by one
//! lagerd with 40 `--listen 127.0.0.1:0` listeners; 5 boxes whose port
//! refuses connections (bound, then closed); 5 boxes whose port accepts the
//! TCP handshake (a listener that never calls accept) but never answers.
//! The dead boxes are spread through the list. `lager` runs with an
//! isolated config (`LAGER_CONFIG_FILE_DIR`, `HOME`, cwd in a scratch dir)
//! and `LAGER_BOX_TIMEOUT_MS` as the per-box timeout; the tool times whole
//! `lager boxes` runs, checks the table shows 40 live, 5 unreachable and
//! 5 timed-out boxes, and reports the median and worst total.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use argh::FromArgs;
use lager_bench::daemon::Daemon;
use lager_bench::net::check_loopback;
use lager_bench::stats::median;
use lager_bench::{fail, main_with, metric, require_binary, BenchError, WorkDir};
use serde_json::{json, Map, Value};

/// Time `lager boxes` over 40 live and 10 unreachable loopback boxes.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary serving the live boxes
    #[argh(option)]
    lagerd: PathBuf,
    /// the lager binary to time
    #[argh(option)]
    lager: PathBuf,
    /// parent of the scratch dir (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// per-box timeout passed as LAGER_BOX_TIMEOUT_MS; 0 leaves it unset so
    /// lager's default (5 s) applies (default 1000)
    #[argh(option, default = "1000")]
    timeout_ms: u64,
    /// timed runs (default 5)
    #[argh(option, default = "5")]
    runs: usize,
    /// prefix of the METRIC keys (default boxes)
    #[argh(option, default = "String::from(\"boxes\")")]
    label: String,
}

const LIVE: usize = 40;
const REFUSING: usize = 5;
const SILENT: usize = 5;
/// lager's built-in per-box budget, used when --timeout-ms is 0.
const DEFAULT_TIMEOUT_MS: u64 = 5000;

enum Kind {
    Live,
    Refusing,
    Silent,
}

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("boxfleet", || run(args))
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.runs == 0 {
        return Err(fail!("--runs must be above zero"));
    }
    let lagerd = require_binary(&args.lagerd)?;
    let lager = require_binary(&args.lager)?;
    let work = WorkDir::new(args.work_dir.as_deref(), "boxfleet")?;
    let home = work.path().join("home");
    std::fs::create_dir_all(&home)?;

    let daemon = Daemon::start(&lagerd, &work.path().join("state"), LIVE)?;
    let refusing: Vec<SocketAddr> = (0..REFUSING)
        .map(|_| closed_port())
        .collect::<Result<_, _>>()?;
    // Bound and listening, never accepted: the kernel completes the
    // handshake, the request is never read.
    let silent: Vec<TcpListener> = (0..SILENT)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;

    // Every fifth box is dead, alternating refusing and silent.
    let mut live_addrs = daemon.addrs().iter();
    let (mut refusing_addrs, mut silent_addrs) = (refusing.iter(), silent.iter());
    let mut boxes = Map::new();
    let mut kinds = Vec::new();
    for index in 0..LIVE + REFUSING + SILENT {
        let (kind, addr) = match index % 10 {
            4 => (Kind::Refusing, refusing_addrs.next().copied()),
            9 => (
                Kind::Silent,
                silent_addrs.next().and_then(|l| l.local_addr().ok()),
            ),
            _ => (Kind::Live, live_addrs.next().copied()),
        };
        let addr = addr.ok_or_else(|| fail!("fleet layout ran out of addresses"))?;
        check_loopback(addr)?;
        let name = format!("box-{:02}", index + 1);
        boxes.insert(
            name,
            json!({"ip": addr.ip().to_string(), "port": addr.port()}),
        );
        kinds.push(kind);
    }
    let config = json!({ "BOXES": Value::Object(boxes) });
    std::fs::write(
        home.join(".lager"),
        serde_json::to_vec_pretty(&config).unwrap_or_default(),
    )?;

    let timeout_ms = if args.timeout_ms == 0 {
        DEFAULT_TIMEOUT_MS
    } else {
        args.timeout_ms
    };
    eprintln!(
        "boxfleet: `lager boxes` over {} boxes ({LIVE} live on one lagerd, {REFUSING} refusing, {SILENT} silent), \
         per-box timeout {timeout_ms} ms{}, {} runs",
        kinds.len(),
        if args.timeout_ms == 0 { " (lager's default)" } else { " (LAGER_BOX_TIMEOUT_MS)" },
        args.runs
    );
    let mut totals_ms = Vec::new();
    for run in 0..args.runs {
        let mut command = Command::new(&lager);
        command
            .arg("boxes")
            .current_dir(&home)
            .env("HOME", &home)
            .env("LAGER_CONFIG_FILE_DIR", &home)
            .env_remove("LAGER_CONFIG_FILE_NAME")
            .env_remove("LAGER_BOX")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if args.timeout_ms == 0 {
            command.env_remove("LAGER_BOX_TIMEOUT_MS");
        } else {
            command.env("LAGER_BOX_TIMEOUT_MS", args.timeout_ms.to_string());
        }
        let started = Instant::now();
        let output = command
            .output()
            .map_err(|e| fail!("cannot run {}: {e}", lager.display()))?;
        let total_ms = started.elapsed().as_secs_f64() * 1e3;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let counts = classify(&stdout);
        eprintln!(
            "  run {}: {total_ms:.1} ms, exit {}, rows: {} live, {} unreachable, {} timeout, {} other",
            run + 1,
            output.status,
            counts.live,
            counts.unreachable,
            counts.timeout,
            counts.other
        );
        if counts.live != LIVE || counts.unreachable != REFUSING || counts.timeout != SILENT {
            eprintln!(
                "boxfleet: the table is not what the fleet should show; stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            metric(&format!("{}.misreported_runs", args.label), 1);
        }
        totals_ms.push(total_ms);
    }
    if !daemon_alive(daemon) {
        return Err(fail!("lagerd exited during the run"));
    }
    let worst = totals_ms.iter().copied().fold(f64::NAN, f64::max);
    let median_ms = median(&mut totals_ms);
    eprintln!(
        "  median {median_ms:.1} ms, worst {worst:.1} ms; margin to timeout + 100 ms: {:.1} ms",
        timeout_ms as f64 + 100.0 - worst
    );
    metric(&format!("{}.timeout_ms", args.label), timeout_ms);
    metric(
        &format!("{}.median_ms", args.label),
        format!("{median_ms:.1}"),
    );
    metric(&format!("{}.max_ms", args.label), format!("{worst:.1}"));
    drop(silent);
    Ok(())
}

fn daemon_alive(mut daemon: Daemon) -> bool {
    daemon.alive()
}

/// A loopback port nobody listens on: bind one, note it, close it.
fn closed_port() -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

#[derive(Default)]
struct Counts {
    live: usize,
    unreachable: usize,
    timeout: usize,
    other: usize,
}

/// Counts the table's rows by their status column (locking.md B.11).
fn classify(table: &str) -> Counts {
    let mut counts = Counts::default();
    for line in table.lines().filter(|l| l.starts_with("box-")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.contains(&"unreachable") {
            counts.unreachable += 1;
        } else if words.contains(&"timeout") {
            counts.timeout += 1;
        } else if words
            .iter()
            .any(|w| ["current", "newer", "update"].iter().any(|s| w.contains(s)))
        {
            counts.live += 1;
        } else {
            counts.other += 1;
        }
    }
    counts
}
