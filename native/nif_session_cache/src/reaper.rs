//! Frees what is too large to free on a scheduler, on one thread that lives as long as the VM: large stores,
//! and the held parts of entries too costly to free on a normal scheduler (`session_codec::entry`, "heavy").
//!
//! Freeing an entry wipes its secrets and releases its memory, a microsecond or so, so a million entries take
//! about a second: far beyond the millisecond a NIF or a resource destructor may hold a scheduler.
//!
//! The thread runs this library's code for as long as it lives, so the library must stay mapped that long, even
//! after `nif_session_cache_nif` is purged; and so must a library whose objects live on under a newer one, which
//! calls their code (`object.rs`). The VM unmaps a NIF library only once no resource type of its with a
//! destructor is left, and a type lives while its resources do. So the first store or library handle makes a
//! resource ([`Pin`]) of a type with a destructor that is never released: the library stays mapped for the life
//! of the VM, by the VM's own rule. Each load opens the pin's type under a name of its own, as a load while older
//! code is loaded may not open one of theirs. The cost is that a purged library is not unmapped: a few megabytes.

use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;

use once_cell::sync::OnceCell;
use rustler::codegen_runtime::ResourceRegistration;
use rustler::{Env, Resource, ResourceArc};
use session_store::Retired;

/// Stores up to this many entries, holding up to `INLINE_HELD_BYTES` of held parts, are freed in place: a few
/// hundred microseconds at most. A held part's environment, at least 2.6 KB, frees in about half a microsecond,
/// so held parts are what can make a small store slow to free.
const INLINE_ENTRIES: usize = 256;
const INLINE_HELD_BYTES: usize = 256 * 1024;

/// Something to drop on the reaper thread.
type Garbage = Box<dyn Send>;

/// The reaper's queue, once it started; `None` if no thread could be had.
static QUEUE: OnceCell<Option<Mutex<Sender<Garbage>>>> = OnceCell::new();

/// A resource that is never released: it keeps the library mapped (see the module's doc).
pub struct Pin;

#[rustler::resource_impl(register = false)]
impl Resource for Pin {
    // Never runs; its presence makes the VM count the type among those that keep the library mapped.
    fn destructor(self, _env: Env<'_>) {}
}

/// Opens the pin's type for this load, under a name no other load has: from the load or upgrade callback.
pub fn register(env: Env) -> bool {
    static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let load = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("nif_session_cache_pin.{:p}.{load}", &LOADS);
    let registration = ResourceRegistration::new::<Pin>().with_name(String::leak(name));
    registration.register(env).is_ok()
}

/// Starts the reaper if it is not running: from a NIF, once resource types are open. O(1) after the first call.
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
            if let Err(mpsc::SendError(garbage)) = session_store::sync::lock(queue).send(garbage) {
                drop(garbage);
            }
        }
        None => drop(garbage),
    }
}
