//! pyconcurrent: 32 `lager python` runs at once from 32 clients against one
//! lagerd with default flags (lock enforcement off) but `--max-jobs` raised
//! to the client count (its default, 8, is sized for a Pi; issue 12)
//! (issue 4, target 3: every run's output complete, correct and unmixed,
//! zero errors).
//!
//! Each client is its own `lager python conc-NN.py --box bench` process with
//! `LAGER_AUTO_LOCK_DISABLE=1`, so the runs do not queue on the box lock
//! (each still makes its passive lock check). `--via raw` uses
//! lager-bench's own HTTP client instead, one thread per run, for when the
//! CLI cannot be used. All clients start together behind a barrier.
//!
//! Script `NN` prints `--lines` lines `NN <seq> <filler>` to stdout, one
//! write per line, each line longer than a tenth of lagerd's 1 KiB frames,
//! so a frame delivered to the wrong client or out of order shows up as a
//! wrong id or sequence number. Every line of every run is checked, as is
//! the exit code. The wall time runs from the barrier to the last exit.

use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use argh::FromArgs;
use lager_bench::benchbox::{check_lager_python, python_version, resolve_python, BenchBox};
use lager_bench::{fail, main_with, metric, pyclient, require_binary, BenchError, WorkDir};

/// Run N scripts at once through lagerd and check every line of their output.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary serving the box
    #[argh(option)]
    lagerd: PathBuf,
    /// the lager binary (not needed with --via raw)
    #[argh(option)]
    lager: Option<PathBuf>,
    /// the Python interpreter for the box (default /usr/bin/python3, else
    /// python3 on PATH)
    #[argh(option)]
    python: Option<PathBuf>,
    /// parent of the scratch dir (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// concurrent runs, one client each (default 32)
    #[argh(option, default = "32")]
    clients: usize,
    /// lines each script prints (default 2000)
    #[argh(option, default = "2000")]
    lines: usize,
    /// clients: cli (`lager python` processes) or raw (HTTP) (default cli)
    #[argh(option, default = "Via::Cli")]
    via: Via,
    /// give up on a run after this many seconds (default 60)
    #[argh(option, default = "60")]
    timeout_secs: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Cli,
    Raw,
}

impl FromStr for Via {
    type Err = String;
    fn from_str(text: &str) -> Result<Via, String> {
        match text {
            "cli" => Ok(Via::Cli),
            "raw" => Ok(Via::Raw),
            other => Err(format!("unknown client {other:?}: use cli or raw")),
        }
    }
}

/// Filler that makes each line ~100 bytes.
const FILLER: &str =
    "lager-bench-concurrent-output-check-lager-bench-concurrent-output-check-abcdefghij";

fn script(id: usize, lines: usize) -> String {
    format!(
        "import sys\n\
         for i in range({lines}):\n\
         \x20   sys.stdout.write('{id:02} %06d {FILLER}\\n' % i)\n"
    )
}

/// What one client saw.
struct Outcome {
    id: usize,
    started: Instant,
    ended: Instant,
    /// `None` when the run is complete and correct.
    error: Option<String>,
    lines_ok: usize,
}

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("pyconcurrent", || run(args))
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.clients == 0 || args.lines == 0 {
        return Err(fail!("--clients and --lines must be above zero"));
    }
    let lagerd = require_binary(&args.lagerd)?;
    let lager = match (&args.lager, args.via) {
        (Some(path), _) => require_binary(path)?,
        (None, Via::Cli) => return Err(fail!("--via cli needs --lager")),
        (None, Via::Raw) => PathBuf::from("lager-not-used"),
    };
    if args.via == Via::Cli {
        check_lager_python(&lager)?;
    }
    let python = resolve_python(args.python.as_deref())?;
    let work = WorkDir::new(args.work_dir.as_deref(), "pyconcurrent")?;
    let max_jobs = args.clients.to_string();
    let bench = Arc::new(BenchBox::start_with_args(
        &lagerd,
        &lager,
        &python,
        work.path(),
        &["--max-jobs", &max_jobs],
    )?);
    let scripts: Vec<String> = (0..args.clients).map(|id| script(id, args.lines)).collect();
    for (id, text) in scripts.iter().enumerate() {
        bench.write_script(&format!("conc-{id:02}.py"), text)?;
    }
    let via = if args.via == Via::Cli {
        "`lager python` processes, LAGER_AUTO_LOCK_DISABLE=1"
    } else {
        "raw HTTP clients"
    };
    eprintln!(
        "pyconcurrent: {} concurrent runs of {} lines each from {via}; lagerd default flags but --max-jobs {}; {} ({})",
        args.clients,
        args.lines,
        max_jobs,
        python.display(),
        python_version(&python)
    );

    let timeout = Duration::from_secs(args.timeout_secs);
    let barrier = Arc::new(Barrier::new(args.clients + 1));
    let mut handles = Vec::new();
    for (id, text) in scripts.into_iter().enumerate() {
        let (bench, barrier, lines, via) = (bench.clone(), barrier.clone(), args.lines, args.via);
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            let started = Instant::now();
            let result = match via {
                Via::Cli => run_cli(&bench, id, timeout),
                Via::Raw => run_raw(&bench, &text, id, timeout),
            };
            let ended = Instant::now();
            let (error, lines_ok) = match result {
                Ok(stdout) => check(&stdout, id, lines),
                Err(e) => (Some(e.to_string()), 0),
            };
            Outcome {
                id,
                started,
                ended,
                error,
                lines_ok,
            }
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    let outcomes: Vec<Outcome> = handles
        .into_iter()
        .map(|h| h.join().map_err(|_| fail!("a client thread panicked")))
        .collect::<Result<_, _>>()?;
    let wall = outcomes.iter().map(|o| o.ended).max().unwrap_or(t0) - t0;

    let mut errors = 0;
    for outcome in &outcomes {
        if let Some(error) = &outcome.error {
            errors += 1;
            if errors <= 5 {
                eprintln!("  run {:02}: {error}", outcome.id);
            }
        }
    }
    let lines_ok: usize = outcomes.iter().map(|o| o.lines_ok).sum();
    let mut per_run_ms: Vec<f64> = outcomes
        .iter()
        .map(|o| (o.ended - o.started).as_secs_f64() * 1e3)
        .collect();
    per_run_ms.sort_by(f64::total_cmp);
    let overlap = peak_overlap(&outcomes);
    eprintln!(
        "  {} of {} runs complete and correct, {lines_ok} lines checked, {errors} errors; \
         wall {:.0} ms; per run min {:.0} / median {:.0} / max {:.0} ms; up to {overlap} clients in flight at once",
        args.clients - errors,
        args.clients,
        wall.as_secs_f64() * 1e3,
        per_run_ms[0],
        per_run_ms[per_run_ms.len() / 2],
        per_run_ms[per_run_ms.len() - 1]
    );
    let key = "py.concurrent";
    metric(
        &format!("{key}.via"),
        if args.via == Via::Cli { "cli" } else { "raw" },
    );
    metric(&format!("{key}.clients"), args.clients);
    metric(&format!("{key}.runs_ok"), args.clients - errors);
    metric(&format!("{key}.errors"), errors);
    metric(&format!("{key}.lines_checked"), lines_ok);
    metric(&format!("{key}.lines_expected"), args.clients * args.lines);
    metric(
        &format!("{key}.wall_ms"),
        format!("{:.1}", wall.as_secs_f64() * 1e3),
    );
    metric(
        &format!("{key}.run_max_ms"),
        format!("{:.1}", per_run_ms[per_run_ms.len() - 1]),
    );
    metric(&format!("{key}.overlap"), overlap);
    Ok(())
}

