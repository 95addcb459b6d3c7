//! Operation counters that cost nothing measurable on the read path.
//!
//! Readers run on every scheduler at once, so one shared atomic per counter would bounce its cache line between
//! cores on every lookup. Each counter is striped instead: a thread adds to its own cache-line-sized stripe, and
//! a snapshot sums the stripes. Counts are exact once the counted operations have returned.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 8;

/// What the store counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    LookupHit,
    LookupMiss,
    Insert,
    Replace,
    Delete,
    SelectHit,
    SelectMiss,
}

const COUNTERS: usize = 7;

#[repr(align(128))]
#[derive(Default)]
struct Stripe([AtomicU64; COUNTERS]);

#[derive(Default)]
pub(crate) struct Stats {
    stripes: [Stripe; STRIPES],
}

/// A point-in-time sum of every counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub lookup_hits: u64,
    pub lookup_misses: u64,
    pub inserts: u64,
    pub replaces: u64,
    pub deletes: u64,
    pub select_hits: u64,
    pub select_misses: u64,
}

impl Stats {
    pub(crate) fn add(&self, counter: Counter) {
        self.stripes[stripe()].0[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> Counts {
        let sum = |counter: Counter| -> u64 {
            self.stripes
                .iter()
                .map(|stripe| stripe.0[counter as usize].load(Ordering::Relaxed))
                .sum()
        };
        Counts {
            lookup_hits: sum(Counter::LookupHit),
            lookup_misses: sum(Counter::LookupMiss),
            inserts: sum(Counter::Insert),
            replaces: sum(Counter::Replace),
            deletes: sum(Counter::Delete),
            select_hits: sum(Counter::SelectHit),
            select_misses: sum(Counter::SelectMiss),
        }
    }
}

/// This thread's stripe, assigned round-robin on first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up_exactly() {
        let stats = std::sync::Arc::new(Stats::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let stats = std::sync::Arc::clone(&stats);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        stats.add(Counter::LookupHit);
                        stats.add(Counter::SelectMiss);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("counting thread panicked");
        }
        let counts = stats.counts();
        assert_eq!(
            (counts.lookup_hits, counts.select_misses, counts.inserts),
            (12_000, 12_000, 0)
        );
    }
}
