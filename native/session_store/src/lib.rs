//! The storage core of nif_session_cache. It knows nothing of the BEAM: keys are canonical bytes, values are
//! whatever the caller stores (the NIF layer stores packed Erlang sessions), and everything here is tested with
//! plain `cargo test`.
//!
//! What it guarantees, and the NIF layer relies on:
//! - `len` is exact and O(1): OTP evicts only when size equals its maximum, so an estimate would break it.
//! - The store never drops an entry on its own. Bounds and lifetimes belong to OTP.
//! - Reads never block on each other, and no read holds a lock while calling out of the store.
//! - A select hands out a group a bounded number of members at a time, however large the group.
//! - Terminating is O(shards): the contents are handed back to be freed wherever the caller likes.

#![forbid(unsafe_code)]

mod key;
pub mod reaper;
pub mod registry;
mod slab;
mod small;
mod stats;
mod store;
pub mod sync;
mod table;

pub use key::{Key, KeyRef};
pub use stats::{Budget, Counts, Scheduling};
pub use store::{Config, Inserted, Retired, Selection, Store, StoreError, Value};
