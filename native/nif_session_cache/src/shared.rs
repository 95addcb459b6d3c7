//! The NIF functions of the shared level (`level.rs`). Errors are returned as atoms, never raised: `share/2`'s
//! arguments hold the sealing keys, and `publish/4`'s a session, which a NIF exception would put in a stack trace.

use std::time::Duration;

use rustler::{Atom, Binary, Encoder, Env, NifResult, OwnedBinary, Term};

use crate::atoms;
use crate::error::AsAtom;
use crate::level::{reason, SharedLevel};
use crate::nifs::{store_arg, writable};

/// Gives a store its shared level; owner only, once. `config` is a map the Erlang side checked
/// (`SharedLevel::start`). Returns `ok`, or `{error, Option}` naming the option refused, never its value. Normal
/// scheduler; starts a thread.
#[rustler::nif]
fn share<'a>(env: Env<'a>, store: Term<'a>, config: Term<'a>) -> Term<'a> {
    let outcome = (|| -> Result<(), Atom> {
        let store = writable(env, store).map_err(|error| error.atom())?;
        let level = SharedLevel::start(env, config)?;
        store.shared.set(level).map_err(|_| atoms::already_shared())
    })();
    match outcome {
        Ok(()) => atoms::ok().encode(env),
        Err(option) => (atoms::error(), option).encode(env),
    }
}

/// Queues `payload`, what the Erlang side made of the session it just stored under the session id `id`, for Redis
/// to keep `ttl_ms`; owner only. Never waits. Normal scheduler: a copy of the payload. Returns `ok`, `auth` once
/// after Redis refused the credentials (the caller warns), or an error atom.
#[rustler::nif]
fn publish<'a>(
    env: Env<'a>,
    store: Term<'a>,
    id: Term<'a>,
    payload: Term<'a>,
    ttl_ms: Term<'a>,
) -> Atom {
    let store = match writable(env, store) {
        Ok(store) => store,
        Err(error) => return error.atom(),
    };
    match (
        store.shared.get(),
        Binary::from_term(id),
        ttl_ms.decode::<u64>(),
    ) {
        (Some(level), Ok(id), Ok(ttl_ms)) => {
            level.publish(id.as_slice(), payload, Duration::from_millis(ttl_ms));
            match level.take_auth_warning() {
                true => atoms::auth(),
                false => atoms::ok(),
            }
        }
        _ => atoms::badarg(),
    }
}

/// The session bytes kept in Redis for `id`, opened: `{ok, Bytes, MarginS}`, or `{miss, Reason, Warn}`, `Warn`
/// true once after Redis refused the credentials (the caller warns). Dirty IO
/// scheduler: waits on Redis for at most the timeout, and not at all while the breaker is open or when too many
/// reads are out already.
#[rustler::nif(schedule = "DirtyIo")]
fn fetch<'a>(env: Env<'a>, store: Term<'a>, id: Binary<'a>) -> NifResult<Term<'a>> {
    let level = store_arg(store)?
        .shared
        .get()
        .ok_or(rustler::Error::BadArg)?;
    match level.fetch(id.as_slice()) {
        Ok(session) => {
            let mut bytes =
                OwnedBinary::new(session.len()).ok_or(rustler::Error::RaiseAtom("enomem"))?;
            bytes.as_mut_slice().copy_from_slice(&session);
            Ok((atoms::ok(), bytes.release(env), level.margin_s()).encode(env))
        }
        Err(why) => Ok((atoms::miss(), reason(env, why), level.take_auth_warning()).encode(env)),
    }
}

/// Counts a session found in Redis that the Erlang side could not use (it did not decode to a session of this
/// release, or had too little lifetime left) as a miss. Any process.
#[rustler::nif]
fn unusable(store: Term) -> NifResult<Atom> {
    if let Some(level) = store_arg(store)?.shared.get() {
        level.unusable();
    }
    Ok(atoms::ok())
}
