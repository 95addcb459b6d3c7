//! Sealing sessions for Redis: XChaCha20-Poly1305 (RustCrypto), a random 192-bit nonce per blob, and a key id
//! so that keys can be rotated: the first key seals, every key opens.
//!
//! A blob is `VERSION (1 byte) | expiry (8) | key id (4) | nonce (24) | ciphertext and tag`, the expiry in
//! milliseconds of Unix time, little-endian: when Redis drops it, so that a node that keeps what it read
//! (`recent.rs`) keeps it no longer, without asking Redis for the key's TTL. The associated data is the
//! namespace, the session id and the expiry, each with its length, so a blob copied under another id or into
//! another namespace, or given a longer life, fails to open, as does a flipped byte anywhere or an unknown key id. A key id is the first four bytes
//! of the key's own encryption of a fixed block: it names the key without revealing it. Keys are wiped when
//! dropped (the cipher's own `Drop`, and ours for the bytes we were given), and nothing here formats one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// The blob format's version, its first byte. Version 1 had no expiry.
pub const VERSION: u8 = 2;
/// Bytes of a sealing key.
pub const KEY_BYTES: usize = 32;
const KEY_ID_BYTES: usize = 4;
const NONCE_BYTES: usize = 24;
const EXPIRY_BYTES: usize = 8;
const HEADER_BYTES: usize = 1 + EXPIRY_BYTES + KEY_ID_BYTES + NONCE_BYTES;
/// What a key id is computed from.
const KEY_ID_LABEL: &[u8] = b"nif_session_cache key id";

/// Why a set of keys could not be made. Never carries key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no sealing key given")]
    NoKeys,
    #[error("sealing key {index} is not 32 bytes")]
    BadLength { index: usize },
    #[error("sealing keys {first} and {second} have the same key id")]
    SameId { first: usize, second: usize },
}

/// Why a blob did not open. Every one is a miss to the caller; the reason is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the blob is too short or of another version")]
    Malformed,
    #[error("the blob was sealed with a key we do not have")]
    UnknownKey,
    #[error("the blob failed authentication")]
    Forged,
}

/// A key and its id. Its `Debug` shows the id only.
struct SealKey {
    id: [u8; KEY_ID_BYTES],
    cipher: XChaCha20Poly1305,
}

/// The keys of a namespace. The first one seals; all of them open.
pub struct Keys {
    keys: Vec<SealKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("count", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// The keys, first the sealing one. Each must be `KEY_BYTES` long, and no two may share an id.
    pub fn new<K: AsRef<[u8]>>(keys: &[K]) -> Result<Keys, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        let mut made: Vec<SealKey> = Vec::with_capacity(keys.len());
        for (index, bytes) in keys.iter().enumerate() {
            let bytes = bytes.as_ref();
            if bytes.len() != KEY_BYTES {
                return Err(KeyError::BadLength { index });
            }
            // The cipher keeps its own copy of the key, which it wipes when dropped.
            let cipher = XChaCha20Poly1305::new_from_slice(bytes)
                .map_err(|_| KeyError::BadLength { index })?;
            let id = key_id(&cipher);
            if let Some(first) = made.iter().position(|k| k.id == id) {
                return Err(KeyError::SameId {
                    first,
                    second: index,
                });
            }
            made.push(SealKey { id, cipher });
        }
        Ok(Keys { keys: made })
    }

    /// `session` sealed for `id` in `namespace`, to be kept `ttl` from now, with a fresh random nonce.
    pub fn seal(&self, namespace: &[u8], id: &[u8], session: &[u8], ttl: Duration) -> Vec<u8> {
        let key = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let expiry = (SystemTime::now() + ttl)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
            .to_le_bytes();
        let aad = associated_data(namespace, id, &expiry);
        let mut blob = Vec::with_capacity(HEADER_BYTES + session.len() + 16);
        blob.push(VERSION);
        blob.extend_from_slice(&expiry);
        blob.extend_from_slice(&key.id);
        blob.extend_from_slice(&nonce);
        // Encryption fails only for messages of over 256 GiB: not a session.
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: session,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        blob.extend_from_slice(&sealed);
        blob
    }

    /// The session sealed in `blob` for `id` in `namespace`, in a buffer wiped when dropped.
    pub fn open(
        &self,
        namespace: &[u8],
        id: &[u8],
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if blob.len() < HEADER_BYTES || blob[0] != VERSION {
            return Err(OpenError::Malformed);
        }
        let expiry = &blob[1..1 + EXPIRY_BYTES];
        let key_id = &blob[1 + EXPIRY_BYTES..1 + EXPIRY_BYTES + KEY_ID_BYTES];
        let key = self
            .keys
            .iter()
            .find(|key| key.id == key_id)
            .ok_or(OpenError::UnknownKey)?;
        let nonce = XNonce::from_slice(&blob[HEADER_BYTES - NONCE_BYTES..HEADER_BYTES]);
        let aad = associated_data(namespace, id, expiry);
        key.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &blob[HEADER_BYTES..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Forged)
    }
}

