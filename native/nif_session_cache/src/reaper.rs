//! What keeps this library mapped while its code may run: the reaper thread (`session_store::reaper`), and the
//! objects it made, which newer libraries call (`object.rs`). The VM unmaps a NIF library only once no resource
//! type of its with a destructor is left, and a type lives while its resources do. So the first store or library
//! handle makes a [`Pin`] that is never released, of a type with a destructor, opened by each load under a name
//! of its own (a load while older code is loaded may not open theirs): the library stays mapped for the life of
//! the VM, by the VM's own rule, at a cost of a few megabytes per library loaded.

use rustler::codegen_runtime::ResourceRegistration;
use rustler::{Env, Resource, ResourceArc};
pub use session_store::reaper::{dispose, later};

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

/// Starts the reaper if it is not running, pinning the library first: from a NIF, once resource types are open.
/// O(1) after the first call.
pub fn start() {
    session_store::reaper::start(|| std::mem::forget(ResourceArc::new(Pin)));
}
