//! Loop statistics the control thread writes and any other thread reads, without locks: counters
//! and log-linear latency histograms of relaxed atomics (hot path: `record` is a few adds).

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two: values are kept to within 1/16 (6 %) of their true size.
const SUB: usize = 16;
/// Powers of two covered: 1 ns to about 2^40 ns (18 minutes).
const OCTAVES: usize = 40;
const BUCKETS: usize = SUB * (OCTAVES + 1);

/// A histogram of nanosecond durations with about 6 % resolution.
pub struct Histogram {
    buckets: Box<[AtomicU64; BUCKETS]>,
    count: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            count: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let octave = 63 - ns.leading_zeros() as usize; // >= 4
    let shift = octave - 4;
    let sub = ((ns >> shift) as usize) & (SUB - 1);
    ((octave - 3) * SUB + sub).min(BUCKETS - 1)
}

/// The smallest value of a bucket.
fn bucket_floor(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let octave = b / SUB + 3;
    let sub = (b % SUB) as u64;
    (SUB as u64 + sub) << (octave - 4)
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("p50_ns", &self.quantile_ns(0.5))
            .field("p99_ns", &self.quantile_ns(0.99))
            .field("max_ns", &self.max_ns())
            .finish()
    }
}

impl Histogram {
    /// Records one duration. Allocation- and lock-free.
    #[inline]
    pub fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Values recorded in `ns`'s bucket or above: every value at least `ns`, and possibly some
    /// up to 6 % below it (so a count of zero proves none reached `ns`).
    pub fn count_from(&self, ns: u64) -> u64 {
        self.buckets[bucket_of(ns)..]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Largest value recorded, exactly.
    pub fn max_ns(&self) -> u64 {
        self.max_ns.load(Ordering::Relaxed)
    }

    /// The `q`-quantile (0..=1), as the lower edge of its bucket (within 6 % below the truth).
    pub fn quantile_ns(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((n as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0;
        for (b, c) in self.buckets.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen > rank {
                return bucket_floor(b).min(self.max_ns());
            }
        }
        self.max_ns()
    }
}

/// What a control loop reports about itself.
#[derive(Default)]
pub struct LoopStats {
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Ticks that finished after their deadline (their scheduled start plus one period).
    pub deadline_misses: AtomicU64,
    /// Ticks that woke later than 10 % of a period after their scheduled start.
    pub late_10pct: AtomicU64,
    /// Ticks that woke later than 50 % of a period after their scheduled start.
    pub late_50pct: AtomicU64,
    /// Wake-up lateness per tick, nanoseconds.
    pub jitter: Histogram,
    /// Work per tick (everything between wake-up and the command written), nanoseconds.
    pub compute: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_within_six_percent() {
        let mut last = 0;
        for ns in (0..2_000_000u64).step_by(7).chain([u64::MAX / 4]) {
            let b = bucket_of(ns);
            assert!(b >= last, "bucket order at {ns}");
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= ns, "{ns} below its bucket floor {floor}");
            if ns < (1u64 << 40) {
                assert!(ns - floor <= ns / 16 + 1, "{ns} vs floor {floor}");
            }
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000); // 1 us .. 1 ms
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max_ns(), 1_000_000);
        let p50 = h.quantile_ns(0.5) as f64;
        let p99 = h.quantile_ns(0.99) as f64;
        assert!((p50 / 500_500.0 - 1.0).abs() < 0.07, "p50 {p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.07, "p99 {p99}");
        assert_eq!(Histogram::default().quantile_ns(0.5), 0);
        assert_eq!(h.count_from(1_100_000), 0);
        // The bucket of 1 ms starts at 983,040 ns: the values 984..=1000 us.
        assert_eq!(h.count_from(1_000_000), 17);
        let above_half = h.count_from(500_000);
        assert!((501..=532).contains(&above_half), "{above_half}");
    }
}
