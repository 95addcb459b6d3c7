//! One writer and several readers at once: every read sees a value written for that key, counts stay exact,
//! and the final contents match what the writer did. The writer goes on until every reader has made at least
//! one whole pass while it writes, so the overlap does not depend on how the threads happen to be scheduled
//! (under valgrind they run one at a time).

mod common;

use common::{client_key, select_all, store, val};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

#[test]
fn readers_never_see_a_value_of_another_key_while_one_writer_churns() {
    let store = Arc::new(store());
    let stop = Arc::new(AtomicBool::new(false));
    let passes: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let readers: Vec<_> = (0..3)
        .map(|reader| {
            let (store, stop, passes) =
                (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&passes));
            thread::spawn(move || {
                let mut reads = 0u64;
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for id in 0..256u16 {
                        let key = client_key((id % 8) as u8, id);
                        if let Some(seen) = store.read(key.bytes(), |v| v.key.clone()) {
                            assert_eq!(
                                seen,
                                key.bytes(),
                                "reader {reader} got another key's value"
                            );
                        }
                        reads += 1;
                    }
                    let group = [b'h', (reads % 8) as u8];
                    assert!(select_all(&store, &group, 4)
                        .iter()
                        .all(|v| v.key[..2] == group));
                    out.clear();
                    let mut from = Some(0);
                    while let Some(start) = from {
                        from = store.scan(start, 16, 64, &mut out, |_| true);
                    }
                    assert!(out.len() <= 256);
                    passes[reader].fetch_add(1, Ordering::Relaxed);
                }
                reads
            })
        })
        .collect();

    let mut model = HashMap::new();
    // At least 20,000 writes, and more until every reader has passed once (or has died, which join reports).
    let readers_behind = || {
        passes
            .iter()
            .any(|count| count.load(Ordering::Relaxed) == 0)
            && !readers.iter().any(|reader| reader.is_finished())
    };
    for round in 0u64.. {
        if round >= 20_000 && !readers_behind() {
            break;
        }
        let id = (round * 7919 % 256) as u16;
        let key = client_key((id % 8) as u8, id);
        if round % 3 == 0 {
            store.remove(key.as_ref()).expect("live store");
            model.remove(key.bytes());
        } else {
            store
                .insert(key.clone(), val(&key, round))
                .expect("live store");
            model.insert(key.bytes().to_vec(), round);
        }
        assert_eq!(store.len(), model.len());
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("reader panicked") > 0);
    }
    for (key, version) in &model {
        assert_eq!(store.read(key, |v| v.version), Some(*version));
    }
}
