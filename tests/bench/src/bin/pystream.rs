//! pystream: output streaming throughput of `lager python` and lagerd's
//! memory while it streams (issue 4, target 2: ≥ 200 MB/s of script stdout
//! delivered to the CLI, lagerd's VmRSS peak ≤ 8 MiB).
//!
//! The script writes `--total-bytes` (1 GiB) to stdout in `--write-bytes`
//! (64 KiB) `os.write` calls. Two scenarios, each on a fresh lagerd so that
//! its `VmHWM` belongs to that scenario alone:
//! * `cli`: `lager python big.py --box bench > /dev/null`, auto-locked as a
//!   user would run it. Throughput = payload bytes / wall time of the CLI.
//! * `raw`: lager-bench's own client (`lager_bench::pyclient`) posts the
//!   same script and reads the chunked stream with 256 KiB reads, counting
//!   the payload and discarding it: the daemon's throughput without the CLI.
//!
//! lagerd drops output rather than block the script when its client
//! stalls for a second (runner.md §3.1), so a fast-looking run could have
//! lost data: the raw client counts every payload byte, and the `cli` run
//! fails if lagerd logged any dropped bytes. A sampler reads lagerd's
//! `VmRSS` from `/proc/<pid>/status` every `--sample-ms` (50 ms) during
//! each run; CPU time of lagerd (from `/proc/<pid>/stat`) and of the CLI
//! (its rusage) is reported too, to show where the time goes.

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;
use lager_bench::benchbox::{check_lager_python, python_version, resolve_python, BenchBox};
use lager_bench::{
    children_cpu_secs, fail, main_with, metric, pyclient, require_binary, BenchError, WorkDir,
};

/// Stream a script's stdout through lagerd and `lager python`; sample lagerd's memory.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary serving the box
    #[argh(option)]
    lagerd: PathBuf,
    /// the lager binary to time
    #[argh(option)]
    lager: PathBuf,
    /// the Python interpreter for the box (default /usr/bin/python3, else
    /// python3 on PATH)
    #[argh(option)]
    python: Option<PathBuf>,
    /// parent of the scratch dir (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// bytes the script writes to stdout (default 1 GiB)
    #[argh(option, default = "1 << 30")]
    total_bytes: u64,
    /// bytes per write (default 64 KiB)
    #[argh(option, default = "64 * 1024")]
    write_bytes: u64,
    /// period of the VmRSS samples, in milliseconds (default 50)
    #[argh(option, default = "50")]
    sample_ms: u64,
    /// give up on a run after this many seconds (default 120)
    #[argh(option, default = "120")]
    timeout_secs: u64,
    /// which scenarios: cli, raw or both (default both)
    #[argh(option, default = "String::from(\"both\")")]
    only: String,
}

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("pystream", || run(args))
}

/// The script: `count` writes of `size` bytes, each line-terminated block
/// written whole with `os.write` (a short write is finished, never lost).
fn script(count: u64, size: u64) -> String {
    format!(
        "import os\n\
         block = memoryview(b\"x\" * {} + b\"\\n\")\n\
         for _ in range({count}):\n\
         \x20   view = block\n\
         \x20   while view:\n\
         \x20       view = view[os.write(1, view):]\n",
        size - 1
    )
}

struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, usize)>,
}

/// Samples `/proc/<pid>/status` VmRSS every `period` until stopped;
/// yields (peak KiB, samples).
fn sample_rss(pid: u32, period: Duration) -> Sampler {
    let stop = Arc::new(AtomicBool::new(false));
    let handle = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let path = format!("/proc/{pid}/status");
            let (mut peak, mut samples) = (0u64, 0usize);
            while !stop.load(Ordering::SeqCst) {
                if let Some(kib) = std::fs::read_to_string(&path).ok().and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                }) {
                    peak = peak.max(kib);
                    samples += 1;
                }
                std::thread::sleep(period);
            }
            (peak, samples)
        }
    });
    Sampler { stop, handle }
}

