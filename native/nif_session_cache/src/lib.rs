//! nif_session_cache's NIF library: the bridge between OTP's ssl session cache API and the plain crates that do
//! the work (`session_store`, `session_codec`, `session_share`). It converts terms and calls them; every decision
//! that needs no VM is theirs, and tested there.
//!
//! Its modules form a stack, each importing only those below it:
//! - `init`: the library's entry, with load and upgrade callbacks;
//! - `forward`: every NIF's trampoline, which takes a call on another library's object to that library;
//! - `nifs`, `walk`, `shared`: the functions Erlang calls;
//! - `object`: what Erlang holds (stores, cursors, stopped packings, library handles), across loads;
//! - `resource`: stores, cursors and stopped packings, and the list of live stores;
//! - `level`: a store's shared level; `entry`: one entry's memory; `held`: terms kept as terms;
//! - `term`: rustler's terms as the codec sees them, and terms made for it;
//! - `abi`: the C ABI between loads; `reaper`, `error`, `atoms` (and `info/1`'s reports as maps).

#![deny(clippy::undocumented_unsafe_blocks)]

mod abi;
mod atoms;
mod entry;
mod error;
mod forward;
mod held;
mod init;
mod level;
mod nifs;
mod object;
mod reaper;
mod resource;
mod shared;
mod term;
mod walk;
