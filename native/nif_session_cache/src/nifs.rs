//! The NIF functions on a store: decode arguments, call the store and the codec, encode results.
//!
//! Each runs on a normal scheduler and spends at most `SCHEDULER_BUDGET` units of work there, which the store
//! accounts for (`info/1`'s `scheduler`). A session that costs more is copied or packed on a dirty CPU scheduler:
//! a copy is priced before it starts, so `lookup` answers `dirty` having done nothing; a packing stops where the
//! budget ran out and `update` hands back what is left, which `update_dirty` finishes. Results are tagged, so no
//! stored term is ever taken for one of these answers.
use std::cell::RefCell;
use std::sync::Arc;

use rustler::{Atom, Encoder, Env, NifResult, Term};
use session_codec::key::{binary_of, with_key, KeyError};
use session_codec::pack::{Item, Items, Packer, SCHEDULER_BUDGET};
use session_nif::info;
use session_nif::key::with_store_key;
use session_store::sync::lock;
use session_store::Inserted;

use crate::atoms::{self, ENOMEM};
use crate::entry::Entry;
use crate::error::{AsAtom, CacheError};
use crate::held::Held;
use crate::object::{self, Body};
use crate::reaper;
use crate::resource::{self, Resume, Store};
use crate::term::Viewed;

/// Creates an empty store owned by the calling process. Normal scheduler, O(1).
#[rustler::nif]
fn new(env: Env, role: Atom) -> NifResult<Term> {
    if ![atoms::client(), atoms::server(), atoms::undefined()].contains(&role) {
        return Err(rustler::Error::BadArg);
    }
    let store = Store::new(env.pid(), role, object::is_ours);
    object::make(env, Body::Store(store)).ok_or(ENOMEM)
}

/// Empties the store for good; owner only. Normal scheduler, O(shards): a large store is freed on a thread.
/// Returns `ok` or an error atom (`error.rs`).
#[rustler::nif]
fn terminate<'a>(env: Env<'a>, store: Term<'a>) -> Atom {
    outcome(writable(env, store).map(|store| store.retire()))
}

/// `{ok, Session}` for the session stored under `key`, copied to the caller; `undefined` for none, or `remote` if
/// the store has a shared level to ask; `dirty` if the copy costs more than the budget. Any key is accepted: one
/// the store could not hold is simply absent. Normal scheduler, O(1) and the copy of one session.
#[rustler::nif]
fn lookup<'a>(env: Env<'a>, store: Term<'a>, key: Term<'a>) -> NifResult<Term<'a>> {
    let store = store_arg(store)?;
    let found = with_key(Viewed(key), |bytes| {
        store.entries.read(bytes, |entry| {
            (entry.cost() <= SCHEDULER_BUDGET).then(|| (entry.cost(), entry.copy_out(env, false)))
        })
    });
    match found {
        Ok(Some(Some((cost, copy)))) => {
            store.scheduling.spent(cost);
            Ok((atoms::ok(), copy.ok_or(ENOMEM)?).encode(env))
        }
        Ok(Some(None)) => {
            store.scheduling.went_dirty();
            Ok(atoms::dirty().encode(env))
        }
        Ok(None) if store.shared.get().is_some() => Ok(atoms::remote().encode(env)),
        Ok(None) => Ok(atoms::undefined().encode(env)),
        // The VM had no memory to encode the key (only bignums, pids, ports and references need it).
        Err(KeyError::OutOfMemory) => Err(ENOMEM),
        Err(KeyError::Unsupported) => {
            // A key the store could not hold: a miss that never reached the map, counted all the same.
            store.entries.count_miss();
            Ok(atoms::undefined().encode(env))
        }
    }
}

/// `lookup` of a session too costly for a normal scheduler: `{ok, Session}` or `undefined`. Dirty CPU scheduler,
/// O(size of the session). Counted by `lookup`; the copy is made with no lock of the store's held.
#[rustler::nif(schedule = "DirtyCpu")]
fn lookup_dirty<'a>(env: Env<'a>, store: Term<'a>, key: Term<'a>) -> NifResult<Term<'a>> {
    let store = store_arg(store)?;
    match with_key(Viewed(key), |bytes| store.entries.peek(bytes)) {
        Ok(Some(entry)) => Ok((atoms::ok(), entry.copy_out(env, false).ok_or(ENOMEM)?).encode(env)),
        Ok(None) | Err(KeyError::Unsupported) => Ok(atoms::undefined().encode(env)),
        Err(KeyError::OutOfMemory) => Err(ENOMEM),
    }
}

