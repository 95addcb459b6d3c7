//! A key term's canonical bytes: two keys encode to the same bytes exactly when they are `=:=` as OTP 27 and
//! later have it, on every release (before 27, `=:=` also takes 0.0 and -0.0 for the same; here they differ).
//!
//! The walk is over [`Term`], what the encodings see of a term: the NIF implements it for rustler's terms, the
//! tests below for plain values. The encoding is private to one VM run (atoms are encoded by their
//! atom-table handle, which is stable for the life of the VM and never persisted), self-delimiting, and cheap for
//! the shapes OTP uses: a 32-byte session id, and `{{Host, Port}, SessionId}` with Host a string or an IP tuple.
//! A 2-tuple key also names its group: the bytes of its first element, which are exactly what `{Host, Port}`
//! encodes to on its own, so select_session finds a client's sessions by encoding its partial key.
//!
//! Accepted: atoms, integers, floats, byte-aligned binaries, tuples, proper and improper lists, pids, ports and
//! references. Refused, as [`KeyError::Unsupported`]: maps, funs, bitstrings that are not whole bytes, nesting
//! deeper than `MAX_DEPTH`, and encodings larger than `MAX_KEY_BYTES`. Refusal is cheap: the walk stops at the
//! first violation, so a huge junk key costs no more than `MAX_KEY_BYTES` of work.

use std::ops::Range;

use crate::term::{Other, Term, View};
use crate::{push_varint, zigzag};

/// Largest accepted key encoding. OTP keys are under 600 bytes (a 255-byte host name and a 32-byte id). A key is
/// encoded on a normal scheduler at every call, and a term walked through the NIF API costs up to about 10 ns
/// per byte of its encoding (a list of small integers), so this bounds any key's encoding, or its refusal, to
/// about 40 µs.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Deepest accepted nesting of tuples and list heads. OTP keys nest three levels.
pub const MAX_DEPTH: usize = 16;
/// Byte strings up to this length (every DNS name) are read in one call instead of cell by cell.
pub const FAST_STRING_BYTES: usize = 255;

const ATOM: u8 = b'a';
const INTEGER: u8 = b'i';
const FLOAT: u8 = b'f';
const BINARY: u8 = b'b';
const TUPLE: u8 = b't';
const CONS: u8 = b'c';
const NIL: u8 = b'n';
const BYTE_STRING: u8 = b's';
const EXTERNAL: u8 = b'e';

/// Why a key has no encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A kind of term, a depth or a size the encoding refuses.
    #[error("the key is not a supported term")]
    Unsupported,
    /// The VM had no memory for a term's external format.
    #[error("no memory to encode the key")]
    OutOfMemory,
}

/// Encodes a full key into `out` (which it clears first) and returns the byte range of its group when it is a
/// 2-tuple.
pub fn encode_key<'a, T: Term<'a>>(
    term: T,
    out: &mut Vec<u8>,
) -> Result<Option<Range<usize>>, KeyError> {
    out.clear();
    // The term is looked at once: a server's key, a binary, is encoded from the view taken here.
    match term.view() {
        View::Tuple(mut elements) if elements.len() == 2 => {
            if let (Some(partial), Some(id)) = (elements.next(), elements.next()) {
                out.push(TUPLE);
                push_varint(out, 2);
                let start = out.len();
                encode_into(partial, 1, out)?;
                let end = out.len();
                encode_into(id, 1, out)?;
                return Ok(Some(start..end));
            }
            encode_into(term, 0, out)?;
        }
        view => encode_view(term, view, 0, out)?,
    }
    Ok(None)
}

/// Encodes a partial key into `out` (which it clears first), exactly as it appears inside a full key's group.
pub fn encode_group<'a, T: Term<'a>>(term: T, out: &mut Vec<u8>) -> Result<(), KeyError> {
    out.clear();
    encode_into(term, 1, out)
}

thread_local! {
    /// Keys are encoded in a buffer of their thread's, kept between calls, so that a read allocates nothing.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `with` on this thread's key buffer (a fresh one if a caller up the stack holds it: still correct).
pub fn with_buffer<R>(with: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut out) => with(&mut out),
        Err(_) => with(&mut Vec::new()),
    })
}

