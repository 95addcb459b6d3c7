//! Turns a key term into canonical bytes: two keys encode to the same bytes exactly when they are `=:=`.
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

use rustler::{Binary, Term, TermType};
use session_store::Key;

use crate::error::CacheError;

/// Largest accepted key encoding. OTP keys are under 600 bytes (a 255-byte host name and a 32-byte id).
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Deepest accepted nesting of tuples and list heads. OTP keys nest three levels.
pub const MAX_DEPTH: usize = 16;

const ATOM: u8 = b'a';
const INTEGER: u8 = b'i';
const FLOAT: u8 = b'f';
const BINARY: u8 = b'b';
const TUPLE: u8 = b't';
const CONS: u8 = b'c';
const NIL: u8 = b'n';
const EXTERNAL: u8 = b'e';

/// Encodes a full key; a 2-tuple key gets its first element as group.
pub fn encode_key(term: Term) -> Result<Key, CacheError> {
    let mut out = Vec::with_capacity(64);
    if term.get_type() == TermType::Tuple {
        if let Ok(elements) = rustler::types::tuple::get_tuple(term) {
            if let [partial, id] = elements[..] {
                out.push(TUPLE);
                push_varint(&mut out, 2);
                let start = out.len();
                encode_into(partial, 1, &mut out)?;
                let end = out.len();
                encode_into(id, 1, &mut out)?;
                return Key::grouped(out, start..end).ok_or(CacheError::BadKey);
            }
        }
    }
    encode_into(term, 0, &mut out)?;
    Ok(Key::plain(out))
}

/// Encodes a partial key exactly as it appears inside a full key's group.
pub fn encode_group(term: Term) -> Result<Vec<u8>, CacheError> {
    let mut out = Vec::with_capacity(48);
    encode_into(term, 1, &mut out)?;
    Ok(out)
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
            let elements =
                rustler::types::tuple::get_tuple(term).map_err(|_| CacheError::BadKey)?;
            out.push(TUPLE);
            push_varint(out, elements.len() as u64);
            for element in elements {
                encode_into(element, depth + 1, out)?;
            }
        }
        TermType::List => {
            // Lists are walked iteratively: only heads add depth, so a long string costs no stack.
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
            } else {
                encode_into(rest, depth + 1, out)?;
            }
        }
        TermType::Pid | TermType::Port | TermType::Ref => external(term, out)?,
        TermType::Map | TermType::Fun | TermType::Unknown => return Err(CacheError::BadKey),
    }
    Ok(())
}

/// Terms without a cheaper canonical form (bignums, pids, ports, references) in the external term format,
/// which is canonical for them.
fn external(term: Term, out: &mut Vec<u8>) -> Result<(), CacheError> {
    let bytes = term.to_binary();
    if bytes.len() > MAX_KEY_BYTES {
        return Err(CacheError::BadKey);
    }
    out.push(EXTERNAL);
    push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes.as_slice());
    Ok(())
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}
