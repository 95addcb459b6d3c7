//! The live stores of a library, held weakly, for a listing of them all; and their ids.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::sync::lock;

/// Things listed while alive, each under an id no other gets.
pub struct Registry<T> {
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, Weak<T>>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            next_id: AtomicU64::new(1),
            live: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<T> Registry<T> {
    /// Makes ids start at `load` × 2^40 at least: when load numbers grow with each load of a library in a VM, no
    /// two of its copies give one id, and a copy loaded again goes on past the ids it gave.
    pub fn first_id(&self, load: u64) {
        self.next_id
            .fetch_max(load.saturating_mul(1 << 40).max(1), Ordering::Relaxed);
    }

    /// A new thing, made with its id, and listed.
    pub fn add(&self, make: impl FnOnce(u64) -> T) -> Arc<T> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let thing = Arc::new(make(id));
        lock(&self.live).insert(id, Arc::downgrade(&thing));
        thing
    }

    /// Unlists `id`: from the thing's drop.
    pub fn remove(&self, id: u64) {
        lock(&self.live).remove(&id);
    }

    /// The things alive now, oldest first. O(things) under the list's lock; the caller works on them after.
    pub fn live(&self) -> Vec<Arc<T>> {
        lock(&self.live)
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn things_are_listed_oldest_first_while_alive_and_ids_follow_the_load() {
        let registry = Registry::default();
        let first = registry.add(|id| id);
        registry.first_id(3);
        let (second, third) = (registry.add(|id| id), registry.add(|id| id));
        assert_eq!((*first, *second, *third), (1, 3 << 40, (3 << 40) + 1));
        drop(second);
        assert_eq!(
            registry.live().iter().map(|t| **t).collect::<Vec<_>>(),
            [1, (3 << 40) + 1]
        );
        registry.remove(1);
        registry.first_id(2);
        assert_eq!(
            (registry.live().len(), *registry.add(|id| id)),
            (1, (3 << 40) + 2)
        );
    }
}
