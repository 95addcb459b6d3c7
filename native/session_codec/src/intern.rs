//! Which copy of a shared session field a store keeps: the policy of the table of shared parts, over any kind of
//! part. The NIF keeps the parts (terms in environments of their own), hashes and compares them; this module
//! decides what to remember and what to forget.
//!
//! Every session of a listener carries the same certificate chain and private key, so the store keeps one copy
//! of each, which its entries count references to. The table holds its copies weakly: a copy goes with the last
//! entry that uses it. A field is first compared with the copy last shared at its position (one comparison
//! finds a listener's chain), and only then looked up by hash. Sessions that each bring a new value would grow
//! the table without end, and a write that grows or sweeps it would take time in proportion: past `MAX_FILED`
//! hashes a new copy is held by its entries alone, as a private part is, and dead copies are swept out in
//! bounded steps.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Hashes the table files at most. A listener's sessions share one or two values.
pub const MAX_FILED: usize = 1024;
/// Sweeps never run on tables smaller than this.
const MIN_SWEEP: usize = 64;
/// Field positions with a remembered copy: OTP's `#session{}` has 15 fields.
pub const RECENT_POSITIONS: usize = 32;

/// A store's table of shared parts. Only the store's owner writes to it, so its lock is never contended.
pub struct Interner<P> {
    /// The copy last shared at each field position.
    recent: Vec<Weak<P>>,
    by_hash: HashMap<u64, Vec<Weak<P>>>,
    /// Table size at which dead copies are next swept out, so the table stays within twice the live ones.
    sweep_at: usize,
    /// Copies made while the table was full, since it was last swept.
    unfiled: usize,
}

impl<P> Default for Interner<P> {
    fn default() -> Self {
        Interner {
            recent: Vec::new(),
            by_hash: HashMap::new(),
            sweep_at: MIN_SWEEP,
            unfiled: 0,
        }
    }
}

impl<P> Interner<P> {
    /// The copy last shared at `position`, if it is alive. O(1).
    pub fn recent(&self, position: usize) -> Option<Arc<P>> {
        self.recent.get(position)?.upgrade()
    }

    /// A live copy filed under `hash` for which `same` holds. O(copies of that hash); the bucket's dead copies
    /// are dropped on the way.
    pub fn find(&mut self, hash: u64, mut same: impl FnMut(&P) -> bool) -> Option<Arc<P>> {
        let bucket = self.by_hash.get_mut(&hash)?;
        let found = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|part| same(part));
        if found.is_none() {
            bucket.retain(|part| part.strong_count() > 0);
        }
        found
    }

    /// Files a new copy under `hash` if the table has room, sweeping it first when it is due. Returns the
    /// buckets the sweep visited: at most `MAX_FILED`.
    pub fn file(&mut self, hash: u64, part: &Arc<P>) -> usize {
        let mut visited = 0;
        // A sweep is due when the table reached its mark, or when it has been full for as many copies as it holds.
        if self.by_hash.len() >= self.sweep_at || self.unfiled >= MAX_FILED {
            visited = self.by_hash.len();
            self.by_hash.retain(|_, bucket| {
                bucket.retain(|part| part.strong_count() > 0);
                !bucket.is_empty()
            });
            self.sweep_at = (2 * self.by_hash.len()).max(MIN_SWEEP);
            self.unfiled = 0;
        }
        if self.by_hash.len() < MAX_FILED {
            self.by_hash
                .entry(hash)
                .or_default()
                .push(Arc::downgrade(part));
        } else {
            self.unfiled += 1;
        }
        visited
    }

    /// Remembers `part` as the copy last shared at `position`.
    pub fn remember(&mut self, position: usize, part: &Arc<P>) {
        if position >= RECENT_POSITIONS {
            return;
        }
        if self.recent.len() <= position {
            self.recent.resize_with(position + 1, Weak::new);
        }
        self.recent[position] = Arc::downgrade(part);
    }

    /// Hashes filed now.
    pub fn filed(&self) -> usize {
        self.by_hash.len()
    }
}
