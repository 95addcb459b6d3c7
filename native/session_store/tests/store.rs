//! The store's single-threaded contract: upserts, idempotent removal, exact counts, the group index and folds.

mod common;

use common::{client_key, select_all, server_key, store, val, Stored};
use session_store::{Inserted, KeyRef, StoreError};
use std::sync::Arc;

fn fold_all(store: &session_store::Store<Stored>) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut from = Some(0);
    while let Some(start) = from {
        from = store.scan(start, 3, 10, &mut out, |_| true);
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Every member of `group`, sorted, taken three at a time so that a group of more spans several calls.
fn selected(store: &session_store::Store<Stored>, group: &[u8]) -> Vec<Stored> {
    let mut out = select_all(store, group, 3);
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

#[test]
fn insert_then_read_returns_the_value() {
    let store = store();
    let key = server_key(1);
    assert!(matches!(
        store.insert(key.clone(), val(&key, 1)),
        Ok(Inserted::New)
    ));
    assert_eq!(store.read(key.bytes(), |v| v.clone()), Some(val(&key, 1)));
    assert_eq!(store.get(key.bytes()), Some(val(&key, 1)));
}

#[test]
fn an_insert_whose_value_carries_another_key_is_refused() {
    let store = store();
    let (key, other) = (client_key(1, 1), client_key(1, 2));
    assert_eq!(
        store.insert(key.clone(), val(&other, 1)).err(),
        Some(StoreError::KeyMismatch)
    );
    assert_eq!(store.len(), 0);
    assert_eq!(store.get(key.bytes()), None);
    assert_eq!(store.get(other.bytes()), None);
    assert!(selected(&store, b"h\x01").is_empty());
    assert!(fold_all(&store).is_empty());
}

#[test]
fn insert_on_a_present_key_replaces_and_returns_the_old_value() {
    let store = store();
    let key = client_key(1, 1);
    store.insert(key.clone(), val(&key, 1)).expect("live store");
    let Ok(Inserted::Replaced(old)) = store.insert(key.clone(), val(&key, 2)) else {
        panic!("second insert must replace");
    };
    assert_eq!(old.version, 1);
    assert_eq!(store.len(), 1);
    assert_eq!(store.read(key.bytes(), |v| v.version), Some(2));
    assert_eq!(selected(&store, b"h\x01"), vec![val(&key, 2)]);
    assert_eq!(fold_all(&store), vec![val(&key, 2)]);
}

#[test]
fn remove_is_idempotent_and_counts_exactly() {
    let store = store();
    let key = server_key(7);
    store.insert(key.clone(), val(&key, 1)).expect("live store");
    assert_eq!(
        store
            .remove(key.as_ref())
            .expect("live store")
            .map(|v| v.version),
        Some(1)
    );
    assert!(store.remove(key.as_ref()).expect("live store").is_none());
    assert!(store
        .remove(KeyRef::new(b"never there", None).expect("no group"))
        .expect("live store")
        .is_none());
    assert_eq!(store.len(), 0);
    assert!(store.is_empty());
    assert_eq!(store.read(key.bytes(), |_| ()), None);
}

#[test]
fn len_tracks_every_insert_replace_and_remove() {
    let store = store();
    for id in 0..500 {
        let key = server_key(id);
        store.insert(key.clone(), val(&key, 0)).expect("live store");
    }
    for id in 0..250 {
        let key = server_key(id);
        store.insert(key.clone(), val(&key, 1)).expect("live store");
    }
    for id in (0..500u16).step_by(2) {
        store
            .remove(KeyRef::new(&id.to_be_bytes(), None).expect("no group"))
            .expect("live store");
    }
    assert_eq!(store.len(), 250);
    assert_eq!(fold_all(&store).len(), 250);
}

#[test]
fn select_returns_exactly_the_group_members() {
    let store = store();
    for host in 1..=3u8 {
        for id in 0..u16::from(host) * 10 {
            let key = client_key(host, id);
            store.insert(key.clone(), val(&key, 0)).expect("live store");
        }
    }
    let plain = server_key(9);
    store
        .insert(plain.clone(), val(&plain, 0))
        .expect("live store");
    for host in 1..=3u8 {
        let group = selected(&store, &[b'h', host]);
        assert_eq!(group.len(), usize::from(host) * 10);
        assert!(group.iter().all(|v| v.key[..2] == [b'h', host]));
    }
    assert!(selected(&store, b"h\x04").is_empty());
    assert!(selected(&store, b"").is_empty());
}

#[test]
fn a_group_disappears_with_its_last_member() {
    let store = store();
    let key = client_key(5, 1);
    store.insert(key.clone(), val(&key, 0)).expect("live store");
    store.remove(key.as_ref()).expect("live store");
    assert!(selected(&store, b"h\x05").is_empty());
    let again = client_key(5, 2);
    store
        .insert(again.clone(), val(&again, 0))
        .expect("live store");
    assert_eq!(selected(&store, b"h\x05"), vec![val(&again, 0)]);
}

/// A select of 100 members, 7 at a time. Before each further call the member it is to resume at is removed, and
/// its slot taken at once: half the time by the same key inserted again (which heads the chain), half the time
/// by a key of another group; and a new member joins. Every member present throughout comes out exactly once,
/// nothing else twice, and nothing of another group.
#[test]
fn a_select_over_several_calls_survives_losing_its_place() {
    let store = store();
    let key = |id: u16| client_key(1, id);
    for id in 0..100 {
        store.insert(key(id), val(&key(id), 0)).expect("live store");
    }
    store
        .insert(server_key(1), val(&server_key(1), 0))
        .expect("live store");
    let mut out = Vec::new();
    let mut selection = store.select(b"h\x01", 7, &mut out).expect("more than 7");
    assert_eq!(out.len(), 7);
    let (mut removed, mut next_new) = (Vec::new(), 1000u16);
    loop {
        // The chain runs newest first, and nothing older than what came out has: the resume point is the
        // newest of the first 100 members not yet handed out nor removed.
        let given: Vec<u16> = out
            .iter()
            .map(|v| u16::from_be_bytes([v.key[2], v.key[3]]))
            .collect();
        if let Some(resume) = (0..100)
            .rev()
            .find(|id| !given.contains(id) && !removed.contains(id))
        {
            store.remove(key(resume).as_ref()).expect("live store");
            removed.push(resume);
            let taker = if resume % 2 == 0 {
                key(resume)
            } else {
                client_key(2, resume)
            };
            store
                .insert(taker.clone(), val(&taker, 1))
                .expect("live store");
        }
        store
            .insert(key(next_new), val(&key(next_new), 0))
            .expect("live store");
        next_new += 1;
        if !store.select_more(&mut selection, 7, &mut out) {
            break;
        }
    }
    assert!(out.iter().all(|v| v.key[..2] == *b"h\x01"));
    for id in 0..100 {
        let times = out.iter().filter(|v| v.key == key(id).bytes()).count();
        if removed.contains(&id) {
            assert!(times <= 2, "member {id} came out {times} times");
        } else {
            assert_eq!(times, 1, "member {id}, present throughout");
        }
    }
    for id in 1000..next_new {
        assert!(out.iter().filter(|v| v.key == key(id).bytes()).count() <= 1);
    }
    assert!(
        removed.len() > 5,
        "the select lost its place {} times",
        removed.len()
    );
}

#[test]
fn bytes_return_to_zero_when_everything_is_removed() {
    let store = store();
    for id in 0..100 {
        let key = client_key(1, id);
        store.insert(key.clone(), val(&key, 0)).expect("live store");
        store.insert(key.clone(), val(&key, 1)).expect("live store");
    }
    assert_eq!(store.bytes(), 100 * 16);
    for id in 0..100 {
        store
            .remove(client_key(1, id).as_ref())
            .expect("live store");
    }
    assert_eq!(store.bytes(), 0);
}

#[test]
fn retire_empties_the_store_and_refuses_later_writes() {
    let store = store();
    for id in 0..2000 {
        let key = client_key((id % 7) as u8, id);
        store.insert(key.clone(), val(&key, 0)).expect("live store");
    }
    let kept = store.get(client_key(1, 1).bytes()).expect("present");
    let retired = store.retire();
    assert_eq!(retired.entries(), 2000);
    assert_eq!(store.len(), 0);
    assert_eq!(store.bytes(), 0);
    assert!(store.is_terminated());
    assert_eq!(store.read(client_key(1, 1).bytes(), |_| ()), None);
    assert!(selected(&store, b"h\x01").is_empty());
    assert!(fold_all(&store).is_empty());
    let key = server_key(1);
    assert_eq!(
        store.insert(key.clone(), val(&key, 0)).err(),
        Some(StoreError::Terminated)
    );
    assert_eq!(
        store.remove(key.as_ref()).err(),
        Some(StoreError::Terminated)
    );
    drop(retired);
    // A value someone still holds outlives the retirement of its store.
    assert_eq!(kept.version, 0);
    assert_eq!(Arc::strong_count(&kept), 1);
    assert_eq!(store.retire().entries(), 0);
}

#[test]
fn a_scan_stops_before_a_refused_value_and_resumes_at_it() {
    let store = store();
    for id in 0..10 {
        let key = server_key(id);
        store
            .insert(key.clone(), val(&key, u64::from(id)))
            .expect("live store");
    }
    // Refuse the value of version 4: the scan hands out what comes before it and resumes at its slot.
    let mut out = Vec::new();
    let resume = store.scan(0, 100, 100, &mut out, |value| value.version != 4);
    let versions: Vec<u64> = out.iter().map(|value| value.version).collect();
    assert_eq!(versions, [0, 1, 2, 3]);
    let resume = resume.expect("more to come");
    // Refused again at once: no progress, and nothing handed out.
    let mut none = Vec::new();
    assert_eq!(
        store.scan(resume, 100, 100, &mut none, |value| value.version != 4),
        Some(resume)
    );
    assert!(none.is_empty());
    // Taken this time, with the rest.
    let mut rest = Vec::new();
    assert_eq!(store.scan(resume, 100, 100, &mut rest, |_| true), None);
    let versions: Vec<u64> = rest.iter().map(|value| value.version).collect();
    assert_eq!(versions, [4, 5, 6, 7, 8, 9]);
}

#[test]
fn a_value_present_for_a_whole_fold_is_seen_exactly_once_despite_writes() {
    let store = store();
    for id in 0..3000 {
        let key = server_key(id);
        store.insert(key.clone(), val(&key, 0)).expect("live store");
    }
    let mut out = Vec::new();
    let mut from = Some(0);
    let mut churn = 10_000u16;
    while let Some(start) = from {
        from = store.scan(start, 50, 100, &mut out, |_| true);
        // Delete and re-create keys outside the stable set, and replace stable ones, while walking.
        for _ in 0..5 {
            let key = server_key(churn);
            store.insert(key.clone(), val(&key, 0)).expect("live store");
            if churn >= 10_002 {
                store
                    .remove(server_key(churn - 2).as_ref())
                    .expect("live store");
            }
            churn += 1;
        }
        let stable = server_key(start as u16 % 1000);
        store
            .insert(stable.clone(), val(&stable, 9))
            .expect("live store");
    }
    let limit = 3000u16.to_be_bytes().to_vec();
    let mut stable: Vec<Vec<u8>> = out
        .iter()
        .map(|v| v.key.clone())
        .filter(|k| *k < limit)
        .collect();
    let total = stable.len();
    stable.sort();
    stable.dedup();
    assert_eq!(total, stable.len(), "a stable entry was visited twice");
    assert_eq!(stable.len(), 3000, "a stable entry was missed");
}

#[test]
fn counters_record_every_kind_of_operation() {
    let store = store();
    let key = client_key(1, 1);
    store.insert(key.clone(), val(&key, 1)).expect("live store");
    store.insert(key.clone(), val(&key, 2)).expect("live store");
    assert!(store.read(key.bytes(), |_| ()).is_some());
    assert!(store.read(b"absent", |_| ()).is_none());
    store.count_miss();
    assert_eq!(selected(&store, b"h\x01").len(), 1);
    assert!(selected(&store, b"h\x09").is_empty());
    store.remove(key.as_ref()).expect("live store");
    store.remove(key.as_ref()).expect("live store");
    let counts = store.counts();
    assert_eq!(
        (
            counts.inserts,
            counts.replaces,
            counts.lookup_hits,
            counts.lookup_misses
        ),
        (1, 1, 1, 2)
    );
    assert_eq!(
        (counts.select_hits, counts.select_misses, counts.deletes),
        (1, 1, 1)
    );
}
