//! Key terms to canonical bytes (`session_codec::key`), in one buffer per scheduler thread, so that a read
//! allocates nothing for its key.

use std::cell::RefCell;

use rustler::Term;
use session_codec::key::{encode_group, encode_key};
use session_store::KeyRef;

use crate::error::CacheError;
use crate::term::Viewed;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `write` on a full key as the store takes it for an insert or a removal (a 2-tuple key names its first
/// element as its group). `write` must not encode another key.
pub fn with_store_key<R>(term: Term, write: impl FnOnce(KeyRef) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        let group = encode_key(Viewed(term), out)?;
        let key = KeyRef::new(out, group).ok_or(CacheError::BadKey)?;
        Ok(write(key))
    })
}

/// Runs `read` on a key's canonical bytes. `read` must not encode another key.
pub fn with_key<R>(term: Term, read: impl FnOnce(&[u8]) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        encode_key(Viewed(term), out)?;
        Ok(read(out))
    })
}

/// Runs `read` on the canonical bytes of a partial key, exactly as they appear inside a full key's group.
pub fn with_group<R>(term: Term, read: impl FnOnce(&[u8]) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        encode_group(Viewed(term), out)?;
        Ok(read(out))
    })
}

fn with_buffer<R>(
    encode: impl FnOnce(&mut Vec<u8>) -> Result<R, CacheError>,
) -> Result<R, CacheError> {
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut out) => encode(&mut out),
        // Nothing here calls back, so this cannot nest; if it did, a fresh buffer is still correct.
        Err(_) => encode(&mut Vec::new()),
    })
}
