//! scrapebench: `GET /metrics` on a busy box (issue 16).
//!
//! Targets: a scrape's p99 ≤ 2 ms while 8 lock clients run at full rate,
//! and those clients' throughput drops by at most 5 % while a
//! Prometheus-style scraper asks every 100 ms.
//!
//! One lagerd (the box held by another user, so every `GET /lock` returns
//! the whole record), 8 closed-loop keep-alive clients sending `GET /lock`
//! as fast as they can. Rounds alternate between "no scraper" and "a
//! scraper every --scrape-ms on its own keep-alive connection", so the
//! machine's drift (other people's builds on a shared machine) falls on
//! both sides alike; throughput is compared over the summed rounds and,
//! because a shared VM's speed can jump by half between two rounds, as the
//! median of each round pair's drop (the quiet and scraped halves of one
//! round ran back to back); every scrape's latency (first byte written to
//! last byte read) is kept.
//!
//! `--baseline-lagerd` runs the no-scraper rounds against another build
//! too (the commit before /metrics), interleaved the same way, so the
//! cost of the counters themselves on the lock path is measured in the
//! same run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use argh::FromArgs;
use lager_bench::daemon::Daemon;
use lager_bench::http::{render, Connection};
use lager_bench::stats::Latencies;
use lager_bench::{fail, main_with, metric, require_binary, BenchError, WorkDir};

/// Scrape latency and lock throughput with and without a scraper.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary to measure
    #[argh(option)]
    lagerd: PathBuf,
    /// an older lagerd (without /metrics) measured the same way, for the
    /// lock path's own cost
    #[argh(option)]
    baseline_lagerd: Option<PathBuf>,
    /// parent of the state dirs (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// lock clients (default 8)
    #[argh(option, default = "8")]
    clients: usize,
    /// rounds of each kind (default 4)
    #[argh(option, default = "4")]
    rounds: usize,
    /// seconds per round (default 5)
    #[argh(option, default = "5.0")]
    round_secs: f64,
    /// scrape interval in milliseconds (default 100)
    #[argh(option, default = "100")]
    scrape_ms: u64,
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("scrapebench", || run(args))
}