/// Runs `read` on a full key's canonical bytes.
pub fn with_key<'a, T: Term<'a>, R>(term: T, read: impl FnOnce(&[u8]) -> R) -> Result<R, KeyError> {
    with_buffer(|out| encode_key(term, out).map(|_| read(out)))
}

/// Runs `read` on the canonical bytes of a partial key, exactly as they appear inside a full key's group.
pub fn with_group<'a, T: Term<'a>, R>(
    term: T,
    read: impl FnOnce(&[u8]) -> R,
) -> Result<R, KeyError> {
    with_buffer(|out| encode_group(term, out).map(|()| read(out)))
}

/// The bytes of the binary whose canonical encoding is `encoded`, if it is one: a server's session id. Lets a
/// stored entry refer to its key's bytes instead of keeping the same binary again.
pub fn binary_of(encoded: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = encoded.split_first()?;
    if tag != BINARY {
        return None;
    }
    let mut at = 0;
    let len = usize::try_from(crate::read_varint(rest, &mut at)?).ok()?;
    rest.get(at..).filter(|bytes| bytes.len() == len)
}

fn encode_into<'a, T: Term<'a>>(term: T, depth: usize, out: &mut Vec<u8>) -> Result<(), KeyError> {
    encode_view(term, term.view(), depth, out)
}

