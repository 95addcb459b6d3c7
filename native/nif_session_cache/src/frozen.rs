//! A stored entry: the `{Key, Session}` term, copied into an environment of its own that belongs to no process.
//!
//! Why terms and not bytes: copying a term out of an environment (`enif_make_copy`) is a single structural copy,
//! while decoding the external term format costs about twice as much for an OTP session, and lookups are the
//! hot path. Reference-counted binaries (certificates) are shared, not copied, exactly as ETS shares them.
//!
//! Nothing here implements Debug or Display: an entry holds a master secret.

use std::ptr::NonNull;

use rustler::sys::{
    enif_alloc_env, enif_free_env, enif_get_tuple, enif_make_copy, ErlNifEnv, ERL_NIF_TERM,
};
use rustler::{Encoder, Env, Term};
use session_store::Weigh;

pub struct Frozen {
    env: NonNull<ErlNifEnv>,
    /// `{Key, Session}`, living in `env`.
    entry: ERL_NIF_TERM,
    /// The second element of `entry`.
    session: ERL_NIF_TERM,
    weight: usize,
}

// SAFETY: after `freeze` returns, nothing writes to `env` until `drop`. Copying a term out with `enif_make_copy`
// reads the source term and writes only to the destination environment (reference counts of shared binaries are
// atomic), so any number of threads may copy out of one entry at once. `drop` runs once, when the last `Arc`
// holding the entry goes, so no copy can be in progress then; `enif_free_env` may run on any thread.
unsafe impl Send for Frozen {}
unsafe impl Sync for Frozen {}

impl Frozen {
    /// Copies `key` and `session` into a new environment. O(size of the session). `weight` is what the entry
    /// costs (see `weight.rs`).
    pub fn freeze<'a>(
        env: Env<'a>,
        key: Term<'a>,
        session: Term<'a>,
        weight: usize,
    ) -> Option<Frozen> {
        let pair = (key, session).encode(env);
        // SAFETY: enif_alloc_env returns a fresh environment or null; we check for null. The copy and tuple read
        // happen in that environment, which only this function can see until it returns.
        unsafe {
            let own = NonNull::new(enif_alloc_env())?;
            let entry = enif_make_copy(own.as_ptr(), pair.as_c_arg());
            let mut arity = 0;
            let mut elements: *const ERL_NIF_TERM = std::ptr::null();
            if enif_get_tuple(own.as_ptr(), entry, &mut arity, &mut elements) == 0 || arity != 2 {
                enif_free_env(own.as_ptr());
                return None;
            }
            let session = *elements.add(1);
            Some(Frozen {
                env: own,
                entry,
                session,
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
        // SAFETY: the environment was allocated by enif_alloc_env in `freeze` and is freed exactly once, here.
        unsafe { enif_free_env(self.env.as_ptr()) }
    }
}
