//! The two resource types Erlang holds: a store, and a cursor over a large select. (A fold needs no cursor: its
//! state is the store and a slot number.)

use std::sync::{Arc, Mutex};

use rustler::{Atom, Env, LocalPid, Resource, Term};
use session_store::{Config, Selection, Store};

use crate::atoms;
use crate::error::CacheError;
use crate::held::Interner;
use crate::packed::Packed;
use crate::reaper;
use crate::registry;
use crate::shared;
use crate::store_type::{self, KeptStore};

/// The role OTP passed to init/1, if any. Reported by info, never used to change behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
    Unspecified,
}

impl Role {
    /// `client`, `server` or `undefined`; any other atom is no role.
    pub fn from_atom(atom: Atom) -> Option<Role> {
        [Role::Client, Role::Server, Role::Unspecified]
            .into_iter()
            .find(|role| role.atom() == atom)
    }

    pub fn atom(self) -> Atom {
        match self {
            Role::Client => atoms::client(),
            Role::Server => atoms::server(),
            Role::Unspecified => atoms::undefined(),
        }
    }
}

/// A store and who may write it. Erlang holds it through [`StoreResource`]; the registry holds it weakly.
pub struct StoreInner {
    /// Unique for the life of the library, so the registry can forget exactly this store.
    pub id: u64,
    /// The process that called init: the only one allowed to write.
    pub owner: LocalPid,
    pub role: Role,
    pub store: Store<Packed>,
    /// The terms its entries hold, and the fields they share.
    pub interner: Interner,
    /// Its shared level, if `share/2` gave it one (`shared.rs`).
    pub shared: shared::Slot,
}

impl StoreInner {
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
        reaper::dispose(self.store.retire(), self.interner.bytes());
        self.interner.clear();
    }
}

/// What an Erlang store reference points to (its resource type lives in `store_type.rs`). When the last
/// reference is collected, the store is retired and leaves the registry: OTP never calls terminate for a
/// listener's store.
pub struct StoreResource {
    inner: Arc<StoreInner>,
    /// The resource type this store was made under, for its destructor (see `store_type.rs`).
    pub resource_type: usize,
}

impl StoreResource {
    pub fn new(owner: LocalPid, role: Role) -> Self {
        reaper::start();
        let inner = registry::register(|id| StoreInner {
            id,
            owner,
            role,
            store: Store::new(Config::default()),
            interner: Interner::new(),
            shared: shared::Slot::new(),
        });
        StoreResource {
            inner,
            resource_type: 0,
        }
    }

    /// Borrows the store a term refers to, without touching its reference count.
    pub fn from_term<'a>(term: Term<'a>) -> rustler::NifResult<&'a StoreResource> {
        store_type::get(term).ok_or(rustler::Error::BadArg)
    }
}

impl std::ops::Deref for StoreResource {
    type Target = StoreInner;

    fn deref(&self) -> &StoreInner {
        &self.inner
    }
}

impl Drop for StoreResource {
    // Runs in a resource destructor, on whichever scheduler collected the last reference.
    fn drop(&mut self) {
        registry::forget(self.inner.id);
        self.inner.retire();
    }
}

/// What a cursor hands back for each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// `{Key, Session}`, for foldl.
    Entry,
    /// `Session`, for select_session.
    Session,
}

/// Where a select's cursor gets more sessions when its pending ones run out.
pub enum Source {
    /// Selecting a group too large for one call. The cursor keeps the store alive, so a select whose caller
    /// dropped its last reference still sees every session; a store terminated meanwhile is empty, and the walk
    /// simply ends.
    Group {
        store: KeptStore,
        selection: Selection<Packed>,
    },
    /// Nothing more to fetch: everything left is pending.
    Exhausted,
}

pub struct CursorState {
    pub source: Source,
    /// Entries taken from the store and not yet handed out. Holding them keeps them alive even if deleted.
    pub pending: Vec<Packed>,
}

pub struct Cursor {
    state: Mutex<CursorState>,
}

#[rustler::resource_impl]
impl Resource for Cursor {}

impl std::panic::RefUnwindSafe for Cursor {}

impl Cursor {
    pub fn new(state: CursorState) -> Self {
        Cursor {
            state: Mutex::new(state),
        }
    }

    pub fn from_term<'a>(term: Term<'a>) -> rustler::NifResult<&'a Cursor> {
        term.try_get_resource::<Cursor>()
            .ok_or(rustler::Error::BadArg)
    }

    /// Runs `step` on the cursor's state. A cursor is normally used by one process, so this never waits long.
    pub fn with_state<R>(&self, step: impl FnOnce(&mut CursorState) -> R) -> R {
        step(&mut session_store::sync::lock(&self.state))
    }
}

/// Whether a term is a store or a cursor of this library.
pub fn is_ours(term: Term) -> bool {
    store_type::get(term).is_some() || term.try_get_resource::<Cursor>().is_some()
}
