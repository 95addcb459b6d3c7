//! Every atom the NIF layer returns or matches, in one place, and `info/1`'s reports (`session_nif::info`), whose
//! names become atoms here.

use rustler::{Atom, Encoder, Env, NifResult, Term};
use session_nif::info::Info;

/// What a NIF raises when the VM has no memory for its result.
pub const ENOMEM: rustler::Error = rustler::Error::RaiseAtom("enomem");

rustler::atoms! {
    ok, undefined, done, error, badarg,
    // What a call answers besides its result: go on on a dirty scheduler, ask Redis, publish what was stored.
    // Never in place of a stored term: a lookup's session comes back as `{ok, Session}`.
    dirty, remote, publish,
    // A write on an object whose library cannot be called (`forward.rs`); the names the ABI finds objects by.
    unreachable, nif_session_cache_nif, nif_session_cache_object,
    // Roles, as OTP passes them to init/1.
    client, server,
    // Reasons carried by `{badarg, Reason}` errors.
    not_owner, terminated, bad_key, holds_store, enomem, internal_error,
    // What info/1 adds to its report.
    role, owner,
    // The shared level's options (`share/2`) and lookups (its info map's names come from `session_share`).
    shared, keys, already_shared, auth, miss, unusable,
}

/// A report as a map, each name an atom.
pub fn report<'a>(env: Env<'a>, report: &[(&str, Info)]) -> NifResult<Term<'a>> {
    let pair = |(name, info): &(&str, Info)| Ok((Atom::from_str(env, name)?, value(env, info)?));
    let pairs = report.iter().map(pair).collect::<NifResult<Vec<_>>>()?;
    Term::map_from_pairs(env, &pairs)
}

fn value<'a>(env: Env<'a>, info: &Info) -> NifResult<Term<'a>> {
    Ok(match info {
        Info::Number(n) => n.encode(env),
        Info::Flag(flag) => flag.encode(env),
        Info::Name(name) => Atom::from_str(env, name)?.encode(env),
        Info::Text(Some(text)) => text.encode(env),
        Info::Text(None) => undefined().encode(env),
        Info::Map(map) => report(env, map)?,
    })
}
