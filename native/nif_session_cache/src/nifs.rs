//! The NIF functions: decode arguments, call the store, encode results. Nothing else lives here.
//!
//! Every function runs on a normal scheduler and does bounded work; each doc comment states its cost. Work that
//! grows with the store (folds, large selects, freeing) is split into chunks or moved off the schedulers. Work
//! that grows with one session is bounded by `SCHEDULER_BUDGET`: a call whose session costs more returns
//! `nif_session_cache_dirty` having done at most that much, and the Erlang wrapper makes the same call again
//! through its `_dirty` twin, which runs on a dirty CPU scheduler without a budget.
use rustler::{Atom, Binary, Encoder, Env, NifResult, ResourceArc, Term};

use crate::atoms;
use crate::error::{write_outcome, CacheError};
use crate::key::{with_group, with_key, with_store_key};
use crate::lean::lean_nif;
use crate::packed::{Packed, SCHEDULER_BUDGET};
use crate::registry;
use crate::resource::{Cursor, CursorState, Emit, Role, Source, StoreInner, StoreResource};
use crate::shared;
use crate::store_type::{self, KeptStore};

/// Entries copied out per cursor step: about 64 µs for OTP sessions, well under a millisecond.
const CHUNK: usize = 64;
/// Fold slots examined per cursor step, so that a sparse stretch of slots is also walked in bounded steps.
const SCAN_BUDGET: usize = 4096;

// The calls OTP makes on every handshake, and the steps of select and foldl, registered without rustler's
// per-call allocation (`lean.rs`).
lean_nif!("lookup", 2, lookup);
lean_nif!("update", 3, update);
lean_nif!("delete", 2, delete);
lean_nif!("size", 1, size);
lean_nif!("select", 2, select);
lean_nif!("next", 1, next);
lean_nif!("fold", 2, fold);

/// Creates an empty store owned by the calling process. Normal scheduler, O(1).
#[rustler::nif]
fn new(env: Env, role: Atom) -> NifResult<Term> {
    let role = Role::from_atom(role).ok_or(rustler::Error::BadArg)?;
    store_type::make(env, StoreResource::new(env.pid(), role))
        .ok_or(rustler::Error::RaiseAtom("enomem"))
}

/// Empties the store for good; owner only. Normal scheduler, O(shards): a large store is freed on a thread.
/// Returns `ok` or an error atom (see `error.rs`).
#[rustler::nif]
fn terminate<'a>(env: Env<'a>, store: Term<'a>) -> Atom {
    write_outcome(writable(env, store).map(StoreInner::retire))
}

/// The session stored under `key`, copied to the caller, or `undefined`. Any key is accepted: one the store
/// could not hold is simply absent. Normal scheduler, O(1) plus the copy of one session, or
/// `nif_session_cache_dirty` for a session too large to copy within `SCHEDULER_BUDGET`.
fn lookup<'a>(env: Env<'a>, [store, key]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    let store = StoreResource::from_term(store)?;
    match with_key(key, |bytes| {
        store.store.read(bytes, |packed| {
            copy_out(env, packed, Emit::Session, SCHEDULER_BUDGET)
        })
    }) {
        Ok(Some(copied)) => copied.into_result(env),
        // A miss in a store with a shared level: the wrapper asks Redis (`shared.rs`).
        Ok(None) if store.shared.get().is_some() => Ok(atoms::remote_marker().encode(env)),
        Ok(None) => Ok(atoms::undefined().encode(env)),
        // The VM had no memory to encode the key (only bignums, pids, ports and references need it).
        Err(CacheError::OutOfMemory) => Err(rustler::Error::RaiseAtom("enomem")),
        Err(_) => {
            // A key the store could not hold: a miss that never reached the map, counted all the same.
            store.store.count_miss();
            Ok(atoms::undefined().encode(env))
        }
    }
}

/// `lookup` of a session too large for a normal scheduler. Dirty CPU scheduler, O(size of the session). The
/// lookup was counted by `lookup`; the copy is made after the store's lock is released.
#[rustler::nif(schedule = "DirtyCpu")]
fn lookup_dirty<'a>(env: Env<'a>, store: Term<'a>, key: Term<'a>) -> NifResult<Term<'a>> {
    let store = StoreResource::from_term(store)?;
    match with_key(key, |bytes| store.store.peek(bytes)) {
        Ok(Some(packed)) => copy_out(env, &packed, Emit::Session, usize::MAX).into_result(env),
        Ok(None) => Ok(atoms::undefined().encode(env)),
        Err(CacheError::OutOfMemory) => Err(rustler::Error::RaiseAtom("enomem")),
        Err(_) => Ok(atoms::undefined().encode(env)),
    }
}

