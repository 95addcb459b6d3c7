//! Frees what is too large to free on a scheduler, on one thread that lives as long as the VM: large retired
//! stores, and the held parts of entries too large for a normal scheduler (`entry.rs`).
//!
//! A store is retired by terminate/1 or when its last reference is garbage-collected (OTP never terminates a
//! server store). Freeing each entry wipes its secrets and releases its bytes, its held parts and its map
//! slots, a microsecond or so, so a million entries take about a second: far beyond the millisecond a NIF or a
//! resource destructor may hold a scheduler. Small stores are freed in place; large ones are sent to the
//! reaper thread, one per mapping of the library, started with the first store. So are the held parts of a
//! single entry that holds thousands of reference-counted binaries or held terms: releasing them took 6 to 8 ms.
//!
//! The thread runs this library's code for as long as it lives, so the library must stay mapped that long, even
//! after `nif_session_cache_nif` is purged. The VM unmaps a NIF library only once no resource of its types is
//! left, so starting the thread makes a resource ([`Pin`]) that is never released: the library stays mapped for
//! the life of the VM. This holds by the VM's own rule, not by an accident of the C library's thread-exit code.
//! The cost is that a purged library (a release upgrade that loads a new one) is not unmapped: a few megabytes.

use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;

use once_cell::sync::OnceCell;
use rustler::{Resource, ResourceArc};
use session_store::Retired;

/// Stores up to this many entries, holding up to `INLINE_HELD_BYTES` of held terms, are freed inline: a few hundred
/// microseconds at most. An entry frees in about a microsecond; a held part's environment, at least 2.6 KB by
/// `info/1`'s count, in about half of one, so held terms are what can make a small store slow to free (256 entries
/// of 60 held pids each took 2.2 to 2.7 ms).
const INLINE_LIMIT: usize = 256;
const INLINE_HELD_BYTES: usize = 256 * 1024;

/// Something to drop on the reaper thread.
type Garbage = Box<dyn Send>;

/// The reaper's queue, once it started; `None` if no thread could be had.
static QUEUE: OnceCell<Option<Mutex<Sender<Garbage>>>> = OnceCell::new();

/// A resource that is never released: its only purpose is to keep the library mapped (see the module's doc).
pub struct Pin;

#[rustler::resource_impl]
impl Resource for Pin {}

/// Starts the reaper if it is not running. Called when a store is made, from a NIF: the resource type of
/// [`Pin`] is open by then. O(1) after the first call.
pub fn start() {
    QUEUE.get_or_init(|| {
        std::mem::forget(ResourceArc::new(Pin));
        let (queue, garbage) = mpsc::channel::<Garbage>();
        std::thread::Builder::new()
            .name("nif_session_cache_reaper".into())
            // Ends only if every sender is gone, and the one sender is in a static: never.
            .spawn(move || garbage.into_iter().for_each(drop))
            .ok()
            .map(|_| Mutex::new(queue))
    });
}

/// Frees `retired`, whose held terms cost `held_bytes`: here if it is small or the reaper is not running, else on
/// the reaper thread. O(1) for a large store.
pub fn dispose(retired: Retired, held_bytes: usize) {
    if retired.entries() <= INLINE_LIMIT && held_bytes <= INLINE_HELD_BYTES {
        return drop(retired);
    }
    dispose_later(Box::new(retired));
}

/// Drops `garbage` on the reaper thread, or here if the reaper is not running. O(1).
pub fn dispose_later(garbage: Garbage) {
    match QUEUE.get().and_then(Option::as_ref) {
        // A send fails only if the thread is gone, which it never is; the garbage then comes back and is freed
        // here: slow, but correct.
        Some(queue) => {
            if let Err(mpsc::SendError(garbage)) = session_store::sync::lock(queue).send(garbage) {
                drop(garbage);
            }
        }
        None => drop(garbage),
    }
}