/// `encode_into` of a term whose view is already taken.
fn encode_view<'a, T: Term<'a>>(
    term: T,
    view: View<'a, T>,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), KeyError> {
    if depth > MAX_DEPTH || out.len() > MAX_KEY_BYTES {
        return Err(KeyError::Unsupported);
    }
    match view {
        View::Atom(handle) => {
            out.push(ATOM);
            out.extend_from_slice(&handle.to_le_bytes());
        }
        View::Integer(value) => {
            out.push(INTEGER);
            push_varint(out, zigzag(value));
        }
        View::Float(value) => {
            out.push(FLOAT);
            out.extend_from_slice(&value.to_bits().to_le_bytes());
        }
        View::Binary(bytes) => {
            if bytes.len() > MAX_KEY_BYTES {
                return Err(KeyError::Unsupported);
            }
            out.push(BINARY);
            push_varint(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        View::Tuple(elements) => {
            out.push(TUPLE);
            push_varint(out, elements.len() as u64);
            for element in elements {
                encode_into(element, depth + 1, out)?;
            }
        }
        View::Nil => out.push(NIL),
        View::Cons(..) => encode_list(term, depth, out)?,
        View::Other(Other::BigInteger | Other::Pid | Other::Port | Other::Reference) => {
            external(term, out)?
        }
        View::Map(_) | View::Other(Other::Fun | Other::Bitstring) => {
            return Err(KeyError::Unsupported)
        }
    }
    Ok(())
}

/// A proper list of up to `FAST_STRING_BYTES` bytes (a host name) is one tag, a length and the bytes, read in
/// one call. Any other list is walked cell by cell; only heads add depth, so a long list costs no stack.
/// Whether a list takes the first form depends only on the list, so no term has two encodings.
fn encode_list<'a, T: Term<'a>>(term: T, depth: usize, out: &mut Vec<u8>) -> Result<(), KeyError> {
    let mut bytes = [0u8; FAST_STRING_BYTES + 1];
    if let Some(len) = term.latin1(&mut bytes) {
        out.push(BYTE_STRING);
        push_varint(out, len as u64);
        out.extend_from_slice(&bytes[..len]);
        return Ok(());
    }
    let mut rest = term;
    loop {
        match rest.view() {
            View::Cons(head, tail) => {
                out.push(CONS);
                encode_into(head, depth + 1, out)?;
                if out.len() > MAX_KEY_BYTES {
                    return Err(KeyError::Unsupported);
                }
                rest = tail;
            }
            View::Nil => {
                out.push(NIL);
                return Ok(());
            }
            // An improper tail.
            _ => return encode_into(rest, depth + 1, out),
        }
    }
}

/// Terms without a cheaper canonical form, in the external term format.
fn external<'a, T: Term<'a>>(term: T, out: &mut Vec<u8>) -> Result<(), KeyError> {
    term.external(|bytes| {
        if bytes.len() > MAX_KEY_BYTES {
            return Err(KeyError::Unsupported);
        }
        out.push(EXTERNAL);
        push_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
        Ok(())
    })
    .unwrap_or(Err(KeyError::OutOfMemory))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A term as plain data: lists are a slice of heads and a tail (`None` for `[]`).
    #[derive(Clone, Copy)]
    enum Fake<'a> {
        Atom(u64),
        Int(i64),
        Float(f64),
        Bin(&'a [u8]),
        Tuple(&'a [Fake<'a>]),
        List(&'a [Fake<'a>], Option<&'a Fake<'a>>),
        /// A bignum, pid, port or reference, with its external format; `None`: no memory to make it.
        Ext(Option<&'a [u8]>),
        Map,
    }

    impl<'a> Term<'a> for Fake<'a> {
        type Elements = std::iter::Copied<std::slice::Iter<'a, Fake<'a>>>;

        fn view(self) -> View<'a, Self> {
            match self {
                Fake::Atom(handle) => View::Atom(handle),
                Fake::Int(value) => View::Integer(value),
                Fake::Float(value) => View::Float(value),
                Fake::Bin(bytes) => View::Binary(bytes),
                Fake::Tuple(elements) => View::Tuple(elements.iter().copied()),
                Fake::List([], None) => View::Nil,
                Fake::List([], Some(tail)) => tail.view(),
                Fake::List([head, rest @ ..], tail) => View::Cons(*head, Fake::List(rest, tail)),
                Fake::Ext(_) => View::Other(Other::Reference),
                Fake::Map => View::Map(0),
            }
        }

        fn latin1(self, buf: &mut [u8]) -> Option<usize> {
            let Fake::List(heads, None) = self else {
                return None;
            };
            if heads.len() >= buf.len() {
                return None;
            }
            for (slot, head) in buf.iter_mut().zip(heads) {
                *slot = match head {
                    Fake::Int(byte @ 0..=255) => *byte as u8,
                    _ => return None,
                };
            }
            Some(heads.len())
        }

        fn external<R>(self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
            match self {
                Fake::Ext(bytes) => bytes.map(f),
                _ => None,
            }
        }

        fn map_entries(self, _f: impl FnMut(Self, Self)) {}
    }

    fn encode(term: Fake) -> Result<Vec<u8>, KeyError> {
        let mut out = Vec::new();
        encode_key(term, &mut out).map(|_| out)
    }

    #[test]
    fn the_two_zeros_are_different_keys() {
        assert_ne!(encode(Fake::Float(0.0)), encode(Fake::Float(-0.0)));
    }

    #[test]
    fn a_client_key_names_its_group_with_the_bytes_of_its_partial_key() {
        let host: Vec<Fake> = b"example.org"
            .iter()
            .map(|&b| Fake::Int(b.into()))
            .collect();
        let partial = [Fake::List(&host, None), Fake::Int(443)];
        let key = [Fake::Tuple(&partial), Fake::Bin(&[7; 32])];
        let mut full = Vec::new();
        let group = encode_key(Fake::Tuple(&key), &mut full).unwrap().unwrap();
        let mut alone = Vec::new();
        encode_group(Fake::Tuple(&partial), &mut alone).unwrap();
        assert_eq!(&full[group], &alone[..]);
    }

    #[test]
    fn a_string_is_read_at_once_up_to_255_bytes_and_by_cells_beyond() {
        let short: Vec<Fake> = vec![Fake::Int(97); FAST_STRING_BYTES];
        let long: Vec<Fake> = vec![Fake::Int(97); FAST_STRING_BYTES + 1];
        assert_eq!(encode(Fake::List(&short, None)).unwrap()[0], BYTE_STRING);
        assert_eq!(encode(Fake::List(&long, None)).unwrap()[0], CONS);
        // An improper list is never a string, and its tail is encoded.
        let improper = encode(Fake::List(&short, Some(&Fake::Atom(1)))).unwrap();
        assert_eq!(improper[0], CONS);
        assert_ne!(improper, encode(Fake::List(&short, None)).unwrap());
    }

    #[test]
    fn different_terms_never_share_an_encoding() {
        let one = [Fake::Int(1)];
        let terms = [
            Fake::Atom(1),
            Fake::Int(1),
            Fake::Int(-1),
            Fake::Float(1.0),
            Fake::Bin(&[1]),
            Fake::Tuple(&one),
            Fake::List(&one, None),
            Fake::List(&one, Some(&Fake::Int(1))),
            Fake::List(&[], None),
            Fake::Ext(Some(&[131, 1])),
        ];
        let encodings: std::collections::HashSet<Vec<u8>> =
            terms.iter().map(|&term| encode(term).unwrap()).collect();
        assert_eq!(encodings.len(), terms.len());
    }

    #[test]
    fn maps_deep_nesting_and_huge_keys_are_refused() {
        assert_eq!(encode(Fake::Map), Err(KeyError::Unsupported));
        let huge = vec![0u8; MAX_KEY_BYTES + 1];
        assert_eq!(encode(Fake::Bin(&huge)), Err(KeyError::Unsupported));
        assert_eq!(encode(Fake::Ext(Some(&huge))), Err(KeyError::Unsupported));
        // MAX_DEPTH tuples around an atom are accepted; one more is not.
        let mut nests: Vec<[Fake; 1]> = vec![[Fake::Atom(1)]];
        for depth in 0..=MAX_DEPTH {
            let inner = Fake::Tuple(leak(nests[depth]));
            nests.push([inner]);
        }
        assert!(encode(nests[MAX_DEPTH][0]).is_ok());
        assert_eq!(encode(nests[MAX_DEPTH + 1][0]), Err(KeyError::Unsupported));
    }

    /// A term whose external format the VM had no memory for is `OutOfMemory`, never a panic: the key of an
    /// update arrives with its session, and a panic's exception would carry both into a stack trace.
    #[test]
    fn no_memory_for_an_external_format_is_out_of_memory() {
        assert_eq!(encode(Fake::Ext(None)), Err(KeyError::OutOfMemory));
        let key = [Fake::Bin(&[1; 32]), Fake::Ext(None)];
        assert_eq!(encode(Fake::Tuple(&key)), Err(KeyError::OutOfMemory));
    }

    #[test]
    fn a_binary_key_gives_back_its_bytes_and_nothing_else_does() {
        let id = [7u8; 32];
        assert_eq!(binary_of(&encode(Fake::Bin(&id)).unwrap()), Some(&id[..]));
        assert_eq!(binary_of(&encode(Fake::Bin(&[])).unwrap()), Some(&[][..]));
        let pair = [Fake::Int(1), Fake::Bin(&id)];
        for other in [
            Fake::Tuple(&pair),
            Fake::Int(7),
            Fake::Atom(1),
            Fake::List(&[], None),
        ] {
            assert_eq!(binary_of(&encode(other).unwrap()), None);
        }
        // A truncated encoding is not taken for a shorter binary.
        let whole = encode(Fake::Bin(&id)).unwrap();
        assert_eq!(binary_of(&whole[..whole.len() - 1]), None);
    }

    /// A slice that lives for the rest of the test run, to nest fakes by reference.
    fn leak(elements: [Fake<'static>; 1]) -> &'static [Fake<'static>] {
        Box::leak(Box::new(elements))
    }

    #[test]
    fn keys_read_in_the_thread_buffer_even_nested_are_their_encodings() {
        let (partial, id) = (Fake::Atom(7), Fake::Bin(b"id"));
        let key = Fake::Tuple(&[partial, id][..]);
        let nested = with_group(partial, |group| {
            let inner = with_key(key, <[u8]>::to_vec);
            (group.to_vec(), inner)
        });
        let mut out = Vec::new();
        encode_group(partial, &mut out).unwrap();
        assert_eq!(nested, Ok((out, Ok(encode(key).unwrap()))));
        assert_eq!(with_key(Fake::Map, <[u8]>::len), Err(KeyError::Unsupported));
    }
}
