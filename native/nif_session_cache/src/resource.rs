//! What Erlang holds: stores, a select's cursor, and a packing stopped for its budget; and the list of live
//! stores, held weakly, for `stores/0`.
//!
//! A store lives as long as anything refers to it: Erlang's references, a cursor, a listing. When the last goes
//! it is emptied (off the scheduler when large) and leaves the list: OTP never calls terminate for a listener's
//! store.
//!
//! The store's resource type is opened by hand, because rustler opens types with `ERL_NIF_RT_CREATE` only and
//! keeps one per Rust type: when `nif_session_cache_nif` is purged and loaded again while stores live, the VM keeps
//! the library mapped but unlinks the old type, the new load creates a new one, and old stores no longer match
//! it. So every type opened during this mapping of the library is remembered while it has stores, and a store
//! of any of them is recognised. Cursors and stopped packings live for microseconds; rustler's types do for them.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use once_cell::sync::{Lazy, OnceCell};
use rustler::sys::{
    enif_alloc_resource, enif_get_resource, enif_make_resource, enif_open_resource_type,
    enif_release_resource, ErlNifEnv, ErlNifResourceFlags, ErlNifResourceType,
};
use rustler::{Atom, Env, LocalPid, Resource, Term};
use session_codec::pack::Packer;
use session_store::sync::lock;
use session_store::{Config, Selection};

use crate::entry::Entry;
use crate::error::CacheError;
use crate::held::{Held, Parts};
use crate::level::SharedLevel;
use crate::reaper;

/// A store and who may write it.
pub struct Store {
    /// Unique for the life of the library.
    pub id: u64,
    /// The process that called init: the only one allowed to write.
    pub owner: LocalPid,
    /// The role OTP passed to init/1 (`client`, `server`, or `undefined` for none): reported by `info/1`, never
    /// used to change behaviour.
    pub role: Atom,
    pub entries: session_store::Store<Entry>,
    /// The held parts of its entries, and the fields they share.
    pub parts: Parts,
    /// Its shared level, if `share/2` gave it one.
    pub shared: OnceCell<SharedLevel>,
    /// The most units of work one call on a normal scheduler has spent on this store, and the calls that went on
    /// on a dirty one for want of budget: the budget's own accounting, for `info/1` and the tests.
    largest_call: AtomicUsize,
    dirty_calls: AtomicU64,
    /// Entries and contents handed to the reaper thread, too costly to free on a scheduler.
    freed_later: AtomicU64,
}

impl Store {
    /// A new empty store, listed among the live ones.
    pub fn new(owner: LocalPid, role: Atom) -> Arc<Store> {
        reaper::start();
        let store = Arc::new(Store {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            owner,
            role,
            entries: session_store::Store::new(Config::default()),
            parts: Parts::new(is_ours),
            shared: OnceCell::new(),
            largest_call: AtomicUsize::new(0),
            dirty_calls: AtomicU64::new(0),
            freed_later: AtomicU64::new(0),
        });
        lock(&STORES).insert(store.id, Arc::downgrade(&store));
        store
    }

    /// Refuses writes from any process but the owner.
    pub fn check_writer(&self, env: Env) -> Result<(), CacheError> {
        if env.pid() == self.owner {
            Ok(())
        } else {
            Err(CacheError::NotOwner)
        }
    }

    /// Empties the store and frees its contents, off the scheduler when they are large. Idempotent.
    pub fn retire(&self) {
        if reaper::dispose(self.entries.retire(), self.parts.bytes()) {
            self.freed_later.fetch_add(1, Ordering::Relaxed);
        }
        self.parts.clear();
    }

