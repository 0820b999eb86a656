//! One module per command noun; each turns typed arguments into requests
//! and output and returns the exit code.

pub mod boxes;
pub mod defaults;
pub mod deploy;
pub mod diagnose;
pub mod hello;
pub mod instrument;
pub mod model_csv;
pub mod nets;
pub mod python;
pub mod uart;
pub mod watch;
pub mod wheel;

use std::io::Write;
use std::process::ExitCode;

use crate::error::CliError;

/// Asks `question [y/N]` on stdout. Without a terminal on stdin nobody can
/// answer, so that is an error telling how to skip the prompt.
pub fn confirm(question: &str, retry_hint: &str) -> Result<bool, CliError> {
    // SAFETY: isatty only inspects the descriptor number.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return Err(CliError::NotConfirmed {
            retry_hint: retry_hint.to_string(),
        });
    }
    print!("{question} [y/N]: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if crate::readcap::read_line(&mut std::io::stdin().lock(), &mut answer, 4096).is_err() {
        return Ok(false);
    }
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

/// What a declined prompt prints and returns.
pub fn aborted() -> ExitCode {
    println!("Aborted: nothing changed.");
    ExitCode::from(1)
}

/// Prints a daemon's JSON body for `--json`, newline-terminated.
pub fn print_body(body: &str) {
    let body = body.trim_end();
    println!("{body}");
}
