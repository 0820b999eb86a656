//! Box and instrument errors as the user should read them: the errno →
//! message table of diagnose.md §6 (`common::errclass`) applied to an error
//! text from the box, with colour and the `--debug`/`LAGER_DEBUG` switch.
//!
//! Used by the last-resort error path in `main.rs` for
//! [`CliError::Instrument`], which `lager supply`/`battery` return for a
//! failed box command (instruments.md §8). `lager diagnose` prints raw
//! fields instead and does not come through here.

use common::errclass::{errno_message, render};

use crate::error::CliError;
use crate::output::{self, Color, Stream};

/// `LAGER_DEBUG` set to any non-empty value, or `--debug` anywhere in argv
/// (diagnose.md §6).
pub fn debug_requested() -> bool {
    debug_from(
        std::env::var_os("LAGER_DEBUG").is_some_and(|v| !v.is_empty()),
        std::env::args_os().skip(1).any(|a| a == "--debug"),
    )
}

fn debug_from(env_set: bool, flag_given: bool) -> bool {
    env_set || flag_given
}

/// The §6 block for `raw` when a table row matches it, headline in bold red
/// when `color`; `None` means print the generic error instead.
pub fn render_box_error(
    raw: &str,
    net: Option<&str>,
    box_name: Option<&str>,
    debug: bool,
    color: bool,
) -> Option<String> {
    let row = errno_message(raw)?;
    let block = render(row, raw, net, box_name, debug);
    let (headline, rest) = block.split_once('\n').unwrap_or((&block, ""));
    Some(format!(
        "{}\n{rest}",
        output::paint_bold_if(color, Color::Red, headline)
    ))
}

/// What the last-resort handler prints for `err` instead of its one red
/// line, if anything: the mapped block of an instrument error.
pub fn mapped(err: &CliError) -> Option<String> {
    match err {
        CliError::Instrument {
            box_name,
            net,
            error,
        } => render_box_error(
            error,
            net.as_deref(),
            Some(box_name),
            debug_requested(),
            output::colored(Stream::Stderr),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_errors_get_the_block() {
        let text = render_box_error(
            "[Errno 19] No such device",
            Some("supply1"),
            Some("b"),
            false,
            true,
        )
        .expect("mapped");
        assert!(
            text.starts_with(
                "\x1b[1;31mError: Instrument disappeared from USB (re-enumeration).\x1b[0m\n\n  Try:\n"
            ),
            "{text}"
        );
        assert!(text
            .contains("    → If it does not, `lager ssh b` then `sudo docker restart lager`.\n"));
        assert!(text.ends_with(common::errclass::DEBUG_HINT), "{text}");
        let text =
            render_box_error("resource busy", Some("n"), Some("b"), true, false).expect("mapped");
        assert!(
            text.ends_with("\n\n  --- raw error ---\n  resource busy"),
            "{text}"
        );
        assert_eq!(
            render_box_error("Voltage too high", None, Some("b"), false, false),
            None
        );
    }

    #[test]
    fn only_instrument_errors_are_mapped() {
        // NoHome's text says "cannot find", an ENODEV substring: it must
        // not be dressed up as a USB problem.
        assert_eq!(mapped(&CliError::NoHome), None);
        let err = CliError::Instrument {
            box_name: "b".into(),
            net: Some("bat1".into()),
            error: "[Errno 110] Operation timed out".into(),
        };
        assert!(mapped(&err)
            .expect("mapped")
            .contains("Error: Instrument did not respond to SCPI within the timeout"));
        assert_eq!(err.to_string(), "Error: [Errno 110] Operation timed out");
    }

    #[test]
    fn debug_switches() {
        assert!(!debug_from(false, false));
        assert!(debug_from(true, false));
        assert!(debug_from(false, true));
    }
}
