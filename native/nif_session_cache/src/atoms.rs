//! Every atom the NIF layer returns or matches, in one place.

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
    // info/1.
    id, role, owner, entries, bytes, held_bytes, index_bytes,
    lookup_hits, lookup_misses, inserts, replaces, deletes, select_hits, select_misses,
    scheduler, budget, largest_call, dirty_calls, freed_later, shared,
    // The shared level's options (`share/2`) and info.
    url, namespace, keys, timeout_ms, queue, max_in_flight, max_reads_per_s, breaker_threshold,
    breaker_cool_down_ms, margin_s, already_shared,
    state, closed, open, probing, gets, hits, misses, sets, drops, errors, latency_us, p50, p99, max, miss,
    // Why a read of the shared level found nothing (`session_share::stats::Miss`).
    absent, breaker_open, busy, timeout, unsealed, unusable,
}
