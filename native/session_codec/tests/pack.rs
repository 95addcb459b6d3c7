//! The session packer and unpacker, without a VM: every term comes back exactly, a packing never spends more
//! than its budget and goes on from where it stopped without doing anything twice, and the representation keeps
//! its density tricks.

mod common;

use common::*;
use proptest::prelude::*;
use session_codec::pack::{
    measure, Stop, PART_UNITS, SCHEDULER_BUDGET, SHARE_MIN_BYTES, TRIAL_MAX_UNITS,
};

fn session(fields: Vec<Value>) -> Value {
    let mut all = vec![Value::Atom(7)];
    all.extend(fields);
    Value::Tuple(all)
}

fn id(n: u8) -> Value {
    Value::Bin(vec![n; 32])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any term, in any position of a session, under either key shape, comes back exactly: alone, as a
    /// lookup gives it, and with its key, as a fold does.
    #[test]
    fn arbitrary_terms_round_trip_exactly(key in any_key(), fields in proptest::collection::vec(any_value(4), 0..8)) {
        let session = session(fields);
        let (packed, _) = pack(&mut Parts::default(), &key, &session, usize::MAX).unwrap();
        prop_assert_eq!(unpack_entry(&packed, false), Some(session.clone()));
        prop_assert_eq!(unpack_entry(&packed, true), Some(Value::Tuple(vec![key, session])));
    }

    /// A session that is not a tuple round-trips too: the store keeps any term.
    #[test]
    fn a_session_of_any_shape_round_trips(key in any_key(), session in any_value(5)) {
        let (packed, _) = pack(&mut Parts::default(), &key, &session, usize::MAX).unwrap();
        prop_assert_eq!(unpack_entry(&packed, true), Some(Value::Tuple(vec![key, session])));
    }

    /// With any budget, a packing spends at most that budget, stops exactly when the whole costs more, and goes
    /// on from where it stopped (its items carried as plain parts, as between two schedulers) to the very bytes
    /// and parts of a packing done at once.
    #[test]
    fn a_packing_stays_within_its_budget_and_resumes_to_the_same_entry(
        key in any_key(),
        fields in proptest::collection::vec(any_value(4), 0..8),
        fraction in 0.0f64..1.2,
    ) {
        let session = session(fields);
        let (whole, _) = pack(&mut Parts::default(), &key, &session, usize::MAX).unwrap();
        let total = whole.packer.spent();
        let budget = (total as f64 * fraction) as usize;
        let (resumed, stopped) = pack(&mut Parts::default(), &key, &session, budget).unwrap();
        match stopped {
            Some(first) => {
                prop_assert!(first <= budget, "spent {} of {}", first, budget);
                // A fun is measured, whole, only without a budget.
                let has_fun = format!("{:?}", session).contains("Fun");
                prop_assert!(total > budget || has_fun);
            }
            None => prop_assert!(total <= budget),
        }
        prop_assert_eq!(&resumed.packer.code, &whole.packer.code);
        prop_assert_eq!(&resumed.packer.secrets, &whole.packer.secrets);
        prop_assert_eq!(&resumed.packer.blobs, &whole.packer.blobs);
        let values = |p: &Packed| p.packer.parts.iter().map(|part| part.0.clone()).collect::<Vec<_>>();
        prop_assert_eq!(values(&resumed), values(&whole));
        prop_assert_eq!(resumed.packer.cost(), whole.packer.cost());
        // Nothing done twice but one field's inline trial.
        prop_assert!(resumed.packer.spent() <= total + TRIAL_MAX_UNITS);
    }

    /// Whatever a session holds, a copy costs at most what the entry says, and an entry within the budget copies
    /// within it: `cost` bounds the work of the unpacker, which reads each code byte once.
    #[test]
    fn the_cost_counts_every_byte_and_part_a_copy_makes(key in any_key(), fields in proptest::collection::vec(any_value(3), 0..8)) {
        let session = session(fields);
        let (packed, _) = pack(&mut Parts::default(), &key, &session, usize::MAX).unwrap();
        let p = &packed.packer;
        prop_assert!(p.cost() >= p.parts.len() * PART_UNITS);
        prop_assert!(p.cost() >= p.code.len() + p.blobs.len() / 16);
        prop_assert!(p.spent() >= p.cost() - p.parts.iter().map(|part| part.1 + PART_UNITS).sum::<usize>());
    }
}

