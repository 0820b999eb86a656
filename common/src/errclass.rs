//! What an instrument error message means: the `error_class` that
//! `/diagnose/visa` reports (diagnose.md §3 step 4) and the errno → user
//! message table the CLI prints for box and instrument errors (§6).
//!
//! Both sides must agree on these: the daemon classifies its probe errors,
//! the CLI classifies the same texts coming back from `/invoke`-level
//! routes. Pure functions over strings; no regex crate, because the one
//! pattern both rules need (`\[Errno\s+(\d+)\]`) is a dozen lines by hand.

/// The class of a failed `*IDN?` probe (diagnose.md §3 step 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Someone else holds the device (EBUSY, lock contention).
    Busy,
    /// The device is gone or cannot be opened (ENODEV, ENOENT).
    Nodev,
    /// The device did not answer in time (ETIMEDOUT).
    Timeout,
    Other,
}

impl ErrorClass {
    /// The wire spelling: `busy`, `nodev`, `timeout`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Busy => "busy",
            ErrorClass::Nodev => "nodev",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Other => "other",
        }
    }

    /// The inverse of [`ErrorClass::as_str`]; `None` for anything else.
    pub fn parse(text: &str) -> Option<ErrorClass> {
        match text {
            "busy" => Some(ErrorClass::Busy),
            "nodev" => Some(ErrorClass::Nodev),
            "timeout" => Some(ErrorClass::Timeout),
            "other" => Some(ErrorClass::Other),
            _ => None,
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The number of the first `[Errno N]` in `text` (case-insensitive, one or
/// more whitespace characters between `Errno` and the digits, as the
/// spec's `\[Errno\s+(\d+)\]`). A number too large for `u32` is no errno.
pub fn explicit_errno(text: &str) -> Option<u32> {
    let lower = text.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(start) = rest.find("[errno") {
        let after = &rest[start + "[errno".len()..];
        if let Some(number) = bracketed_number(after) {
            return Some(number);
        }
        rest = after;
    }
    None
}

/// `\s+(\d+)\]` at the start of `text`, as a number.
fn bracketed_number(text: &str) -> Option<u32> {
    let digits_at = text.len() - text.trim_start().len();
    if digits_at == 0 {
        return None;
    }
    let tail = &text[digits_at..];
    let digits_len = tail.bytes().take_while(u8::is_ascii_digit).count();
    if digits_len == 0 || !tail[digits_len..].starts_with(']') {
        return None;
    }
    tail[..digits_len].parse().ok()
}

/// Whether lowercased `haystack` contains `needle`. A needle ending in a
/// digit (`errno 2`) only matches where no further digit follows, so
/// `errno 2` never matches `errno 22` (diagnose.md §3: the Python system's
/// plain substring test did).
fn contains_phrase(haystack: &str, needle: &str) -> bool {
    if !needle.ends_with(|c: char| c.is_ascii_digit()) {
        return haystack.contains(needle);
    }
    haystack.match_indices(needle).any(|(at, _)| {
        !haystack[at + needle.len()..]
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit())
    })
}

/// The `error_class` rows in the spec's order: class, errnos, phrases.
const CLASS_RULES: [(ErrorClass, &[u32], &[&str]); 3] = [
    (ErrorClass::Busy, &[16], &["resource busy", "errno 16"]),
    (
        ErrorClass::Nodev,
        &[19, 2],
        &[
            "no such device",
            "errno 19",
            "errno 2",
            "entity not found",
            // lagerd addition (diagnose.md §3): pyvisa-py's generic
            // "No device found." is documented as nodev.
            "no device found",
        ],
    ),
    (
        ErrorClass::Timeout,
        &[110],
        &["timed out", "errno 110", "timeout"],
    ),
];

/// The `error_class` of a probe error message (diagnose.md §3 step 4).
///
/// An explicit `[Errno N]` whose number belongs to a class decides first,
/// by exact number; otherwise the phrases are tried class by class in the
/// spec's order (busy, nodev, timeout) on the lowercased message.
pub fn classify(message: &str) -> ErrorClass {
    if let Some(errno) = explicit_errno(message) {
        for (class, errnos, _) in CLASS_RULES {
            if errnos.contains(&errno) {
                return class;
            }
        }
    }
    let lower = message.to_lowercase();
    for (class, _, phrases) in CLASS_RULES {
        if phrases.iter().any(|p| contains_phrase(&lower, p)) {
            return class;
        }
    }
    ErrorClass::Other
}

/// One row of the errno → user message table (diagnose.md §6).
#[derive(Debug, PartialEq, Eq)]
pub struct ErrnoMessage {
    pub errno: u32,
    /// The symbolic name, e.g. `EBUSY`.
    pub name: &'static str,
    /// Lowercase substrings tried when the text has no mapped `[Errno N]`.
    pub substrings: &'static [&'static str],
    pub headline: &'static str,
    /// Next steps; `<net>` and `<box>` are filled in by [`render`].
    pub actions: &'static [&'static str],
}

