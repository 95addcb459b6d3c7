//! nif_session_cache's NIF library: the bridge between OTP's ssl session cache API and the plain crates that do
//! the work (`session_store`, `session_codec`, `session_share`). It converts terms and calls them; every decision
//! that needs no VM is theirs, and tested there.
//!
//! Its modules form a stack, each importing only those below it:
//! - `nifs`, `walk`, `shared`: the functions Erlang calls;
//! - `resource`: what Erlang holds (stores, across reloads of the library; cursors; stopped packings);
//! - `level`: a store's shared level; `entry`: one entry's memory; `held`: terms kept as terms;
//! - `key`, `term`: rustler's terms as the codec sees them, and terms made for it;
//! - `reaper`, `error`, `atoms`.

#![deny(clippy::undocumented_unsafe_blocks)]

mod atoms;
mod entry;
mod error;
mod held;
mod key;
mod level;
mod nifs;
mod reaper;
mod resource;
mod shared;
mod term;
mod walk;

rustler::init!("nif_session_cache_nif", load = load);

/// Opens the resource types of entries with blobs (`entry.rs`) and of stores, the latter in a way that keeps stores
/// made before a reload usable (`resource.rs`). The load info is the VM's OTP release, on which what its
/// allocators add to an entry depends.
fn load(env: rustler::Env, load_info: rustler::Term) -> bool {
    entry::load(env, load_info.decode::<u32>().unwrap_or(u32::MAX))
        && resource::open_store_type(env)
}
