//! Terms kept as terms: the parts of an entry its byte encoding does not carry, each in an environment of its
//! own that belongs to no process.
//!
//! Two kinds. Parts bytes cannot express (bignums, pids, references, funs, maps, bitstrings) or should not copy
//! (binaries over `packed::INLINE_BINARY_MAX`, which stay reference-counted and shared) are held privately by
//! the entry that has them. Large fields of a session (`packed::SHARE_MIN_BYTES` and up, or holding such parts)
//! are *shared*: every session of one listener carries the same certificate chain and private key term, so a
//! store keeps one copy of each and its entries count references to it. The [`Interner`] finds an identical
//! copy (`enif_is_identical`, and the external format where a float may tell the two zeros apart) by the term's hash; it holds its copies weakly, so a copy is
//! freed with the last entry that uses it.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rustler::sys::{
    enif_alloc_env, enif_free_env, enif_hash, enif_is_identical, enif_make_copy, ErlNifEnv,
    ErlNifHash, ERL_NIF_TERM,
};
use rustler::Term;
use session_store::sync::lock;

use crate::error::CacheError;
use crate::raw;
use crate::weight::{self, Measure};

/// A term in an environment of its own. Nothing writes to it after `new`; any thread may copy it out.
pub struct Held {
    env: NonNull<ErlNifEnv>,
    term: ERL_NIF_TERM,
    /// Heap words of the term: what a copy out of it costs.
    words: usize,
    bytes: usize,
    /// The term may hold a float, so an identical-looking term may differ from it in the sign of a zero (`is`).
    may_hold_float: bool,
    ledger: Arc<AtomicUsize>,
}

// SAFETY: after `new` returns, nothing writes to `env` until `drop`. `enif_make_copy` only reads its source and
// writes to the destination environment (reference counts of shared binaries are atomic), so threads may copy
// out of one `Held` at once. `drop` runs once, when the last `Arc` goes; `enif_free_env` may run on any thread.
unsafe impl Send for Held {}
unsafe impl Sync for Held {}

impl Held {
    /// Copies `term`, of which `measure` is the measure, into a new environment and adds its cost to `ledger`.
    /// Refuses a term that holds a store or a cursor of ours (`HoldsStore`): its copy would keep that store alive
    /// for as long as the entry lives, and a store kept in one of its own sessions would never be freed. Funs
    /// are not looked into (the NIF API cannot see what a fun captured). Fails with `OutOfMemory` if the VM has no
    /// memory.
    fn new(term: Term, measure: Measure, ledger: &Arc<AtomicUsize>) -> Result<Held, CacheError> {
        if measure.holds_store {
            return Err(CacheError::HoldsStore);
        }
        let bytes = weight::held_bytes(measure.words);
        // SAFETY: a fresh environment or null, checked; the copy lives in it until `drop` frees it.
        let (env, term) = unsafe {
            let env = NonNull::new(enif_alloc_env()).ok_or(CacheError::OutOfMemory)?;
            (env, enif_make_copy(env.as_ptr(), term.as_c_arg()))
        };
        ledger.fetch_add(bytes, Ordering::Relaxed);
        Ok(Held {
            env,
            term,
            words: measure.words,
            bytes,
            may_hold_float: measure.may_hold_float,
            ledger: Arc::clone(ledger),
        })
    }

    /// Heap words of the term, which a copy out of it costs.
    pub fn words(&self) -> usize {
        self.words
    }

    /// A copy on the heap of `env`'s process.
    ///
    /// # Safety
    /// `env` must be the live environment of the running NIF call.
    pub unsafe fn copy_to(&self, env: *mut ErlNifEnv) -> ERL_NIF_TERM {
        enif_make_copy(env, self.term)
    }

