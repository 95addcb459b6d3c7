//! Property test: any sequence of operations leaves the store equal to a plain HashMap model, and a select that
//! spans calls, with writes between them, hands out what it promises.

mod common;

use common::{client_key, server_key, store, val, Stored};
use proptest::prelude::*;
use session_store::{Inserted, Key, Selection};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone)]
enum Op {
    Insert(Key, u64),
    Remove(Key),
    Read(Key),
    Select(u8),
    /// Starts a select of a host's group two members at a time, left open across the operations that follow.
    SelectOpen(u8),
    /// Takes the next two members of the open select; checks it when it is complete.
    SelectMore,
    Fold,
}

/// A select left open, and what happened to its group since it started.
struct Open {
    host: u8,
    selection: Selection<Stored>,
    out: Vec<Stored>,
    /// Keys of the group when it started.
    at_start: HashSet<Vec<u8>>,
    /// Keys of the group removed since, and every value any key of the group has held since.
    removed: HashSet<Vec<u8>>,
    held: HashSet<(Vec<u8>, u64)>,
}

fn in_group(key: &[u8], host: u8) -> bool {
    key.len() == 4 && key[..2] == [b'h', host]
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
        1 => (0u8..4).prop_map(Op::SelectOpen),
        3 => Just(Op::SelectMore),
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
        let mut open: Option<Open> = None;
        for op in ops {
            if let (Some(open), Op::Insert(key, version)) = (&mut open, &op) {
                open.held.insert((key.bytes().to_vec(), *version));
            }
            if let (Some(open), Op::Remove(key)) = (&mut open, &op) {
                if model.contains_key(key.bytes()) {
                    open.removed.insert(key.bytes().to_vec());
                }
            }
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
                    let removed = store.remove(key.as_ref()).expect("live store");
                    prop_assert_eq!(removed, model.remove(key.bytes()));
                }
                Op::Read(key) => {
                    prop_assert_eq!(store.read(key.bytes(), Stored::clone), model.get(key.bytes()).cloned());
                }
                Op::Select(host) => {
                    let mut out = Vec::new();
                    prop_assert!(store.select(&[b'h', host], usize::MAX, &mut out).is_none());
                    let got = sorted(out);
                    let want = sorted(model.values().filter(|v| v.key.len() == 4 && v.key[..2] == [b'h', host]).cloned().collect());
                    prop_assert_eq!(got, want);
                }
                Op::SelectOpen(host) => {
                    let mut out = Vec::new();
                    let group: Vec<&Stored> = model.values().filter(|v| in_group(&v.key, host)).collect();
                    match store.select(&[b'h', host], 2, &mut out) {
                        None => prop_assert_eq!(sorted(out), sorted(group.into_iter().cloned().collect())),
                        Some(selection) => {
                            prop_assert!(group.len() > 2);
                            open = Some(Open {
                                host,
                                selection,
                                out,
                                at_start: group.iter().map(|v| v.key.clone()).collect(),
                                removed: HashSet::new(),
                                held: group.iter().map(|v| (v.key.clone(), v.version)).collect(),
                            });
                        }
                    }
                }
                Op::SelectMore => {
                    let Some(mut current) = open.take() else { continue };
                    if store.select_more(&mut current.selection, 2, &mut current.out) {
                        open = Some(current);
                        continue;
                    }
                    let mut times: HashMap<&[u8], usize> = HashMap::new();
                    for value in &current.out {
                        prop_assert!(in_group(&value.key, current.host));
                        prop_assert!(current.held.contains(&(value.key.clone(), value.version)));
                        *times.entry(&value.key).or_default() += 1;
                    }
                    for key in &current.at_start {
                        if !current.removed.contains(key) {
                            prop_assert_eq!(times.get(key.as_slice()), Some(&1), "a member present throughout");
                        }
                    }
                    for (key, count) in times {
                        prop_assert!(count == 1 || current.removed.contains(key), "handed out twice");
                    }
                }
                Op::Fold => {
                    let mut out = Vec::new();
                    let mut from = Some(0);
                    while let Some(start) = from {
                        from = store.scan(start, 2, 5, &mut out, |_| true);
                    }
                    let got = sorted(out);
                    prop_assert_eq!(got, sorted(model.values().cloned().collect()));
                }
            }
            prop_assert_eq!(store.len(), model.len());
        }
    }
}