/// An entry copied out, or why not.
enum Copied<'a> {
    Term(Term<'a>),
    /// Over the budget: to be copied on a dirty scheduler.
    TooLarge,
    /// The VM had no memory for the copy.
    NoMemory,
}

impl<'a> Copied<'a> {
    fn into_result(self, env: Env<'a>) -> NifResult<Term<'a>> {
        match self {
            Copied::Term(term) => Ok(term),
            Copied::TooLarge => Ok(atoms::dirty().encode(env)),
            Copied::NoMemory => Err(rustler::Error::RaiseAtom("enomem")),
        }
    }
}

/// The session, or the `{Key, Session}` entry, of `packed`, copied to the caller if that costs at most `budget`.
fn copy_out<'a>(env: Env<'a>, packed: &Packed, emit: Emit, budget: usize) -> Copied<'a> {
    if budget < usize::MAX && packed.cost() > budget {
        return Copied::TooLarge;
    }
    let copy = match emit {
        Emit::Entry => packed.entry(env),
        Emit::Session => packed.session(env),
    };
    copy.map_or(Copied::NoMemory, Copied::Term)
}

/// Inserts or replaces; owner only. Normal scheduler, O(size of the session) to pack it (see `packed.rs`), or
/// `nif_session_cache_dirty`, having done at most `SCHEDULER_BUDGET` of work, for a session too large to pack
/// within it. Returns `ok` or an error atom: never raises, so the session never appears in a stack trace.
fn update<'a>(env: Env<'a>, [store, key, session]: [Term<'a>; 3]) -> NifResult<Atom> {
    Ok(write(env, store, key, session, SCHEDULER_BUDGET))
}

/// `update` of a session too large for a normal scheduler. Dirty CPU scheduler, O(size of the session).
#[rustler::nif(schedule = "DirtyCpu")]
fn update_dirty<'a>(env: Env<'a>, store: Term<'a>, key: Term<'a>, session: Term<'a>) -> Atom {
    write(env, store, key, session, usize::MAX)
}

/// The insert of `update` and `update_dirty`, with a budget (`SCHEDULER_BUDGET`) for packing the session.
/// Returns the outcome as an atom, even for a bug: a panic, which rustler would raise as `nif_panicked` with the
/// arguments, the session among them, in the stack trace, is returned as `internal_error`.
fn write<'a>(
    env: Env<'a>,
    store: Term<'a>,
    key: Term<'a>,
    session: Term<'a>,
    budget: usize,
) -> Atom {
    let write = || {
        writable(env, store).and_then(|store| {
            with_store_key(key, |encoded| {
                let packed = Packed::pack(key, session, encoded.bytes(), &store.interner, budget)?;
                // A listener's store with a shared level queues the entry for Redis once stored (`shared.rs`):
                // a counted reference and a queue slot, the rest happens on its writer thread.
                let publish = store.shared.get().zip(Binary::from_term(key).ok());
                let published = publish.as_ref().map(|_| packed.clone());
                // A replaced entry is freed here, unless a cursor still holds it: its secrets wiped, O(1).
                store.store.insert_ref(encoded, packed)?;
                if let (Some((shared, id)), Some(entry)) = (publish, published) {
                    shared::publish(shared, id.as_slice(), &entry);
                }
                Ok(())
            })?
        })
    };
    // The store's locks recover from poisoning (`session_store::sync`), so nothing unwound here is reused broken.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(write))
        .unwrap_or(Err(CacheError::Internal));
    write_outcome(outcome)
}

/// Removes `key` if present; owner only. A key the store could not hold is absent, so deleting it is `ok`.
/// Normal scheduler, O(1). Returns `ok` or an error atom.
fn delete<'a>(env: Env<'a>, [store, key]: [Term<'a>; 2]) -> NifResult<Atom> {
    Ok(write_outcome(writable(env, store).and_then(
        |store| match with_store_key(key, |key| store.store.remove(key)) {
            Ok(removed) => removed.map(drop).map_err(CacheError::from),
            // Out of memory while encoding the key: the entry may be there, so the delete did not happen.
            Err(CacheError::OutOfMemory) => Err(CacheError::OutOfMemory),
            Err(_) => Ok(()),
        },
    )))
}

/// The store `term` refers to, if it is one and the calling process owns it.
fn writable<'a>(env: Env<'a>, term: Term<'a>) -> Result<&'a StoreInner, CacheError> {
    let store = StoreResource::from_term(term).map_err(|_| CacheError::BadArg)?;
    store.check_writer(env)?;
    Ok(store)
}

