//! Frees what is too large to free on a scheduler, on one thread that lives as long as the process: large
//! retired stores, and whatever else a caller hands over (the NIF layer's entries too costly to free on a normal
//! scheduler, `session_codec::entry`'s "heavy").
//!
//! Freeing an entry wipes its secrets and releases its memory, a microsecond or so, so a million entries take
//! about a second: far beyond the millisecond a NIF or a resource destructor may hold a scheduler.

use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

use crate::sync::lock;
use crate::Retired;

/// Stores up to this many entries, holding up to `INLINE_HELD_BYTES` of held parts, are freed in place: a few
/// hundred microseconds at most. A held part's environment, at least 2.6 KB, frees in about half a microsecond,
/// so held parts are what can make a small store slow to free.
pub const INLINE_ENTRIES: usize = 256;
pub const INLINE_HELD_BYTES: usize = 256 * 1024;

/// Something to drop on the reaper thread.
pub type Garbage = Box<dyn Send>;

/// The reaper's queue, once it started; `None` if no thread could be had.
static QUEUE: OnceLock<Option<Mutex<Sender<Garbage>>>> = OnceLock::new();

/// Starts the reaper if it is not running, calling `first` just before it starts. O(1) after the first call.
pub fn start(first: impl FnOnce()) {
    QUEUE.get_or_init(|| {
        first();
        let (queue, garbage) = mpsc::channel::<Garbage>();
        std::thread::Builder::new()
            .name("nif_session_cache_reaper".into())
            // Ends only if every sender is gone, and the one sender is in a static: never.
            .spawn(move || garbage.into_iter().for_each(drop))
            .ok()
            .map(|_| Mutex::new(queue))
    });
}

/// Frees `retired`, whose held parts cost `held_bytes`: here if it is small, else on the reaper thread. Returns
/// whether it went to the reaper.
pub fn dispose(retired: Retired, held_bytes: usize) -> bool {
    if retired.entries() <= INLINE_ENTRIES && held_bytes <= INLINE_HELD_BYTES {
        drop(retired);
        return false;
    }
    later(Box::new(retired));
    true
}

/// Drops `garbage` on the reaper thread, or here if the reaper is not running. O(1).
pub fn later(garbage: Garbage) {
    match QUEUE.get().and_then(Option::as_ref) {
        // A send fails only if the thread is gone, which it never is; the garbage then comes back and is freed
        // here: slow, but correct.
        Some(queue) => {
            if let Err(mpsc::SendError(garbage)) = lock(queue).send(garbage) {
                drop(garbage);
            }
        }
        None => drop(garbage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// Sends its thread's name when dropped.
    struct Tell(Sender<Option<String>>);

    impl Drop for Tell {
        fn drop(&mut self) {
            let _ = self
                .0
                .send(std::thread::current().name().map(str::to_owned));
        }
    }

    #[test]
    fn garbage_is_dropped_on_the_reaper_once_it_started_and_here_before() {
        let (tell, told) = channel();
        later(Box::new(Tell(tell.clone())));
        assert_eq!(
            told.recv().ok().flatten().as_deref(),
            std::thread::current().name()
        );
        let mut started = 0;
        start(|| started += 1);
        start(|| started += 1);
        assert_eq!(started, 1);
        later(Box::new(Tell(tell)));
        assert_eq!(
            told.recv().ok().flatten().as_deref(),
            Some("nif_session_cache_reaper")
        );
    }
}
