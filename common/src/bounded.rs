//! Numbers that enter from outside (query strings, JSON bodies, flags,
//! environment variables, `lagerd.conf`) become durations and counts only
//! through [`Range`], after a range check. The unchecked conversions panic:
//! `Duration::from_secs_f64` on 1e20, NaN, infinity or a negative number,
//! and `Instant + Duration` when the sum overflows (issue 12: one
//! `GET /supply/monitor?interval=1e20` aborted lagerd).

use std::time::Duration;

/// The values an input may take, and the unit its messages name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub min: f64,
    pub max: f64,
    /// The unit as a word for messages: `seconds`, `milliseconds`, `jobs`.
    pub unit: &'static str,
}

/// A value outside its [`Range`] (NaN and infinities included). `Display`
/// says what would be accepted; the caller names the input and its text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutOfRange(pub Range);

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Range { min, max, unit } = self.0;
        write!(f, "use a number of {unit} from {min} to {max}")
    }
}

impl std::error::Error for OutOfRange {}

impl Range {
    pub const fn new(min: f64, max: f64, unit: &'static str) -> Range {
        Range { min, max, unit }
    }

    /// `value`, if it is finite and within the range.
    pub fn check(self, value: f64) -> Result<f64, OutOfRange> {
        if value.is_finite() && (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(OutOfRange(self))
        }
    }

    /// `text` (trimmed) as a number within the range.
    pub fn parse(self, text: &str) -> Result<f64, OutOfRange> {
        let value = text.trim().parse::<f64>().map_err(|_| OutOfRange(self))?;
        self.check(value)
    }

    /// `secs` seconds, checked.
    pub fn secs(self, secs: f64) -> Result<Duration, OutOfRange> {
        self.check(secs).map(Duration::from_secs_f64)
    }

    /// `millis` milliseconds, checked.
    pub fn millis(self, millis: f64) -> Result<Duration, OutOfRange> {
        self.check(millis)
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }

    /// A whole count (jobs, connections), checked.
    pub fn count(self, value: f64) -> Result<u64, OutOfRange> {
        match self.check(value) {
            Ok(v) if v.fract() == 0.0 => Ok(v as u64),
            _ => Err(OutOfRange(self)),
        }
    }

    /// For inputs whose spec says to clamp rather than refuse (an
    /// environment variable, where garbage means the default): `value`
    /// pulled into the range; NaN becomes the minimum.
    pub fn clamp(self, value: f64) -> f64 {
        if value.is_nan() {
            self.min
        } else {
            value.clamp(self.min, self.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Range = Range::new(0.1, 3600.0, "seconds");

    #[test]
    fn huge_tiny_and_non_finite_values_are_refused_not_converted() {
        for bad in [
            1e20,
            -1.0,
            0.0,
            3600.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert_eq!(INTERVAL.secs(bad), Err(OutOfRange(INTERVAL)), "{bad}");
        }
        assert_eq!(INTERVAL.secs(0.25), Ok(Duration::from_millis(250)));
        assert_eq!(INTERVAL.secs(3600.0), Ok(Duration::from_secs(3600)));
        for bad in ["1e20", "nan", "inf", "-inf", "", "abc", "1e400"] {
            assert!(INTERVAL.parse(bad).is_err(), "{bad}");
        }
        assert_eq!(INTERVAL.parse(" 2 "), Ok(2.0));
        assert_eq!(
            OutOfRange(INTERVAL).to_string(),
            "use a number of seconds from 0.1 to 3600"
        );
    }

    #[test]
    fn millis_counts_and_clamps() {
        let ms = Range::new(1.0, 600_000.0, "milliseconds");
        assert_eq!(ms.millis(1500.0), Ok(Duration::from_millis(1500)));
        assert!(ms.millis(u64::MAX as f64).is_err());
        let jobs = Range::new(1.0, 1024.0, "jobs");
        assert_eq!(jobs.count(8.0), Ok(8));
        assert!(jobs.count(2.5).is_err());
        assert!(jobs.count(0.0).is_err());
        let wait = Range::new(0.0, 604_800.0, "seconds");
        assert_eq!(wait.clamp(1e300), 604_800.0);
        assert_eq!(wait.clamp(f64::NAN), 0.0);
        assert_eq!(wait.clamp(-5.0), 0.0);
    }
}