thread_local! {
    /// The packer entries are made with, one per scheduler thread, whose buffers are kept between calls: its
    /// secret section is wiped after each.
    static PACKER: RefCell<Packer<Arc<Held>>> = RefCell::new(Packer::default());
}

/// Inserts or replaces; owner only. Normal scheduler: at most `SCHEDULER_BUDGET` units of packing. Returns `ok`,
/// or `publish` for a store whose shared level the Erlang side then feeds; or `{dirty, Resume, Items}` for a
/// session that costs more, what is left to do, which `update_dirty/4` finishes; or an error atom. Never raises,
/// so the session never appears in a stack trace.
#[rustler::nif]
fn update<'a>(env: Env<'a>, store: Term<'a>, key: Term<'a>, session: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let store = writable(env, store)?;
        PACKER.with_borrow_mut(|packer| {
            packer.reset();
            let mut items = Item::pair(Viewed(key), Viewed(session));
            let stored = pack_and_store(store, key, packer, &mut items, SCHEDULER_BUDGET);
            store.scheduling.spent(packer.spent());
            match stored {
                Err(CacheError::OverBudget) => {
                    store.scheduling.went_dirty();
                    let shape = items.iter().map(Item::shape).collect();
                    let resume =
                        Body::Resume(Box::new(Resume::new(Some((std::mem::take(packer), shape)))));
                    let resume = object::make(env, resume).ok_or(CacheError::OutOfMemory)?;
                    let items: Vec<Term<'a>> = items.iter().map(|item| export(env, item)).collect();
                    Ok((atoms::dirty(), resume, items).encode(env))
                }
                other => other.map(|answer| answer.encode(env)),
            }
        })
    })
}

/// `update` going on from where its packing stopped, with the `Resume` and items it handed back. Dirty CPU
/// scheduler, O(what is left of the session). Returns as `update` does, never `dirty`.
#[rustler::nif(schedule = "DirtyCpu")]
fn update_dirty<'a>(
    env: Env<'a>,
    store: Term<'a>,
    key: Term<'a>,
    resume: Term<'a>,
    items: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let store = writable(env, store)?;
        let Some(Body::Resume(resume)) = object::own(resume) else {
            return Err(CacheError::BadArg);
        };
        let (mut packer, shape) = lock(resume).take().ok_or(CacheError::BadArg)?;
        let parts: Vec<(u8, Term<'a>, u32, u8)> = items.decode().map_err(|_| CacheError::BadArg)?;
        let mut items = Items::new();
        for (kind, term, number, depth) in parts {
            items.push(
                Item::from_parts(kind, Viewed(term), number, depth).ok_or(CacheError::BadArg)?,
            );
        }
        // Items other than those handed out would pack into an entry its code does not describe.
        if !items.iter().map(Item::shape).eq(shape) {
            return Err(CacheError::BadArg);
        }
        pack_and_store(store, key, &mut packer, &mut items, usize::MAX)
            .map(|answer| answer.encode(env))
    })
}

/// An item of a stopped packing as `{Kind, Term, Number, Depth}`: plain terms, which Erlang hands back as they are.
fn export<'a>(env: Env<'a>, item: &Item<'a, Viewed<'a>>) -> Term<'a> {
    let (kind, term, number, depth) = item.parts();
    (kind, term.0, number, depth).encode(env)
}

/// Packs what `items` hold within `budget`, and stores the entry under `key`, replacing (and freeing, unless a
/// cursor holds it) any entry there. `publish` when the store's shared level is to get it.
fn pack_and_store<'a>(
    store: &Store,
    key: Term<'a>,
    packer: &mut Packer<Arc<Held>>,
    items: &mut Items<'a, Viewed<'a>>,
    budget: usize,
) -> Result<Atom, CacheError> {
    with_store_key(Viewed(key), |encoded| {
        packer.run(items, &mut &store.parts, binary_of(encoded.bytes()), budget)?;
        let entry = Entry::new(encoded.bytes(), packer).ok_or(CacheError::OutOfMemory)?;
        let shared = store.shared.get().is_some() && binary_of(encoded.bytes()).is_some();
        if let Inserted::Replaced(old) = store.entries.insert_ref(encoded, entry)? {
            store.release(old);
        }
        Ok(if shared {
            atoms::publish()
        } else {
            atoms::ok()
        })
    })?
}

