//! Locks that recover from poisoning, for this crate and the NIF layer alike.
//!
//! No code that runs while one of our locks is held panics, but if one ever did, the data behind the lock would
//! still be consistent (every critical section leaves it so before it can panic). Recovering the guard keeps one
//! bug from turning into a store that fails every call after it, and a NIF must never panic on a poisoned lock.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `mutex`'s guard, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A read guard of `lock`, poisoned or not.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// A write guard of `lock`, poisoned or not.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes a guard with `take` (which may write through it first), then panics while holding it.
    fn poison<G>(take: impl FnOnce() -> G) {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = take();
            panic!("poisoning the lock on purpose");
        }));
        assert!(panicked.is_err());
    }

    #[test]
    fn poisoned_locks_still_give_their_data() {
        let mutex = Mutex::new(1);
        poison(|| {
            let mut guard = lock(&mutex);
            *guard = 2;
            guard
        });
        assert!(mutex.is_poisoned());
        assert_eq!(*lock(&mutex), 2);

        let rw = RwLock::new(1);
        poison(|| {
            let mut guard = write(&rw);
            *guard = 3;
            guard
        });
        assert!(rw.is_poisoned());
        assert_eq!(*read(&rw), 3);
        *write(&rw) = 4;
        assert_eq!(*read(&rw), 4);
    }
}
