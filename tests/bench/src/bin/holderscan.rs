//! holderscan: lagerd's `/proc/*/fd` holder scan next to `fuser` and `lsof`
//! on the same target in the same run (issue 5, target 1: with 200 holders
//! among 500 processes, at least 2× faster than `fuser` and 5× faster than
//! `lsof`).
//!
//! The load is real: `--procs` (500) `sleep` processes, `--holders` (200) of
//! them with the target file open on stdin, the others each with a file of
//! their own. The target is a regular file standing in for the usbfs node:
//! `<dev>/bus/usb/001/004`, where `<dev>` is lagerd's `--dev-root`, and the
//! fixture sysfs under `--sys-root` holds a Keithley 2281S (05e6:2281,
//! serial 4587429) on bus 1, device 4, so `GET /diagnose/usb` for
//! `USB0::0x05E6::0x2281::4587429::INSTR` scans the real `/proc` for holders
//! of that file. lagerd is started unchanged through a two-line `sh`
//! wrapper that adds those flags (so `lager_bench::daemon` starts and stops
//! it as usual).
//!
//! Each round times, in this order: `fuser <file>`, `lsof <file>`,
//! `lsof -t <file>` (spawned, waited, output discarded: the whole command as
//! a user runs it), then over one keep-alive connection `GET /diagnose/usb`
//! for the Keithley (the scan) and for an address that matches no device
//! (`enumerated: false`: the same sysfs walk, `/proc/modules` read and
//! `dmesg` run, but no scan). lagerd's scan time is the median of the first
//! minus the median of the second. A third request, for a second Keithley
//! (bus 1, device 5) whose node nobody holds, walks every fd the same way
//! but describes no holder: it splits the scan into the walk and the
//! per-holder reads (`comm`, `cmdline`, `status`, `ns/mnt`). Before timing, every tool must report
//! exactly the `--holders` PIDs, so a fast wrong answer cannot pass.
//!
//! Every spawned process is bounded: `sleep` outlives the run by at most
//! its argument, gets SIGKILL if this tool dies (`PR_SET_PDEATHSIG`), and is
//! killed and reaped by a guard on every exit path.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use argh::FromArgs;
use lager_bench::daemon::Daemon;
use lager_bench::http::{render, Connection};
use lager_bench::stats::median;
use lager_bench::{
    children_cpu_secs, fail, main_with, metric, proc_cpu_secs, require_binary, BenchError, WorkDir,
};
use serde_json::Value;

/// Time lagerd's holder scan against fuser and lsof with real holders.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary to measure
    #[argh(option)]
    lagerd: PathBuf,
    /// parent of the scratch dir (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// processes to spawn in total (default 500)
    #[argh(option, default = "500")]
    procs: usize,
    /// how many of them hold the target open (default 200)
    #[argh(option, default = "200")]
    holders: usize,
    /// timed rounds (default 30; at least 20)
    #[argh(option, default = "30")]
    runs: usize,
    /// unmeasured rounds first (default 3)
    #[argh(option, default = "3")]
    warmup: usize,
    /// give up after this many seconds of rounds (default 120)
    #[argh(option, default = "120")]
    max_secs: u64,
}

const ADDRESS: &str = "USB0::0x05E6::0x2281::4587429::INSTR";
/// A device whose node (`001/005`) nobody holds: the walk without holders.
const UNHELD: &str = "USB0::0x05E6::0x2281::4587430::INSTR";
/// Matches no device in the fixture: the endpoint answers without a scan.
const NO_DEVICE: &str = "USB0::0x1234::0x5678::NONE::INSTR";
/// More processes than this is a typo, not a benchmark.
const MAX_PROCS: usize = 4000;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const MIN_RUNS: usize = 20;

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("holderscan", || run(args))
}

