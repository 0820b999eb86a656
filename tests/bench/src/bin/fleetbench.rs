//! fleetbench: a lab's worth of boxes on one machine (issue 16).
//!
//! Targets: `lager boxes` over 1,000 live boxes plus 50 dead ones with a
//! 1 s per-box timeout in ≤ 3 s wall with bounded threads, and
//! `lager boxes lock --any` over the same fleet in ≤ 1 s when one box is
//! free; lagerd's resident memory per box is recorded beside them.
//!
//! Every live box is its own `lagerd` process on `127.0.0.1:0` with its
//! own state dir (`--health-interval-secs 0`: no nets to check). Of the
//! dead boxes half refuse connections (a bound socket that never listens)
//! and half accept and never answer (a listener that never accepts); they
//! are spread through the inventory. `lager` runs with an isolated config
//! and `LAGER_BOX_TIMEOUT_MS=1000`; its peak thread count is sampled from
//! `/proc` while it runs.
//!
//! Cleanup on every exit path: each lagerd gets `PR_SET_PDEATHSIG`, so it
//! dies with this tool even on SIGKILL, and `Drop` stops them all (only
//! the pids this tool started).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use argh::FromArgs;
use lager_bench::http::{render, Connection};
use lager_bench::net::check_loopback;
use lager_bench::stats::median;
use lager_bench::{fail, main_with, metric, require_binary, BenchError, WorkDir};
use serde_json::{json, Map, Value};

/// Time `lager boxes` and `lager boxes lock --any` over many loopback boxes.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary run as every box
    #[argh(option)]
    lagerd: PathBuf,
    /// the lager binary to time
    #[argh(option)]
    lager: PathBuf,
    /// parent of the scratch dir (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// live boxes (default 1000)
    #[argh(option, default = "1000")]
    live: usize,
    /// dead boxes, half refusing and half hanging (default 50)
    #[argh(option, default = "50")]
    dead: usize,
    /// timed runs of each command (default 5)
    #[argh(option, default = "5")]
    runs: usize,
    /// per-box timeout, LAGER_BOX_TIMEOUT_MS (default 1000)
    #[argh(option, default = "1000")]
    timeout_ms: u64,
}

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("fleetbench", || run(args))
}

