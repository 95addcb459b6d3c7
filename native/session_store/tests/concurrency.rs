//! One writer and several readers at once: every read sees a value written for that key, counts stay exact,
//! and the final contents match what the writer did.

mod common;

use common::{client_key, store, val};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

#[test]
fn readers_never_see_a_value_of_another_key_while_one_writer_churns() {
    let store = Arc::new(store());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|reader| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
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
                    out.clear();
                    store.select(&[b'h', (reads % 8) as u8], &mut out);
                    assert!(out.iter().all(|v| v.key[..2] == [b'h', (reads % 8) as u8]));
                    out.clear();
                    let mut from = Some(0);
                    while let Some(start) = from {
                        from = store.scan(start, 16, 64, &mut out);
                    }
                    assert!(out.len() <= 256);
                }
                reads
            })
        })
        .collect();

    let mut model = HashMap::new();
    for round in 0..20_000u64 {
        let id = (round * 7919 % 256) as u16;
        let key = client_key((id % 8) as u8, id);
        if round % 3 == 0 {
            store.remove(key.bytes()).expect("live store");
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