/// The spawned `sleep`s: killed and reaped when dropped, whatever happens.
struct Swarm {
    children: Vec<Child>,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

impl Swarm {
    /// `procs` × `sleep <secs>`: the first `holders` with `target` on
    /// stdin, the others each with `<others>/<n>`.
    fn spawn(
        procs: usize,
        holders: usize,
        secs: u64,
        target: &Path,
        others: &Path,
    ) -> Result<Swarm, BenchError> {
        let mut swarm = Swarm {
            children: Vec::with_capacity(procs),
        };
        for n in 0..procs {
            let path = if n < holders {
                target.to_path_buf()
            } else {
                others.join(n.to_string())
            };
            let file =
                File::open(&path).map_err(|e| fail!("cannot open {}: {e}", path.display()))?;
            let mut command = Command::new("sleep");
            command
                .arg(secs.to_string())
                .stdin(file)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; nothing else runs between
            // fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command
                .spawn()
                .map_err(|e| fail!("cannot spawn sleep #{n}: {e}"))?;
            swarm.children.push(child);
            // `command` (and its copy of the file) is dropped here, so this
            // tool never holds the target itself.
        }
        // Until a child has exec'd, it is a copy of this process: wait for
        // every one to be `sleep`.
        let deadline = Instant::now() + READY_TIMEOUT;
        for child in &swarm.children {
            let comm = format!("/proc/{}/comm", child.id());
            while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "sleep") {
                if Instant::now() > deadline {
                    return Err(fail!(
                        "{} processes not all running within {READY_TIMEOUT:?}",
                        procs
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(swarm)
    }

    fn holder_pids(&self, holders: usize) -> BTreeSet<u32> {
        self.children[..holders].iter().map(Child::id).collect()
    }
}

fn write_attrs(dir: &Path, attrs: &[(&str, &str)]) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| fail!("cannot create {}: {e}", dir.display()))?;
    for (name, value) in attrs {
        std::fs::write(dir.join(name), format!("{value}\n"))?;
    }
    Ok(())
}

/// The fixture sysfs (a root hub, the Keithley on bus 1, device 4, and a
/// second one on device 5) and dev tree (`bus/usb/001/004` and `005`,
/// regular files); returns the target path.
fn fixture(sys: &Path, dev: &Path) -> Result<PathBuf, BenchError> {
    let devices = sys.join("bus/usb/devices");
    write_attrs(
        &devices.join("usb1"),
        &[
            ("idVendor", "1d6b"),
            ("idProduct", "0002"),
            ("busnum", "1"),
            ("devnum", "1"),
            ("product", "xHCI Host Controller"),
        ],
    )?;
    write_attrs(
        &devices.join("1-1.2"),
        &[
            ("idVendor", "05e6"),
            ("idProduct", "2281"),
            ("serial", "4587429"),
            ("busnum", "1"),
            ("devnum", "4"),
            ("manufacturer", "Keithley Instruments"),
            ("product", "2281S"),
        ],
    )?;
    write_attrs(
        &devices.join("1-1.2:1.0"),
        &[
            ("bInterfaceClass", "fe"),
            ("bInterfaceSubClass", "03"),
            ("bInterfaceProtocol", "01"),
        ],
    )?;
    write_attrs(
        &devices.join("1-1.3"),
        &[
            ("idVendor", "05e6"),
            ("idProduct", "2281"),
            ("serial", "4587430"),
            ("busnum", "1"),
            ("devnum", "5"),
            ("product", "2281S"),
        ],
    )?;
    let node_dir = dev.join("bus/usb/001");
    std::fs::create_dir_all(&node_dir)?;
    std::fs::write(node_dir.join("005"), b"")?;
    let target = node_dir.join("004");
    std::fs::write(&target, b"")?;
    Ok(target)
}

/// `sh` wrapper that runs lagerd with the fixture roots (exec: same pid).
fn wrapper(dir: &Path, lagerd: &Path, sys: &Path, dev: &Path) -> Result<PathBuf, BenchError> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let path = dir.join("lagerd-fixture");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec {} --sys-root {} --dev-root {} --health-interval-secs 0 \"$@\"\n",
            quote(lagerd),
            quote(sys),
            quote(dev)
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Runs `argv` once with output captured (for the correctness check).
fn output_of(argv: &[&str]) -> Result<String, BenchError> {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            fail!(
                "cannot run {}: {e}; install it (apt-get install {})",
                argv[0],
                if argv[0] == "fuser" {
                    "psmisc"
                } else {
                    argv[0]
                }
            )
        })?;
    if !output.status.success() {
        return Err(fail!(
            "`{}` exited with {}: {}",
            argv.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn pids_in(text: &str) -> BTreeSet<u32> {
    text.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Wall time of one spawn-to-exit run of `argv`, output discarded.
fn time_command(argv: &[&str]) -> Result<f64, BenchError> {
    let started = Instant::now();
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| fail!("cannot run {}: {e}", argv[0]))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !status.success() {
        return Err(fail!("`{}` exited with {status}", argv.join(" ")));
    }
    Ok(ms)
}

/// One `GET` over the keep-alive connection: wall ms and the JSON body.
fn get(conn: &mut Connection, request: &[u8]) -> Result<(f64, Value), BenchError> {
    let started = Instant::now();
    let response = conn
        .call(request)
        .map_err(|e| fail!("GET /diagnose/usb failed: {e}"))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if response.status != 200 {
        return Err(fail!("GET /diagnose/usb answered {}", response.status));
    }
    let body = serde_json::from_slice(conn.body(&response))
        .map_err(|e| fail!("/diagnose/usb sent no JSON: {e}"))?;
    Ok((ms, body))
}

fn query(address: &str) -> String {
    let encoded: String = address
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("/diagnose/usb?address={encoded}")
}

fn row(measurement: &str, target: &str, measured: &str, result: &str) {
    println!("ROW | 7 holders | {measurement} | {target} | {measured} | {result} |");
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "**FAIL**"
    }
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.holders > args.procs || args.procs > MAX_PROCS || args.procs == 0 {
        return Err(fail!(
            "need 0 < --holders ≤ --procs ≤ {MAX_PROCS} (got {} of {})",
            args.holders,
            args.procs
        ));
    }
    if args.runs < MIN_RUNS {
        return Err(fail!("--runs must be at least {MIN_RUNS}"));
    }
    let lagerd = require_binary(&args.lagerd)?;
    let work = WorkDir::new(args.work_dir.as_deref(), "holderscan")?;
    let (sys, dev, others) = (
        work.path().join("sys"),
        work.path().join("dev"),
        work.path().join("others"),
    );
    let target = fixture(&sys, &dev)?;
    std::fs::create_dir_all(&others)?;
    for n in args.holders..args.procs {
        std::fs::write(others.join(n.to_string()), b"")?;
    }
    let wrapped = wrapper(work.path(), &lagerd, &sys, &dev)?;

    // The sleeps outlive the rounds by a bounded margin; the guard kills them first.
    let swarm = Swarm::spawn(
        args.procs,
        args.holders,
        args.max_secs + 120,
        &target,
        &others,
    )?;
    let daemon = Daemon::start(&wrapped, &work.path().join("state"), 1)?;
    let all_pids = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    eprintln!(
        "holderscan: {} sleeps ({} holding {}), {all_pids} processes in /proc; lagerd on {}",
        args.procs,
        args.holders,
        target.display(),
        daemon.addr()
    );

    // Every tool must find exactly the holders.
    let expected = swarm.holder_pids(args.holders);
    let target_arg = target.display().to_string();
    let fuser = ["fuser", target_arg.as_str()];
    let lsof = ["lsof", target_arg.as_str()];
    let lsof_t = ["lsof", "-t", target_arg.as_str()];
    let scan_request = render("GET", &query(ADDRESS), None);
    let base_request = render("GET", &query(NO_DEVICE), None);
    let unheld_request = render("GET", &query(UNHELD), None);
    let mut conn = Connection::open(daemon.addr(), Duration::from_secs(30))?;
    let (_, body) = get(&mut conn, &scan_request)?;
    let lagerd_pids: BTreeSet<u32> = body
        .get("lsof")
        .and_then(Value::as_array)
        .map(|holders| {
            holders
                .iter()
                .filter_map(|h| h.get("pid")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let (_, base_body) = get(&mut conn, &base_request)?;
    if base_body.get("enumerated") != Some(&Value::Bool(false)) {
        return Err(fail!("the baseline address matched a device: {base_body}"));
    }
    let (_, unheld_body) = get(&mut conn, &unheld_request)?;
    if unheld_body.get("device_path") != Some(&Value::from("/dev/bus/usb/001/005"))
        || unheld_body.get("lsof") != Some(&Value::Array(Vec::new()))
    {
        return Err(fail!(
            "the unheld device is not bus 1, device 5 without holders: {unheld_body}"
        ));
    }
    let lsof_pids = {
        // `lsof <file>`: one header line, then COMMAND PID ...
        let text = output_of(&lsof)?;
        text.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect::<BTreeSet<u32>>()
    };
    for (tool, found) in [
        ("fuser", pids_in(&output_of(&fuser)?)),
        ("lsof", lsof_pids),
        ("lsof -t", pids_in(&output_of(&lsof_t)?)),
        ("lagerd", lagerd_pids),
    ] {
        if found != expected {
            return Err(fail!(
                "{tool} found {} holders, expected the {} sleeps ({} missing, {} extra)",
                found.len(),
                expected.len(),
                expected.difference(&found).count(),
                found.difference(&expected).count()
            ));
        }
    }
    eprintln!(
        "holderscan: fuser, lsof, lsof -t and lagerd each found the {} holders",
        expected.len()
    );

    // Interleaved rounds, bounded by count and by time.
    let mut times: [Vec<f64>; 6] = Default::default();
    let mut child_cpu = [0.0f64; 3];
    let mut lagerd_cpu = [0.0f64; 3];
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let mut rounds = 0;
    for round in 0..args.warmup + args.runs {
        if Instant::now() > deadline {
            eprintln!("holderscan: --max-secs reached after {rounds} timed rounds");
            break;
        }
        let timed = round >= args.warmup;
        for (i, argv) in [&fuser[..], &lsof[..], &lsof_t[..]].iter().enumerate() {
            let cpu = children_cpu_secs();
            let ms = time_command(argv)?;
            if timed {
                times[i].push(ms);
                child_cpu[i] += children_cpu_secs() - cpu;
            }
        }
        for (i, request) in [&scan_request, &base_request, &unheld_request]
            .iter()
            .enumerate()
        {
            let cpu = proc_cpu_secs(daemon.pid()).unwrap_or(f64::NAN);
            let (ms, _) = get(&mut conn, request)?;
            if timed {
                times[3 + i].push(ms);
                lagerd_cpu[i] += proc_cpu_secs(daemon.pid()).unwrap_or(f64::NAN) - cpu;
            }
        }
        if timed {
            rounds += 1;
        }
    }
    if rounds < MIN_RUNS {
        return Err(fail!(
            "only {rounds} rounds within --max-secs {}; at least {MIN_RUNS} are needed",
            args.max_secs
        ));
    }
    // Same-round differences: the scan's cost with the round's noise removed.
    let mut diffs: Vec<f64> = times[3].iter().zip(&times[4]).map(|(s, b)| s - b).collect();
    let scan_pair_ms = median(&mut diffs);
    let [fuser_ms, lsof_ms, lsof_t_ms, endpoint_ms, base_ms, unheld_ms] =
        times.map(|mut t| median(&mut t));
    let walk_ms = unheld_ms - base_ms;
    let scan_ms = endpoint_ms - base_ms;
    if scan_ms <= 0.0 {
        return Err(fail!(
            "the scan request ({endpoint_ms:.3} ms) was not slower than the baseline ({base_ms:.3} ms)"
        ));
    }
    let per = |cpu: f64| cpu / rounds as f64 * 1e3;
    let [fuser_cpu, lsof_cpu, lsof_t_cpu] = child_cpu.map(per);
    let [scan_cpu, base_cpu, unheld_cpu] = lagerd_cpu.map(per);
    let best_lsof = lsof_ms.min(lsof_t_ms);
    let best_lsof_name = if lsof_ms <= lsof_t_ms {
        "lsof <file>"
    } else {
        "lsof -t <file>"
    };
    let fuser_ratio = fuser_ms / scan_ms;
    let lsof_ratio = best_lsof / scan_ms;

    eprintln!(
        "holderscan: medians of {rounds} interleaved rounds (after {} warm-up):",
        args.warmup
    );
    eprintln!("  fuser <file>         {fuser_ms:8.2} ms  (CPU {fuser_cpu:.2} ms)");
    eprintln!("  lsof <file>          {lsof_ms:8.2} ms  (CPU {lsof_cpu:.2} ms)");
    eprintln!("  lsof -t <file>       {lsof_t_ms:8.2} ms  (CPU {lsof_t_cpu:.2} ms)");
    eprintln!(
        "  GET /diagnose/usb    {endpoint_ms:8.2} ms  (lagerd CPU {scan_cpu:.2} ms, tick-rounded)"
    );
    eprintln!(
        "  same, no device      {base_ms:8.2} ms  (lagerd CPU {base_cpu:.2} ms, tick-rounded)"
    );
    eprintln!(
        "  same, unheld device  {unheld_ms:8.2} ms  (lagerd CPU {unheld_cpu:.2} ms, tick-rounded)"
    );
    eprintln!("  scan = difference    {scan_ms:8.2} ms  (median of same-round differences {scan_pair_ms:.2} ms)");
    eprintln!("  of which the walk    {walk_ms:8.2} ms  (unheld − no device)");

    metric("holders.procs", args.procs);
    metric("holders.holders", args.holders);
    metric("holders.proc_entries", all_pids);
    metric("holders.rounds", rounds);
    for (key, value) in [
        ("fuser_ms", fuser_ms),
        ("lsof_ms", lsof_ms),
        ("lsof_t_ms", lsof_t_ms),
        ("endpoint_ms", endpoint_ms),
        ("baseline_ms", base_ms),
        ("scan_ms", scan_ms),
        ("scan_pair_ms", scan_pair_ms),
        ("unheld_ms", unheld_ms),
        ("walk_ms", walk_ms),
        ("unheld_lagerd_cpu_ms", unheld_cpu),
        ("fuser_cpu_ms", fuser_cpu),
        ("lsof_cpu_ms", lsof_cpu),
        ("lsof_t_cpu_ms", lsof_t_cpu),
        ("endpoint_lagerd_cpu_ms", scan_cpu),
        ("baseline_lagerd_cpu_ms", base_cpu),
        ("fuser_ratio", fuser_ratio),
        ("lsof_ratio", lsof_ratio),
    ] {
        metric(&format!("holders.{key}"), format!("{value:.3}"));
    }

    let load = format!("{} holders among {} sleeps", args.holders, args.procs);
    row(
        &format!("`fuser <file>`, median ({load})"),
        "baseline",
        &format!("{fuser_ms:.2} ms (CPU {fuser_cpu:.2} ms)"),
        "info",
    );
    row(
        "`lsof <file>`, median",
        "baseline",
        &format!("{lsof_ms:.2} ms (CPU {lsof_cpu:.2} ms)"),
        "info",
    );
    row(
        "`lsof -t <file>`, median",
        "baseline",
        &format!("{lsof_t_ms:.2} ms (CPU {lsof_t_cpu:.2} ms)"),
        "info",
    );
    row(
        "`GET /diagnose/usb` end to end (200 holders listed), median",
        "info",
        &format!("{endpoint_ms:.2} ms (lagerd CPU {scan_cpu:.1} ms)"),
        "info",
    );
    row(
        "`GET /diagnose/usb`, address matching no device (no scan), median",
        "info",
        &format!("{base_ms:.2} ms (lagerd CPU {base_cpu:.1} ms)"),
        "info",
    );
    row(
        "lagerd scan = endpoint − no-scan median",
        "info",
        &format!("{scan_ms:.2} ms (same-round differences: {scan_pair_ms:.2} ms)"),
        "info",
    );
    row(
        "of which the fd walk alone (unheld device − no-scan median)",
        "info",
        &format!(
            "{walk_ms:.2} ms; the other {:.2} ms describe the 200 holders",
            scan_ms - walk_ms
        ),
        "info",
    );
    row(
        "`fuser` / lagerd scan",
        "≥ 2×",
        &format!("{fuser_ratio:.2}×"),
        verdict(fuser_ratio >= 2.0),
    );
    row(
        &format!("`lsof` / lagerd scan (faster lsof form: `{best_lsof_name}`)"),
        "≥ 5×",
        &format!("{lsof_ratio:.2}×"),
        verdict(lsof_ratio >= 5.0),
    );
    row(
        "whole endpoint: `fuser` / endpoint, `lsof` / endpoint",
        "info",
        &format!(
            "{:.1}×, {:.1}×",
            fuser_ms / endpoint_ms,
            best_lsof / endpoint_ms
        ),
        "info",
    );
    drop(conn);
    drop(daemon);
    drop(swarm);
    Ok(())
}
