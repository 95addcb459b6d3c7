//! A stored entry: the `{Key, Session}` term, rebuilt in an environment of its own that belongs to no process.
//!
//! Why terms and not bytes: copying a term out of an environment (`enif_make_copy`) is one structural copy,
//! while decoding the external term format costs about twice as much for an OTP session, and lookups are the
//! hot path. Reference-counted binaries (certificates) are shared, not copied, exactly as ETS shares them.
//!
//! Secrets. The session is rebuilt rather than copied wholesale so that every binary of up to 64 bytes (the
//! 48-byte master secret, the 32-byte session id) becomes a fresh heap binary inside this entry's environment:
//! memory the entry alone owns, because a copy handed to a process copies those bytes again. When the entry is
//! dropped (deleted, replaced, or freed with its store) those bytes are zeroized before the environment is
//! freed. Larger binaries are reference-counted and shared with live processes, so they are never written.
//! Bignums (an RSA private key's numbers), maps and anything nested deeper than `MAX_WIPE_DEPTH` are copied
//! as they are and not wiped: the NIF API gives no way to reach their memory.
//!
//! Nothing here implements Debug or Display: an entry holds a master secret.

use std::ptr::NonNull;

use rustler::sys::{
    enif_alloc_env, enif_free_env, enif_get_tuple, enif_make_copy, enif_make_list_cell,
    enif_make_new_binary, enif_make_tuple_from_array, ErlNifEnv, ERL_NIF_TERM,
};
use rustler::{Binary, Encoder, Env, Term, TermType};
use session_store::Weigh;
use zeroize::Zeroize;

use crate::raw;

/// Binaries up to this size are heap binaries: copied on every copy, so a rebuilt one is owned by the entry.
const HEAP_BINARY_LIMIT: usize = 64;
/// Tuples and lists nested deeper than this are copied whole and not wiped. An OTP session nests four deep.
const MAX_WIPE_DEPTH: usize = 32;
/// Tuples with more elements than this are copied whole and not wiped. OTP's #session{} has 15 fields.
const MAX_REBUILT_ARITY: usize = 32;

pub struct Frozen {
    env: NonNull<ErlNifEnv>,
    /// `{Key, Session}`, living in `env`.
    entry: ERL_NIF_TERM,
    /// The second element of `entry`.
    session: ERL_NIF_TERM,
    /// The bytes of every heap binary `rebuild` made in `env`: wiped on drop. Stable, since nothing collects a
    /// process-independent environment.
    owned: Vec<(NonNull<u8>, usize)>,
    weight: usize,
}

// SAFETY: after `freeze` returns, nothing writes to `env` until `drop`. Copying a term out with `enif_make_copy`
// reads the source term and writes only to the destination environment (reference counts of shared binaries are
// atomic), so any number of threads may copy out of one entry at once. `drop` runs once, when the last `Arc`
// holding the entry goes, so no copy can be in progress then; `enif_free_env` may run on any thread.
unsafe impl Send for Frozen {}
unsafe impl Sync for Frozen {}

impl Frozen {
    /// Rebuilds `key` and `session` in a new environment. O(size of the session). `weight` is what the entry
    /// costs (see `weight.rs`).
    pub fn freeze<'a>(
        env: Env<'a>,
        key: Term<'a>,
        session: Term<'a>,
        weight: usize,
    ) -> Option<Frozen> {
        let pair = (key, session).encode(env);
        // SAFETY: enif_alloc_env returns a fresh environment or null; we check for null. Everything built here
        // lives in that environment, which only this function can see until it returns.
        unsafe {
            let own = NonNull::new(enif_alloc_env())?;
            let mut owned = Vec::new();
            let entry = rebuild(own.as_ptr(), pair, &mut owned);
            let mut arity = 0;
            let mut elements: *const ERL_NIF_TERM = std::ptr::null();
            if enif_get_tuple(own.as_ptr(), entry, &mut arity, &mut elements) == 0 || arity != 2 {
                enif_free_env(own.as_ptr());
                return None;
            }
            Some(Frozen {
                env: own,
                entry,
                session: *elements.add(1),
                owned,
                weight,
            })
        }
    }

    /// A copy of the session on the caller's heap.
    pub fn session<'a>(&self, env: Env<'a>) -> Term<'a> {
        // SAFETY: `self.session` lives in `self.env`, which outlives `self`; see the Send/Sync note above.
        unsafe { Term::new(env, enif_make_copy(env.as_c_arg(), self.session)) }
    }

    /// A copy of `{Key, Session}` on the caller's heap, the element shape foldl hands to its fun.
    pub fn entry<'a>(&self, env: Env<'a>) -> Term<'a> {
        // SAFETY: as for `session`.
        unsafe { Term::new(env, enif_make_copy(env.as_c_arg(), self.entry)) }
    }
}

