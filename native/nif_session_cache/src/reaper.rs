//! Frees large retired stores away from the schedulers, on one thread that lives as long as the VM.
//!
//! A store is retired by terminate/1 or when its last reference is garbage-collected (OTP never terminates a
//! server store). Freeing each entry wipes its secrets and releases its bytes, its held parts and its map
//! slots, a microsecond or so, so a million entries take about a second: far beyond the millisecond a NIF or a
//! resource destructor may hold a scheduler. Small stores are freed in place; large ones are sent to the
//! reaper thread, one per mapping of the library, started with the first store.
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

/// Stores up to this many entries are freed inline: a few hundred microseconds at most.
const INLINE_LIMIT: usize = 256;

/// The reaper's queue, once it started; `None` if no thread could be had.
static QUEUE: OnceCell<Option<Mutex<Sender<Retired>>>> = OnceCell::new();

/// A resource that is never released: its only purpose is to keep the library mapped (see the module's doc).
pub struct Pin;

#[rustler::resource_impl]
impl Resource for Pin {}

/// Starts the reaper if it is not running. Called when a store is made, from a NIF: the resource type of
/// [`Pin`] is open by then. O(1) after the first call.
pub fn start() {
    QUEUE.get_or_init(|| {
        std::mem::forget(ResourceArc::new(Pin));
        let (queue, retired) = mpsc::channel::<Retired>();
        std::thread::Builder::new()
            .name("nif_session_cache_reaper".into())
            // Ends only if every sender is gone, and the one sender is in a static: never.
            .spawn(move || retired.into_iter().for_each(drop))
            .ok()
            .map(|_| Mutex::new(queue))
    });
}

/// Frees `retired`: here if it is small or the reaper is not running, else on the reaper thread. O(1) for a
/// large store.
pub fn dispose(retired: Retired) {
    if retired.entries() <= INLINE_LIMIT {
        return drop(retired);
    }
    match QUEUE.get().and_then(Option::as_ref) {
        // A send fails only if the thread is gone, which it never is; the store then comes back and is freed
        // here: slow, but correct.
        Some(queue) => {
            if let Err(mpsc::SendError(retired)) = session_store::sync::lock(queue).send(retired) {
                drop(retired);
            }
        }
        None => drop(retired),
    }
}
