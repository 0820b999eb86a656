//! Wall-clock time for lock records: the `Clock` seam that lets tests move
//! time by hand, and the `YYYY-MM-DDTHH:MM:SSZ` timestamps of `lock.json`
//! (locking.md A.3). No chrono: a civil-from-days conversion is all we need.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, at full precision.
pub type Instant = f64;

pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    }
}

/// A clock that only moves when a test (or a fuzz target, which must be
/// deterministic) says so.
pub struct ManualClock(Mutex<Instant>);

impl ManualClock {
    pub fn at(rfc3339: &str) -> ManualClock {
        ManualClock(Mutex::new(
            parse_timestamp(rfc3339).expect("valid test time"),
        ))
    }

    pub fn advance(&self, secs: f64) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += secs;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Formats whole seconds as `YYYY-MM-DDTHH:MM:SSZ` (fractions are dropped, as
/// the spec stores whole seconds).
pub fn format_timestamp(t: Instant) -> String {
    let secs = t.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses a timestamp leniently (A.3): `YYYY-MM-DD[T ]HH:MM:SS`, optional
/// fraction, then `Z`, `±HH:MM`, `±HHMM` or nothing (taken as UTC).
/// `None` means unparseable, which the caller treats as "never expires".
pub fn parse_timestamp(text: &str) -> Option<Instant> {
    let s = text.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if s.len() < 19 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut fraction = 0.0;
    if let Some(digits) = rest.strip_prefix(b".") {
        let len = digits.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        let text = std::str::from_utf8(&digits[..len]).ok()?;
        fraction = format!("0.{text}").parse().ok()?;
        rest = &digits[len..];
    }
    let offset_secs = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let digits: Vec<u8> = tail.iter().copied().filter(|c| *c != b':').collect();
            if digits.len() != 4 || !digits.iter().all(u8::is_ascii_digit) || tail.len() > 5 {
                return None;
            }
            let hh = i64::from(digits[0] - b'0') * 10 + i64::from(digits[1] - b'0');
            let mm = i64::from(digits[2] - b'0') * 10 + i64::from(digits[3] - b'0');
            let secs = hh * 3600 + mm * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs as f64 + fraction)
}

// Howard Hinnant's civil calendar algorithms (public domain description).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_timestamp(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(951_782_400.9), "2000-02-29T00:00:00Z");
        assert_eq!(format_timestamp(1_774_011_600.0), "2026-03-20T13:00:00Z");
    }

    #[test]
    fn parse_round_trips_format() {
        for t in [0.0, 951_782_400.0, 1_774_011_600.0, 4_102_444_799.0] {
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
        }
    }

    #[test]
    fn parses_lenient_forms() {
        let base = parse_timestamp("2026-03-20T13:00:00Z").unwrap();
        assert_eq!(parse_timestamp("2026-03-20T13:00:00"), Some(base));
        assert_eq!(parse_timestamp("2026-03-20 13:00:00Z"), Some(base));
        assert_eq!(parse_timestamp("2026-03-20T13:00:00.5Z"), Some(base + 0.5));
        assert_eq!(
            parse_timestamp("2026-03-20T13:00:00.250000+00:00"),
            Some(base + 0.25)
        );
        assert_eq!(parse_timestamp("2026-03-20T15:00:00+02:00"), Some(base));
        assert_eq!(parse_timestamp("2026-03-20T12:30:00-0030"), Some(base));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "yesterday",
            "2026-03-20",
            "2026-13-20T13:00:00Z",
            "2026-03-20T13:00:00X",
            "2026-03-20T13:00:00.Z",
            "2026-03-20T13:00:00+2",
            "２０２６-03-20T13:00:00Z",
            "2026-03-20T25:00:00Z",
            "2026-03-20T13:00:00+02:00:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at("2026-03-20T13:00:00Z");
        let t0 = clock.now();
        clock.advance(1.5);
        assert_eq!(clock.now() - t0, 1.5);
    }
}