/// The live boxes; every one is stopped when this drops.
struct Fleet {
    children: Vec<Child>,
    addrs: Vec<SocketAddr>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &self.children {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_fleet(lagerd: &Path, dir: &Path, count: usize) -> Result<Fleet, BenchError> {
    let mut fleet = Fleet {
        children: Vec::with_capacity(count),
        addrs: Vec::with_capacity(count),
    };
    for index in 0..count {
        let state = dir.join(format!("box-{index:04}"));
        let mut command = Command::new(lagerd);
        command
            .args(["--listen", "127.0.0.1:0", "--health-interval-secs", "0"])
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "warn")
            .env("LAGERD_RUN_DIR", state.join("runs"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // Dies with this tool, whatever ends it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| fail!("cannot start lagerd #{index}: {e} (ulimit -u / -n?)"))?;
        let stdout = child.stdout.take();
        fleet.children.push(child);
        let mut line = String::new();
        BufReader::new(stdout.ok_or_else(|| fail!("no stdout pipe"))?)
            .read_line(&mut line)
            .map_err(|e| fail!("lagerd #{index} said nothing: {e}"))?;
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| fail!("lagerd #{index} said {line:?}"))?;
        check_loopback(addr)?;
        fleet.addrs.push(addr);
    }
    Ok(fleet)
}

/// A loopback port that refuses: bound, never listening (kept open).
fn refusing_port() -> Result<(u16, i32), BenchError> {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(fail!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(fail!("bind: {}", std::io::Error::last_os_error()));
        }
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut bound_len = len;
        libc::getsockname(
            fd,
            (&mut bound as *mut libc::sockaddr_in).cast(),
            &mut bound_len,
        );
        Ok((u16::from_be(bound.sin_port), fd))
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn threads_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs `lager args`, sampling its thread count; (wall, stdout, peak threads).
fn timed_lager(
    lager: &Path,
    home: &Path,
    timeout_ms: u64,
    args: &[&str],
    user: &str,
) -> Result<(Duration, String, u64, bool), BenchError> {
    let started = Instant::now();
    let child = Command::new(lager)
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("LAGER_CONFIG_FILE_DIR", home)
        .env("LAGER_BOX_TIMEOUT_MS", timeout_ms.to_string())
        .env("LAGER_USER", user)
        .env("NO_COLOR", "1")
        .env_remove("LAGER_BOX")
        .env_remove("RUST_LOG")
        .env_remove("CI")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail!("cannot run lager: {e}"))?;
    let pid = child.id();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Some(threads) = threads_of(pid) {
            peak = peak.max(threads);
            std::thread::sleep(Duration::from_millis(2));
        }
        peak
    });
    let output = child
        .wait_with_output()
        .map_err(|e| fail!("lager failed: {e}"))?;
    let wall = started.elapsed();
    let peak = sampler.join().unwrap_or(0);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok((wall, stdout, peak, output.status.success()))
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Result<u16, BenchError> {
    let mut conn = Connection::open(addr, Duration::from_secs(10))?;
    let response = conn
        .call(&render("POST", path, Some(&body.to_string())))
        .map_err(|e| fail!("POST {path} to {addr}: {e}"))?;
    Ok(response.status)
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.runs == 0 || args.live < 2 {
        return Err(fail!("--runs must be above zero and --live at least 2"));
    }
    let lagerd = require_binary(&args.lagerd)?;
    let lager = require_binary(&args.lager)?;
    let work = WorkDir::new(args.work_dir.as_deref(), "fleetbench")?;
    let home = work.path().join("home");
    std::fs::create_dir_all(&home)?;

    eprintln!("fleetbench: starting {} lagerd processes...", args.live);
    let started = Instant::now();
    let fleet = start_fleet(&lagerd, work.path(), args.live)?;
    eprintln!(
        "fleetbench: {} boxes up in {:.1}s",
        fleet.addrs.len(),
        started.elapsed().as_secs_f64()
    );
    let refusing: Vec<(u16, i32)> = (0..args.dead / 2)
        .map(|_| refusing_port())
        .collect::<Result<_, _>>()?;
    let hanging: Vec<TcpListener> = (0..args.dead - args.dead / 2)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;

    // Dead boxes spread evenly through the inventory, refusing and
    // hanging in turn.
    let total = args.live + args.dead;
    let stride = total.checked_div(args.dead).unwrap_or(usize::MAX);
    let mut dead_ports = refusing
        .iter()
        .map(|(port, _)| *port)
        .zip(
            hanging
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .map(|a| a.port()),
        )
        .flat_map(|(refused, hung)| [refused, hung])
        .chain(
            hanging
                .iter()
                .skip(refusing.len())
                .filter_map(|l| l.local_addr().ok())
                .map(|a| a.port()),
        );
    let mut live = fleet.addrs.iter();
    let mut boxes = Map::new();
    let mut live_names = Vec::new();
    for index in 0..total {
        let name = format!("box-{:04}", index + 1);
        let dead_port = if (index + 1) % stride == 0 {
            dead_ports.next()
        } else {
            None
        };
        let port = match dead_port {
            Some(port) => port,
            None => match live.next() {
                Some(addr) => {
                    live_names.push((name.clone(), *addr));
                    addr.port()
                }
                None => match dead_ports.next() {
                    Some(port) => port,
                    None => continue,
                },
            },
        };
        boxes.insert(name, json!({"ip": "127.0.0.1", "port": port}));
    }
    std::fs::write(
        home.join(".lager"),
        serde_json::to_vec_pretty(&json!({ "BOXES": Value::Object(boxes.clone()) }))
            .unwrap_or_default(),
    )?;

    // Memory of the fleet, idle, after one request each (below).
    eprintln!(
        "fleetbench: `lager boxes` over {} boxes ({} live, {} refusing, {} hanging), timeout {} ms, {} runs",
        boxes.len(),
        live_names.len(),
        refusing.len(),
        hanging.len(),
        args.timeout_ms,
        args.runs
    );
    let mut walls = Vec::new();
    let mut peak_threads = 0;
    for run in 0..args.runs {
        let (wall, stdout, peak, ok) = timed_lager(
            &lager,
            &home,
            args.timeout_ms,
            &["boxes", "--json"],
            "bench",
        )?;
        if !ok {
            return Err(fail!("lager boxes failed"));
        }
        let rows: Vec<Value> =
            serde_json::from_str(&stdout).map_err(|e| fail!("lager boxes --json: {e}"))?;
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for row in &rows {
            *statuses
                .entry(row["status"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        let current = statuses.get("current").copied().unwrap_or(0);
        if current != live_names.len() || rows.len() != boxes.len() {
            return Err(fail!(
                "lager boxes saw {statuses:?} of {} rows; expected {} current",
                rows.len(),
                live_names.len()
            ));
        }
        eprintln!(
            "  run {run}: {:.2}s, {peak} threads at most, {statuses:?}",
            wall.as_secs_f64()
        );
        walls.push(wall.as_secs_f64());
        peak_threads = peak_threads.max(peak);
    }
    let boxes_median = median(&mut walls.clone());
    let boxes_max = walls.iter().copied().fold(0.0, f64::max);
    metric("fleet.boxes_wall_median_s", format!("{boxes_median:.3}"));
    metric("fleet.boxes_wall_max_s", format!("{boxes_max:.3}"));
    metric("fleet.boxes_peak_threads", peak_threads);

    // Every live box held but one, near the end of the inventory.
    let free = live_names.len() - 3;
    for (index, (_, addr)) in live_names.iter().enumerate() {
        if index != free && post(*addr, "/lock", &json!({"user": "somebody"}))? != 200 {
            return Err(fail!("could not hold {addr}"));
        }
    }
    let (free_name, free_addr) = live_names[free].clone();
    eprintln!(
        "fleetbench: `lager boxes lock --any` with only {free_name} free, {} runs",
        args.runs
    );
    let mut any_walls = Vec::new();
    let mut any_threads = 0;
    for run in 0..args.runs {
        let (wall, stdout, peak, ok) = timed_lager(
            &lager,
            &home,
            args.timeout_ms,
            &["boxes", "lock", "--any"],
            "bench-any",
        )?;
        if !ok || stdout.trim() != free_name {
            return Err(fail!(
                "lager boxes lock --any printed {stdout:?}, expected {free_name}"
            ));
        }
        eprintln!(
            "  run {run}: {:.3}s, {peak} threads at most",
            wall.as_secs_f64()
        );
        any_walls.push(wall.as_secs_f64());
        any_threads = any_threads.max(peak);
        if post(free_addr, "/unlock", &json!({"user": "bench-any"}))? != 200 {
            return Err(fail!("could not free {free_name} again"));
        }
    }
    let any_median = median(&mut any_walls.clone());
    let any_max = any_walls.iter().copied().fold(0.0, f64::max);
    metric("fleet.any_wall_median_s", format!("{any_median:.3}"));
    metric("fleet.any_wall_max_s", format!("{any_max:.3}"));
    metric("fleet.any_peak_threads", any_threads);

    let rss: Vec<u64> = fleet
        .children
        .iter()
        .filter_map(|c| rss_kib(c.id()))
        .collect();
    if rss.len() != fleet.children.len() {
        return Err(fail!(
            "{} of {} lagerd processes died during the run",
            fleet.children.len() - rss.len(),
            fleet.children.len()
        ));
    }
    let threads: Vec<f64> = fleet
        .children
        .iter()
        .filter_map(|c| threads_of(c.id()))
        .map(|t| t as f64)
        .collect();
    let mut rss_f: Vec<f64> = rss.iter().map(|k| *k as f64).collect();
    let rss_median = median(&mut rss_f);
    let rss_total_mib = rss.iter().sum::<u64>() as f64 / 1024.0;
    let threads_median = median(&mut threads.clone());
    eprintln!(
        "fleetbench: lager boxes median {boxes_median:.2}s (max {boxes_max:.2}s, ≤ {peak_threads} threads); \
         --any median {any_median:.3}s (max {any_max:.3}s); lagerd RSS median {rss_median:.0} KiB per box, \
         {rss_total_mib:.0} MiB for the fleet, {threads_median:.0} threads each"
    );
    metric("fleet.lagerd_rss_median_kib", format!("{rss_median:.0}"));
    metric("fleet.lagerd_rss_total_mib", format!("{rss_total_mib:.0}"));
    metric(
        "fleet.lagerd_threads_median",
        format!("{threads_median:.0}"),
    );
    for (_, fd) in refusing {
        unsafe { libc::close(fd) };
    }
    drop(fleet);
    Ok(())
}