/// Exact number of entries. Normal scheduler, O(1).
fn size<'a>(_env: Env<'a>, [store]: [Term<'a>; 1]) -> NifResult<usize> {
    Ok(StoreResource::from_term(store)?.store.len())
}

/// The sessions whose key is `{PartialKey, _}`, as `{Sessions, done}`, or `{FirstSessions, Cursor}` when there
/// are more than one chunk. Normal scheduler: one lookup, then, as every call of `next` on the cursor, at most
/// `CHUNK` sessions copied and a bounded walk of the group (see `session_store::Selection`).
fn select<'a>(env: Env<'a>, [store, partial_key]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    let store = StoreResource::from_term(store)?;
    let mut pending = Vec::new();
    // A partial key the store could not hold has no sessions.
    let selection = with_group(partial_key, |group| {
        store.store.select(group, CHUNK, &mut pending)
    });
    let source = match selection {
        Ok(Some(selection)) => Source::Group {
            store: KeptStore::new(store),
            selection,
        },
        Ok(None) | Err(_) => Source::Exhausted,
    };
    let mut state = CursorState { source, pending };
    // A first session too large for this scheduler makes an empty first chunk; `next` then asks for a dirty one.
    let chunk = step(env, &mut state, SCHEDULER_BUDGET)?.unwrap_or(Chunk {
        items: Vec::new(),
        more: true,
    });
    Ok(if chunk.more {
        (chunk.items, ResourceArc::new(Cursor::new(state))).encode(env)
    } else {
        (chunk.items, atoms::done()).encode(env)
    })
}

/// One chunk of a fold over every entry: `{Entries, Next}`, the `{Key, Session}` entries from fold slot `from`
/// on and the slot to go on from, or `{Entries, done}`. Normal scheduler: at most `SCAN_BUDGET` slots examined
/// and `CHUNK` entries copied, within `SCHEDULER_BUDGET`; `nif_session_cache_dirty` if the next entry alone
/// costs more. A fold's state is the store and a slot number, both held by the caller: the caller's reference
/// keeps the store alive, and a fold goes on across a reload of the library, as stores do (`store_type.rs`).
fn fold<'a>(env: Env<'a>, [store, from]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    fold_within(env, store, from, SCHEDULER_BUDGET)
}

/// `fold` from a slot whose entry is too large for a normal scheduler. Dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn fold_dirty<'a>(env: Env<'a>, store: Term<'a>, from: Term<'a>) -> NifResult<Term<'a>> {
    fold_within(env, store, from, usize::MAX)
}

fn fold_within<'a>(
    env: Env<'a>,
    store: Term<'a>,
    from: Term<'a>,
    budget: usize,
) -> NifResult<Term<'a>> {
    let store = StoreResource::from_term(store)?;
    let from: usize = from.decode()?;
    let mut taken = Vec::new();
    let mut spent = 0usize;
    let next = store
        .store
        .scan(from, CHUNK, SCAN_BUDGET, &mut taken, |packed| {
            spent = spent.saturating_add(packed.cost());
            budget == usize::MAX || spent <= budget
        });
    if taken.is_empty() && next == Some(from) {
        // The entry at `from` alone is over the budget.
        return Ok(atoms::dirty().encode(env));
    }
    let entries = taken
        .iter()
        .map(
            |packed| match copy_out(env, packed, Emit::Entry, usize::MAX) {
                Copied::Term(term) => Ok(term),
                Copied::TooLarge | Copied::NoMemory => Err(rustler::Error::RaiseAtom("enomem")),
            },
        )
        .collect::<NifResult<Vec<Term<'a>>>>()?;
    Ok(match next {
        Some(next) => (entries, next).encode(env),
        None => (entries, atoms::done()).encode(env),
    })
}

/// The next chunk of a select's cursor: `{Items, done}` or `{Items, Cursor}`. Normal scheduler: a bounded walk
/// of a group examined, and at most `CHUNK` entries copied, within
/// `SCHEDULER_BUDGET`; `nif_session_cache_dirty` if the next entry alone costs more.
fn next<'a>(env: Env<'a>, [cursor]: [Term<'a>; 1]) -> NifResult<Term<'a>> {
    next_within(env, cursor, SCHEDULER_BUDGET)
}

/// `next` of a cursor whose next entry is too large for a normal scheduler. Dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn next_dirty<'a>(env: Env<'a>, cursor: Term<'a>) -> NifResult<Term<'a>> {
    next_within(env, cursor, usize::MAX)
}