/// A packing stopped just after a field's inline trial (here by a fun, measured only without a budget) does the
/// trial again when it goes on: a field of nested lists, each a failed string read, is the costliest trial there is
/// per byte, and still costs no more than `TRIAL_MAX_UNITS` twice.
#[test]
fn a_stopped_packing_repeats_at_most_one_field_trial() {
    let nested = (0..30).fold(Value::Fun(1), |inner, _| {
        Value::List(vec![Value::Int(0), inner], None)
    });
    let session = session(vec![nested]);
    let (whole, _) = pack(&mut Parts::default(), &id(1), &session, usize::MAX).unwrap();
    let total = whole.packer.spent();
    let (resumed, stopped) = pack(&mut Parts::default(), &id(1), &session, total).unwrap();
    let first = stopped.expect("a fun stops a packing with a budget");
    let again = resumed.packer.spent() - total;
    assert!(
        first > again && again > SHARE_MIN_BYTES * 2,
        "first {first}, again {again}"
    );
    assert!(again <= TRIAL_MAX_UNITS, "again {again}");
}

#[test]
fn a_session_holding_a_store_of_ours_anywhere_is_refused() {
    let inside = [
        Value::Ours,
        Value::Map(vec![(Value::Atom(1), Value::Tuple(vec![Value::Ours]))]),
        Value::List(vec![Value::Big(vec![1; 10]), Value::Ours], None),
    ];
    for (n, held) in inside.into_iter().enumerate() {
        let session = session(vec![Value::Tuple(vec![held.clone()]), held]);
        let result = pack(&mut Parts::default(), &id(1), &session, usize::MAX);
        assert!(matches!(result, Err(Stop::HoldsStore)), "case {n}");
    }
}

/// A listener's sessions carry the same chain and key: the second and later sessions find them by one comparison
/// with the copy last shared at their position, and the store keeps one copy of each.
#[test]
fn large_fields_are_shared_and_found_again_without_hashing() {
    let chain = Value::List(
        vec![Value::Bin(vec![1; 900]), Value::Bin(vec![2; 700])],
        None,
    );
    let key = Value::Tuple(vec![
        Value::Atom(3),
        Value::Big(vec![9; 260]),
        Value::Big(vec![8; 130]),
    ]);
    let mut parts = Parts::default();
    let mut entries = Vec::new();
    for n in 0..50u8 {
        let session = session(vec![
            id(n),
            Value::Tuple(vec![Value::Int(-(1 << 59) + 77), Value::Int(n.into())]),
            chain.clone(),
            key.clone(),
        ]);
        let (packed, _) = pack(&mut parts, &id(n), &session, SCHEDULER_BUDGET).unwrap();
        assert_eq!(unpack_entry(&packed, false), Some(session));
        entries.push(packed);
    }
    // Two shared fields, made once each and looked up by hash only for the first session.
    assert_eq!((parts.made, parts.shared, parts.held), (2, 2, 0));
    for entry in &entries {
        assert!(std::sync::Arc::ptr_eq(
            &entry.packer.parts[0],
            &entries[0].packer.parts[0]
        ));
    }
    // The small compound field (an internal id) stays inline.
    assert_eq!(entries[0].packer.parts.len(), 2);
}

/// A field with a part inside is shared whole rather than holding the part alone, and a field of fewer than
/// `SHARE_MIN_BYTES` packed bytes stays inline.
#[test]
fn a_field_is_shared_whole_if_large_or_holding_a_part() {
    let small = Value::Tuple(vec![Value::Atom(1), Value::Int(5)]);
    let holding = Value::Tuple(vec![Value::Atom(1), Value::Pid(5)]);
    let large = Value::Tuple(vec![Value::Bin(vec![0; SHARE_MIN_BYTES])]);
    for (field, parts) in [(small, 0), (holding, 1), (large, 1)] {
        let mut keeper = Parts::default();
        let (packed, _) = pack(
            &mut keeper,
            &id(1),
            &session(vec![field.clone()]),
            usize::MAX,
        )
        .unwrap();
        assert_eq!(packed.packer.parts.len(), parts, "{field:?}");
        assert_eq!(keeper.held, 0, "a field's part is never held apart from it");
        assert_eq!(unpack_entry(&packed, false), Some(session(vec![field])));
    }
}

/// A server session names its own id, which is its key: a binary equal to a binary key costs one byte, and any
/// other binary, however close, is kept as itself.
#[test]
fn a_binary_equal_to_a_binary_key_is_one_tag() {
    let mut parts = Parts::default();
    let own = session(vec![id(1), Value::Bin(vec![9; 48])]);
    let other = session(vec![id(2), Value::Bin(vec![9; 48])]);
    let (own_packed, _) = pack(&mut parts, &id(1), &own, usize::MAX).unwrap();
    let (other_packed, _) = pack(&mut parts, &id(1), &other, usize::MAX).unwrap();
    assert_eq!(
        other_packed.packer.secrets.len() - own_packed.packer.secrets.len(),
        32
    );
    assert_eq!(
        unpack_entry(&other_packed, true),
        Some(Value::Tuple(vec![id(1), other]))
    );
    assert_eq!(
        unpack_entry(&own_packed, true),
        Some(Value::Tuple(vec![id(1), own]))
    );
}

