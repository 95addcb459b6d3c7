//! Frees large retired stores away from the schedulers.
//!
//! A store is retired by terminate/1 or when its last reference is garbage-collected (OTP never terminates a
//! server store). Freeing each entry wipes its secrets and releases its bytes, its held parts and its map
//! slots, a microsecond or so, so a million entries take about a second: far beyond the millisecond a NIF or a
//! resource destructor may hold a scheduler. Small stores are freed in place;
//! large ones on a short-lived thread of their own, which exits when done. No thread outlives its work, so
//! nothing of ours keeps running after the library could be unloaded.

use session_store::Retired;

/// Stores up to this many entries are freed inline: a few hundred microseconds at most.
const INLINE_LIMIT: usize = 256;

pub fn dispose(retired: Retired) {
    if retired.entries() <= INLINE_LIMIT {
        return drop(retired);
    }
    // If no thread can be had, `spawn` drops the closure and with it the store: slow, but correct.
    let _ = std::thread::Builder::new()
        .name("nif_session_cache_reaper".into())
        .spawn(move || drop(retired));
}
