//! Percentiles of one run, and median [min–max] and paired ratios across rounds.

/// Nearest-rank percentile of sorted values (`quantile` in 0..=1).
pub fn percentile(sorted: &[u64], quantile: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of no values");
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of the finite values (NaN if there are none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|value| value.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// A figure over rounds: its median and range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` when no value is finite (the figure was not measured).
    pub fn of(values: &[f64]) -> Option<Spread> {
        let finite: Vec<f64> = values.iter().copied().filter(|value| value.is_finite()).collect();
        if finite.is_empty() {
            return None;
        }
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Spread { median: median(&finite), min, max })
    }

    /// "median [min–max]", each value formatted by `format`.
    pub fn show(&self, format: impl Fn(f64) -> String) -> String {
        format!("{} [{}–{}]", format(self.median), format(self.min), format(self.max))
    }
}

/// Per-round ratios `a[i] / b[i]` of values measured in the same round: a drift of
/// the machine between rounds cancels out of each.
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a / b).collect()
}

/// The median of the paired ratios, or NaN.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(&paired_ratios(a, b))
}

pub fn micros(nanos: f64) -> String {
    format!("{:.0} µs", nanos / 1000.0)
}

pub fn ratio(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.2}×")
    } else {
        "–".into()
    }
}

pub fn thousands_per_second(per_second: f64) -> String {
    format!("{:.1}k/s", per_second / 1000.0)
}

pub fn megabytes_per_second(bytes_per_second: f64) -> String {
    format!("{:.0} MB/s", bytes_per_second / 1e6)
}

pub fn kibibytes(bytes: f64) -> String {
    format!("{:.2} KiB", bytes / 1024.0)
}

pub fn seconds(value: f64) -> String {
    format!("{value:.2} s")
}

pub fn mebibytes(bytes: f64) -> String {
    format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), 50);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&values, 0.999), 100);
        assert_eq!(percentile(&values, 0.0), 1);
    }

    #[test]
    fn median_ignores_missing_values() {
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[f64::NAN]).is_nan());
    }

    #[test]
    fn spread_and_paired_ratio() {
        let spread = Spread::of(&[2.0, 6.0, 4.0]).unwrap();
        assert_eq!((spread.median, spread.min, spread.max), (4.0, 2.0, 6.0));
        assert!(Spread::of(&[f64::NAN]).is_none());
        // Round 2 ran twice as slow for both: the paired ratio does not see it.
        assert_eq!(paired_ratio(&[1.0, 2.0, 1.1], &[1.0, 2.0, 1.0]), 1.0);
    }
}
