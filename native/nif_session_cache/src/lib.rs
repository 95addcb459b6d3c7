//! nif_session_cache's NIF library: the bridge between OTP's ssl session cache API and `session_store`.
//!
//! Rooms: `nifs` (the functions Erlang calls; `lean` registers the hottest without an allocation), `resource`
//! (what Erlang holds), `store_type` (the store's resource type, across reloads), `key` (key terms to canonical
//! bytes), `packed` (the session packed into bytes, and rebuilt), `entry` (an entry's memory: a counted header,
//! its sections, the wipe of its secrets), `bytes` (the VM resource an entry with blobs lives in), `held` (the parts kept as terms, and the fields shared between sessions),
//! `shared` (the glue of the shared level, `session_share`), `weight` (what entries cost), `registry` (every live store, weakly), `reaper` (freeing large stores off the
//! schedulers), `raw` (allocation-free term inspection), `error` and `atoms` (what Erlang sees).

mod atoms;
mod bytes;
mod entry;
mod error;
mod held;
mod key;
mod lean;
mod nifs;
mod packed;
mod raw;
mod reaper;
mod registry;
mod resource;
mod shared;
mod store_type;
mod weight;

rustler::init!("nif_session_cache_nif", load = load);

/// Opens the store resource type, in a way that keeps stores made before a reload usable (`store_type.rs`),
/// and the type of entries' bytes (`bytes.rs`). The load info is the VM's OTP release, on which what its
/// allocators add to an entry depends (`weight.rs`).
fn load(env: rustler::Env, load_info: rustler::Term) -> bool {
    weight::set_release(load_info.decode::<u32>().unwrap_or(u32::MAX));
    store_type::open(env) && bytes::open(env)
}
