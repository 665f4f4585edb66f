//! A lock-free latency histogram: thousands of worker tasks record into it
//! at once without contending on a lock, and it is fixed in size however
//! many samples a long run takes (an HDR-style log-linear layout, exact up
//! to 1 ms and within 1/64 (1.6 %) above that).

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Exact buckets, one per microsecond.
const LINEAR: u64 = 1024;
/// Sub-buckets per power of two above [`LINEAR`].
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above 2^10 µs (up to 2^40 µs, about 12 days).
const OCTAVES: u64 = 30;

pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

/// The figures a report shows, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as u64; // >= 10
    let sub = (us >> (exp - SUB_BITS as u64)) & (SUB - 1);
    let octave = (exp - 10).min(OCTAVES - 1);
    (LINEAR + octave * SUB + sub) as usize
}

/// The upper edge of a bucket, in microseconds: percentiles round up.
fn upper(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < LINEAR {
        return idx;
    }
    let octave = (idx - LINEAR) / SUB;
    let sub = (idx - LINEAR) % SUB;
    let exp = octave + 10;
    let width = 1u64 << (exp - SUB_BITS as u64);
    (1u64 << exp) + sub * width + (width - 1)
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        let n = (LINEAR + OCTAVES * SUB) as usize;
        Histogram {
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[index(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum_us.store(0, Ordering::Relaxed);
        self.max_us.store(0, Ordering::Relaxed);
    }

    /// The value at quantile `q` (0..=1), in microseconds.
    fn quantile_us(&self, q: f64, count: u64) -> u64 {
        if count == 0 {
            return 0;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return upper(i).min(self.max_us.load(Ordering::Relaxed));
            }
        }
        self.max_us.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> Summary {
        let count = self.count.load(Ordering::Relaxed);
        let ms = |us: u64| us as f64 / 1000.0;
        Summary {
            count,
            p50_ms: ms(self.quantile_us(0.50, count)),
            p99_ms: ms(self.quantile_us(0.99, count)),
            max_ms: ms(self.max_us.load(Ordering::Relaxed)),
            mean_ms: if count == 0 {
                0.0
            } else {
                ms(self.sum_us.load(Ordering::Relaxed)) / count as f64
            },
        }
    }
}

/// Summarises a handful of exact samples (detection times: hundreds, not millions).
pub fn summarize(samples: &[Duration]) -> Summary {
    let h = Histogram::new();
    for s in samples {
        h.record(*s);
    }
    h.summary()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_precision() {
        for us in [0u64, 1, 999, 1023, 1024, 1500, 65_000, 1_000_000, 3_600_000_000] {
            let up = upper(index(us));
            assert!(up >= us, "{us} -> {up}");
            assert!(up as f64 <= us as f64 * 1.016 + 1.0, "{us} -> {up}");
        }
    }

    #[test]
    fn percentiles() {
        let h = Histogram::new();
        for i in 1..=1000u64 {
            h.record(Duration::from_micros(i * 100));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 50.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 2.0, "{s:?}");
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(summarize(&[]).count, 0);
    }
}