    /// Whether `term` is exactly this one, as a session's lookup must give it back. `enif_is_identical`, like
    /// `=:=` before OTP 27, takes 0.0 and -0.0 for the same, so where a float may be inside, the external formats,
    /// which tell the two zeros apart, decide too (a session's shared fields, a certificate chain and a private
    /// key, hold none). No memory for that comparison reads as different: the term is then stored as its own copy.
    fn is(&self, term: Term) -> bool {
        // SAFETY: both terms are live and only read: `self.term` lives in this copy's environment until `drop`, which
        // cannot run while `self` is borrowed, and `term`'s environment is that of the running NIF call, which
        // same_external_format requires.
        unsafe {
            enif_is_identical(self.term, term.as_c_arg()) != 0
                && (!self.may_hold_float
                    || raw::same_external_format(
                        term.get_env().as_c_arg(),
                        self.term,
                        term.as_c_arg(),
                    ) == Some(true))
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.ledger.fetch_sub(self.bytes, Ordering::Relaxed);
        // SAFETY: allocated in `new`, no longer shared (this is the last reference), freed exactly once.
        unsafe { enif_free_env(self.env.as_ptr()) }
    }
}

/// A store's held terms: the shared ones by hash, and what all of them cost. Only the owner writes, so the lock
/// is never contended; it is held for a hash-bucket walk and one copy, never while Erlang code runs.
pub struct Interner {
    shared: Mutex<Shared>,
    /// Bytes of every live `Held` of this store, shared or private.
    ledger: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Shared {
    /// The copy last used at each field position: a listener's sessions repeat the same fields, so one
    /// comparison usually finds the copy without hashing.
    recent: Vec<Weak<Held>>,
    by_hash: HashMap<u64, Vec<Weak<Held>>>,
    /// Table size at which dead copies are next swept out, so the table stays within twice the live ones.
    sweep_at: usize,
    /// Copies made while the table was full, since it was last swept.
    unfiled: usize,
}

/// Sweeps never run on tables smaller than this.
const MIN_SWEEP: usize = 64;
/// Hashes the table of shared copies files at most. A listener's sessions share one or two values (its chain and
/// its key); sessions that each bring new ones would grow the table without end, and a write that grows or
/// sweeps it would take time in proportion (54 ms at 300,000). Past this, a new value is held by its entry alone,
/// as any term bytes cannot express is, and the table is swept again once as many have been made.
const MAX_FILED: usize = 1024;
/// Field positions with a remembered copy: OTP's #session{} has 15 fields.
const RECENT_POSITIONS: usize = 32;

impl Interner {
    pub fn new() -> Self {
        Interner {
            shared: Mutex::new(Shared::default()),
            ledger: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A copy of `term` for one entry alone. Fails with `TooLarge`, having done O(`limit`) work, for a term of more
    /// than `limit` words.
    pub fn hold(&self, term: Term, limit: usize) -> Result<Arc<Held>, CacheError> {
        let measure = weight::measure(term, limit).ok_or(CacheError::TooLarge)?;
        Held::new(term, measure, &self.ledger).map(Arc::new)
    }

    /// The store's copy of a term identical to `term`, the field at `position` of a session, made now if there
    /// is none, and remembered as the copy last used there. For a term that [`Interner::recent`] did not find:
    /// O(size of `term`) for a hash and comparisons with the copies of that hash; the copy is made once per
    /// distinct term. Fails with `TooLarge`, having done O(`limit`) work, for a term of more than `limit` words.
    pub fn share(
        &self,
        term: Term,
        position: usize,
        limit: usize,
    ) -> Result<Arc<Held>, CacheError> {
        let mut shared = lock(&self.shared);
        // Measured before it is hashed, as hashing walks the whole term.
        let measure = weight::measure(term, limit).ok_or(CacheError::TooLarge)?;
        let held = shared.find_or_insert(term, measure, &self.ledger)?;
        if position < RECENT_POSITIONS {
            if shared.recent.len() <= position {
                shared.recent.resize_with(position + 1, Weak::new);
            }
            shared.recent[position] = Arc::downgrade(&held);
        }
        Ok(held)
    }

    /// The copy last used at `position`, if `term` is identical to it and of at most `limit` words: a
    /// listener's sessions repeat their shared fields, so a session field is first compared with it, before any
    /// work is spent on packing it. A comparison stops at the first difference, so it costs at most the size of
    /// the copy.
    pub fn recent(&self, term: Term, position: usize, limit: usize) -> Option<Arc<Held>> {
        let recent = lock(&self.shared)
            .recent
            .get(position)
            .and_then(Weak::upgrade)?;
        (recent.words <= limit && recent.is(term)).then_some(recent)
    }

    /// Bytes of every live held term of this store.
    pub fn bytes(&self) -> usize {
        self.ledger.load(Ordering::Relaxed)
    }

    /// Forgets every shared copy (each is freed with the last entry that uses it). For a retired store.
    pub fn clear(&self) {
        *lock(&self.shared) = Shared::default();
    }
}

impl Shared {
    fn find_or_insert(
        &mut self,
        term: Term,
        measure: Measure,
        ledger: &Arc<AtomicUsize>,
    ) -> Result<Arc<Held>, CacheError> {
        // SAFETY: enif_hash only reads the term.
        let hash = unsafe { enif_hash(ErlNifHash::ERL_NIF_INTERNAL_HASH, term.as_c_arg(), 0) };
        if let Some(bucket) = self.by_hash.get_mut(&hash) {
            if let Some(found) = bucket
                .iter()
                .filter_map(Weak::upgrade)
                .find(|held| held.is(term))
            {
                return Ok(found);
            }
            bucket.retain(|held| held.strong_count() > 0);
        }
        let held = Arc::new(Held::new(term, measure, ledger)?);
        // Copies go unfiled only while the table is full, which only a sweep changes.
        if self.by_hash.len() >= self.sweep_at || self.unfiled >= MAX_FILED {
            self.by_hash.retain(|_, bucket| {
                bucket.retain(|held| held.strong_count() > 0);
                !bucket.is_empty()
            });
            self.sweep_at = (2 * self.by_hash.len()).max(MIN_SWEEP);
            self.unfiled = 0;
        }
        if self.by_hash.len() < MAX_FILED {
            self.by_hash
                .entry(hash)
                .or_default()
                .push(Arc::downgrade(&held));
        } else {
            self.unfiled += 1;
        }
        Ok(held)
    }
}
