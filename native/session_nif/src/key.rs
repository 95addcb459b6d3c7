//! A key as the store takes it for a write: its canonical bytes (`session_codec::key`), in the key buffer of the
//! thread, so that a write allocates nothing for its key, and the group a 2-tuple key names.

use session_codec::key::{encode_key, with_buffer};
use session_codec::term::Term;
use session_store::KeyRef;

use crate::error::CacheError;

/// Runs `write` on a full key as the store takes it for an insert or a removal. `write` must not encode another
/// key.
pub fn with_store_key<'a, T: Term<'a>, R>(
    term: T,
    write: impl FnOnce(KeyRef) -> R,
) -> Result<R, CacheError> {
    with_buffer(|out| {
        let group = encode_key(term, out)?;
        Ok(write(KeyRef::new(out, group).ok_or(CacheError::BadKey)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_codec::key::{with_group, with_key};
    use session_codec::term::View;

    /// Binaries, tuples of them, and maps, which no key may be.
    #[derive(Clone, Copy)]
    enum Fake<'a> {
        Bin(&'a [u8]),
        Tuple(&'a [Fake<'a>]),
        Map,
    }

    impl<'a> Term<'a> for Fake<'a> {
        type Elements = std::iter::Copied<std::slice::Iter<'a, Fake<'a>>>;

        fn view(self) -> View<'a, Self> {
            match self {
                Fake::Bin(bytes) => View::Binary(bytes),
                Fake::Tuple(elements) => View::Tuple(elements.iter().copied()),
                Fake::Map => View::Map(0),
            }
        }

        fn latin1(self, _buf: &mut [u8]) -> Option<usize> {
            None
        }

        fn external<R>(self, _f: impl FnOnce(&[u8]) -> R) -> Option<R> {
            None
        }

        fn map_entries(self, _f: impl FnMut(Self, Self)) {}
    }

    #[derive(Clone)]
    struct Val(Vec<u8>);

    impl session_store::Value for Val {
        fn key(&self) -> &[u8] {
            &self.0
        }

        fn weight(&self) -> usize {
            1
        }
    }

    #[test]
    fn a_written_key_is_found_by_its_lookup_bytes_and_a_pair_by_its_group() {
        let store = session_store::Store::new(session_store::Config::default());
        let pair = Fake::Tuple(&[Fake::Bin(b"host"), Fake::Bin(b"id")]);
        for key in [pair, Fake::Bin(b"id")] {
            let bytes = with_key(key, <[u8]>::to_vec).unwrap_or_default();
            let written = with_store_key(key, |key| store.insert_ref(key, Val(bytes.clone())));
            assert!(matches!(written, Ok(Ok(_))));
            assert!(store.get(&bytes).is_some());
        }
        let mut found = Vec::new();
        let group = with_group(Fake::Bin(b"host"), |group| {
            store.select(group, 10, &mut found)
        });
        assert!(group.is_ok() && found.len() == 1);
        assert_eq!(with_store_key(Fake::Map, |_| ()), Err(CacheError::BadKey));
    }
}
