//! An entry's memory plan: its sections, the wipe of exactly its secrets, and a reference count whose last
//! release is seen once, whatever the threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use session_codec::entry::{block_bytes, entry_bytes, Header, HEADER_BYTES};
use session_codec::pack::SCHEDULER_BUDGET;

proptest! {
    /// The wipe zeroes the secret section, every byte of it, and not one byte of the key or the code.
    #[test]
    fn the_wipe_zeroes_exactly_the_secret_section(key in 0usize..300, secrets in 0usize..300, code in 0usize..300, blobs in 0usize..300) {
        let header = Header::new(key, secrets, code, blobs, 0, 0).unwrap();
        let mut bytes = vec![0xA5u8; key + secrets + code + blobs];
        header.wipe_secrets(&mut bytes);
        for (at, &byte) in bytes.iter().enumerate() {
            let secret = (key..key + secrets).contains(&at);
            prop_assert_eq!(byte == 0, secret, "byte {} of key {} secrets {} code {} blobs {}", at, key, secrets, code, blobs);
        }
        let sections = header.sections(&bytes).unwrap();
        let lengths = (sections.key.len(), sections.secrets.len(), sections.code.len(), sections.blobs.len());
        prop_assert_eq!(lengths, (key, secrets, code, blobs));
        prop_assert_eq!(header.resource(), blobs > 0);
        prop_assert!(header.sections(&bytes[1..]).is_none() || bytes.is_empty());
    }
}

#[test]
fn the_header_is_six_words_and_a_block_is_counted_in_whole_words() {
    assert_eq!(HEADER_BYTES, 24);
    assert_eq!(block_bytes(2, 8, 100), Some(24 + 16 + 100));
    assert_eq!(entry_bytes(140, false, 25), 144 + 16);
    assert_eq!(entry_bytes(140, false, 29), 144 + 24);
    assert_eq!(entry_bytes(140, true, 29), 144 + 94);
    assert_eq!(block_bytes(usize::MAX, 8, 1), None);
}

#[test]
fn parts_too_costly_to_free_on_a_scheduler_make_the_entry_heavy() {
    let light = Header::new(1, 2, 3, 0, 4, SCHEDULER_BUDGET).unwrap();
    let heavy = Header::new(1, 2, 3, 0, 4, SCHEDULER_BUDGET + 1).unwrap();
    assert_eq!((light.parts(), light.heavy()), (4, false));
    assert_eq!((heavy.parts(), heavy.heavy()), (4, true));
    // A byte of code a unit, 16 of secrets or blobs, and the parts' units.
    assert_eq!(
        Header::new(1, 32, 10, 1200, 0, 0).unwrap().cost(700),
        10 + 77 + 700
    );
    assert!(
        Header::new(u32::MAX as usize, 1, 0, 0, 0, 0).is_none(),
        "sections past 4 GiB"
    );
}

/// Many threads retain and release one header at once: exactly one release is the last, and what every thread
/// did before its release is visible to the one that made the last (Release, then Acquire, as `Arc`). The count
/// of releases is made before each release: counted after it, a thread that had released could still be on its
/// way to counting when the last release read the count (a fresh clone's make test once saw 6 of 7).
#[test]
fn the_last_release_is_seen_exactly_once() {
    for _ in 0..200 {
        let header = Arc::new(Header::new(1, 1, 1, 0, 0, 0).unwrap());
        let lasts = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(AtomicUsize::new(0));
        for _ in 0..7 {
            header.retain();
        }
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (header, lasts, released) = (header.clone(), lasts.clone(), released.clone());
                std::thread::spawn(move || {
                    released.fetch_add(1, Ordering::Relaxed);
                    if header.release() {
                        // Every thread's work before its release happened before this one's.
                        assert_eq!(released.load(Ordering::Relaxed), 8);
                        lasts.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(lasts.load(Ordering::Relaxed), 1);
    }
}
