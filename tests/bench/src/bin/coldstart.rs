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

use std::path::PathBuf;
use std::process::{Command, Stdio};

use argh::FromArgs;
use lager_bench::timing::{arg, medians_by, Timed};
use lager_bench::{fail, main_with, metric, require_binary, BenchError};

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
    let hello = require_binary(&args.hello)?;
    let lager = require_binary(&args.lager)?;
    let commands: Vec<Timed> = COMMANDS
        .iter()
        .enumerate()
        .map(|(index, (_, name, rest))| {
            let binary = if index == 0 { &hello } else { &lager };
            let mut argv = vec![arg(binary)];
            argv.extend(rest.iter().map(|a| a.to_string()));
            Timed {
                name: name.to_string(),
                argv,
            }
        })
        .collect();
    // Each command must succeed once before it is timed: a failing command
    // exits early and would look fast.
    for timed in &commands {
        let status = Command::new(&timed.argv[0])
            .args(&timed.argv[1..])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| fail!("cannot run {}: {e}", timed.name))?;
        if !status.success() {
            return Err(fail!(
                "{} exited with {status}; fix that before timing it",
                timed.name
            ));
        }
    }
    let timing = medians_by(
        !args.no_hyperfine,
        &commands,
        args.runs,
        args.warmup,
        &|_| {},
    )?;
    metric("cold.method", timing.method);
    for ((key, name, _), median_us) in COMMANDS.iter().zip(&timing.median_us) {
        eprintln!("  {name:<20} median {median_us:>8.1}µs");
        metric(&format!("{key}.median_us"), format!("{median_us:.1}"));
    }
    Ok(())
}
