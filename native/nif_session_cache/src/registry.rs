//! Every live store, held weakly, so an operator can list them without keeping any alive.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use once_cell::sync::Lazy;

use crate::resource::StoreInner;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static STORES: Lazy<Mutex<BTreeMap<u64, Weak<StoreInner>>>> =
    Lazy::new(|| Mutex::new(BTreeMap::new()));

/// Builds a store with a fresh id and records it. O(log stores) under the registry lock.
pub fn register(build: impl FnOnce(u64) -> StoreInner) -> Arc<StoreInner> {
    let inner = Arc::new(build(NEXT_ID.fetch_add(1, Ordering::Relaxed)));
    lock().insert(inner.id, Arc::downgrade(&inner));
    inner
}

/// Removes a store that is going away. O(log stores).
pub fn forget(id: u64) {
    lock().remove(&id);
}

/// The stores alive now, oldest first. O(stores) under the lock; the caller works on them after it is released.
pub fn live() -> Vec<Arc<StoreInner>> {
    lock().values().filter_map(Weak::upgrade).collect()
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<u64, Weak<StoreInner>>> {
    session_store::sync::lock(&STORES)
}