impl Sampler {
    fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or((0, 0))
    }
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.total_bytes.checked_rem(args.write_bytes) != Some(0) {
        return Err(fail!(
            "--total-bytes must be a multiple of --write-bytes (> 0)"
        ));
    }
    let scenarios: &[&str] = match args.only.as_str() {
        "both" => &["cli", "raw"],
        "cli" => &["cli"],
        "raw" => &["raw"],
        other => return Err(fail!("--only {other:?}: use cli, raw or both")),
    };
    let lagerd = require_binary(&args.lagerd)?;
    let lager = require_binary(&args.lager)?;
    check_lager_python(&lager)?;
    let python = resolve_python(args.python.as_deref())?;
    let work = WorkDir::new(args.work_dir.as_deref(), "pystream")?;
    let count = args.total_bytes / args.write_bytes;
    let text = script(count, args.write_bytes);
    let timeout = Duration::from_secs(args.timeout_secs);
    eprintln!(
        "pystream: {} MiB to stdout in {count} writes of {} KiB; interpreter {} ({}); VmRSS every {} ms",
        args.total_bytes >> 20,
        args.write_bytes >> 10,
        python.display(),
        python_version(&python),
        args.sample_ms
    );
    metric("py.stream.bytes", args.total_bytes);
    for scenario in scenarios {
        let mut bench = BenchBox::start(&lagerd, &lager, &python, &work.path().join(scenario))?;
        bench.write_script("big.py", &text)?;
        let pid = bench.daemon().pid();
        let cpu_before = bench.daemon().cpu_secs().unwrap_or(f64::NAN);
        let sampler = sample_rss(pid, Duration::from_millis(args.sample_ms));
        let (elapsed, client_cpu, detail) = if *scenario == "cli" {
            stream_cli(&bench, timeout)?
        } else {
            stream_raw(&bench, &text, args.total_bytes, timeout)?
        };
        let (peak_kib, samples) = sampler.finish();
        let lagerd_cpu = bench.daemon().cpu_secs().unwrap_or(f64::NAN) - cpu_before;
        let (_, hwm_kib) = bench.daemon().memory_kib()?;
        if !bench.daemon_mut().alive() {
            return Err(fail!("lagerd exited during the {scenario} run"));
        }
        let log = bench.daemon().log_text();
        let dropped = dropped_bytes(&log);
        let secs = elapsed.as_secs_f64();
        let mbps = args.total_bytes as f64 / secs / 1e6;
        eprintln!(
            "  {scenario:<4} {:.2} s, {mbps:.0} MB/s ({:.0} MiB/s){detail}; lagerd CPU {lagerd_cpu:.2} s, client CPU {client_cpu:.2} s; \
             lagerd VmRSS peak {:.2} MiB over {samples} samples, VmHWM {:.2} MiB; dropped {dropped} B",
            secs,
            args.total_bytes as f64 / secs / 1048576.0,
            peak_kib as f64 / 1024.0,
            hwm_kib as f64 / 1024.0
        );
        let key = format!("py.stream.{scenario}");
        metric(&format!("{key}.secs"), format!("{secs:.3}"));
        metric(&format!("{key}.mbps"), format!("{mbps:.1}"));
        metric(&format!("{key}.rss_peak_kib"), peak_kib);
        metric(&format!("{key}.rss_samples"), samples);
        metric(&format!("{key}.hwm_kib"), hwm_kib);
        metric(
            &format!("{key}.lagerd_cpu_secs"),
            format!("{lagerd_cpu:.2}"),
        );
        metric(
            &format!("{key}.client_cpu_secs"),
            format!("{client_cpu:.2}"),
        );
        metric(&format!("{key}.dropped_bytes"), dropped);
    }
    Ok(())
}

/// `lager python big.py --box bench > /dev/null`; returns (wall time, CLI
/// CPU seconds, detail).
fn stream_cli(bench: &BenchBox, timeout: Duration) -> Result<(Duration, f64, String), BenchError> {
    let devnull = File::create("/dev/null")?;
    let mut command = bench.lager_python("big.py");
    command.stdout(devnull).stderr(Stdio::piped());
    let cpu_before = children_cpu_secs();
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| fail!("cannot run lager python: {e}"))?;
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = std::io::Read::read_to_string(stderr, &mut text);
        }
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail!(
                "lager python big.py did not finish within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    let client_cpu = children_cpu_secs() - cpu_before;
    let stderr = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(fail!(
            "lager python big.py exited with {status}; stderr: {}",
            stderr.trim()
        ));
    }
    Ok((elapsed, client_cpu, String::new()))
}

/// The same script through lager-bench's raw client; every payload byte
/// is counted.
fn stream_raw(
    bench: &BenchBox,
    text: &str,
    total: u64,
    timeout: Duration,
) -> Result<(Duration, f64, String), BenchError> {
    let addr = bench.daemon().addr();
    let request = pyclient::render_request(addr, "big.py", text.as_bytes());
    let cpu_before = thread_cpu_secs();
    let result = pyclient::run(addr, &request, false, timeout)?;
    let client_cpu = thread_cpu_secs() - cpu_before;
    let frames = &result.frames;
    if frames.exit.as_deref() != Some("0") {
        return Err(fail!(
            "the raw run ended with exit marker {:?}",
            frames.exit
        ));
    }
    if frames.bytes[1] != total {
        return Err(fail!(
            "the raw client received {} stdout bytes, expected {total} (lagerd dropped output?)",
            frames.bytes[1]
        ));
    }
    let detail = format!(
        ", {} frames, {:.1}% framing overhead on the wire",
        frames.frames[1],
        (result.wire_bytes as f64 / total as f64 - 1.0) * 100.0
    );
    Ok((result.elapsed, client_cpu, detail))
}

/// CPU time of the calling thread.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts` only.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Sum of the `dropped N bytes` warnings in lagerd's log.
fn dropped_bytes(log: &str) -> u64 {
    log.lines()
        .filter_map(|line| line.split("dropped ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_dropped_output() {
        let log = "[WARN  lagerd::runner::job] run x: dropped 4096 bytes of output while the client stalled\n\
                   [INFO  lagerd::runner::job] run x: finished with 0\n";
        assert_eq!(dropped_bytes(log), 4096);
        assert_eq!(dropped_bytes(""), 0);
    }

    #[test]
    fn script_writes_whole_blocks() {
        let text = script(3, 8);
        assert!(text.contains("b\"x\" * 7 + b\"\\n\""), "{text}");
        assert!(text.contains("range(3)"), "{text}");
    }
}
