//! What the shared level has done, for `info/1`: counters, misses by reason, and a latency summary of the reads
//! that went to Redis. Lock-free: relaxed atomics, as each figure stands alone.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why a read found nothing usable. Each is counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Redis has no such key.
    Absent,
    /// The breaker is open: Redis was not asked.
    BreakerOpen,
    /// Too many reads were already waiting on Redis: this one was not sent.
    Busy,
    /// Redis did not answer within the timeout.
    Timeout,
    /// The connection failed or Redis answered with an error.
    Error,
    /// The blob did not open (a forged or moved blob, or an unknown key id).
    Unsealed,
    /// The session opened but did not decode to a session, or had too little lifetime left.
    Unusable,
    /// Redis refused our credentials (a wrong user or password) or our rights (ACL): handled as Redis being
    /// unreachable.
    Auth,
}

impl Miss {
    pub const ALL: [Miss; 8] = [
        Miss::Absent,
        Miss::BreakerOpen,
        Miss::Busy,
        Miss::Timeout,
        Miss::Error,
        Miss::Unsealed,
        Miss::Unusable,
        Miss::Auth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Miss::Absent => "absent",
            Miss::BreakerOpen => "breaker_open",
            Miss::Busy => "busy",
            Miss::Timeout => "timeout",
            Miss::Error => "error",
            Miss::Unsealed => "unsealed",
            Miss::Unusable => "unusable",
            Miss::Auth => "auth",
        }
    }
}

/// Latency buckets: bucket `i` counts reads of under 2^i microseconds; the last, everything slower.
const BUCKETS: usize = 24;

#[derive(Default)]
pub struct Stats {
    gets: AtomicU64,
    hits: AtomicU64,
    replayed: AtomicU64,
    misses: [AtomicU64; Miss::ALL.len()],
    sets: AtomicU64,
    drops: AtomicU64,
    write_errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

/// A copy of the figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub gets: u64,
    pub hits: u64,
    /// Reads answered from the replay cache, without asking Redis (counted in `gets` and `hits` too).
    pub replayed: u64,
    /// By reason, in `Miss::ALL`'s order.
    pub misses: Vec<(Miss, u64)>,
    pub sets: u64,
    pub drops: u64,
    pub write_errors: u64,
    /// Upper bounds, in microseconds, of the 50th and 99th percentile and the slowest read that reached Redis
    /// (powers of two: the buckets' edges). Zero before any.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Stats {
    pub fn get(&self) {
        self.gets.fetch_add(1, Relaxed);
    }

    pub fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }

    pub fn replayed(&self) {
        self.replayed.fetch_add(1, Relaxed);
    }

    pub fn miss(&self, why: Miss) {
        self.misses[why as usize].fetch_add(1, Relaxed);
    }

    /// A read counted as a hit turned out unusable: count it as a miss for `why` instead.
    pub fn unhit(&self, why: Miss) {
        self.hits.fetch_sub(1, Relaxed);
        self.miss(why);
    }

    pub fn set(&self) {
        self.sets.fetch_add(1, Relaxed);
    }

    pub fn drop_write(&self) {
        self.drops.fetch_add(1, Relaxed);
    }

    pub fn write_error(&self) {
        self.write_errors.fetch_add(1, Relaxed);
    }

    /// A read that reached Redis took `took`.
    pub fn latency(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = (u64::BITS - micros.leading_zeros()) as usize;
        self.latency[bucket.min(BUCKETS - 1)].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let bound = |bucket: usize| 1u64 << bucket;
        let percentile = |share: u64| {
            let mut seen = 0;
            for (bucket, &count) in counts.iter().enumerate() {
                seen += count;
                if total > 0 && seen * 100 >= total * share {
                    return bound(bucket);
                }
            }
            0
        };
        Snapshot {
            gets: self.gets.load(Relaxed),
            hits: self.hits.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            misses: Miss::ALL
                .iter()
                .map(|&why| (why, self.misses[why as usize].load(Relaxed)))
                .collect(),
            sets: self.sets.load(Relaxed),
            drops: self.drops.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            p50_us: percentile(50),
            p99_us: percentile(99),
            max_us: counts.iter().rposition(|&c| c > 0).map_or(0, bound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_edges_of_the_reads_seen() {
        let stats = Stats::default();
        assert_eq!(stats.snapshot().p99_us, 0);
        for _ in 0..98 {
            stats.latency(Duration::from_micros(100)); // under 128
        }
        stats.latency(Duration::from_micros(900)); // under 1024
        stats.latency(Duration::from_millis(5)); // under 8192
        let snapshot = stats.snapshot();
        assert_eq!(
            (snapshot.p50_us, snapshot.p99_us, snapshot.max_us),
            (128, 1024, 8192)
        );
    }

    #[test]
    fn misses_are_counted_by_reason() {
        let stats = Stats::default();
        stats.miss(Miss::Timeout);
        stats.miss(Miss::Timeout);
        stats.miss(Miss::Unsealed);
        let misses = stats.snapshot().misses;
        assert!(misses.contains(&(Miss::Timeout, 2)));
        assert!(misses.contains(&(Miss::Unsealed, 1)));
        assert!(misses.contains(&(Miss::Absent, 0)));
    }
}
