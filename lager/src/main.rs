//! `lager`: parse arguments, start logging, run, turn the result into an
//! exit code (0 ok, 1 failure, 2 usage error).

#![deny(clippy::undocumented_unsafe_blocks)]

use std::process::ExitCode;

use lager::args::{self, EarlyExit};
use lager::output::{self, Color};

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let argv: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(argv) => argv,
        Err(bad) => {
            eprintln!(
                "Error: argument {} is not valid UTF-8",
                bad.to_string_lossy()
            );
            return ExitCode::from(2);
        }
    };
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let invocation = match args::parse(&argv) {
        Ok(invocation) => invocation,
        Err(EarlyExit::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(EarlyExit::Usage(text)) => {
            eprintln!("{text}\nRun lager --help for more information.");
            return ExitCode::from(2);
        }
    };
    init_logging(invocation.verbose);
    lager::autolock::install_panic_release();
    let result = lager::run(invocation.command);
    // Spec B.6: the process-wide lock guard releases on every way out.
    lager::autolock::release();
    match result {
        Ok(code) => code,
        Err(err) => {
            // diagnose.md §6: instrument errors the errno table knows get
            // its block; everything else is one red line.
            match lager::errmap::mapped(&err) {
                Some(block) => eprintln!("{block}"),
                None => output::tell(Color::Red, &err.to_string()),
            }
            ExitCode::from(err.exit_code())
        }
    }
}

/// `lager boxes | head -1`: a reader that went away makes `println!`
/// panic; end quietly instead, as any Unix filter does (the lock guard's
/// hook, installed after this one, still releases first). SIGPIPE stays
/// ignored, so `lager python` can stop its job on EPIPE itself.
fn quiet_on_closed_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        previous(info);
    }));
}

/// `warn` by default; each `-v` raises it; `RUST_LOG` overrides both.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.init();
}
