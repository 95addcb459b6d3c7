//! Key terms to canonical bytes (`session_codec::key`), in its buffer of each scheduler thread, so that a call
//! allocates nothing for its key. `read` and `write` must not encode another key.

use rustler::Term;
use session_codec::key::{encode_key, with_buffer};
use session_store::KeyRef;

use crate::error::CacheError;
use crate::term::Viewed;

/// Runs `write` on a full key as the store takes it for an insert or a removal (a 2-tuple key names its first
/// element as its group).
pub fn with_store_key<R>(term: Term, write: impl FnOnce(KeyRef) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        let group = encode_key(Viewed(term), out)?;
        Ok(write(KeyRef::new(out, group).ok_or(CacheError::BadKey)?))
    })
}

/// Runs `read` on a key's canonical bytes.
pub fn with_key<R>(term: Term, read: impl FnOnce(&[u8]) -> R) -> Result<R, CacheError> {
    Ok(session_codec::key::with_key(Viewed(term), read)?)
}

/// Runs `read` on the canonical bytes of a partial key, exactly as they appear inside a full key's group.
pub fn with_group<R>(term: Term, read: impl FnOnce(&[u8]) -> R) -> Result<R, CacheError> {
    Ok(session_codec::key::with_group(Viewed(term), read)?)
}