/// When Redis drops `blob`, as its sealer set it: to be trusted only once the blob has opened.
pub fn expiry(blob: &[u8]) -> Option<SystemTime> {
    let bytes: [u8; EXPIRY_BYTES] = blob.get(1..1 + EXPIRY_BYTES)?.try_into().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(u64::from_le_bytes(bytes)))
}

/// The first bytes of the key's encryption of a fixed label under a zero nonce: a key check value.
fn key_id(cipher: &XChaCha20Poly1305) -> [u8; KEY_ID_BYTES] {
    let sealed = cipher
        .encrypt(&XNonce::default(), KEY_ID_LABEL)
        .unwrap_or_default();
    let mut id = [0; KEY_ID_BYTES];
    id.copy_from_slice(&sealed[..KEY_ID_BYTES]);
    id
}

/// `namespace`, `id` and the expiry, each behind its length, so that no two triples give the same bytes.
fn associated_data(namespace: &[u8], id: &[u8], expiry: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + namespace.len() + id.len() + expiry.len());
    for part in [namespace, id, expiry] {
        aad.extend_from_slice(&(part.len() as u64).to_le_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"the master secret, forty-eight bytes long......";
    const TTL: Duration = Duration::from_secs(3600);

    fn keys(seeds: &[u8]) -> Keys {
        let keys: Vec<[u8; KEY_BYTES]> = seeds.iter().map(|&seed| [seed; KEY_BYTES]).collect();
        Keys::new(&keys).expect("valid keys")
    }

    #[test]
    fn a_sealed_session_opens_for_its_namespace_and_id() {
        let keys = keys(&[1]);
        let blob = keys.seal(b"fleet", b"id-1", SECRET, TTL);
        assert_eq!(&keys.open(b"fleet", b"id-1", &blob).unwrap()[..], SECRET);
    }

    #[test]
    fn the_secret_is_not_in_the_blob_and_nonces_differ() {
        let keys = keys(&[1]);
        let one = keys.seal(b"fleet", b"id-1", SECRET, TTL);
        let two = keys.seal(b"fleet", b"id-1", SECRET, TTL);
        assert_ne!(one, two);
        assert!(!one.windows(16).any(|w| SECRET.windows(16).any(|s| s == w)));
    }

    #[test]
    fn a_blob_moved_to_another_id_or_namespace_does_not_open() {
        let keys = keys(&[1]);
        let blob = keys.seal(b"fleet", b"id-1", SECRET, TTL);
        assert_eq!(keys.open(b"fleet", b"id-2", &blob), Err(OpenError::Forged));
        assert_eq!(keys.open(b"other", b"id-1", &blob), Err(OpenError::Forged));
        // Lengths are bound too: moving a byte from the namespace to the id changes the associated data.
        assert_eq!(keys.open(b"flee", b"tid-1", &blob), Err(OpenError::Forged));
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let keys = keys(&[1]);
        let blob = keys.seal(b"fleet", b"id-1", SECRET, TTL);
        for at in 0..blob.len() {
            let mut bad = blob.clone();
            bad[at] ^= 0x40;
            assert!(keys.open(b"fleet", b"id-1", &bad).is_err(), "byte {at}");
        }
        assert_eq!(
            keys.open(b"fleet", b"id-1", &blob[..10]),
            Err(OpenError::Malformed)
        );
    }

    #[test]
    fn a_blob_carries_its_expiry_and_a_longer_one_does_not_open() {
        let keys = keys(&[1]);
        let before = SystemTime::now();
        let blob = keys.seal(b"fleet", b"id-1", SECRET, TTL);
        let at = expiry(&blob).expect("an expiry");
        assert!(at >= before + TTL - Duration::from_millis(1));
        assert!(at <= SystemTime::now() + TTL);
        // Someone who can write Redis gives the blob a day more: it no longer opens.
        let mut longer = blob.clone();
        let later = at + Duration::from_secs(86400);
        let ms = later.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        longer[1..9].copy_from_slice(&ms.to_le_bytes());
        assert_eq!(
            keys.open(b"fleet", b"id-1", &longer),
            Err(OpenError::Forged)
        );
        assert_eq!(expiry(&blob[..4]), None);
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = keys(&[1]);
        let rotated = keys(&[2, 1]);
        let blob = old.seal(b"fleet", b"id-1", SECRET, TTL);
        assert_eq!(&rotated.open(b"fleet", b"id-1", &blob).unwrap()[..], SECRET);
        let new_blob = rotated.seal(b"fleet", b"id-1", SECRET, TTL);
        assert_eq!(
            old.open(b"fleet", b"id-1", &new_blob),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn bad_keys_are_named_by_position_never_by_value() {
        assert_eq!(Keys::new::<&[u8]>(&[]).err(), Some(KeyError::NoKeys));
        let short: &[u8] = &[7; 31];
        let error = Keys::new(&[&[1u8; 32][..], short]).err().unwrap();
        assert_eq!(error, KeyError::BadLength { index: 1 });
        assert_eq!(
            Keys::new(&[[3u8; 32], [3u8; 32]]).err(),
            Some(KeyError::SameId {
                first: 0,
                second: 1
            })
        );
        let shown = format!("{error} {error:?} {:?}", keys(&[9]));
        assert!(!shown.contains('7') && !shown.contains("9, 9"), "{shown}");
    }
}
