//! The table of shared fields: a listener's repeated fields are found again, copies go with their last user, and
//! sessions that each bring a new value keep the table, and the work of any one write, bounded.

use std::sync::Arc;

use session_codec::intern::{Interner, MAX_FILED, RECENT_POSITIONS};

#[test]
fn a_copy_is_found_by_hash_and_remembered_at_its_position() {
    let mut table = Interner::default();
    let chain = Arc::new("chain".to_string());
    table.file(7, &chain);
    table.remember(3, &chain);
    let found = table.find(7, |copy| copy == "chain").unwrap();
    assert!(Arc::ptr_eq(&found, &chain));
    assert!(table.find(7, |copy| copy == "other").is_none());
    assert!(table.find(8, |_| true).is_none());
    assert!(Arc::ptr_eq(&table.recent(3).unwrap(), &chain));
    assert!(table.recent(2).is_none());
    // Positions past the session's fields are not remembered.
    table.remember(RECENT_POSITIONS, &chain);
    assert!(table.recent(RECENT_POSITIONS).is_none());
}

#[test]
fn copies_are_held_weakly_and_go_with_their_last_user() {
    let mut table = Interner::default();
    let key = Arc::new(1u32);
    table.file(1, &key);
    table.remember(0, &key);
    drop(key);
    assert!(table.recent(0).is_none());
    assert!(table.find(1, |_| true).is_none());
}

/// 100,000 sessions that each bring a new value, each kept by its session: the table never files more than
/// `MAX_FILED` hashes, no write's sweep visits more, and once the sessions go, a sweep empties it.
#[test]
fn new_values_without_end_keep_the_table_and_each_write_bounded() {
    let mut table = Interner::default();
    let mut alive = Vec::new();
    let mut most = 0;
    for n in 0..100_000u64 {
        let copy = Arc::new(n);
        most = most.max(table.file(n, &copy));
        assert!(table.filed() <= MAX_FILED);
        // Half the sessions stay, half go at once.
        if n % 2 == 0 {
            alive.push(copy);
        }
    }
    assert!(most <= MAX_FILED, "a sweep visited {most}");
    assert!(table.filed() > 0);
    alive.clear();
    for n in 0..=MAX_FILED as u64 {
        table.file(1 << 40 | n, &Arc::new(n));
    }
    assert!(
        table.filed() <= 64,
        "{} hashes of dead copies left",
        table.filed()
    );
}