impl Weigh for Frozen {
    fn weight(&self) -> usize {
        self.weight
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: the environment was allocated in `freeze`, is no longer shared (this is the last reference),
        // and is freed exactly once, here, after its owned secret bytes are wiped.
        unsafe {
            for &(data, len) in &self.owned {
                std::slice::from_raw_parts_mut(data.as_ptr(), len).zeroize();
            }
            enif_free_env(self.env.as_ptr());
        }
    }
}

/// Copies `source` into `own`, then re-points every binary of up to `HEAP_BINARY_LIMIT` bytes (within
/// `MAX_WIPE_DEPTH`) to a new heap binary of `own`, recording its bytes in `owned`. The copy of a small binary
/// may still share a reference-counted binary (a sub-binary of a certificate, say), which must never be
/// written; the new one is the entry's alone. Only the tuples and lists on the way to such a binary are built
/// again; everything else is the single copy's. What the new nodes replace stays in `own` as a few words of
/// garbage until the entry is freed.
///
/// # Safety
/// `own` must be a live process-independent environment that only the caller uses.
unsafe fn rebuild(
    own: *mut ErlNifEnv,
    source: Term,
    owned: &mut Vec<(NonNull<u8>, usize)>,
) -> ERL_NIF_TERM {
    let copy = enif_make_copy(own, source.as_c_arg());
    let marker = ();
    let own_env = Env::new(&marker, own);
    rebuild_owned(own, Term::new(own_env, copy), 0, owned).unwrap_or(copy)
}

/// `Some(new term)` when `term` (in `own`) holds a binary to own, `None` when it can stay as it is.
unsafe fn rebuild_owned(
    own: *mut ErlNifEnv,
    term: Term,
    depth: usize,
    owned: &mut Vec<(NonNull<u8>, usize)>,
) -> Option<ERL_NIF_TERM> {
    if depth >= MAX_WIPE_DEPTH {
        return None;
    }
    match term.get_type() {
        TermType::Binary => {
            let binary = Binary::from_term(term)
                .ok()
                .filter(|binary| binary.len() <= HEAP_BINARY_LIMIT)?;
            let mut fresh: ERL_NIF_TERM = 0;
            let data = NonNull::new(enif_make_new_binary(own, binary.len(), &mut fresh))?;
            std::ptr::copy_nonoverlapping(binary.as_slice().as_ptr(), data.as_ptr(), binary.len());
            owned.push((data, binary.len()));
            Some(fresh)
        }
        TermType::Tuple => {
            let elements = raw::tuple_elements(term)?;
            let arity = elements.len();
            if arity > MAX_REBUILT_ARITY {
                return None;
            }
            let mut rebuilt = [0 as ERL_NIF_TERM; MAX_REBUILT_ARITY];
            let mut changed = false;
            for (slot, element) in rebuilt.iter_mut().zip(elements) {
                *slot = match rebuild_owned(own, element, depth + 1, owned) {
                    Some(new) => {
                        changed = true;
                        new
                    }
                    None => element.as_c_arg(),
                };
            }
            changed.then(|| enif_make_tuple_from_array(own, rebuilt.as_ptr(), arity as u32))
        }
        TermType::List if !term.is_empty_list() => {
            let mut heads = Vec::new();
            let mut changed = false;
            let mut rest = term;
            while let Ok((head, tail)) = rest.list_get_cell() {
                heads.push(match rebuild_owned(own, head, depth + 1, owned) {
                    Some(new) => {
                        changed = true;
                        new
                    }
                    None => head.as_c_arg(),
                });
                rest = tail;
            }
            let tail = rebuild_owned(own, rest, depth + 1, owned);
            if !changed && tail.is_none() {
                return None;
            }
            let tail = tail.unwrap_or(rest.as_c_arg());
            Some(
                heads
                    .iter()
                    .rev()
                    .fold(tail, |list, &head| enif_make_list_cell(own, head, list)),
            )
        }
        _ => None,
    }
}