/// The table of diagnose.md §6, in match order. The EACCES row is lagerd's
/// addition; its substrings are only errno spellings, because a bare
/// "permission denied" also comes from files and HTTP and would blame udev
/// for them.
pub const ERRNO_MESSAGES: [ErrnoMessage; 4] = [
    ErrnoMessage {
        errno: 16,
        name: "EBUSY",
        substrings: &["resource busy", "errno 16"],
        headline: "USB device busy — another process holds the libusb interface.",
        actions: &[
            "Run: `lager diagnose <net> --box <box>` to identify the conflicting process.",
            "If the conflict persists, `lager ssh <box>` then `sudo lsof /dev/bus/usb/...` to inspect.",
        ],
    },
    ErrnoMessage {
        errno: 19,
        name: "ENODEV",
        substrings: &["no such device", "errno 19", "enodev", "cannot find"],
        headline: "Instrument disappeared from USB (re-enumeration).",
        actions: &[
            "The hardware service should auto-recover on the next call (0.20.0+).",
            "If it does not, `lager ssh <box>` then `sudo docker restart lager`.",
        ],
    },
    ErrnoMessage {
        errno: 110,
        name: "ETIMEDOUT",
        substrings: &[
            "timed out",
            "errno 110",
            "etimedout",
            "operation timed out",
        ],
        headline: "Instrument did not respond to SCPI within the timeout — firmware may be wedged.",
        actions: &[
            "A mains-side power-cycle of the instrument is usually required (software cannot recover this).",
            "Use `lager diagnose <net> --box <box>` to confirm before power-cycling.",
        ],
    },
    ErrnoMessage {
        errno: 13,
        name: "EACCES",
        substrings: &["errno 13", "eacces"],
        headline: "USB permission denied — udev rules not installed.",
        actions: &["lager box update --box <box>"],
    },
];

/// The row for an error text (diagnose.md §6): an explicit `[Errno N]`
/// picks the row by number; an unmapped number falls through to the
/// substrings (first matching row wins, on the lowercased text); `None`
/// means show the generic error.
pub fn errno_message(text: &str) -> Option<&'static ErrnoMessage> {
    if let Some(errno) = explicit_errno(text) {
        if let Some(row) = ERRNO_MESSAGES.iter().find(|row| row.errno == errno) {
            return Some(row);
        }
    }
    let lower = text.to_lowercase();
    ERRNO_MESSAGES
        .iter()
        .find(|row| row.substrings.iter().any(|s| contains_phrase(&lower, s)))
}

/// The hint printed when the raw error is not shown.
pub const DEBUG_HINT: &str =
    "  Run with --debug (or LAGER_DEBUG=1) for the full technical details.";

