//! Median wall time of whole commands: hyperfine (`--shell=none`, warm-up
//! runs, all commands in one invocation, so they see the same machine), or
//! when hyperfine is missing a built-in spawn/wait loop that interleaves
//! the commands and says so.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::stats::median;
use crate::{fail, BenchError, WorkDir};

/// One command to time: a name for the report and its argv.
pub struct Timed {
    pub name: String,
    pub argv: Vec<String>,
}

/// Per-command timing, in the order given.
pub struct Medians {
    /// `hyperfine` or `fork-exec-loop`.
    pub method: &'static str,
    pub median_us: Vec<f64>,
    /// Every timed run of every command, in microseconds.
    pub samples_us: Vec<Vec<f64>>,
}

pub fn hyperfine_version() -> Option<String> {
    let output = Command::new("hyperfine").arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Times `commands` (`warmup` unmeasured + `runs` measured each). `setup`
/// prepares the environment and cwd of hyperfine itself (which passes them
/// on) or, in the fallback, of each spawned command.
pub fn medians(
    commands: &[Timed],
    runs: usize,
    warmup: usize,
    setup: &dyn Fn(&mut Command),
) -> Result<Medians, BenchError> {
    medians_by(true, commands, runs, warmup, setup)
}

/// [`medians`], with `hyperfine: false` forcing the built-in loop (to
/// compare the two methods on one machine).
pub fn medians_by(
    hyperfine: bool,
    commands: &[Timed],
    runs: usize,
    warmup: usize,
    setup: &dyn Fn(&mut Command),
) -> Result<Medians, BenchError> {
    if runs == 0 {
        return Err(fail!("--runs must be above zero"));
    }
    match hyperfine_version().filter(|_| hyperfine) {
        Some(version) => with_hyperfine(&version, commands, runs, warmup, setup),
        None => {
            if hyperfine {
                eprintln!("timing: hyperfine not found (apt-get install hyperfine); using the built-in spawn/wait loop");
            }
            with_loop(commands, runs, warmup, setup)
        }
    }
}

fn with_hyperfine(
    version: &str,
    commands: &[Timed],
    runs: usize,
    warmup: usize,
    setup: &dyn Fn(&mut Command),
) -> Result<Medians, BenchError> {
    let work = WorkDir::new(None, "hyperfine")?;
    let json_path = work.path().join("hyperfine.json");
    let mut command = Command::new("hyperfine");
    setup(&mut command);
    command
        .args([
            "--shell=none",
            "--style",
            "basic",
            "--time-unit",
            "millisecond",
        ])
        .args(["--warmup", &warmup.to_string()])
        .args(["--runs", &runs.to_string()])
        .arg("--export-json")
        .arg(&json_path);
    for timed in commands {
        let line: Vec<String> = timed.argv.iter().map(|a| shell_quote(a)).collect();
        command
            .args(["--command-name", &timed.name])
            .arg(line.join(" "));
    }
    eprintln!("timing: {version} (--shell=none, {warmup} warm-up + {runs} runs each)");
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
        .filter(|r| r.len() == commands.len())
        .ok_or_else(|| fail!("hyperfine's JSON lacks one result per command"))?;
    let mut median_us = Vec::new();
    let mut samples_us = Vec::new();
    for result in results {
        median_us.push(
            result
                .get("median")
                .and_then(Value::as_f64)
                .ok_or_else(|| fail!("a hyperfine result has no median"))?
                * 1e6,
        );
        let times = result
            .get("times")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_f64)
                    .map(|s| s * 1e6)
                    .collect()
            })
            .unwrap_or_default();
        samples_us.push(times);
    }
    Ok(Medians {
        method: "hyperfine",
        median_us,
        samples_us,
    })
}

fn with_loop(
    commands: &[Timed],
    runs: usize,
    warmup: usize,
    setup: &dyn Fn(&mut Command),
) -> Result<Medians, BenchError> {
    let mut samples_us: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); commands.len()];
    for round in 0..warmup + runs {
        for (index, timed) in commands.iter().enumerate() {
            let mut command = Command::new(&timed.argv[0]);
            command.args(&timed.argv[1..]);
            setup(&mut command);
            let started = Instant::now();
            let status = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| fail!("cannot run {}: {e}", timed.name))?;
            let elapsed_us = started.elapsed().as_secs_f64() * 1e6;
            if !status.success() {
                return Err(fail!("{} exited with {status}", timed.name));
            }
            if round >= warmup {
                samples_us[index].push(elapsed_us);
            }
        }
    }
    let median_us = samples_us.iter().map(|s| median(&mut s.clone())).collect();
    Ok(Medians {
        method: "fork-exec-loop",
        median_us,
        samples_us,
    })
}

/// hyperfine with --shell=none splits the command line itself; quote
/// words with spaces or quotes.
fn shell_quote(word: &str) -> String {
    if word.is_empty() || word.contains([' ', '\'', '"', '\\']) {
        format!("'{}'", word.replace('\'', "'\\''"))
    } else {
        word.to_string()
    }
}

/// `path` as a string for an argv (lossy only for non-UTF-8 paths).
pub fn arg(path: &Path) -> String {
    path.display().to_string()
}
