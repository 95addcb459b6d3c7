//! What nif_session_cache's NIF layer decides without a VM: the errors its calls answer, a write's key, what
//! `info/1` reports, and the C ABI through which one load of the library reaches the objects another load made.
//! Tested with `cargo test`.
#![forbid(unsafe_code)]

pub mod abi;
pub mod error;
pub mod info;
pub mod key;
