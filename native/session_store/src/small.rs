//! Byte strings kept in place when short: the stored form of group names.
//!
//! A name compared through a pointer costs a dependent cache miss on every write of a client key to a large
//! store, and an allocation for every new group. A group name, `{Host, Port}` in canonical bytes, takes at most
//! `INLINE` bytes for host names of up to 55 bytes, and lives inside the group index's slot instead.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// The longest byte string kept in place; chosen so that the whole value is one 64-byte cache line.
const INLINE: usize = 62;

#[derive(Clone)]
pub(crate) enum SmallBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<[u8]>),
}

impl SmallBytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            SmallBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            SmallBytes::Boxed(bytes) => bytes,
        }
    }
}

impl From<&[u8]> for SmallBytes {
    fn from(slice: &[u8]) -> Self {
        match u8::try_from(slice.len()) {
            Ok(len) if slice.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..slice.len()].copy_from_slice(slice);
                SmallBytes::Inline { len, bytes }
            }
            _ => SmallBytes::Boxed(slice.into()),
        }
    }
}

// Hashes and compares exactly as the `[u8]` it borrows as, so that maps keyed by it are searched by slice.
impl Hash for SmallBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialEq for SmallBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SmallBytes {}

impl Borrow<[u8]> for SmallBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn keeps_bytes_in_place_up_to_a_cache_line_and_hashes_as_the_slice() {
        assert_eq!(std::mem::size_of::<SmallBytes>(), 64);
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 300] {
            let slice: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let small = SmallBytes::from(&slice[..]);
            assert_eq!(small.as_slice(), &slice[..]);
            assert_eq!(matches!(small, SmallBytes::Inline { .. }), len <= INLINE);
            assert_eq!(hash_of(&small), hash_of(&slice[..]));
            assert!(small == SmallBytes::from(&slice[..]));
        }
        assert!(SmallBytes::from(&b"ab"[..]) != SmallBytes::from(&b"abc"[..]));
    }
}
