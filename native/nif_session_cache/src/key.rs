//! Turns a key term into canonical bytes: two keys encode to the same bytes exactly when they are `=:=` as OTP 27
//! and later have it, on every release (before 27, `=:=` also takes 0.0 and -0.0 for the same; here they differ).
//!
//! The encoding is private to one VM run (atoms are encoded by their atom-table handle, which is stable for the
//! life of the VM and never persisted), self-delimiting, and cheap for the shapes OTP uses: a 32-byte session id,
//! and `{{Host, Port}, SessionId}` with Host a string or an IP tuple. A 2-tuple key also names its group: the
//! bytes of its first element, which is exactly what `{Host, Port}` encodes to on its own, so select_session
//! finds a client's sessions by encoding its partial key.
//!
//! Accepted: atoms, integers, floats, byte-aligned binaries, tuples, proper and improper lists, pids, ports and
//! references. Refused, as `bad_key`: maps, funs, bitstrings that are not whole bytes, nesting deeper than
//! `MAX_DEPTH`, and encodings larger than `MAX_KEY_BYTES`. Refusal is cheap: the walk stops at the first
//! violation, so a huge junk key costs no more than `MAX_KEY_BYTES` of work.

use std::cell::RefCell;

use rustler::{Binary, Term, TermType};
use session_codec::{push_varint, zigzag};
use session_store::KeyRef;

use crate::error::CacheError;
use crate::raw;

/// Largest accepted key encoding. OTP keys are under 600 bytes (a 255-byte host name and a 32-byte id).
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Deepest accepted nesting of tuples and list heads. OTP keys nest three levels.
pub const MAX_DEPTH: usize = 16;

/// Byte strings up to this length (every DNS name) are read in one call instead of cell by cell.
const FAST_STRING_BYTES: usize = 255;

const ATOM: u8 = b'a';
const INTEGER: u8 = b'i';
const FLOAT: u8 = b'f';
const BINARY: u8 = b'b';
const TUPLE: u8 = b't';
const CONS: u8 = b'c';
const NIL: u8 = b'n';
const BYTE_STRING: u8 = b's';
const EXTERNAL: u8 = b'e';

thread_local! {
    /// Reused by every encoding on this scheduler thread, so that reads allocate nothing.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `write` on a full key as the store takes it for an insert (a 2-tuple key gets its first element as
/// group), borrowed from the encoding buffer: nothing is allocated for a key that is already stored. `write`
/// must not encode another key.
pub fn with_store_key<R>(term: Term, write: impl FnOnce(KeyRef) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        let group = encode_full(term, out)?;
        let key = KeyRef::new(out, group).ok_or(CacheError::BadKey)?;
        Ok(write(key))
    })
}

/// Runs `read` on a key's canonical bytes without allocating. `read` must not encode another key.
pub fn with_key<R>(term: Term, read: impl FnOnce(&[u8]) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        encode_full(term, out)?;
        Ok(read(out))
    })
}

/// Runs `read` on the canonical bytes of a partial key, exactly as they appear inside a full key's group.
pub fn with_group<R>(term: Term, read: impl FnOnce(&[u8]) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        encode_into(term, 1, out)?;
        Ok(read(out))
    })
}

fn with_buffer<R>(
    encode: impl FnOnce(&mut Vec<u8>) -> Result<R, CacheError>,
) -> Result<R, CacheError> {
    BUFFER.with(|buffer| {
        // A nested use cannot happen (nothing here calls back), but if it did, a fresh buffer is still correct.
        match buffer.try_borrow_mut() {
            Ok(mut out) => {
                out.clear();
                encode(&mut out)
            }
            Err(_) => encode(&mut Vec::new()),
        }
    })
}

