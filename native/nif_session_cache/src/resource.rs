//! What Erlang holds (as objects, `object.rs`): stores, a select's cursor, and a packing stopped for its budget;
//! and the list of live stores, held weakly, for `stores/1`.
//!
//! A store lives as long as anything refers to it: Erlang's references, a cursor, a listing. When the last goes
//! it is emptied (off the scheduler when large) and leaves the list: OTP never calls terminate for a listener's
//! store.

use std::sync::{Arc, Mutex};

use once_cell::sync::{Lazy, OnceCell};
use rustler::{Atom, LocalPid};
use session_codec::pack::Packer;
use session_store::registry::Registry;
use session_store::{Config, Scheduling, Selection};

use crate::entry::Entry;
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
        STORES.add(|id| Store {
            id,
            owner,
            role,
            entries: session_store::Store::new(Config::default()),
            parts: Parts::new(ours),
            shared: OnceCell::new(),
            scheduling: Scheduling::default(),
        })
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
        STORES.remove(self.id);
        self.retire();
    }
}

/// The live stores of this library, for `stores/1`; their ids carry the load's number (`Registry::first_id`).
pub static STORES: Lazy<Registry<Store>> = Lazy::new(Registry::default);

/// A select over more sessions than one call hands out. A cursor is used by one process, so its lock never waits.
pub type Cursor = Mutex<CursorState>;

pub struct CursorState {
    /// The store, kept alive while the cursor lives, and the walk of the group, while there is more to take.
    pub store: Arc<Store>,
    pub selection: Option<Selection<Entry>>,
    /// Entries taken and not yet handed out, the next last. Holding them keeps them alive even if deleted.
    pub pending: Vec<Entry>,
}

/// A packing stopped for its budget on a normal scheduler, waiting for its dirty one: the packer, and the shape
/// of the items it left to do (`Item::shape`), which must come back as they left. Taken once: a second resume of
/// the same packing finds nothing.
pub type Resume = Mutex<Option<Stopped>>;

pub type Stopped = (Packer<Arc<Held>>, Vec<(u8, u32, u8, usize)>);
