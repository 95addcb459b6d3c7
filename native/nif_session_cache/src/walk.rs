//! The NIF functions that hand out many entries: select_session's, through a cursor, and foldl's, through a fold
//! slot. Each call copies at most `CHUNK` entries that together cost at most `SCHEDULER_BUDGET`, and walks a
//! bounded stretch of the store; an entry that alone costs more is copied on a dirty CPU scheduler.

use std::sync::Arc;

use rustler::{Encoder, Env, NifResult, Term};
use session_codec::key::with_group;
use session_codec::pack::SCHEDULER_BUDGET;
use session_store::sync::lock;
use session_store::Budget;

use crate::atoms::{self, ENOMEM};
use crate::entry::Entry;
use crate::nifs::store_arg;
use crate::object::{self, Body};
use crate::resource::{Cursor, CursorState};
use crate::term::Viewed;

/// Entries copied per call: about 64 µs for OTP sessions.
const CHUNK: usize = 64;
/// Fold slots examined per call, so that a sparse stretch of slots is also walked in bounded steps.
const SCAN_SLOTS: usize = 4096;

/// The sessions whose key is `{PartialKey, _}`: `{Sessions, done}`, or `{FirstSessions, Cursor}` when there are
/// more. Normal scheduler: one lookup, then a chunk (`next`).
#[rustler::nif]
fn select<'a>(env: Env<'a>, store: Term<'a>, partial_key: Term<'a>) -> NifResult<Term<'a>> {
    let handle = object::store(store).ok_or(rustler::Error::BadArg)?;
    let mut pending = Vec::new();
    // A partial key the store could not hold has no sessions.
    let selection = with_group(Viewed(partial_key), |group| {
        handle.entries.select(group, CHUNK, &mut pending)
    });
    let mut state = CursorState {
        store: Arc::clone(handle),
        selection: selection.ok().flatten(),
        pending,
    };
    // A first session too costly for this scheduler makes an empty first chunk; `next` then asks for a dirty one.
    let chunk = step(env, &mut state, normal())?.unwrap_or((Vec::new(), true));
    Ok(match chunk {
        (items, true) => {
            let cursor = object::make(env, Body::Cursor(Box::new(Cursor::new(state))));
            (items, cursor.ok_or(ENOMEM)?).encode(env)
        }
        (items, false) => (items, atoms::done()).encode(env),
    })
}

/// The next chunk of a select's cursor: `{Sessions, done}`, `{Sessions, Cursor}`, or `dirty` if the next session
/// alone costs more than the budget. Normal scheduler.
#[rustler::nif]
fn next<'a>(env: Env<'a>, cursor: Term<'a>) -> NifResult<Term<'a>> {
    next_within(env, cursor, normal())
}

/// `next` of a cursor whose next session is too costly for a normal scheduler. Dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn next_dirty<'a>(env: Env<'a>, cursor: Term<'a>) -> NifResult<Term<'a>> {
    next_within(env, cursor, Budget::dirty())
}

/// The budget of a call on a normal scheduler.
fn normal() -> Budget {
    Budget::normal(SCHEDULER_BUDGET)
}

fn next_within<'a>(env: Env<'a>, term: Term<'a>, budget: Budget) -> NifResult<Term<'a>> {
    let Some(Body::Cursor(cursor)) = object::own(term) else {
        return Err(rustler::Error::BadArg);
    };
    Ok(match step(env, &mut lock(cursor), budget)? {
        None => atoms::dirty().encode(env),
        Some((items, true)) => (items, term).encode(env),
        Some((items, false)) => (items, atoms::done()).encode(env),
    })
}

/// Copies out one chunk of a cursor's sessions: up to `CHUNK` that together cost at most `budget`, and whether
/// more may follow; `None` if the next alone costs more. If the VM has no memory for a copy, raises `enomem` and
/// keeps the chunk pending.
fn step<'a>(
    env: Env<'a>,
    state: &mut CursorState,
    mut budget: Budget,
) -> NifResult<Option<(Vec<Term<'a>>, bool)>> {
    let store = Arc::clone(&state.store);
    if state.pending.is_empty() {
        if let Some(selection) = &mut state.selection {
            if !store
                .entries
                .select_more(selection, CHUNK, &mut state.pending)
            {
                state.selection = None;
            }
        }
    }
    // Sessions are handed out from the end of `pending`, in their order there.
    let chunk = state.pending.iter().rev().take(CHUNK);
    let taken = chunk.take_while(|entry| budget.take(entry.cost())).count();
    if taken == 0 && !state.pending.is_empty() {
        store.scheduling.went_dirty();
        return Ok(None);
    }
    let rest = state.pending.len() - taken;
    store.scheduling.note(&budget);
    let items = copy_all(env, &state.pending[rest..], false)?;
    state.pending.truncate(rest);
    Ok(Some((
        items,
        !state.pending.is_empty() || state.selection.is_some(),
    )))
}

/// One chunk of a fold over every entry: `{Entries, Next}`, the `{Key, Session}` entries from fold slot `from` on
/// and the slot to go on from, or `{Entries, done}`; `dirty` if the entry at `from` alone costs more than the
/// budget. Normal scheduler. A fold's state is the store and a slot number, both held by the caller, so a fold
/// goes on across a reload of the library, as stores do.
#[rustler::nif]
fn fold<'a>(env: Env<'a>, store: Term<'a>, from: usize) -> NifResult<Term<'a>> {
    fold_within(env, store, from, normal())
}

/// `fold` from a slot whose entry is too costly for a normal scheduler. Dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn fold_dirty<'a>(env: Env<'a>, store: Term<'a>, from: usize) -> NifResult<Term<'a>> {
    fold_within(env, store, from, Budget::dirty())
}

fn fold_within<'a>(
    env: Env<'a>,
    store: Term<'a>,
    from: usize,
    mut budget: Budget,
) -> NifResult<Term<'a>> {
    let store = store_arg(store)?;
    let mut taken = Vec::new();
    let next = store
        .entries
        .scan(from, CHUNK, SCAN_SLOTS, &mut taken, |entry| {
            budget.take(entry.cost())
        });
    if taken.is_empty() && next == Some(from) {
        store.scheduling.went_dirty();
        return Ok(atoms::dirty().encode(env));
    }
    store.scheduling.note(&budget);
    let entries = copy_all(env, &taken, true)?;
    Ok(match next {
        Some(next) => (entries, next).encode(env),
        None => (entries, atoms::done()).encode(env),
    })
}

/// Copies of `entries`: the session, or `{Key, Session}` with `with_key`.
fn copy_all<'a>(env: Env<'a>, entries: &[Entry], with_key: bool) -> NifResult<Vec<Term<'a>>> {
    let copy = |entry: &Entry| entry.copy_out(env, with_key).ok_or(ENOMEM);
    entries.iter().map(copy).collect()
}