/// Encodes `term` into `out`; returns the byte range of the group when the key is a 2-tuple.
fn encode_full(
    term: Term,
    out: &mut Vec<u8>,
) -> Result<Option<std::ops::Range<usize>>, CacheError> {
    if let Some(mut elements) = raw::tuple_elements(term).filter(|elements| elements.len() == 2) {
        if let (Some(partial), Some(id)) = (elements.next(), elements.next()) {
            out.push(TUPLE);
            push_varint(out, 2);
            let start = out.len();
            encode_into(partial, 1, out)?;
            let end = out.len();
            encode_into(id, 1, out)?;
            return Ok(Some(start..end));
        }
    }
    encode_into(term, 0, out)?;
    Ok(None)
}

fn encode_into(term: Term, depth: usize, out: &mut Vec<u8>) -> Result<(), CacheError> {
    if depth > MAX_DEPTH || out.len() > MAX_KEY_BYTES {
        return Err(CacheError::BadKey);
    }
    match term.get_type() {
        TermType::Atom => {
            out.push(ATOM);
            out.extend_from_slice(&term.as_c_arg().to_le_bytes());
        }
        TermType::Integer => match term.decode::<i64>() {
            Ok(value) => {
                out.push(INTEGER);
                push_varint(out, zigzag(value));
            }
            Err(_) => external(term, out)?,
        },
        TermType::Float => {
            let value: f64 = term.decode().map_err(|_| CacheError::BadKey)?;
            out.push(FLOAT);
            out.extend_from_slice(&value.to_bits().to_le_bytes());
        }
        TermType::Binary => {
            let binary = Binary::from_term(term).map_err(|_| CacheError::BadKey)?;
            if binary.len() > MAX_KEY_BYTES {
                return Err(CacheError::BadKey);
            }
            out.push(BINARY);
            push_varint(out, binary.len() as u64);
            out.extend_from_slice(binary.as_slice());
        }
        TermType::Tuple => {
            let elements = raw::tuple_elements(term).ok_or(CacheError::BadKey)?;
            out.push(TUPLE);
            push_varint(out, elements.len() as u64);
            for element in elements {
                encode_into(element, depth + 1, out)?;
            }
        }
        TermType::List if term.is_empty_list() => out.push(NIL),
        TermType::List => encode_list(term, depth, out)?,
        TermType::Pid | TermType::Port | TermType::Ref => external(term, out)?,
        TermType::Map | TermType::Fun | TermType::Unknown => return Err(CacheError::BadKey),
    }
    Ok(())
}

/// A proper list of up to `FAST_STRING_BYTES` bytes (a host name) is one tag, a length and the bytes, read in
/// one call. Any other list is walked cell by cell; only heads add depth, so a long list costs no stack.
/// Whether a list takes the first form depends only on the list, so no term has two encodings.
fn encode_list(term: Term, depth: usize, out: &mut Vec<u8>) -> Result<(), CacheError> {
    let mut bytes = [0u8; FAST_STRING_BYTES + 1];
    if let Some(len) = raw::latin1(term, &mut bytes) {
        out.push(BYTE_STRING);
        push_varint(out, len as u64);
        out.extend_from_slice(&bytes[..len]);
        return Ok(());
    }
    let mut rest = term;
    while let Ok((head, tail)) = rest.list_get_cell() {
        out.push(CONS);
        encode_into(head, depth + 1, out)?;
        if out.len() > MAX_KEY_BYTES {
            return Err(CacheError::BadKey);
        }
        rest = tail;
    }
    if rest.is_empty_list() {
        out.push(NIL);
        Ok(())
    } else {
        encode_into(rest, depth + 1, out)
    }
}

/// Terms without a cheaper canonical form (bignums, pids, ports, references) in the external term format,
/// which is canonical for them.
/// Fails with `OutOfMemory` if the VM has no memory for the encoding.
fn external(term: Term, out: &mut Vec<u8>) -> Result<(), CacheError> {
    raw::external(term, |bytes| {
        if bytes.len() > MAX_KEY_BYTES {
            return Err(CacheError::BadKey);
        }
        out.push(EXTERNAL);
        push_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
        Ok(())
    })
    .unwrap_or(Err(CacheError::OutOfMemory))
}