/// The block of diagnose.md §6, without colour and without a final newline:
///
/// ```text
/// Error: <headline>
///
///   Try:
///     → <action>
///   Run with --debug (or LAGER_DEBUG=1) for the full technical details.
/// ```
///
/// With `debug`, the hint is replaced by a blank line, `  --- raw error ---`
/// and the raw text's lines indented by two spaces. `net` and `box_name`
/// fill the actions' `<net>` and `<box>`; when unknown the placeholders stay.
pub fn render(
    row: &ErrnoMessage,
    raw: &str,
    net: Option<&str>,
    box_name: Option<&str>,
    debug: bool,
) -> String {
    let mut lines = vec![format!("Error: {}", row.headline), String::new()];
    lines.push("  Try:".to_string());
    for action in row.actions {
        let mut action = action.to_string();
        if let Some(net) = net {
            action = action.replace("<net>", net);
        }
        if let Some(box_name) = box_name {
            action = action.replace("<box>", box_name);
        }
        lines.push(format!("    → {action}"));
    }
    if debug {
        lines.push(String::new());
        lines.push("  --- raw error ---".to_string());
        lines.extend(raw.lines().map(|line| format!("  {line}")));
    } else {
        lines.push(DEBUG_HINT.to_string());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_errno_forms() {
        let cases: &[(&str, Option<u32>)] = &[
            ("[Errno 16] Resource busy", Some(16)),
            ("USBError: [errno 19] No such device", Some(19)),
            ("[ERRNO\t110] Operation timed out", Some(110)),
            ("[Errno   2] Entity not found", Some(2)),
            ("[Errno 22] Invalid argument", Some(22)),
            ("[Errno16] no space", None),
            ("[Errno 16 ] trailing space", None),
            ("[Errno ] none", None),
            ("Errno 16 without brackets", None),
            ("[Errno x] then [Errno 5] Input/output error", Some(5)),
            ("[Errno 99999999999] too big", None),
            ("", None),
            ("[errno", None),
        ];
        for (text, want) in cases {
            assert_eq!(explicit_errno(text), *want, "{text:?}");
        }
    }

    #[test]
    fn error_class_rules() {
        use ErrorClass::*;
        let cases: &[(&str, ErrorClass)] = &[
            ("[Errno 16] Resource busy", Busy),
            ("resource busy", Busy),
            ("RESOURCE BUSY while claiming", Busy),
            ("errno 16", Busy),
            ("[Errno 19] No such device", Nodev),
            ("[Errno 2] Entity not found", Nodev),
            ("No device found.", Nodev),
            ("no such device (it is gone)", Nodev),
            ("Entity not found", Nodev),
            ("[Errno 110] Operation timed out", Timeout),
            ("VI_ERROR_TMO (-1073807339): Timeout expired", Timeout),
            ("read timed out", Timeout),
            ("errno 110", Timeout),
            // Exact numbers: [Errno 22]/[Errno 28] are not ENOENT.
            ("[Errno 22] Invalid argument", Other),
            ("[Errno 28] No space left on device", Other),
            ("errno 22", Other),
            ("errno 160", Other),
            ("[Errno 5] Input/output error", Other),
            ("VI_ERROR_RSRC_NFOUND: resource not found", Other),
            ("", Other),
            // The number decides before the phrases.
            ("[Errno 19] device was busy, then timed out", Nodev),
            ("[Errno 110] resource busy", Timeout),
            // An unmapped number falls back to the phrases.
            ("[Errno 5] resource busy", Busy),
            // Phrases in the spec's order: busy before nodev before timeout.
            ("resource busy; no such device", Busy),
            ("no such device after timeout", Nodev),
        ];
        for (text, want) in cases {
            assert_eq!(classify(text), *want, "{text:?}");
        }
    }

    #[test]
    fn error_class_wire_names_round_trip() {
        for class in [
            ErrorClass::Busy,
            ErrorClass::Nodev,
            ErrorClass::Timeout,
            ErrorClass::Other,
        ] {
            assert_eq!(ErrorClass::parse(class.as_str()), Some(class));
            assert_eq!(class.to_string(), class.as_str());
        }
        assert_eq!(ErrorClass::parse("BUSY"), None);
    }

    fn row_name(text: &str) -> Option<&'static str> {
        errno_message(text).map(|row| row.name)
    }

    #[test]
    fn errno_table_rows() {
        let cases: &[(&str, Option<&str>)] = &[
            ("[Errno 16] Resource busy", Some("EBUSY")),
            ("USBError: resource busy", Some("EBUSY")),
            ("OSError errno 16", Some("EBUSY")),
            ("[Errno 19] No such device", Some("ENODEV")),
            ("no such device", Some("ENODEV")),
            ("ENODEV from libusb", Some("ENODEV")),
            ("Cannot find the instrument", Some("ENODEV")),
            ("errno 19", Some("ENODEV")),
            ("[Errno 110] Operation timed out", Some("ETIMEDOUT")),
            ("read timed out", Some("ETIMEDOUT")),
            ("ETIMEDOUT", Some("ETIMEDOUT")),
            ("errno 110", Some("ETIMEDOUT")),
            ("[Errno 13] Permission denied", Some("EACCES")),
            ("LIBUSB: EACCES", Some("EACCES")),
            ("errno 13", Some("EACCES")),
            // Plain "permission denied" is too broad to blame udev for.
            ("Permission denied: /tmp/out.csv", None),
            // The explicit number wins over substrings of other rows.
            ("[Errno 19] resource busy", Some("ENODEV")),
            ("[Errno 16] timed out", Some("EBUSY")),
            // Unmapped numbers fall through to the substrings, then to none.
            ("[Errno 2] No such device", Some("ENODEV")),
            ("[Errno 5] timed out", Some("ETIMEDOUT")),
            ("[Errno 2] Entity not found", None),
            ("[Errno 5] Input/output error", None),
            ("[Errno 160] weird", None),
            ("Voltage 120V exceeds the limit", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(row_name(text), *want, "{text:?}");
        }
    }

    #[test]
    fn every_row_is_reachable_by_its_number() {
        for row in &ERRNO_MESSAGES {
            let text = format!("[Errno {}] something", row.errno);
            assert_eq!(errno_message(&text), Some(row));
            for substring in row.substrings {
                assert_eq!(
                    errno_message(&substring.to_uppercase()).map(|r| r.errno),
                    Some(row.errno),
                    "{substring}"
                );
            }
        }
    }

    #[test]
    fn render_fills_placeholders_and_hints_at_debug() {
        let row = errno_message("[Errno 16] Resource busy").expect("row");
        assert_eq!(
            render(row, "[Errno 16] Resource busy", Some("bat1"), Some("bench-3"), false),
            "Error: USB device busy — another process holds the libusb interface.\n\
             \n  Try:\n\
             \x20   → Run: `lager diagnose bat1 --box bench-3` to identify the conflicting process.\n\
             \x20   → If the conflict persists, `lager ssh bench-3` then `sudo lsof /dev/bus/usb/...` to inspect.\n\
             \x20 Run with --debug (or LAGER_DEBUG=1) for the full technical details."
        );
    }

    #[test]
    fn render_with_debug_shows_raw_lines() {
        let row = errno_message("timed out").expect("row");
        let text = render(row, "line one\nline two", None, Some("b"), true);
        assert_eq!(
            text,
            "Error: Instrument did not respond to SCPI within the timeout — firmware may be wedged.\n\
             \n  Try:\n\
             \x20   → A mains-side power-cycle of the instrument is usually required (software cannot recover this).\n\
             \x20   → Use `lager diagnose <net> --box b` to confirm before power-cycling.\n\
             \n  --- raw error ---\n  line one\n  line two"
        );
        let row = errno_message("[Errno 13]").expect("row");
        assert_eq!(
            render(row, "x", None, Some("b"), false),
            format!("Error: USB permission denied — udev rules not installed.\n\n  Try:\n    → lager box update --box b\n{DEBUG_HINT}")
        );
    }
}
