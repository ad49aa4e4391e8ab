//! Latency statistics: an HDR histogram in nanoseconds, its percentiles in
//! microseconds, and a percentile curve (for plots). Used by run summaries
//! and the benchmark.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest value recorded (60 s); anything above is clamped to it.
const MAX_NS: u64 = 60_000_000_000;

/// Percentiles of one set of latencies, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// One point of a percentile curve: percentile (0–100) and value in µs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CurvePoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at that percentile, in µs.
    pub us: f64,
}

/// Latencies collected in nanoseconds (3 significant digits).
pub struct Hist {
    histogram: Histogram<u64>,
}

impl Hist {
    /// An empty histogram covering 1 ns to 60 s.
    pub fn new() -> Self {
        // Only invalid bounds make this fail, and these are constant.
        let histogram = Histogram::new_with_bounds(1, MAX_NS, 3).expect("1 ns ..= 60 s at 3 digits is valid");
        Self { histogram }
    }

    /// Adds one sample in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        self.histogram.saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Adds one sample.
    pub fn record(&mut self, duration: Duration) {
        self.record_ns(u64::try_from(duration.as_nanos()).unwrap_or(MAX_NS));
    }

    /// Adds every sample.
    pub fn record_all(&mut self, samples: impl IntoIterator<Item = u64>) {
        samples.into_iter().for_each(|ns| self.record_ns(ns));
    }

    /// The percentiles so far (all zero when empty).
    pub fn latency(&self) -> Latency {
        let h = &self.histogram;
        if h.is_empty() {
            return Latency::default();
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1000.0,
            mean_us: h.mean() / 1000.0,
        }
    }

    /// Values at percentiles spaced evenly on a log scale of 1/(1-p), from
    /// the median to 99.99 %, plus the low end and the maximum.
    pub fn curve(&self) -> Vec<CurvePoint> {
        if self.histogram.is_empty() {
            return Vec::new();
        }
        let mut quantiles = vec![0.0, 0.1, 0.25];
        // 1 - 10^(-x) for x from log10(2) (p50) to 4 (p99.99) in 48 steps.
        let (from, to, steps) = (2f64.log10(), 4.0, 48);
        quantiles.extend((0..=steps).map(|i| 1.0 - 10f64.powf(-(from + (to - from) * i as f64 / steps as f64))));
        quantiles.push(1.0);
        quantiles
            .into_iter()
            .map(|q| CurvePoint { percentile: q * 100.0, us: self.histogram.value_at_quantile(q) as f64 / 1000.0 })
            .collect()
    }
}

/// Sub-buckets per power of two in [`CompactHist`] (values within ±6 %).
const COMPACT_SUB: u32 = 8;
/// Powers of two of nanoseconds covered (2^37 ns ≈ 137 s; above is clamped).
const COMPACT_OCTAVES: u32 = 37;

/// A small, fixed-size latency histogram (about 1 KiB whatever it records),
/// for per-job statistics: a job that takes a million locks must not grow
/// its host's memory. Merged into a [`Hist`] for summaries.
#[derive(Clone)]
pub struct CompactHist {
    counts: Box<[u32]>,
}

impl CompactHist {
    /// Adds one sample.
    pub fn record(&mut self, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX).max(1);
        let octave = (63 - ns.leading_zeros()).min(COMPACT_OCTAVES - 1);
        let sub = if octave < 3 { 0 } else { ((ns >> (octave - 3)) & u64::from(COMPACT_SUB - 1)) as u32 };
        let index = (octave * COMPACT_SUB + sub) as usize;
        self.counts[index] = self.counts[index].saturating_add(1);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &CompactHist) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// The value at quantile `q` (0 to 1), as the middle of its bucket;
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let rank = ((q.clamp(0.0, 1.0) * self.count() as f64).ceil() as u64).max(1);
        let mut seen = 0;
        self.buckets().find_map(|(ns, count)| {
            seen += count;
            (seen >= rank).then(|| Duration::from_nanos(ns))
        })
    }

    /// Adds every sample to `into`, each at the middle of its bucket.
    pub fn merge_into(&self, into: &mut Hist) {
        for (ns, count) in self.buckets() {
            let _ = into.histogram.record_n(ns.clamp(1, MAX_NS), count);
        }
    }

    /// The non-empty buckets: the middle of each in nanoseconds, and its count.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(index, &count)| {
            let (octave, sub) = (index as u32 / COMPACT_SUB, u64::from(index as u32 % COMPACT_SUB));
            let middle = if octave < 3 {
                1u64 << octave
            } else {
                let step = 1u64 << (octave - 3);
                (8 + sub) * step + step / 2
            };
            (middle, u64::from(count))
        })
    }
}

impl Default for CompactHist {
    fn default() -> Self {
        Self { counts: vec![0; (COMPACT_OCTAVES * COMPACT_SUB) as usize].into_boxed_slice() }
    }
}

impl std::fmt::Debug for CompactHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompactHist({} samples)", self.count())
    }
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compact_histogram_keeps_percentiles_within_its_bucket_width() {
        let mut compact = CompactHist::default();
        for us in 1..=1000u64 {
            compact.record(Duration::from_micros(us));
        }
        let mut hist = Hist::new();
        compact.merge_into(&mut hist);
        let latency = hist.latency();
        assert_eq!(latency.count, 1000);
        assert!((latency.p50_us - 500.0).abs() / 500.0 < 0.07, "{latency:?}");
        assert!((latency.p99_us - 990.0).abs() / 990.0 < 0.07, "{latency:?}");
        // A million samples take no more memory than one.
        for _ in 0..1_000_000 {
            compact.record(Duration::from_millis(3));
        }
        assert_eq!(compact.count(), 1_001_000);
        assert_eq!(compact.counts.len(), (COMPACT_OCTAVES * COMPACT_SUB) as usize);
    }

    #[test]
    fn compact_quantiles_and_merges_stay_within_a_bucket() {
        let mut a = CompactHist::default();
        assert_eq!(a.quantile(0.5), None, "empty");
        (1..=100u64).for_each(|ms| a.record(Duration::from_millis(ms)));
        let near = |got: Option<Duration>, ms: f64| {
            let got = got.expect("a value").as_secs_f64() * 1000.0;
            assert!((got - ms).abs() / ms < 0.07, "{got} ms, wanted about {ms} ms");
        };
        near(a.quantile(0.5), 50.0);
        near(a.quantile(0.99), 99.0);
        near(a.quantile(1.0), 100.0);
        let mut b = CompactHist::default();
        (1..=100).for_each(|_| b.record(Duration::from_secs(1)));
        a.merge(&b);
        assert_eq!(a.count(), 200);
        near(a.quantile(0.25), 50.0);
        near(a.quantile(0.9), 1000.0);
    }
}