fn next_within<'a>(env: Env<'a>, cursor: Term<'a>, budget: usize) -> NifResult<Term<'a>> {
    let handle = Cursor::from_term(cursor)?;
    Ok(match handle.with_state(|state| step(env, state, budget))? {
        None => atoms::dirty().encode(env),
        Some(chunk) if chunk.more => (chunk.items, cursor).encode(env),
        Some(chunk) => (chunk.items, atoms::done()).encode(env),
    })
}

/// One chunk of a cursor's entries, copied to the caller.
struct Chunk<'a> {
    items: Vec<Term<'a>>,
    /// Whether more may follow.
    more: bool,
}

/// Copies out one chunk: up to `CHUNK` entries that together cost at most `budget` to copy, or `None` if the
/// next entry alone costs more. If the VM has no memory for a copy, raises `enomem` and keeps the chunk pending.
fn step<'a>(env: Env<'a>, state: &mut CursorState, budget: usize) -> NifResult<Option<Chunk<'a>>> {
    if state.pending.is_empty() {
        match &mut state.source {
            Source::Group { store, selection } => {
                if !store
                    .store
                    .select_more(selection, CHUNK, &mut state.pending)
                {
                    state.source = Source::Exhausted;
                }
            }
            Source::Exhausted => {}
        }
    }
    // Entries are handed out from the end of `pending`, in their order there.
    let mut rest = state.pending.len();
    let mut spent = 0usize;
    while rest > 0 && state.pending.len() - rest < CHUNK {
        spent = spent.saturating_add(state.pending[rest - 1].cost());
        if budget < usize::MAX && spent > budget {
            break;
        }
        rest -= 1;
    }
    if rest == state.pending.len() && rest > 0 {
        return Ok(None);
    }
    let items = state.pending[rest..]
        .iter()
        .map(
            |packed| match copy_out(env, packed, Emit::Session, usize::MAX) {
                Copied::Term(term) => Ok(term),
                Copied::TooLarge | Copied::NoMemory => Err(rustler::Error::RaiseAtom("enomem")),
            },
        )
        .collect::<NifResult<Vec<Term<'a>>>>()?;
    state.pending.truncate(rest);
    let more = !state.pending.is_empty() || !matches!(state.source, Source::Exhausted);
    Ok(Some(Chunk { items, more }))
}

/// A map describing the store: id, role, owner, entries, bytes, whether it was terminated, and operation
/// counters. Normal scheduler, O(1).
#[rustler::nif]
fn info<'a>(env: Env<'a>, store: Term<'a>) -> NifResult<Term<'a>> {
    describe(env, StoreResource::from_term(store)?)
}

/// `info/1` of every live store, oldest first. Holds no store alive. O(stores), a few microseconds each, so on a
/// dirty CPU scheduler: a node may have thousands of listeners, and a monitor may poll this.
#[rustler::nif(schedule = "DirtyCpu")]
fn stores(env: Env) -> NifResult<Vec<Term>> {
    registry::live()
        .iter()
        .map(|inner| describe(env, inner))
        .collect()
}

fn describe<'a>(env: Env<'a>, inner: &StoreInner) -> NifResult<Term<'a>> {
    let store = &inner.store;
    let counts = store.counts();
    let held_bytes = inner.interner.bytes();
    let mut pairs: Vec<(Atom, Term<'a>)> = vec![
        (atoms::id(), inner.id.encode(env)),
        (atoms::role(), inner.role.atom().encode(env)),
        (atoms::owner(), inner.owner.encode(env)),
        (atoms::entries(), store.len().encode(env)),
        (atoms::bytes(), (store.bytes() + held_bytes).encode(env)),
        (atoms::held_bytes(), held_bytes.encode(env)),
        (atoms::index_bytes(), store.index_bytes().encode(env)),
        (atoms::terminated(), store.is_terminated().encode(env)),
        (atoms::lookup_hits(), counts.lookup_hits.encode(env)),
        (atoms::lookup_misses(), counts.lookup_misses.encode(env)),
        (atoms::inserts(), counts.inserts.encode(env)),
        (atoms::replaces(), counts.replaces.encode(env)),
        (atoms::deletes(), counts.deletes.encode(env)),
        (atoms::select_hits(), counts.select_hits.encode(env)),
        (atoms::select_misses(), counts.select_misses.encode(env)),
    ];
    if let Some(shared) = inner.shared.get() {
        pairs.push((atoms::shared(), shared::describe(env, shared)?));
    }
    Term::map_from_pairs(env, &pairs)
}
