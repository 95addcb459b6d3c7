//! Every atom the NIF layer returns or matches, in one place.

rustler::atoms! {
    ok,
    undefined,
    done,
    // A call's work is too large for a normal scheduler: the Erlang wrapper retries it on a dirty one.
    dirty = "nif_session_cache_dirty",
    // A lookup missed in a store with a shared level: the wrapper goes on to Redis.
    remote_marker = "nif_session_cache_remote",
    // The key of info/1's map of the shared level.
    shared,
    badarg,
    // Roles, as OTP passes them to init/1.
    client,
    server,
    // Reasons carried by `{badarg, Reason}` errors.
    not_owner,
    terminated,
    bad_key,
    holds_store,
    enomem,
    internal_error,
    // Keys of info/1.
    id,
    role,
    owner,
    entries,
    bytes,
    held_bytes,
    index_bytes,
    lookup_hits,
    lookup_misses,
    inserts,
    replaces,
    deletes,
    select_hits,
    select_misses,
}
