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

/// A store's accounting of the scheduler budget, for `info/1` and the tests: the most units of work one call on a
/// normal scheduler has spent, the calls that went on on a dirty one for want of budget, and the entries and
/// contents handed to the reaper thread, too costly to free on a scheduler.
#[derive(Default)]
pub struct Scheduling {
    largest_call: AtomicUsize,
    dirty_calls: AtomicU64,
    freed_later: AtomicU64,
}

impl Scheduling {
    /// Notes the units a call on a normal scheduler spent. Shared by every reader, so written only when it grows.
    pub fn spent(&self, units: usize) {
        if units > self.largest_call.load(Ordering::Relaxed) {
            self.largest_call.fetch_max(units, Ordering::Relaxed);
        }
    }

    /// Notes a call that goes on on a dirty scheduler.
    pub fn went_dirty(&self) {
        self.dirty_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes something handed to the reaper.
    pub fn freed_later(&self) {
        self.freed_later.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes what a call spent of `budget`, if on a normal scheduler.
    pub fn note(&self, budget: &Budget) {
        if budget.normal {
            self.spent(budget.spent);
        }
    }

    /// The largest call, the dirty calls and the things freed later.
    pub fn counts(&self) -> (usize, u64, u64) {
        let load = |count: &AtomicU64| count.load(Ordering::Relaxed);
        let largest = self.largest_call.load(Ordering::Relaxed);
        (largest, load(&self.dirty_calls), load(&self.freed_later))
    }
}

/// The units of work one call may spend, taken cost by cost; a call stops at the first cost that does not fit.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    left: usize,
    spent: usize,
    /// Whether the call runs on a normal scheduler, where what it spends is noted.
    normal: bool,
}

impl Budget {
    /// The budget of a call on a normal scheduler.
    pub fn normal(units: usize) -> Budget {
        Budget {
            left: units,
            spent: 0,
            normal: true,
        }
    }

    /// The budget of a call on a dirty scheduler: no bound, and nothing to note.
    pub fn dirty() -> Budget {
        Budget {
            left: usize::MAX,
            spent: 0,
            normal: false,
        }
    }

    /// Takes `cost` if what is left covers it.
    pub fn take(&mut self, cost: usize) -> bool {
        let fits = cost <= self.left;
        if fits {
            self.left -= cost;
            self.spent += cost;
        }
        fits
    }
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

    #[test]
    fn scheduling_keeps_the_largest_call_and_counts_the_rest() {
        let scheduling = Scheduling::default();
        [30, 700, 12]
            .into_iter()
            .for_each(|units| scheduling.spent(units));
        scheduling.went_dirty();
        (0..3).for_each(|_| scheduling.freed_later());
        assert_eq!(scheduling.counts(), (700, 1, 3));
    }

    #[test]
    fn a_budget_takes_costs_while_they_fit_and_only_a_normal_one_is_noted() {
        let mut budget = Budget::normal(100);
        let taken = [40, 50, 20, 5]
            .iter()
            .take_while(|&&cost| budget.take(cost));
        assert_eq!(taken.count(), 2);
        assert!(budget.take(10) && !budget.take(1));
        let scheduling = Scheduling::default();
        scheduling.note(&budget);
        let mut dirty = Budget::dirty();
        assert!(dirty.take(usize::MAX / 2) && dirty.take(usize::MAX / 2));
        scheduling.note(&dirty);
        assert_eq!(scheduling.counts(), (100, 0, 0));
    }
}
