//! `lagerd`, the box daemon: parse flags, start logging, run.

mod clock;
mod config;
mod daemon;
mod http;
mod lockbox;
mod server;
mod signals;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: config::Args = argh::from_env();
    if args.version {
        println!("lagerd {}", common::VERSION);
        return ExitCode::SUCCESS;
    }
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