/// One `lager python conc-NN.py --box bench`; its stdout.
fn run_cli(bench: &BenchBox, id: usize, timeout: Duration) -> Result<Vec<u8>, BenchError> {
    let mut command = bench.lager_python(&format!("conc-{id:02}.py"));
    command
        .env("LAGER_AUTO_LOCK_DISABLE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| fail!("cannot run lager python: {e}"))?;
    // Drain both pipes on threads so a chatty run cannot block on them.
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(pipe) = out_pipe.as_mut() {
            let _ = std::io::Read::read_to_end(pipe, &mut bytes);
        }
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(pipe) = err_pipe.as_mut() {
            let _ = std::io::Read::read_to_end(pipe, &mut bytes);
        }
        bytes
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail!("did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(fail!(
            "exited with {status}; stderr: {}",
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    Ok(stdout)
}

/// The same run through lager-bench's raw client.
fn run_raw(
    bench: &BenchBox,
    text: &str,
    id: usize,
    timeout: Duration,
) -> Result<Vec<u8>, BenchError> {
    let addr = bench.daemon().addr();
    let request = pyclient::render_request(addr, &format!("conc-{id:02}.py"), text.as_bytes());
    let result = pyclient::run(addr, &request, true, timeout)?;
    if result.frames.exit.as_deref() != Some("0") {
        return Err(fail!("exit marker {:?}", result.frames.exit));
    }
    if result.frames.bytes[2] > 0 {
        return Err(fail!("{} bytes on stderr", result.frames.bytes[2]));
    }
    Ok(result.frames.stdout.unwrap_or_default())
}

/// Checks every line; returns (first problem, lines that were right).
fn check(stdout: &[u8], id: usize, lines: usize) -> (Option<String>, usize) {
    let text = match std::str::from_utf8(stdout) {
        Ok(text) => text,
        Err(e) => return (Some(format!("stdout is not UTF-8: {e}")), 0),
    };
    let mut ok = 0;
    let mut problem = None;
    let mut seen = 0;
    for (seq, line) in text.split_terminator('\n').enumerate() {
        seen += 1;
        let expected = format!("{id:02} {seq:06} {FILLER}");
        if line == expected {
            ok += 1;
        } else if problem.is_none() {
            problem = Some(format!("line {seq} is {line:?}, expected {expected:?}"));
        }
    }
    if problem.is_none() && seen != lines {
        problem = Some(format!("{seen} lines, expected {lines}"));
    }
    if problem.is_none() && !text.ends_with('\n') {
        problem = Some("output does not end with a newline".into());
    }
    (problem, ok)
}

/// Largest number of client runs in flight at the same instant.
fn peak_overlap(outcomes: &[Outcome]) -> usize {
    let mut events: Vec<(Instant, i32)> = outcomes
        .iter()
        .flat_map(|o| [(o.started, 1), (o.ended, -1)])
        .collect();
    events.sort_by_key(|&(at, delta)| (at, delta));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        peak = peak.max(now);
    }
    peak as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_checked() {
        let good: String = (0..3).map(|i| format!("07 {i:06} {FILLER}\n")).collect();
        assert_eq!(check(good.as_bytes(), 7, 3), (None, 3));
        let mixed = good.replace("07 000001", "08 000001");
        let (problem, ok) = check(mixed.as_bytes(), 7, 3);
        assert!(problem.unwrap().contains("line 1"));
        assert_eq!(ok, 2);
        let (problem, _) = check(good.as_bytes(), 7, 4);
        assert_eq!(problem.as_deref(), Some("3 lines, expected 4"));
    }
}
