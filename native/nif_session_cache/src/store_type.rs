//! The store's resource type, opened by hand so that stores survive a reload of the library.
//!
//! rustler opens resource types with `ERL_NIF_RT_CREATE` only and offers no upgrade callback. When the
//! `nif_session_cache_nif` module is purged and loaded again while stores exist, the VM keeps the library
//! mapped (its resources are alive) but unlinks their type: the new load creates a new type, and the old stores
//! no longer match it. So this module opens the type itself, remembers every type it opened during this
//! mapping of the library, and recognises a store of any of them. All of them describe the same Rust type,
//! `StoreResource`, built by the same code. A type is forgotten when its last store is freed, just before
//! the VM frees the type itself, so no stale pointer is ever compared against another library's resources.
//! (`ERL_NIF_RT_TAKEOVER` cannot help: a purged module's types are no longer found by name.)

use std::ffi::c_void;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use rustler::sys::{
    enif_alloc_resource, enif_get_resource, enif_keep_resource, enif_make_resource,
    enif_release_resource, ErlNifEnv, ErlNifResourceType,
};
use rustler::{Env, Term};

use crate::raw;
use crate::resource::StoreResource;

/// The type opened by the current load: the one new stores get, and the first one tried.
static CURRENT: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(ptr::null_mut());

/// Every type opened during this mapping of the library that still has stores, with how many.
static GENERATIONS: Mutex<Vec<Generation>> = Mutex::new(Vec::new());

struct Generation {
    resource_type: usize,
    live: usize,
}

// A resource's data is aligned to the VM's allocation alignment, 8 bytes on 64-bit systems.
const _: () = assert!(std::mem::align_of::<StoreResource>() <= 8);

/// Opens the store type; called from the library's load callback. Returns false if the VM refuses.
pub fn open(env: Env) -> bool {
    // SAFETY: called from load; the destructor matches the resources this module creates.
    let opened =
        unsafe { raw::open_resource_type(env, b"nif_session_cache_store\0", Some(destructor)) };
    let Some(opened) = opened else {
        return false;
    };
    let mut generations = lock();
    // A previous type without stores will never be freed by a destructor of ours: forget it now.
    generations.retain(|g| g.live > 0);
    generations.push(Generation {
        resource_type: opened.as_ptr() as usize,
        live: 0,
    });
    CURRENT.store(opened.as_ptr(), Ordering::Release);
    true
}

/// Wraps `store` in a new resource of the current type and returns the term referring to it.
pub fn make<'a>(env: Env<'a>, mut store: StoreResource) -> Option<Term<'a>> {
    let resource_type = CURRENT.load(Ordering::Acquire);
    if resource_type.is_null() {
        return None;
    }
    store.resource_type = resource_type as usize;
    count(resource_type as usize, 1);
    // SAFETY: the type is open; the allocation is large enough and suitably aligned (checked above) for a
    // `StoreResource`, which is written before the resource is published. Releasing our reference leaves the
    // term as the only owner, so the destructor runs when the term is collected.
    unsafe {
        let object = enif_alloc_resource(resource_type, std::mem::size_of::<StoreResource>())
            as *mut StoreResource;
        if object.is_null() {
            count(resource_type as usize, -1);
            return None;
        }
        object.write(store);
        let term = enif_make_resource(env.as_c_arg(), object as *const c_void);
        enif_release_resource(object as *const c_void);
        Some(Term::new(env, term))
    }
}

/// The store `term` refers to, whichever load created it, or `None` if it is no store.
pub fn get<'a>(term: Term<'a>) -> Option<&'a StoreResource> {
    let current = CURRENT.load(Ordering::Acquire);
    if let Some(store) = get_as(term, current) {
        return Some(store);
    }
    // A store made before a reload, or not a store at all: the rare path. The comparisons happen under the lock,
    // because a type leaves the list only under it (in `count`, just before the VM frees the type): a pointer
    // read here is never stale, so it can never match another type that the VM allocated at the same address.
    // enif_get_resource only compares pointers; it runs no Erlang code and takes no lock of ours.
    lock()
        .iter()
        .map(|g| g.resource_type)
        .filter(|&t| t != current as usize)
        .find_map(|resource_type| get_as(term, resource_type as *mut ErlNifResourceType))
}

fn get_as<'a>(term: Term<'a>, resource_type: *mut ErlNifResourceType) -> Option<&'a StoreResource> {
    if resource_type.is_null() {
        return None;
    }
    let mut object: *const c_void = ptr::null();
    // SAFETY: enif_get_resource only compares the resource's type with `resource_type`. On success, `object` is
    // a `StoreResource` written by `make`, valid at least as long as the term.
    unsafe {
        let found = enif_get_resource(
            term.get_env().as_c_arg(),
            term.as_c_arg(),
            resource_type,
            &mut object,
        ) != 0;
        (found && !object.is_null()).then(|| &*(object as *const StoreResource))
    }
}

/// Runs when the VM frees a store resource, on whichever thread collected its last reference.
unsafe extern "C" fn destructor(_env: *mut ErlNifEnv, object: *mut c_void) {
    // The VM passes no type, so find this store's by its generation tag.
    let store = object as *mut StoreResource;
    let resource_type = (*store).resource_type;
    ptr::drop_in_place(store);
    count(resource_type, -1);
}

/// Adjusts a type's count of live stores, forgetting a type that is no longer current once it has none.
fn count(resource_type: usize, delta: isize) {
    let mut generations = lock();
    let current = CURRENT.load(Ordering::Acquire) as usize;
    if let Some(index) = generations
        .iter()
        .position(|g| g.resource_type == resource_type)
    {
        let generation = &mut generations[index];
        generation.live = generation.live.saturating_add_signed(delta);
        if generation.live == 0 && resource_type != current {
            generations.swap_remove(index);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Generation>> {
    session_store::sync::lock(&GENERATIONS)
}

/// A counted reference to a store resource, for native code that must keep a store alive while Erlang may
/// drop every reference to it: a fold cursor, whose store would otherwise be collected in mid-walk.
pub struct KeptStore {
    object: NonNull<StoreResource>,
}

// SAFETY: the referenced `StoreResource` is Send and Sync, and the VM's resource reference count is atomic.
unsafe impl Send for KeptStore {}
unsafe impl Sync for KeptStore {}

impl KeptStore {
    pub fn new(store: &StoreResource) -> Self {
        // SAFETY: `store` is the data of a live resource (it came from `get`), so its count may be raised.
        unsafe { enif_keep_resource((store as *const StoreResource).cast()) };
        KeptStore {
            object: NonNull::from(store),
        }
    }
}

impl std::ops::Deref for KeptStore {
    type Target = StoreResource;

    fn deref(&self) -> &StoreResource {
        // SAFETY: the reference taken in `new` keeps the resource alive until `drop`.
        unsafe { self.object.as_ref() }
    }
}

impl Drop for KeptStore {
    fn drop(&mut self) {
        // SAFETY: releases exactly the reference taken in `new`.
        unsafe { enif_release_resource(self.object.as_ptr().cast()) };
    }
}
