//! Every atom the NIF layer returns or matches, in one place.

rustler::atoms! {
    ok, undefined, done, error, badarg,
    // What a call answers besides its result: go on on a dirty scheduler, ask Redis, publish what was stored.
    // Never in place of a stored term: a lookup's session comes back as `{ok, Session}`.
    dirty, remote, publish,
    // Roles, as OTP passes them to init/1.
    client, server,
    // Reasons carried by `{badarg, Reason}` errors.
    not_owner, terminated, bad_key, holds_store, enomem, internal_error,
    // info/1.
    id, role, owner, entries, bytes, held_bytes, index_bytes,
    lookup_hits, lookup_misses, inserts, replaces, deletes, select_hits, select_misses,
    scheduler, budget, largest_call, dirty_calls, freed_later, shared,
    // The shared level's options (`share/2`) and lookups (its info map's names come from `session_share`).
    keys, already_shared, auth, miss,
}
