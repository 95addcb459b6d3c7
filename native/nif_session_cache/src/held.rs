//! Held parts: terms an entry's bytes do not carry, each copied into an environment of its own, and a store's
//! keeper of them, which shares a listener's repeated fields by the policy of `session_codec::intern`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustler::env::OwnedEnv;
use rustler::sys::{enif_is_identical, enif_make_copy, ERL_NIF_TERM};
use rustler::{Env, Term};
use session_codec::entry::held_bytes;
use session_codec::intern::Interner;
use session_codec::pack::{Keeper, Measure, Recent, Stop};
use session_codec::term::Term as _;
use session_store::sync::lock;

use crate::term::Viewed;

/// A term in an environment of its own. Nothing writes to it after `new`; any thread may copy it out.
pub struct Held {
    /// The environment the term lives in, freed with it.
    #[allow(dead_code)] // held for its drop
    env: OwnedEnv,
    /// The term, in `env`.
    term: ERL_NIF_TERM,
    /// Heap words of the term: what a copy out of it costs.
    words: usize,
    may_hold_float: bool,
    /// The store's count of the bytes its held parts own.
    ledger: Arc<AtomicUsize>,
}

// SAFETY: rustler's `OwnedEnv` is not `Sync` because its `run` lets a caller make terms in it. Nothing does after
// `new`: the environment is only read, by `enif_make_copy` (`copy_to`) and `enif_is_identical` (`is`), which any
// number of threads may do at once (shared binaries' counts are atomic).
unsafe impl Sync for Held {}

impl Held {
    fn new(term: Term, measure: &Measure, ledger: &Arc<AtomicUsize>) -> Held {
        let env = OwnedEnv::new();
        let term = env.run(|own| term.in_env(own).as_c_arg());
        ledger.fetch_add(held_bytes(measure.words), Ordering::Relaxed);
        Held {
            env,
            term,
            words: measure.words,
            may_hold_float: measure.may_hold_float,
            ledger: Arc::clone(ledger),
        }
    }

    /// Heap words of the term, which a copy out of it costs.
    pub fn words(&self) -> usize {
        self.words
    }

    /// A copy on the heap of `env`'s process. O(words).
    pub fn copy_to<'a>(&self, env: Env<'a>) -> Term<'a> {
        // SAFETY: `self.term` lives in `self.env` as long as `self`, and is only read; the copy is made in the
        // caller's live environment.
        unsafe { Term::new(env, enif_make_copy(env.as_c_arg(), self.term)) }
    }

    /// Whether `term` is exactly this one, as a lookup must give it back. `enif_is_identical`, like `=:=` before
    /// OTP 27, takes 0.0 and -0.0 for the same: where a float may be inside, the external formats, which tell
    /// them apart, decide too. No memory for that comparison reads as different: a copy of its own is made.
    fn is(&self, term: Term) -> bool {
        // SAFETY: both terms are live and only read: `self.term` in this part's environment, which `self` keeps,
        // `term` in the caller's, where the copy out of this part for the comparison of formats is made.
        unsafe {
            enif_is_identical(self.term, term.as_c_arg()) != 0
                && (!self.may_hold_float || {
                    let mine = Viewed(Term::new(term.get_env(), self.term));
                    mine.external(|a| Viewed(term).external(|b| a == b))
                        .flatten()
                        == Some(true)
                })
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.ledger
            .fetch_sub(held_bytes(self.words), Ordering::Relaxed);
    }
}

/// A store's held parts: the shared ones filed by hash, and the bytes all of them own. Only the owner writes, so
/// the lock is never contended; it is held for a hash-bucket walk and one copy, never while Erlang code runs.
pub struct Parts {
    shared: Mutex<Interner<Held>>,
    ledger: Arc<AtomicUsize>,
    /// Whether a reference is a store or a cursor of this library, which no part may hold: told by the store,
    /// which knows the resource types.
    ours: Ours,
}

/// Whether a reference is one of this library's resources.
pub type Ours = for<'b> fn(Term<'b>) -> bool;

impl Parts {
    pub fn new(ours: Ours) -> Self {
        Parts {
            shared: Mutex::default(),
            ledger: Arc::default(),
            ours,
        }
    }

    /// Bytes of every live held part of this store.
    pub fn bytes(&self) -> usize {
        self.ledger.load(Ordering::Relaxed)
    }

    /// Forgets every shared copy (each goes with the last entry that uses it). For a retired store.
    pub fn clear(&self) {
        *lock(&self.shared) = Interner::default();
    }
}

impl<'a> Keeper<'a, Viewed<'a>> for &Parts {
    type Part = Arc<Held>;

    fn hold(&mut self, term: Viewed<'a>, measure: &Measure) -> Result<Arc<Held>, Stop> {
        Ok(Arc::new(Held::new(term.0, measure, &self.ledger)))
    }

    fn share(
        &mut self,
        term: Viewed<'a>,
        position: usize,
        measure: &Measure,
    ) -> Result<Arc<Held>, Stop> {
        let Viewed(term) = term;
        let hash = u64::from(term.hash_internal(0));
        let mut shared = lock(&self.shared);
        let held = match shared.find(hash, |copy| copy.is(term)) {
            Some(found) => found,
            None => {
                let held = Arc::new(Held::new(term, measure, &self.ledger));
                shared.file(hash, &held);
                held
            }
        };
        shared.remember(position, &held);
        Ok(held)
    }

    fn ours(&self, reference: Viewed<'a>) -> bool {
        (self.ours)(reference.0)
    }

    fn recent(&mut self, term: Viewed<'a>, position: usize, limit: usize) -> Recent<Arc<Held>> {
        let Some(recent) = lock(&self.shared).recent(position) else {
            return Recent::None;
        };
        match recent.words {
            words if words > limit => Recent::None,
            words if recent.is(term.0) => Recent::Same(recent, words),
            words => Recent::Differs(words),
        }
    }
}
