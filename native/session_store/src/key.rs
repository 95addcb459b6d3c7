//! Store keys: canonical bytes, with an optional partial-key ("group") prefix.
//!
//! The store never interprets a key. Whoever builds one (the NIF layer) guarantees that two keys are equal
//! exactly when their bytes are, and marks the byte range that names the key's group: for an OTP client key
//! `{{Host, Port}, SessionId}`, the canonical bytes of `{Host, Port}`. The group is a function of the bytes: a
//! key is removed with the group it was inserted with, which the store does not keep.

use std::ops::Range;

/// A key as the store receives it on insert.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    bytes: Box<[u8]>,
    group: Option<Range<usize>>,
}

impl Key {
    /// A key that belongs to no group (OTP server keys: a bare session id).
    pub fn plain(bytes: impl Into<Box<[u8]>>) -> Self {
        Key {
            bytes: bytes.into(),
            group: None,
        }
    }

    /// A key whose bytes `group` name its group. Returns `None` when the range is outside the bytes.
    pub fn grouped(bytes: impl Into<Box<[u8]>>, group: Range<usize>) -> Option<Self> {
        let bytes = bytes.into();
        (group.start <= group.end && group.end <= bytes.len()).then_some(Key {
            bytes,
            group: Some(group),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn group(&self) -> Option<&[u8]> {
        self.group.clone().map(|range| &self.bytes[range])
    }

    /// The key, borrowed, as [`Store::insert_ref`](crate::Store::insert_ref) takes it.
    pub fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            bytes: &self.bytes,
            group: self.group.clone(),
        }
    }
}

/// A key borrowed from the caller's buffer. The store keeps no copy of it: the value it is inserted with carries
/// the same bytes ([`Value::key`](crate::Value::key)).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRef<'a> {
    bytes: &'a [u8],
    group: Option<Range<usize>>,
}

impl<'a> KeyRef<'a> {
    /// A key whose bytes `group` (if any) name its group. Returns `None` when the range is outside the bytes.
    pub fn new(bytes: &'a [u8], group: Option<Range<usize>>) -> Option<Self> {
        let inside = group
            .as_ref()
            .is_none_or(|range| range.start <= range.end && range.end <= bytes.len());
        inside.then_some(KeyRef { bytes, group })
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn group_range(&self) -> Option<Range<usize>> {
        self.group.clone()
    }
}

// Keys are not secret, but a derived Debug would print every byte of a 4 KiB key into a test failure.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_ref().fmt(f)
    }
}

impl std::fmt::Debug for KeyRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("len", &self.bytes.len())
            .field("group", &self.group)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_key_exposes_its_group_bytes() {
        let key = Key::grouped(b"hostport|id".to_vec(), 0..8).expect("range is inside");
        assert_eq!(key.group(), Some(&b"hostport"[..]));
        assert_eq!(key.bytes(), b"hostport|id");
    }

    #[test]
    fn grouped_key_rejects_a_range_outside_its_bytes() {
        assert!(Key::grouped(b"abc".to_vec(), 1..4).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 2..1;
        assert!(Key::grouped(b"abc".to_vec(), reversed).is_none());
    }

    #[test]
    fn borrowed_key_checks_its_group_range() {
        assert!(KeyRef::new(b"abc", Some(1..4)).is_none());
        assert!(KeyRef::new(b"abc", Some(1..3)).is_some());
        assert_eq!(
            KeyRef::new(b"abc", None).map(|key| key.bytes()),
            Some(&b"abc"[..])
        );
    }

    #[test]
    fn plain_key_has_no_group() {
        assert_eq!(Key::plain(b"id".to_vec()).group(), None);
    }
}