    /// Lets go of an entry a write took out: its parts are freed on the reaper if too costly for a scheduler
    /// (`Entry`'s drop), unless a cursor still holds it.
    pub fn release(&self, entry: Entry) {
        if entry.heavy() {
            self.freed_later.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes the units a call on a normal scheduler spent. Shared by every reader, so written only when it grows.
    pub fn spent(&self, units: usize) {
        if units > self.largest_call.load(Ordering::Relaxed) {
            self.largest_call.fetch_max(units, Ordering::Relaxed);
        }
    }

    /// Notes a call that goes on on a dirty scheduler.
    pub fn went_dirty(&self) {
        self.dirty_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn largest_call(&self) -> usize {
        self.largest_call.load(Ordering::Relaxed)
    }

    pub fn dirty_calls(&self) -> u64 {
        self.dirty_calls.load(Ordering::Relaxed)
    }

    pub fn freed_later(&self) -> u64 {
        self.freed_later.load(Ordering::Relaxed)
    }
}

impl Drop for Store {
    // Runs wherever the last reference went: a resource destructor, a cursor's, a listing.
    fn drop(&mut self) {
        lock(&STORES).remove(&self.id);
        self.retire();
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static STORES: Lazy<Mutex<BTreeMap<u64, Weak<Store>>>> = Lazy::new(|| Mutex::new(BTreeMap::new()));

/// The stores alive now, oldest first. O(stores) under the list's lock; the caller works on them after.
pub fn live() -> Vec<Arc<Store>> {
    lock(&STORES).values().filter_map(Weak::upgrade).collect()
}

/// What an Erlang store reference points to: the store, and the resource type it was made under, for its
/// destructor.
struct Handle {
    store: Arc<Store>,
    resource_type: usize,
}

/// The type opened by the current load: the one new stores get, and the first one tried.
static CURRENT: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(ptr::null_mut());
/// Every type opened during this mapping of the library that still has stores, with how many.
static GENERATIONS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

// A resource's data is aligned for any C type, 8 bytes on 64-bit systems.
const _: () = assert!(std::mem::align_of::<Handle>() <= 8);

/// Opens the store type; called from the library's load callback. Returns false if the VM refuses.
pub fn open_store_type(env: Env) -> bool {
    // SAFETY: called from load, with its environment; the destructor handles every resource `make_store` creates.
    let opened = unsafe {
        enif_open_resource_type(
            env.as_c_arg(),
            ptr::null(),
            c"nif_session_cache_store".as_ptr(),
            Some(destructor),
            ErlNifResourceFlags::ERL_NIF_RT_CREATE,
            ptr::null_mut(),
        )
    } as *mut ErlNifResourceType;
    if opened.is_null() {
        return false;
    }
    let mut generations = lock(&GENERATIONS);
    // A type of an earlier load without stores will never be freed by a destructor of ours: forget it now.
    generations.retain(|&(_, live)| live > 0);
    generations.push((opened as usize, 0));
    CURRENT.store(opened, Ordering::Release);
    true
}

/// A new Erlang reference to `store`, of the current type.
pub fn make_store<'a>(env: Env<'a>, store: Arc<Store>) -> Option<Term<'a>> {
    let resource_type = CURRENT.load(Ordering::Acquire);
    if resource_type.is_null() {
        return None;
    }
    count(resource_type as usize, 1);
    // SAFETY: the type is open; the allocation is large enough and aligned (checked above) for a `Handle`, which is
    // written before the resource is published. Releasing our reference leaves the term as the only owner.
    unsafe {
        let object =
            enif_alloc_resource(resource_type, std::mem::size_of::<Handle>()).cast::<Handle>();
        if object.is_null() {
            count(resource_type as usize, -1);
            return None;
        }
        object.write(Handle {
            store,
            resource_type: resource_type as usize,
        });
        let term = enif_make_resource(env.as_c_arg(), object.cast());
        enif_release_resource(object.cast());
        Some(Term::new(env, term))
    }
}

/// The store `term` refers to, whichever load made it, or `None` if it is no store.
pub fn store(term: Term<'_>) -> Option<&Arc<Store>> {
    let current = CURRENT.load(Ordering::Acquire) as usize;
    if let Some(store) = store_of(term, current) {
        return Some(store);
    }
    // A store made before a reload, or not a store at all. Compared under the lock: a type leaves the list only
    // under it, just before the VM frees the type, so no pointer tried here is stale.
    let generations = lock(&GENERATIONS);
    generations
        .iter()
        .filter(|&&(t, _)| t != current)
        .find_map(|&(t, _)| store_of(term, t))
}

fn store_of(term: Term<'_>, resource_type: usize) -> Option<&Arc<Store>> {
    if resource_type == 0 {
        return None;
    }
    let mut object: *const c_void = ptr::null();
    // SAFETY: enif_get_resource only compares the resource's type with `resource_type`, a type that is alive (see
    // `store`). On success `object` is a `Handle` written by `make_store`, alive at least as long as the term.
    unsafe {
        let found = enif_get_resource(
            term.get_env().as_c_arg(),
            term.as_c_arg(),
            resource_type as *const ErlNifResourceType,
            &mut object,
        ) != 0;
        (found && !object.is_null()).then(|| &(*object.cast::<Handle>()).store)
    }
}

/// Runs when the VM frees a store resource, on whichever thread collected its last reference.
///
/// # Safety
/// Called by the VM only, with a resource `make_store` made.
unsafe extern "C" fn destructor(_env: *mut ErlNifEnv, object: *mut c_void) {
    let handle = object.cast::<Handle>();
    let resource_type = (*handle).resource_type;
    ptr::drop_in_place(handle);
    count(resource_type, -1);
}

/// Adjusts a type's count of live stores, forgetting a type of an earlier load once it has none.
fn count(resource_type: usize, delta: isize) {
    let mut generations = lock(&GENERATIONS);
    let current = CURRENT.load(Ordering::Acquire) as usize;
    if let Some(index) = generations.iter().position(|&(t, _)| t == resource_type) {
        let live = &mut generations[index].1;
        *live = live.saturating_add_signed(delta);
        if *live == 0 && resource_type != current {
            generations.swap_remove(index);
        }
    }
}

/// A select over more sessions than one call hands out.
pub struct Cursor {
    state: Mutex<CursorState>,
}

pub struct CursorState {
    /// The store, kept alive while the cursor lives, and the walk of the group, while there is more to take.
    pub store: Arc<Store>,
    pub selection: Option<Selection<Entry>>,
    /// Entries taken and not yet handed out, the next last. Holding them keeps them alive even if deleted.
    pub pending: Vec<Entry>,
}

#[rustler::resource_impl]
impl Resource for Cursor {}

impl Cursor {
    pub fn new(state: CursorState) -> Self {
        Cursor {
            state: Mutex::new(state),
        }
    }

    /// Runs `step` on the cursor's state. A cursor is used by one process, so this never waits.
    pub fn with_state<R>(&self, step: impl FnOnce(&mut CursorState) -> R) -> R {
        step(&mut lock(&self.state))
    }
}

/// A packing stopped for its budget on a normal scheduler, waiting for its dirty one: the packer, and the shape
/// of the items it left to do (`Item::shape`), which must come back as they left.
pub struct Resume {
    packing: Mutex<Option<Stopped>>,
}

pub type Stopped = (Packer<Arc<Held>>, Vec<(u8, u32, u8, usize)>);

#[rustler::resource_impl]
impl Resource for Resume {}

impl Resume {
    pub fn new(stopped: Stopped) -> Self {
        Resume {
            packing: Mutex::new(Some(stopped)),
        }
    }

    /// The packing, once: a second resume of the same packing finds nothing.
    pub fn take(&self) -> Option<Stopped> {
        lock(&self.packing).take()
    }
}

/// Whether a term is a store or a cursor of this library, which a session must not hold.
pub fn is_ours(term: Term<'_>) -> bool {
    store(term).is_some() || term.try_get_resource::<Cursor>().is_some()
}
