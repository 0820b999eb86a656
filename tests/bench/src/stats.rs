//! Latency samples and their percentiles. Samples are kept whole (a few MB
//! at most), so percentiles are exact rather than bucketed.

use std::time::Duration;

/// Sorted latency samples in nanoseconds.
pub struct Latencies {
    sorted_ns: Vec<u64>,
}

impl Latencies {
    pub fn new(mut samples_ns: Vec<u64>) -> Latencies {
        samples_ns.sort_unstable();
        Latencies {
            sorted_ns: samples_ns,
        }
    }

    pub fn merge<I: IntoIterator<Item = Vec<u64>>>(parts: I) -> Latencies {
        Latencies::new(parts.into_iter().flatten().collect())
    }

    pub fn len(&self) -> usize {
        self.sorted_ns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted_ns.is_empty()
    }

    /// Nearest-rank percentile (`p` in 0..=100), in microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.sorted_ns.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.sorted_ns.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.sorted_ns.len()) - 1;
        self.sorted_ns[index] as f64 / 1000.0
    }

    pub fn max_us(&self) -> f64 {
        self.sorted_ns
            .last()
            .map_or(f64::NAN, |ns| *ns as f64 / 1000.0)
    }

    /// Count of samples strictly above `limit`.
    pub fn count_above(&self, limit: Duration) -> usize {
        let limit_ns = limit.as_nanos() as u64;
        self.sorted_ns.len() - self.sorted_ns.partition_point(|ns| *ns <= limit_ns)
    }

    /// `p50 p90 p99 max` as one human line.
    pub fn summary(&self) -> String {
        format!(
            "n={:<8} p50={:>9.1}µs p90={:>9.1}µs p99={:>9.1}µs max={:>10.1}µs",
            self.len(),
            self.percentile_us(50.0),
            self.percentile_us(90.0),
            self.percentile_us(99.0),
            self.max_us()
        )
    }

    /// Emits `<prefix>.{n,p50_us,p90_us,p99_us,max_us}` metric lines.
    pub fn emit(&self, prefix: &str) {
        crate::metric(&format!("{prefix}.n"), self.len());
        for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0)] {
            crate::metric(
                &format!("{prefix}.{name}_us"),
                format!("{:.1}", self.percentile_us(p)),
            );
        }
        crate::metric(&format!("{prefix}.max_us"), format!("{:.1}", self.max_us()));
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latencies::new((1..=100).rev().map(|us| us * 1000).collect());
        assert_eq!(l.percentile_us(50.0), 50.0);
        assert_eq!(l.percentile_us(99.0), 99.0);
        assert_eq!(l.percentile_us(100.0), 100.0);
        assert_eq!(l.percentile_us(0.0), 1.0);
        assert_eq!(l.max_us(), 100.0);
        assert_eq!(l.count_above(Duration::from_micros(90)), 10);
        assert!(Latencies::new(vec![]).percentile_us(50.0).is_nan());
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
