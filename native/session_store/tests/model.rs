//! Property test: any sequence of operations leaves the store equal to a plain HashMap model.

mod common;

use common::{client_key, server_key, store, val, Stored};
use proptest::prelude::*;
use session_store::{Inserted, Key};
use std::collections::HashMap;

#[derive(Debug, Clone)]
enum Op {
    Insert(Key, u64),
    Remove(Key),
    Read(Key),
    Select(u8),
    Fold,
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        (0u8..4, 0u16..12).prop_map(|(host, id)| client_key(host, id)),
        (0u16..12).prop_map(server_key),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), any::<u64>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => key().prop_map(Op::Remove),
        2 => key().prop_map(Op::Read),
        1 => (0u8..5).prop_map(Op::Select),
        1 => Just(Op::Fold),
    ]
}

fn sorted(mut values: Vec<Stored>) -> Vec<Stored> {
    values.sort_by(|a, b| (&a.key, a.version).cmp(&(&b.key, b.version)));
    values
}

proptest! {
    // 256 cases by default; PROPTEST_CASES overrides it (make valgrind uses fewer).
    #[test]
    fn the_store_behaves_like_a_map(ops in proptest::collection::vec(op(), 1..200)) {
        let store = store();
        let mut model: HashMap<Vec<u8>, Stored> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(key, version) => {
                    let outcome = store.insert(key.clone(), val(&key, version)).expect("live store");
                    let previous = model.insert(key.bytes().to_vec(), val(&key, version));
                    match (outcome, previous) {
                        (Inserted::New, None) => {}
                        (Inserted::Replaced(old), Some(expected)) => prop_assert_eq!(old, expected),
                        _ => prop_assert!(false, "insert outcome disagrees with the model"),
                    }
                }
                Op::Remove(key) => {
                    let removed = store.remove(key.bytes()).expect("live store");
                    prop_assert_eq!(removed, model.remove(key.bytes()));
                }
                Op::Read(key) => {
                    prop_assert_eq!(store.read(key.bytes(), Stored::clone), model.get(key.bytes()).cloned());
                }
                Op::Select(host) => {
                    let mut out = Vec::new();
                    store.select(&[b'h', host], &mut out);
                    let got = sorted(out);
                    let want = sorted(model.values().filter(|v| v.key.len() == 4 && v.key[..2] == [b'h', host]).cloned().collect());
                    prop_assert_eq!(got, want);
                }
                Op::Fold => {
                    let mut out = Vec::new();
                    let mut from = Some(0);
                    while let Some(start) = from {
                        from = store.scan(start, 2, 5, &mut out);
                    }
                    let got = sorted(out);
                    prop_assert_eq!(got, sorted(model.values().cloned().collect()));
                }
            }
            prop_assert_eq!(store.len(), model.len());
        }
    }
}
