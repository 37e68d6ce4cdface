//! Latency histograms: one bucket layout, a plain value to report and encode ([`Histogram`]),
//! and a lock-free recorder for hot paths ([`AtomicHistogram`]).
//!
//! Bucket `i` counts observations that took less than `2^i` microseconds and at least
//! `2^(i-1)`; the last bucket holds everything slower. The layout is part of the client
//! protocol (`docs/FORMAT.md`, "Status"), so [`Histogram::BUCKETS`] never changes.

use bincode::{Decode, Encode};
use std::sync::atomic::{AtomicU64, Ordering};

/// The bucket of an observation of `micros` microseconds.
fn bucket_of(micros: u64) -> usize {
    (64 - micros.leading_zeros() as usize).min(Histogram::BUCKETS - 1)
}

/// A latency histogram: `counts[i]` observations took less than `2^i` microseconds (and at
/// least `2^(i-1)`); the last bucket holds everything slower.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct Histogram {
    /// Observation counts per power-of-two bucket.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Buckets: below 1 µs, below 2 µs, ... below 2^26 µs (~67 s), then the rest.
    pub const BUCKETS: usize = 28;

    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; Self::BUCKETS],
        }
    }

    /// Count one observation of `micros` microseconds.
    pub fn record(&mut self, micros: u64) {
        if self.counts.len() < Self::BUCKETS {
            self.counts.resize(Self::BUCKETS, 0);
        }
        self.counts[bucket_of(micros)] += 1;
    }

    /// Total observations.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// An upper bound (bucket edge, in microseconds) of the `p` quantile (`0.0..=1.0`).
    pub fn quantile_upper_micros(&self, p: f64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return 1u64 << i;
            }
        }
        1u64 << (self.counts.len() - 1)
    }
}

/// A [`Histogram`] recorded with relaxed atomics, plus the sum of the observations: recording
/// costs two uncontended increments (the WAL records every fdatasync, which itself costs
/// ~100 µs), and readers (a status request) never block the recorder.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; Histogram::BUCKETS],
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    /// Count one observation of `micros` microseconds.
    pub fn record(&self, micros: u64) {
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The histogram so far and the sum of all observations in microseconds. The two are read
    /// one after the other, so under load the sum may include a call a bucket misses.
    pub fn snapshot(&self) -> (Histogram, u64) {
        let counts = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        (
            Histogram { counts },
            self.sum_micros.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_power_of_two() {
        let mut h = Histogram::new();
        h.record(0);
        h.record(1);
        h.record(100);
        h.record(u64::MAX);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[7], 1); // 64 <= 100 < 128
        assert_eq!(h.counts[Histogram::BUCKETS - 1], 1);
        assert_eq!(h.total(), 4);
        assert_eq!(h.quantile_upper_micros(0.5), 2);
    }

    #[test]
    fn the_atomic_recorder_uses_the_same_buckets() {
        let atomic = AtomicHistogram::default();
        let mut plain = Histogram::new();
        for micros in [0, 1, 3, 100, 5_000, u64::MAX / 2] {
            atomic.record(micros);
            plain.record(micros);
        }
        let (snapshot, sum) = atomic.snapshot();
        assert_eq!(snapshot, plain);
        assert_eq!(sum, 1 + 3 + 100 + 5_000 + u64::MAX / 2);
    }
}