/// A session's time stamp and the first element of its internal id are the same monotonic time, just above the
/// smallest small integer: the first costs a few bytes, the second two.
#[test]
fn time_stamps_pack_in_a_few_bytes_and_a_repeat_in_two() {
    let stamp = Value::Int(-(1 << 59) + 3_600_000_000_000);
    let alone = session(vec![stamp.clone()]);
    let twice = session(vec![stamp.clone(), stamp.clone()]);
    let size = |s: &Value| {
        pack(&mut Parts::default(), &id(1), s, usize::MAX)
            .unwrap()
            .0
            .packer
            .code
            .len()
    };
    assert!(size(&alone) <= 1 + 1 + 7 + 1 + 1 + 1, "{}", size(&alone));
    assert_eq!(size(&twice) - size(&alone), 2);
}

/// Binaries of up to 64 bytes, and only they, go to the secret section, which is what an entry wipes.
#[test]
fn small_binaries_and_only_they_are_secrets() {
    let secret = Value::Bin(vec![0xAA; 48]);
    let public = Value::Bin(vec![0xBB; 65]);
    let (packed, _) = pack(
        &mut Parts::default(),
        &id(1),
        &session(vec![secret, public]),
        usize::MAX,
    )
    .unwrap();
    assert_eq!(packed.packer.secrets, vec![0xAA; 48]);
    assert_eq!(packed.packer.blobs, vec![0xBB; 65]);
    assert!(!packed
        .packer
        .code
        .windows(48)
        .any(|w| w == [0xAA; 48] || w == [0xBB; 48]));
}

/// A map over the limit is refused from its size, before any entry is visited; a fun is measured only without a
/// limit. Bounded work on a normal scheduler, whatever the term.
#[test]
fn a_measure_refuses_before_walking_what_it_cannot_afford() {
    let big_map = Value::Map(
        (0..100_000)
            .map(|n| (Value::Int(n), Value::Int(n)))
            .collect(),
    );
    assert_eq!(
        measure(Seen::Whole(&big_map), SCHEDULER_BUDGET, |_| false),
        Err(Stop::OverBudget)
    );
    assert!(measure(Seen::Whole(&big_map), usize::MAX, |_| false).is_ok());
    assert_eq!(
        measure(Seen::Whole(&Value::Fun(1)), SCHEDULER_BUDGET, |_| false),
        Err(Stop::OverBudget)
    );
    assert!(
        measure(Seen::Whole(&Value::Fun(1)), usize::MAX, |_| false)
            .unwrap()
            .may_hold_float
    );
    assert!(
        measure(
            Seen::Whole(&Value::Tuple(vec![Value::Float(0.0)])),
            10,
            |_| false
        )
        .unwrap()
        .may_hold_float
    );
    let long = Value::List((0..10_000).map(Value::Int).collect(), None);
    assert_eq!(
        measure(Seen::Whole(&long), 100, |_| false),
        Err(Stop::OverBudget)
    );
}

/// Huge sessions of every shape the NIF's suites use stop within the budget on their first call, and round-trip.
#[test]
fn huge_sessions_stop_within_the_budget_and_come_back_whole() {
    // Values this deep drop and compare recursively: a thread with room for that.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(huge_sessions)
        .unwrap()
        .join()
        .unwrap();
}

fn huge_sessions() {
    let huge = [
        Value::List((0..200_000).map(Value::Int).collect(), None),
        Value::Tuple(
            (0..500)
                .map(|_| Value::List((0..1000).map(Value::Int).collect(), None))
                .collect(),
        ),
        (0..3_000).fold(Value::Atom(0), |acc, n| {
            Value::Tuple(vec![
                Value::Int(n),
                acc,
                Value::List(vec![Value::Int(n)], None),
            ])
        }),
        session(vec![Value::List(
            (0..20_000)
                .map(|n| Value::Big(vec![n as u8; 520]))
                .collect(),
            None,
        )]),
        // Each pid an element of the session, so a part of its own.
        Value::List((0..2000).map(Value::Pid).collect(), None),
    ];
    for (n, session) in huge.into_iter().enumerate() {
        let (packed, stopped) =
            pack(&mut Parts::default(), &id(1), &session, SCHEDULER_BUDGET).unwrap();
        let first = stopped.unwrap_or_else(|| panic!("case {n} fit the budget"));
        assert!(first <= SCHEDULER_BUDGET, "case {n}: {first}");
        assert!(
            packed.packer.cost() > SCHEDULER_BUDGET,
            "case {n}: a copy must go dirty too"
        );
        assert_eq!(unpack_entry(&packed, false), Some(session), "case {n}");
    }
}
