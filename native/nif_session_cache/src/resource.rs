//! What Erlang holds (as objects, `object.rs`): stores, a select's cursor, and a packing stopped for its budget;
//! and the list of live stores, held weakly, for `stores/1`.
//!
//! A store lives as long as anything refers to it: Erlang's references, a cursor, a listing. When the last goes
//! it is emptied (off the scheduler when large) and leaves the list: OTP never calls terminate for a listener's
//! store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use once_cell::sync::{Lazy, OnceCell};
use rustler::{Atom, Env, LocalPid};
use session_codec::pack::Packer;
use session_store::sync::lock;
use session_store::{Config, Scheduling, Selection};

use crate::entry::Entry;
use crate::error::CacheError;
use crate::held::{Held, Ours, Parts};
use crate::level::SharedLevel;
use crate::reaper;

/// A store and who may write it.
pub struct Store {
    /// Unique in the VM, among every library's stores.
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
    pub scheduling: Scheduling,
}

impl Store {
    /// A new empty store, listed among the live ones, whose sessions must hold nothing `ours` tells.
    pub fn new(owner: LocalPid, role: Atom, ours: Ours) -> Arc<Store> {
        reaper::start();
        let store = Arc::new(Store {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            owner,
            role,
            entries: session_store::Store::new(Config::default()),
            parts: Parts::new(ours),
            shared: OnceCell::new(),
            scheduling: Scheduling::default(),
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
            self.scheduling.freed_later();
        }
        self.parts.clear();
    }

    /// Lets go of an entry a write took out: its parts are freed on the reaper if too costly for a scheduler
    /// (`Entry`'s drop), unless a cursor still holds it.
    pub fn release(&self, entry: Entry) {
        if entry.heavy() {
            self.scheduling.freed_later();
        }
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

/// Makes this load's store ids start at `load` × 2^40 at least: load numbers grow with each load in the VM, so
/// no two libraries give one id, and a library loaded again goes on past the ids it gave.
pub fn first_id(load: u64) {
    NEXT_ID.fetch_max(load.saturating_mul(1 << 40).max(1), Ordering::Relaxed);
}
static STORES: Lazy<Mutex<BTreeMap<u64, Weak<Store>>>> = Lazy::new(|| Mutex::new(BTreeMap::new()));

/// The stores alive now, oldest first. O(stores) under the list's lock; the caller works on them after.
pub fn live() -> Vec<Arc<Store>> {
    lock(&STORES).values().filter_map(Weak::upgrade).collect()
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
