//! Version comparison between the CLI and a box (boxes.md §7) and the
//! version-skew rule of the CLI's one-time warning (diagnose.md §5).

use std::cmp::Ordering;

/// One dotted component: its leading decimal number (0 when it has none)
/// and the text after it, compared in that order.
fn component(part: &str) -> (u64, &str) {
    let digits = part.bytes().take_while(|b| b.is_ascii_digit()).count();
    // Saturate: an absurd component must not panic or wrap.
    let number = part[..digits].bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    (number, &part[digits..])
}

/// Compares two versions (boxes.md §7): split on `.`, compare component by
/// component, numerically first and then any non-numeric suffix as text
/// (`1.2.3-rc1` vs `1.2.3`: the suffix decides); a missing component is `0`.
/// A leading `v` is ignored on both sides.
pub fn compare(a: &str, b: &str) -> Ordering {
    let a = a.trim();
    let b = b.trim();
    let a = a.strip_prefix('v').unwrap_or(a);
    let b = b.strip_prefix('v').unwrap_or(b);
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (l, r) => {
                let ord = component(l.unwrap_or("0")).cmp(&component(r.unwrap_or("0")));
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// The `status` column of `lager boxes` for a box that answered `/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionStatus {
    /// Same version as the CLI.
    Current,
    /// The box is older than the CLI.
    NeedsUpdate,
    /// The box is newer than the CLI.
    Newer,
    /// The box reported no usable version (missing, empty or `unknown`).
    BadResponse,
}

impl VersionStatus {
    /// The exact text of the status column (locking.md B.11).
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Current => "current",
            VersionStatus::NeedsUpdate => "needs update",
            VersionStatus::Newer => "newer",
            VersionStatus::BadResponse => "bad response",
        }
    }
}

/// Maps the version a box reported to its status relative to `cli_version`.
pub fn status(box_version: Option<&str>, cli_version: &str) -> VersionStatus {
    let Some(box_version) = usable(box_version) else {
        return VersionStatus::BadResponse;
    };
    match compare(box_version, cli_version) {
        Ordering::Equal => VersionStatus::Current,
        Ordering::Less => VersionStatus::NeedsUpdate,
        Ordering::Greater => VersionStatus::Newer,
    }
}

/// `Some(v)` unless the reported version is missing, blank or `unknown`.
pub fn usable(version: Option<&str>) -> Option<&str> {
    version
        .map(str::trim)
        .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("unknown"))
}

/// `(major, minor)` of `X.Y[.Z]` per diagnose.md §5: strip a leading `v`,
/// cut at the first `-` and `+`, and require two or three integer parts.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let v = version.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let v = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = v.split('.').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let mut numbers = parts.iter().map(|p| p.parse::<u64>().ok());
    let major = numbers.next()??;
    let minor = numbers.next()??;
    if numbers.any(|n| n.is_none()) {
        return None;
    }
    Some((major, minor))
}

/// Whether the CLI should warn that the box is behind (diagnose.md §5): the
/// same major with a lower box minor, or a lower box major (lagerd's
/// deliberate difference from the Python system). Unparsable ⇒ no warning.
pub fn box_is_behind(cli_version: &str, box_version: &str) -> bool {
    match (major_minor(cli_version), major_minor(box_version)) {
        (Some((cli_major, cli_minor)), Some((box_major, box_minor))) => {
            cli_major > box_major || (cli_major == box_major && cli_minor > box_minor)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::{Equal, Greater, Less};

    #[test]
    fn compares_numerically_per_component() {
        assert_eq!(compare("0.1.0", "0.1.0"), Equal);
        assert_eq!(compare("0.10.0", "0.9.0"), Greater);
        assert_eq!(compare("0.2.0", "0.10.0"), Less);
        assert_eq!(compare("1.0", "0.99.99"), Greater);
        assert_eq!(compare("0.24.0", "0.24.1"), Less);
    }

    #[test]
    fn missing_components_are_zero() {
        assert_eq!(compare("1", "1.0.0"), Equal);
        assert_eq!(compare("1.0", "1.0.0.0"), Equal);
        assert_eq!(compare("1.0.1", "1.0"), Greater);
    }

    #[test]
    fn suffixes_compare_as_text_after_the_number() {
        assert_eq!(compare("1.2.3-rc1", "1.2.3-rc2"), Less);
        assert_eq!(compare("1.2.3-rc1", "1.2.3"), Greater);
        assert_eq!(compare("1.2.4-rc1", "1.2.3"), Greater);
        assert_eq!(compare("1.2.3-rc1", "1.2.3-rc1"), Equal);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        assert_eq!(compare("", ""), Equal);
        assert_eq!(compare("v1.2", "1.2"), Equal);
        assert_eq!(compare("abc", "0"), Greater);
        assert_eq!(compare("99999999999999999999999.0", "1"), Greater);
        assert_eq!(compare("..", "0"), Equal);
        assert_eq!(compare("é.ü", "é.ü"), Equal);
    }

    #[test]
    fn status_mapping() {
        assert_eq!(status(Some("0.1.0"), "0.1.0"), VersionStatus::Current);
        assert_eq!(status(Some("0.0.9"), "0.1.0"), VersionStatus::NeedsUpdate);
        assert_eq!(status(Some("0.2.0"), "0.1.0"), VersionStatus::Newer);
        assert_eq!(status(None, "0.1.0"), VersionStatus::BadResponse);
        assert_eq!(status(Some(""), "0.1.0"), VersionStatus::BadResponse);
        assert_eq!(status(Some("unknown"), "0.1.0"), VersionStatus::BadResponse);
        assert_eq!(status(Some("Unknown"), "0.1.0"), VersionStatus::BadResponse);
        assert_eq!(VersionStatus::NeedsUpdate.as_str(), "needs update");
        assert_eq!(VersionStatus::BadResponse.as_str(), "bad response");
    }

    #[test]
    fn skew_warns_only_when_the_box_is_behind() {
        assert!(box_is_behind("0.21.0", "0.20.3"));
        assert!(box_is_behind("v0.21.0", "0.20.3-rc1"));
        assert!(box_is_behind("1.0.0", "0.20.0"));
        assert!(!box_is_behind("0.20.0", "0.20.9"));
        assert!(!box_is_behind("0.20.0", "0.21.0"));
        assert!(!box_is_behind("0.20.0", "1.0.0"));
        assert!(!box_is_behind("0.21.0", "garbage"));
        assert!(!box_is_behind("0.21.0", "0"));
        assert!(!box_is_behind("0.21.0", "0.20.1.4"));
        assert!(box_is_behind("0.21.0", "0.20+build5"));
        assert!(!box_is_behind("0.21", "0.x"));
    }
}
