//! coldstart: start-up time of `lager --version` and `lager boxes --help`
//! next to a static hello world, measured in the same run (issue 3,
//! target 1).
//!
//! Every `lager` command pays process start-up before it does anything, and
//! scripts call it in loops, so start-up must stay close to what exec of a
//! static binary costs on the machine: the hello-world baseline. The tool
//! runs hyperfine (`--shell=none`, warm-up runs, all three commands in one
//! invocation) and reports medians. Without hyperfine on PATH it falls back
//! to its own fork/exec loop, which measures the same thing (spawn, wait,
//! stdout to /dev/null) and says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use argh::FromArgs;
use lager_bench::stats::median;
use lager_bench::{fail, main_with, metric, require_binary, BenchError, WorkDir};
use serde_json::Value;

/// Median start-up time of lager commands next to a static hello world.
#[derive(FromArgs)]
struct Args {
    /// the static hello-world baseline (lager-bench's `hello` bin)
    #[argh(option)]
    hello: PathBuf,
    /// the lager binary to time
    #[argh(option)]
    lager: PathBuf,
    /// timed runs per command (default 1000)
    #[argh(option, default = "1000")]
    runs: usize,
    /// unmeasured runs per command first (default 100)
    #[argh(option, default = "100")]
    warmup: usize,
    /// use the built-in fork/exec loop even if hyperfine is installed
    #[argh(switch)]
    no_hyperfine: bool,
}

/// (metric key, display name, arguments after the binary)
const COMMANDS: [(&str, &str, &[&str]); 3] = [
    ("cold.hello", "hello", &[]),
    ("cold.version", "lager --version", &["--version"]),
    (
        "cold.boxes_help",
        "lager boxes --help",
        &["boxes", "--help"],
    ),
];

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("coldstart", || run(args))
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.runs == 0 {
        return Err(fail!("--runs must be above zero"));
    }
    let hello = require_binary(&args.hello)?;
    let lager = require_binary(&args.lager)?;
    let binary = |index: usize| if index == 0 { &hello } else { &lager };
    // Each command must succeed once before it is timed: a failing command
    // exits early and would look fast.
    for (index, (_, name, argv)) in COMMANDS.iter().enumerate() {
        let status = Command::new(binary(index))
            .args(*argv)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| fail!("cannot run {name}: {e}"))?;
        if !status.success() {
            return Err(fail!(
                "{name} exited with {status}; fix that before timing it"
            ));
        }
    }
    let use_hyperfine = !args.no_hyperfine && hyperfine_version().is_some();
    let medians_us = if use_hyperfine {
        with_hyperfine(&args, &hello, &lager)?
    } else {
        eprintln!("coldstart: hyperfine not found (apt-get install hyperfine); using the built-in fork/exec loop");
        with_loop(&args, binary)?
    };
    metric(
        "cold.method",
        if use_hyperfine {
            "hyperfine"
        } else {
            "fork-exec-loop"
        },
    );
    for ((key, name, _), median_us) in COMMANDS.iter().zip(&medians_us) {
        eprintln!("  {name:<20} median {median_us:>8.1}µs");
        metric(&format!("{key}.median_us"), format!("{median_us:.1}"));
    }
    Ok(())
}

fn hyperfine_version() -> Option<String> {
    let output = Command::new("hyperfine").arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn with_hyperfine(args: &Args, hello: &Path, lager: &Path) -> Result<Vec<f64>, BenchError> {
    let work = WorkDir::new(None, "coldstart")?;
    let json_path = work.path().join("hyperfine.json");
    let mut command = Command::new("hyperfine");
    command
        .args([
            "--shell=none",
            "--style",
            "basic",
            "--time-unit",
            "millisecond",
        ])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--runs", &args.runs.to_string()])
        .arg("--export-json")
        .arg(&json_path);
    for (index, (_, name, argv)) in COMMANDS.iter().enumerate() {
        let binary = if index == 0 { hello } else { lager };
        let mut line = shell_quote(binary);
        for arg in *argv {
            line.push(' ');
            line.push_str(arg);
        }
        command.args(["--command-name", name]).arg(line);
    }
    eprintln!(
        "coldstart: {} (--shell=none, {} warm-up + {} runs each)",
        hyperfine_version().unwrap_or_default(),
        args.warmup,
        args.runs
    );
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail!("cannot run hyperfine: {e}"))?;
    eprint!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        return Err(fail!(
            "hyperfine failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = std::fs::read_to_string(&json_path)
        .map_err(|e| fail!("hyperfine wrote no {}: {e}", json_path.display()))?;
    let report: Value =
        serde_json::from_str(&text).map_err(|e| fail!("hyperfine's JSON is unreadable: {e}"))?;
    let results = report
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| fail!("hyperfine's JSON has no results array"))?;
    if results.len() != COMMANDS.len() {
        return Err(fail!(
            "hyperfine reported {} commands, expected {}",
            results.len(),
            COMMANDS.len()
        ));
    }
    results
        .iter()
        .map(|result| {
            result
                .get("median")
                .and_then(Value::as_f64)
                .map(|seconds| seconds * 1e6)
                .ok_or_else(|| fail!("a hyperfine result has no median"))
        })
        .collect()
}

/// The fallback: spawn, wait, repeat; commands interleaved so that a
/// burst of background load hits all of them alike.
fn with_loop<'a>(
    args: &Args,
    binary: impl Fn(usize) -> &'a PathBuf,
) -> Result<Vec<f64>, BenchError> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(args.runs); COMMANDS.len()];
    for round in 0..args.warmup + args.runs {
        for (index, (_, name, argv)) in COMMANDS.iter().enumerate() {
            let started = Instant::now();
            let status = Command::new(binary(index))
                .args(*argv)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .map_err(|e| fail!("cannot run {name}: {e}"))?;
            let elapsed_us = started.elapsed().as_secs_f64() * 1e6;
            if !status.success() {
                return Err(fail!("{name} exited with {status}"));
            }
            if round >= args.warmup {
                samples[index].push(elapsed_us);
            }
        }
    }
    Ok(samples.iter_mut().map(|s| median(s)).collect())
}

/// hyperfine with --shell=none splits the command line itself; quote the
/// path in case it has spaces.
fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains([' ', '\'', '"']) {
        format!("'{}'", text.replace('\'', "'\\''"))
    } else {
        text
    }
}
