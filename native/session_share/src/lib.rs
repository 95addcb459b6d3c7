//! The second level of nif_session_cache: TLS 1.2 sessions shared across a fleet of BEAM nodes through Redis
//! (or anything that speaks its protocol: Valkey, Redis Cluster), sealed so that Redis never holds a secret in
//! clear.
//!
//! Rooms: `seal` (XChaCha20-Poly1305 with key ids; the associated data binds a blob to its namespace and session
//! id), `breaker` (stops asking a failing Redis for a while, and lets one probe through to find it back), `remote`
//! (the Redis client: a background writer behind a bounded queue that drops rather than blocks, and bounded
//! reads), `topology` (where Redis is: one server, a Cluster or Sentinel, in clear or over TLS, and how to
//! connect within a deadline), `recent` (what Redis returned lately, kept beside the store for replays),
//! `stats` (what `info/1` reports). Nothing here knows the VM: the NIF glue turns sessions into bytes
//! and back, and `cargo test` reaches everything, against a real `redis-server` it starts.

#![forbid(unsafe_code)]

pub mod breaker;
pub mod recent;
pub mod remote;
pub mod seal;
pub mod stats;
pub mod topology;

/// The data behind `mutex`, even if a thread panicked while holding it: every state this crate guards is plain
/// values, each change made whole before the lock is released (a window, a pool of whole connections, maps, the
/// breaker's fields), so a poisoned lock still holds a usable one.
pub(crate) fn locked<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