struct Round {
    requests: u64,
    elapsed: Duration,
    scrapes: Vec<u64>,
    scrape_bytes: usize,
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.clients == 0 || args.rounds == 0 || args.round_secs <= 0.0 {
        return Err(fail!(
            "--clients, --rounds and --round-secs must be above zero"
        ));
    }
    let work = WorkDir::new(args.work_dir.as_deref(), "scrapebench")?;
    let lagerd = require_binary(&args.lagerd)?;
    let current = Daemon::start(&lagerd, &work.path().join("current"), 1)?;
    hold(&current)?;
    let baseline = match &args.baseline_lagerd {
        Some(path) => {
            let daemon = Daemon::start(&require_binary(path)?, &work.path().join("baseline"), 1)?;
            hold(&daemon)?;
            Some(daemon)
        }
        None => None,
    };
    let round = Duration::from_secs_f64(args.round_secs);
    let scrape_every = Duration::from_millis(args.scrape_ms);
    eprintln!(
        "scrapebench: {} clients of GET /lock, {} rounds of {:.1}s each without and with a scrape every {} ms{}",
        args.clients,
        args.rounds,
        args.round_secs,
        args.scrape_ms,
        if baseline.is_some() { ", plus the baseline build" } else { "" }
    );
    let (mut quiet, mut scraped, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for index in 0..args.rounds {
        // Alternate the order too, so neither kind always runs first.
        let order: [bool; 2] = if index % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for scrape in order {
            let result = load(
                &current,
                args.clients,
                round,
                scrape.then_some(scrape_every),
            )?;
            eprintln!(
                "  round {index} {}: {:.0} req/s{}",
                if scrape { "scraped" } else { "quiet  " },
                result.requests as f64 / result.elapsed.as_secs_f64(),
                if scrape {
                    format!(", {} scrapes", result.scrapes.len())
                } else {
                    String::new()
                }
            );
            if scrape {
                scraped.push(result);
            } else {
                quiet.push(result);
            }
        }
        if let Some(daemon) = &baseline {
            let result = load(daemon, args.clients, round, None)?;
            eprintln!(
                "  round {index} baseline: {:.0} req/s",
                result.requests as f64 / result.elapsed.as_secs_f64()
            );
            base.push(result);
        }
    }
    let rate = |rounds: &[Round]| {
        let requests: u64 = rounds.iter().map(|r| r.requests).sum();
        let secs: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        requests as f64 / secs
    };
    let quiet_rate = rate(&quiet);
    let scraped_rate = rate(&scraped);
    let drop_pct = (quiet_rate - scraped_rate) / quiet_rate * 100.0;
    let mut paired: Vec<f64> = quiet
        .iter()
        .zip(&scraped)
        .map(|(q, s)| {
            let (q, s) = (rate(std::slice::from_ref(q)), rate(std::slice::from_ref(s)));
            (q - s) / q * 100.0
        })
        .collect();
    paired.sort_by(f64::total_cmp);
    let paired_median = match paired.len() {
        0 => 0.0,
        n if n % 2 == 1 => paired[n / 2],
        n => (paired[n / 2 - 1] + paired[n / 2]) / 2.0,
    };
    let scrapes = Latencies::new(scraped.iter().flat_map(|r| r.scrapes.clone()).collect());
    let bytes = scraped.iter().map(|r| r.scrape_bytes).max().unwrap_or(0);
    eprintln!(
        "scrapebench: GET /lock {quiet_rate:.0} req/s quiet, {scraped_rate:.0} req/s scraped ({drop_pct:+.1}% drop; median of the round pairs {paired_median:+.1}%)"
    );
    eprintln!(
        "scrapebench: /metrics ({bytes} bytes) {}",
        scrapes.summary()
    );
    metric("scrape.lock_rps_quiet", format!("{quiet_rate:.0}"));
    metric("scrape.lock_rps_scraped", format!("{scraped_rate:.0}"));
    metric("scrape.lock_rps_drop_pct", format!("{drop_pct:.2}"));
    metric(
        "scrape.lock_rps_drop_pct_paired_median",
        format!("{paired_median:.2}"),
    );
    metric("scrape.metrics_bytes", bytes);
    scrapes.emit("scrape.latency");
    if !base.is_empty() {
        let base_rate = rate(&base);
        let cost_pct = (base_rate - quiet_rate) / base_rate * 100.0;
        eprintln!(
            "scrapebench: baseline build {base_rate:.0} req/s; this build {cost_pct:+.1}% slower without a scraper"
        );
        metric("scrape.lock_rps_baseline", format!("{base_rate:.0}"));
        metric(
            "scrape.lock_rps_cost_vs_baseline_pct",
            format!("{cost_pct:.2}"),
        );
    }
    for daemon in std::iter::once(&current).chain(baseline.as_ref()) {
        let mut daemon_alive = Connection::open(daemon.addr(), TIMEOUT)?;
        daemon_alive
            .call(&render("GET", "/lock", None))
            .map_err(|e| fail!("lagerd stopped answering: {e}; log: {}", daemon.log_tail()))?;
    }
    Ok(())
}

/// Another user holds the box, so reads return the full record.
fn hold(daemon: &Daemon) -> Result<(), BenchError> {
    let mut conn = Connection::open(daemon.addr(), TIMEOUT)?;
    let response = conn
        .call(&render(
            "POST",
            "/lock",
            Some("{\"user\":\"bench-holder\"}"),
        ))
        .map_err(|e| fail!("could not hold the box: {e}"))?;
    if response.status != 200 {
        return Err(fail!("POST /lock answered {}", response.status));
    }
    Ok(())
}

/// One round: `clients` closed-loop readers for `length`, and a scraper
/// every `scrape` when given.
fn load(
    daemon: &Daemon,
    clients: usize,
    length: Duration,
    scrape: Option<Duration>,
) -> Result<Round, BenchError> {
    let addr = daemon.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (stop, total, barrier) = (stop.clone(), total.clone(), barrier.clone());
        let mut conn = Connection::open(addr, TIMEOUT)?;
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let request = render("GET", "/lock", None);
            for _ in 0..200 {
                conn.call(&request).map_err(|e| e.to_string())?;
            }
            barrier.wait();
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let response = conn.call(&request).map_err(|e| e.to_string())?;
                if response.status != 200 {
                    return Err(format!("GET /lock answered {}", response.status));
                }
                count += 1;
            }
            total.fetch_add(count, Ordering::Relaxed);
            Ok(())
        }));
    }
    let scraper = match scrape {
        None => None,
        Some(every) => {
            let stop = stop.clone();
            let mut conn = Connection::open(addr, TIMEOUT)?;
            Some(std::thread::spawn(
                move || -> Result<(Vec<u64>, usize), String> {
                    let request = render("GET", "/metrics", None);
                    let (mut samples, mut bytes) = (Vec::new(), 0);
                    let mut due = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        due += every;
                        let sent = Instant::now();
                        let response = conn.call(&request).map_err(|e| e.to_string())?;
                        samples.push(sent.elapsed().as_nanos() as u64);
                        if response.status != 200 {
                            return Err(format!("GET /metrics answered {}", response.status));
                        }
                        bytes = conn.body(&response).len();
                    }
                    Ok((samples, bytes))
                },
            ))
        }
    };
    barrier.wait();
    let started = Instant::now();
    std::thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle
            .join()
            .map_err(|_| fail!("a client panicked"))?
            .map_err(|e| fail!("a lock client failed: {e}"))?;
    }
    let elapsed = started.elapsed();
    let (scrapes, scrape_bytes) = match scraper {
        None => (Vec::new(), 0),
        Some(handle) => handle
            .join()
            .map_err(|_| fail!("the scraper panicked"))?
            .map_err(|e| fail!("the scraper failed: {e}"))?,
    };
    Ok(Round {
        requests: total.load(Ordering::Relaxed),
        elapsed,
        scrapes,
        scrape_bytes,
    })
}
