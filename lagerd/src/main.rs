//! `lagerd`, the box daemon: parse flags, start logging, run.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::process::ExitCode;

use lagerd::{config, daemon, scriptenv, sim};

fn main() -> ExitCode {
    // `lagerd sim-usbtmc <functionfs-dir>`: the simulated 2281S as a USB
    // gadget, for the USB path's tests (a test-support mode, so not in
    // --help; argh has no hidden subcommands).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "sim-usbtmc") {
        return match sim::usbtmc::run(&argv[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lagerd sim-usbtmc: {e}");
                ExitCode::from(1)
            }
        };
    }
    // `lagerd python-path [--state-dir DIR]`: the PYTHONPATH that gives a
    // box shell the `lager` package and the installed wheels (scripts.md §1).
    if argv.get(1).is_some_and(|a| a == "python-path") {
        let state_dir = match &argv[2..] {
            [] => config::default_state_dir(),
            [flag, dir] if flag == "--state-dir" => dir.into(),
            _ => {
                eprintln!("usage: lagerd python-path [--state-dir DIR]");
                return ExitCode::from(2);
            }
        };
        println!("{}", scriptenv::shell_python_path(&state_dir));
        return ExitCode::SUCCESS;
    }
    let args: config::Args = argh::from_env();
    if args.version {
        println!("lagerd {}", common::VERSION);
        return ExitCode::SUCCESS;
    }
    // Release builds abort on panic; debug builds (the tests) must too, or a
    // panic on bad input would hide in a dead worker thread.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    let level = if args.verbose { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let outcome = config::Config::from_args(args).and_then(daemon::run);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lagerd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
