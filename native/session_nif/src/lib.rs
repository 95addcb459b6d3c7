//! What nif_session_cache's NIF layer decides without a VM: the errors its calls answer, and the C ABI through
//! which one load of the library reaches the objects another load made. Tested with `cargo test`.
#![forbid(unsafe_code)]

pub mod abi;
pub mod error;
