//! Key terms to canonical bytes, through `session_codec::key`, whose walk sees rustler's terms through
//! [`KeyTerm`], implemented here for [`KeyView`]. The encoding itself, what it accepts and why it is canonical, is documented
//! and tested there. This module keeps one encoding buffer per scheduler thread, so that reads allocate nothing.

use std::cell::RefCell;

use rustler::{Binary, Term, TermType};
use session_codec::key::{encode_group, encode_key, KeyError, KeyTerm, View};
use session_store::KeyRef;

use crate::error::CacheError;
use crate::raw::{self, TupleElements};

thread_local! {
    /// Reused by every encoding on this scheduler thread, so that reads allocate nothing.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `write` on a full key as the store takes it for an insert or a removal (a 2-tuple key gets its first element as
/// group), borrowed from the encoding buffer: nothing is allocated for a key that is already stored. `write`
/// must not encode another key.
pub fn with_store_key<R>(term: Term, write: impl FnOnce(KeyRef) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        let group = encode_key(KeyView(term), out)?;
        let key = KeyRef::new(out, group).ok_or(CacheError::BadKey)?;
        Ok(write(key))
    })
}

/// Runs `read` on a key's canonical bytes without allocating. `read` must not encode another key.
pub fn with_key<R>(term: Term, read: impl FnOnce(&[u8]) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        encode_key(KeyView(term), out)?;
        Ok(read(out))
    })
}

/// Runs `read` on the canonical bytes of a partial key, exactly as they appear inside a full key's group.
pub fn with_group<R>(term: Term, read: impl FnOnce(&[u8]) -> R) -> Result<R, CacheError> {
    with_buffer(|out| {
        encode_group(KeyView(term), out)?;
        Ok(read(out))
    })
}

fn with_buffer<R>(
    encode: impl FnOnce(&mut Vec<u8>) -> Result<R, CacheError>,
) -> Result<R, CacheError> {
    BUFFER.with(|buffer| {
        // A nested use cannot happen (nothing here calls back), but if it did, a fresh buffer is still correct.
        match buffer.try_borrow_mut() {
            Ok(mut out) => encode(&mut out),
            Err(_) => encode(&mut Vec::new()),
        }
    })
}

impl From<KeyError> for CacheError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Unsupported => CacheError::BadKey,
            KeyError::OutOfMemory => CacheError::OutOfMemory,
        }
    }
}

/// A term as the key encoder sees it (a local type, as the trait and `Term` are both foreign here).
#[derive(Clone, Copy)]
struct KeyView<'a>(Term<'a>);

/// A tuple's elements, as the key encoder sees them.
struct KeyElements<'a>(TupleElements<'a>);

impl<'a> Iterator for KeyElements<'a> {
    type Item = KeyView<'a>;

    fn next(&mut self) -> Option<KeyView<'a>> {
        self.0.next().map(KeyView)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for KeyElements<'_> {}

impl<'a> KeyTerm<'a> for KeyView<'a> {
    type Elements = KeyElements<'a>;

    fn view(self) -> View<'a, Self> {
        let term = self.0;
        match term.get_type() {
            // An atom term is its handle in the atom table.
            TermType::Atom => View::Atom(term.as_c_arg() as u64),
            TermType::Integer => match term.decode::<i64>() {
                Ok(value) => View::Integer(value),
                Err(_) => View::External,
            },
            TermType::Float => match term.decode::<f64>() {
                Ok(value) => View::Float(value),
                Err(_) => View::Unsupported,
            },
            TermType::Binary => match Binary::from_term(term) {
                Ok(binary) => View::Binary(binary.as_slice()),
                Err(_) => View::Unsupported,
            },
            TermType::Tuple => match raw::tuple_elements(term) {
                Some(elements) => View::Tuple(KeyElements(elements)),
                None => View::Unsupported,
            },
            TermType::List => match term.list_get_cell() {
                Ok((head, tail)) => View::Cons(KeyView(head), KeyView(tail)),
                Err(_) => View::Nil,
            },
            TermType::Pid | TermType::Port | TermType::Ref => View::External,
            TermType::Map | TermType::Fun | TermType::Unknown => View::Unsupported,
        }
    }

    fn latin1(self, buf: &mut [u8]) -> Option<usize> {
        raw::latin1(self.0, buf)
    }

    fn external<R>(self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        raw::external(self.0, f)
    }
}
