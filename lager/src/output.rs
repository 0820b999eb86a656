//! Terminal output: ANSI colour only when the stream is a TTY and `NO_COLOR`
//! is unset (locking.md B.11, for every message). Results go to stdout,
//! diagnostics to stderr.

use std::io::Write;
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Red,
    Green,
    Yellow,
    Cyan,
    Magenta,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Red => "31",
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Cyan => "36",
            Color::Magenta => "35",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

fn colour_allowed(fd: i32) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    // SAFETY: isatty only inspects the descriptor number.
    !no_color && unsafe { libc::isatty(fd) } == 1
}

/// Whether `stream` gets colour; decided once per process.
pub fn colored(stream: Stream) -> bool {
    static STDOUT: OnceLock<bool> = OnceLock::new();
    static STDERR: OnceLock<bool> = OnceLock::new();
    match stream {
        Stream::Stdout => *STDOUT.get_or_init(|| colour_allowed(libc::STDOUT_FILENO)),
        Stream::Stderr => *STDERR.get_or_init(|| colour_allowed(libc::STDERR_FILENO)),
    }
}

/// `text` in `color` when `stream` takes colour, else unchanged.
pub fn paint(stream: Stream, color: Color, text: &str) -> String {
    paint_if(colored(stream), color, text)
}

/// `text` in `color` when `on`; each line is wrapped so a pager keeps it.
pub fn paint_if(on: bool, color: Color, text: &str) -> String {
    paint_style(on, color.code(), text)
}

/// `text` in bold `color` when `on` (headlines: diagnose.md §4 step 7, §6).
pub fn paint_bold_if(on: bool, color: Color, text: &str) -> String {
    paint_style(on, &format!("1;{}", color.code()), text)
}

fn paint_style(on: bool, code: &str, text: &str) -> String {
    if !on || text.is_empty() {
        return text.to_string();
    }
    text.split('\n')
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("\x1b[{code}m{line}\x1b[0m")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints one line to stdout, in `color`.
pub fn say(color: Color, text: &str) {
    println!("{}", paint(Stream::Stdout, color, text));
}

/// Prints one line to stderr, in `color`.
pub fn tell(color: Color, text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", paint(Stream::Stderr, color, text));
}

/// A yellow diagnostic on stderr.
pub fn warn(text: &str) {
    tell(Color::Yellow, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_wraps_each_non_empty_line() {
        assert_eq!(paint_if(false, Color::Red, "a\nb"), "a\nb");
        assert_eq!(paint_if(true, Color::Green, "ok"), "\x1b[32mok\x1b[0m");
        assert_eq!(
            paint_if(true, Color::Red, "a\n\nb"),
            "\x1b[31ma\x1b[0m\n\n\x1b[31mb\x1b[0m"
        );
        assert_eq!(paint_if(true, Color::Red, ""), "");
        assert_eq!(paint_bold_if(true, Color::Red, "x"), "\x1b[1;31mx\x1b[0m");
        assert_eq!(paint_bold_if(false, Color::Red, "x"), "x");
    }
}
