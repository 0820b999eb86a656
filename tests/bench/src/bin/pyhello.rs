//! pyhello: wall time of `lager python hello.py --box bench`, from the
//! CLI's start to its exit, next to the interpreter's own start-up
//! measured in the same run (issue 4, target 1: at most 40 ms above
//! `python3 -c pass`).
//!
//! The box is a real lagerd on 127.0.0.1 (see `lager_bench::benchbox`), so
//! the time includes everything a user waits for: config, auto-lock
//! (a durable lock write), upload, spawn, the stream, the exit marker and
//! the release (another durable write). hyperfine times three commands in
//! one invocation: `python3 -c pass` (the baseline), `python3 -u hello.py`
//! (the same script run directly) and `lager python hello.py --box bench`.
//! All three use the same pinned interpreter.
//!
//! `--scan` adds a diagnosis: scripts that sleep 0, 10, … 90 ms, each run
//! directly and through `lager python`. A constant difference means a
//! fixed cost per run; a difference that rises and falls with the sleep
//! means the end of a run waits for a timer.

use std::path::PathBuf;

use argh::FromArgs;
use lager_bench::benchbox::{check_lager_python, python_version, resolve_python, BenchBox};
use lager_bench::timing::{arg, medians, Timed};
use lager_bench::{fail, main_with, metric, require_binary, BenchError, WorkDir};

/// Time `lager python hello.py` against a loopback lagerd, next to python.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary serving the box
    #[argh(option)]
    lagerd: PathBuf,
    /// the lager binary to time
    #[argh(option)]
    lager: PathBuf,
    /// the Python interpreter for the box and the baseline (default
    /// /usr/bin/python3, else python3 on PATH; never a wrapper script)
    #[argh(option)]
    python: Option<PathBuf>,
    /// parent of the scratch dir (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// timed runs per command (default 200)
    #[argh(option, default = "200")]
    runs: usize,
    /// unmeasured runs per command first (default 20)
    #[argh(option, default = "20")]
    warmup: usize,
    /// also run the sleep scan described in the tool's documentation
    #[argh(switch)]
    scan: bool,
}

const HELLO: &str = "print(\"hello\")\n";

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("pyhello", || run(args))
}

fn run(args: Args) -> Result<(), BenchError> {
    let lagerd = require_binary(&args.lagerd)?;
    let lager = require_binary(&args.lager)?;
    check_lager_python(&lager)?;
    let python = resolve_python(args.python.as_deref())?;
    let work = WorkDir::new(args.work_dir.as_deref(), "pyhello")?;
    let bench = BenchBox::start(&lagerd, &lager, &python, work.path())?;
    bench.write_script("hello.py", HELLO)?;
    eprintln!(
        "pyhello: lagerd on {}, interpreter {} ({})",
        bench.daemon().addr(),
        python.display(),
        python_version(&python)
    );

    // The timed command must work, or a fast failure would look good.
    let stdout = bench.lager_python_output("hello.py")?;
    if stdout != b"hello\n" {
        return Err(fail!(
            "`lager python hello.py` printed {:?}, expected \"hello\\n\"",
            String::from_utf8_lossy(&stdout)
        ));
    }

    let py = arg(&python);
    let commands = [
        Timed {
            name: "python3 -c pass".into(),
            argv: vec![py.clone(), "-c".into(), "pass".into()],
        },
        Timed {
            name: "python3 -u hello.py".into(),
            argv: vec![py.clone(), "-u".into(), "hello.py".into()],
        },
        Timed {
            name: "lager python hello.py --box bench".into(),
            argv: vec![
                arg(&lager),
                "python".into(),
                "hello.py".into(),
                "--box".into(),
                "bench".into(),
            ],
        },
    ];
    let timing = medians(&commands, args.runs, args.warmup, &|c| bench.isolate(c))?;
    let [pass, direct, lager_run] = [0, 1, 2].map(|i| timing.median_us[i]);
    eprintln!(
        "  python3 -c pass {:.1} ms, python3 -u hello.py {:.1} ms, lager python hello.py {:.1} ms",
        pass / 1e3,
        direct / 1e3,
        lager_run / 1e3
    );
    eprintln!(
        "  lager python − python3 -c pass = {:.1} ms; − python3 -u hello.py = {:.1} ms",
        (lager_run - pass) / 1e3,
        (lager_run - direct) / 1e3
    );
    let lager_samples = &timing.samples_us[2];
    if !lager_samples.is_empty() {
        let mut sorted = lager_samples.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)];
        eprintln!(
            "  lager python hello.py: min {:.1} ms, p10 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            sorted[0] / 1e3,
            at(0.1) / 1e3,
            at(0.9) / 1e3,
            sorted[sorted.len() - 1] / 1e3
        );
        metric(
            "py.hello.lager.max_us",
            format!("{:.1}", sorted[sorted.len() - 1]),
        );
    }
    if !bench.daemon().log_text().contains("finished with 0") {
        return Err(fail!(
            "lagerd's log shows no finished run; its log: {}",
            bench.daemon().log_tail()
        ));
    }
    metric("py.hello.method", timing.method);
    metric("py.hello.python_pass.median_us", format!("{pass:.1}"));
    metric("py.hello.python_hello.median_us", format!("{direct:.1}"));
    metric("py.hello.lager.median_us", format!("{lager_run:.1}"));

    if args.scan {
        scan(&bench, &lager, &py, args.runs.div_ceil(5).max(10))?;
    }
    Ok(())
}

/// The sleep scan: `lager python` minus direct python per sleep length.
fn scan(
    bench: &BenchBox,
    lager: &std::path::Path,
    py: &str,
    runs: usize,
) -> Result<(), BenchError> {
    eprintln!("pyhello: sleep scan, {runs} runs per command");
    eprintln!(
        "  {:>8} {:>10} {:>14} {:>10}",
        "sleep", "python3 -u", "lager python", "difference"
    );
    for sleep_ms in (0..100).step_by(10) {
        let name = format!("sleep{sleep_ms}.py");
        bench.write_script(
            &name,
            &format!("import time\ntime.sleep({sleep_ms} / 1000)\n"),
        )?;
        let commands = [
            Timed {
                name: format!("python3 -u {name}"),
                argv: vec![py.into(), "-u".into(), name.clone()],
            },
            Timed {
                name: format!("lager python {name}"),
                argv: vec![
                    arg(lager),
                    "python".into(),
                    name.clone(),
                    "--box".into(),
                    "bench".into(),
                ],
            },
        ];
        let timing = medians(&commands, runs, 3, &|c| bench.isolate(c))?;
        let (direct, via) = (timing.median_us[0], timing.median_us[1]);
        eprintln!(
            "  {:>5} ms {:>7.1} ms {:>11.1} ms {:>7.1} ms",
            sleep_ms,
            direct / 1e3,
            via / 1e3,
            (via - direct) / 1e3
        );
        metric(
            &format!("py.scan.sleep{sleep_ms}.diff_us"),
            format!("{:.1}", via - direct),
        );
    }
    Ok(())
}
