//! How nif_session_cache represents what it stores, with nothing of the VM in it, so that `cargo test` reaches
//! every rule. The encodings read terms through [`term::Term`] and make them through [`term::Build`], which the
//! NIF implements for rustler's terms and the tests for plain values:
//! - `key`: a key term's canonical bytes, which the store compares and groups by;
//! - `pack` and `unpack`: a stored entry as bytes and held parts, within a budget of work per call;
//! - `entry`: the memory of one entry, its reference count and the wipe of its secrets;
//! - `intern`: which copy of a shared session field a store keeps.
//!
//! And the pieces they share: LEB128 varints, zigzag for signed integers, and the wiping of buffers that held
//! secrets.

#![forbid(unsafe_code)]

use zeroize::Zeroize;

pub mod entry;
pub mod intern;
pub mod key;
pub mod pack;
pub mod term;
pub mod unpack;

/// The longest varint of a `u64`: 64 bits in groups of 7.
pub const MAX_VARINT_BYTES: usize = 10;

/// Appends `value` as an LEB128 varint: 7 bits a byte, low groups first, the high bit set on every byte but the
/// last. 1 byte up to 127, 10 at most.
pub fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a varint that `push_varint` wrote at `bytes[*at..]` and moves `at` past it. `None`, with `at` wherever
/// it got to, if the bytes end first or run over `MAX_VARINT_BYTES`.
pub fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// Maps signed integers to unsigned ones small in magnitude first (0, -1, 1, -2, ...), so that small negative
/// numbers make short varints too.
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// Overwrites `bytes` with zeros in a way the compiler may not remove (`zeroize`'s volatile writes and fence).
pub fn wipe(bytes: &mut [u8]) {
    bytes.zeroize();
}

/// Makes room for `extra` more bytes in `buffer`, a buffer that holds secrets, growing it by hand so that its old
/// block is wiped before it is freed, where `Vec`'s own growth would free it as it is.
pub fn reserve_wiped(buffer: &mut Vec<u8>, extra: usize) {
    if buffer.capacity() - buffer.len() >= extra {
        return;
    }
    let mut grown = Vec::with_capacity((buffer.len() + extra).max(2 * buffer.capacity()));
    grown.extend_from_slice(buffer);
    std::mem::swap(buffer, &mut grown);
    // `grown` is now the old block. Its bytes past its length hold nothing: the caller wipes what it wrote each
    // time it is done with the buffer, before clearing it.
    wipe(&mut grown);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varints_have_the_documented_lengths_at_every_boundary() {
        for (value, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::from(u32::MAX), 5),
            (u64::MAX, MAX_VARINT_BYTES),
        ] {
            let mut out = Vec::new();
            push_varint(&mut out, value);
            assert_eq!(out.len(), len, "{value}");
            let mut at = 0;
            assert_eq!(read_varint(&out, &mut at), Some(value));
            assert_eq!(at, len);
        }
    }

    #[test]
    fn a_truncated_or_overlong_varint_reads_as_none() {
        let mut out = Vec::new();
        push_varint(&mut out, u64::MAX);
        out.pop();
        assert_eq!(read_varint(&out, &mut 0), None);
        assert_eq!(read_varint(&[0x80; 11], &mut 0), None);
        assert_eq!(read_varint(&[], &mut 0), None);
    }

    #[test]
    fn zigzag_puts_small_magnitudes_first() {
        let order: Vec<u64> = [0, -1, 1, -2, 2].into_iter().map(zigzag).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
        assert_eq!(zigzag(i64::MAX), u64::MAX - 1);
    }

    #[test]
    fn wipe_zeroes_every_byte() {
        let mut secret = [0xA5u8; 77];
        wipe(&mut secret[3..]);
        assert_eq!(&secret[..3], &[0xA5; 3]);
        assert!(secret[3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn reserve_wiped_keeps_the_contents_and_makes_room() {
        let mut buffer = Vec::with_capacity(4);
        buffer.extend_from_slice(b"abcd");
        reserve_wiped(&mut buffer, 100);
        assert_eq!(buffer, b"abcd");
        assert!(buffer.capacity() >= 104);
        let capacity = buffer.capacity();
        reserve_wiped(&mut buffer, 10);
        assert_eq!(buffer.capacity(), capacity, "no growth when there is room");
    }

    proptest! {
        #[test]
        fn any_sequence_of_varints_reads_back(values in proptest::collection::vec(any::<u64>(), 0..64)) {
            let mut out = Vec::new();
            for &value in &values {
                push_varint(&mut out, value);
            }
            let mut at = 0;
            for &value in &values {
                prop_assert_eq!(read_varint(&out, &mut at), Some(value));
            }
            prop_assert_eq!(at, out.len());
        }

        #[test]
        fn unzigzag_inverts_zigzag(value in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(value)), value);
        }
    }
}