/// Removes `key` if present; owner only. A key the store could not hold is absent, so deleting it is `ok`.
/// Normal scheduler, O(1). Returns `ok` or an error atom.
#[rustler::nif]
fn delete<'a>(env: Env<'a>, store: Term<'a>, key: Term<'a>) -> Atom {
    outcome(writable(env, store).and_then(|store| {
        match with_store_key(Viewed(key), |key| store.entries.remove(key)) {
            Ok(removed) => removed
                .map(|entry| entry.map_or((), |entry| store.release(entry)))
                .map_err(CacheError::from),
            // Out of memory while encoding the key: the entry may be there, so the delete did not happen.
            Err(CacheError::OutOfMemory) => Err(CacheError::OutOfMemory),
            Err(_) => Ok(()),
        }
    }))
}

/// Exact number of entries. Normal scheduler, O(1).
#[rustler::nif]
fn size(store: Term) -> NifResult<usize> {
    Ok(store_arg(store)?.entries.len())
}

/// A map describing the store: id, role, owner, entries, bytes, whether it was terminated, operation counters
/// and its scheduler accounting. Normal scheduler, O(1).
#[rustler::nif]
fn info<'a>(env: Env<'a>, store: Term<'a>) -> NifResult<Term<'a>> {
    describe(env, store_arg(store)?)
}

/// A handle on this library, and a number that is the same for every handle on it: the loader keeps one per
/// library, so that `stores/1` reaches every library's stores. Pins the library (`reaper.rs`). Normal scheduler.
#[rustler::nif]
fn library(env: Env) -> NifResult<(Term, usize)> {
    reaper::start();
    let handle = object::make(env, Body::Library).ok_or(ENOMEM)?;
    Ok((handle, object::mapping()))
}

/// `info/1` of every live store of the library `handle` is on (`library/0`), oldest first. O(stores), a few
/// microseconds each, so on a dirty CPU scheduler: a node may have thousands of listeners, and a monitor may poll
/// this.
#[rustler::nif(schedule = "DirtyCpu")]
fn stores<'a>(env: Env<'a>, handle: Term<'a>) -> NifResult<Vec<Term<'a>>> {
    let Some(Body::Library) = object::own(handle) else {
        return Err(rustler::Error::BadArg);
    };
    resource::STORES
        .live()
        .iter()
        .map(|store| describe(env, store))
        .collect()
}

/// `info/1` of a store: the plain crates' report, and what only the VM knows, its role and owner.
fn describe<'a>(env: Env<'a>, store: &Store) -> NifResult<Term<'a>> {
    let (entries, scheduling) = (&store.entries, &store.scheduling);
    let held = store.parts.bytes();
    let mut report = info::store(store.id, entries, held, scheduling, SCHEDULER_BUDGET);
    if let Some(shared) = store.shared.get() {
        report.push(("shared", shared.info()));
    }
    atoms::report(env, &report)?
        .map_put(atoms::role(), store.role)?
        .map_put(atoms::owner(), store.owner)
}

/// The store `term` refers to.
pub fn store_arg(term: Term<'_>) -> NifResult<&Store> {
    object::store(term)
        .map(|store| &**store)
        .ok_or(rustler::Error::BadArg)
}

/// The store `term` refers to, if it is one and the calling process owns it.
pub fn writable<'a>(env: Env<'a>, term: Term<'a>) -> Result<&'a Store, CacheError> {
    match object::store(term) {
        Some(store) if store.owner == env.pid() => Ok(store),
        Some(_) => Err(CacheError::NotOwner),
        None => Err(CacheError::BadArg),
    }
}

/// A write's outcome as the atom Erlang receives: `ok` or the error's atom.
pub fn outcome(result: Result<(), CacheError>) -> Atom {
    match result {
        Ok(()) => atoms::ok(),
        Err(error) => error.atom(),
    }
}

/// Runs a write, its error as an atom, even a bug's: a panic, which rustler would raise as `nif_panicked` with the
/// arguments (the session among them) in the stack trace, is `internal_error`. The store's locks recover from
/// poisoning (`session_store::sync`), so nothing unwound here is reused broken.
fn guarded<'a>(env: Env<'a>, write: impl FnOnce() -> Result<Term<'a>, CacheError>) -> Term<'a> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(write)) {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => error.atom().encode(env),
        Err(_) => CacheError::Internal.atom().encode(env),
    }
}
