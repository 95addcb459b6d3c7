//! What `info/1` reports of a store, as a tree of named values. The glue makes each name an atom and each `Map`
//! an Erlang map (`native/nif_session_cache/src/atoms.rs`), and adds what only the VM knows: the store's role and
//! owner. The names are those README's Observability table documents.

use session_share::remote::Field;
use session_store::{Scheduling, Store, Value};

/// A value of `info/1`'s map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    Number(u64),
    Flag(bool),
    /// An atom.
    Name(&'static str),
    /// A binary, or `undefined`.
    Text(Option<String>),
    Map(Vec<(&'static str, Info)>),
}

/// Named numbers as a map.
fn numbers<const N: usize>(pairs: [(&'static str, u64); N]) -> Vec<(&'static str, Info)> {
    pairs.map(|(name, n)| (name, Info::Number(n))).into()
}

/// The store `id`'s contents, work and scheduler accounting. `held_bytes`: what its entries hold as terms, outside
/// the store's blocks; `budget`: the units of work a call may spend on a normal scheduler. O(shards).
pub fn store<V: Value + Send + Sync + 'static>(
    id: u64,
    entries: &Store<V>,
    held_bytes: usize,
    scheduling: &Scheduling,
    budget: usize,
) -> Vec<(&'static str, Info)> {
    let counts = entries.counts();
    let (largest_call, dirty_calls, freed_later) = scheduling.counts();
    let mut info = numbers([
        ("id", id),
        ("entries", entries.len() as u64),
        ("bytes", (entries.bytes() + held_bytes) as u64),
        ("held_bytes", held_bytes as u64),
        ("index_bytes", entries.index_bytes() as u64),
        ("lookup_hits", counts.lookup_hits),
        ("lookup_misses", counts.lookup_misses),
        ("inserts", counts.inserts),
        ("replaces", counts.replaces),
        ("deletes", counts.deletes),
        ("select_hits", counts.select_hits),
        ("select_misses", counts.select_misses),
    ]);
    let scheduler = numbers([
        ("budget", budget as u64),
        ("largest_call", largest_call as u64),
        ("dirty_calls", dirty_calls),
        ("freed_later", freed_later),
    ]);
    info.push(("terminated", Info::Flag(entries.is_terminated())));
    info.push(("scheduler", Info::Map(scheduler)));
    info
}

/// A shared level's `shared` map, from the fields it lists (`session_share::remote::Remote::info`): a binary
/// or `undefined` for text, a map for counts by name.
pub fn shared(fields: Vec<(&'static str, Field)>) -> Info {
    let value = |field| match field {
        Field::Name(name) => Info::Name(name),
        Field::Flag(on) => Info::Flag(on),
        Field::Text(text) => Info::Text(text),
        Field::Count(n) => Info::Number(n),
        Field::Counts(counts) => Info::Map(
            counts
                .into_iter()
                .map(|(k, n)| (k, Info::Number(n)))
                .collect(),
        ),
    };
    Info::Map(
        fields
            .into_iter()
            .map(|(name, field)| (name, value(field)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_store::{Config, Key};

    #[derive(Clone)]
    struct Val(Vec<u8>);

    impl Value for Val {
        fn key(&self) -> &[u8] {
            &self.0
        }

        fn weight(&self) -> usize {
            100
        }
    }

    fn get<'a>(info: &'a [(&'static str, Info)], name: &str) -> &'a Info {
        let found = info.iter().find(|(key, _)| *key == name);
        &found.unwrap_or_else(|| panic!("no {name}")).1
    }

    #[test]
    fn a_store_reports_its_entries_bytes_counts_and_scheduling() {
        let store = Store::new(Config::default());
        for id in [b"a", b"b"] {
            let key = Key::plain(id.to_vec());
            store.insert(key, Val(id.to_vec())).expect("inserted");
        }
        store.read(b"a", |_| ());
        store.count_miss();
        let scheduling = Scheduling::default();
        scheduling.spent(700);
        let info = store_info(&store, &scheduling);
        let names: Vec<&str> = info.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "id",
                "entries",
                "bytes",
                "held_bytes",
                "index_bytes",
                "lookup_hits",
                "lookup_misses",
                "inserts",
                "replaces",
                "deletes",
                "select_hits",
                "select_misses",
                "terminated",
                "scheduler"
            ]
        );
        let expected = [
            ("id", 7),
            ("entries", 2),
            ("bytes", 250),
            ("held_bytes", 50),
        ];
        for (name, n) in expected
            .into_iter()
            .chain([("inserts", 2), ("lookup_hits", 1)])
        {
            assert_eq!(get(&info, name), &Info::Number(n), "{name}");
        }
        assert_eq!(get(&info, "lookup_misses"), &Info::Number(1));
        assert_eq!(get(&info, "terminated"), &Info::Flag(false));
        let scheduler = numbers([
            ("budget", 2000),
            ("largest_call", 700),
            ("dirty_calls", 0),
            ("freed_later", 0),
        ]);
        assert_eq!(get(&info, "scheduler"), &Info::Map(scheduler));
        drop(store.retire());
        assert_eq!(
            get(&store_info(&store, &scheduling), "terminated"),
            &Info::Flag(true)
        );
    }

    fn store_info(store: &Store<Val>, scheduling: &Scheduling) -> Vec<(&'static str, Info)> {
        super::store(7, store, 50, scheduling, 2000)
    }

    #[test]
    fn a_shared_levels_fields_become_a_map_with_counts_as_maps_and_text_or_undefined() {
        let fields = vec![
            ("topology", Field::Name("sentinel")),
            ("tls", Field::Flag(true)),
            ("master", Field::Text(Some("10.0.0.7:6379".into()))),
            ("replica", Field::Text(None)),
            ("gets", Field::Count(9)),
            ("misses", Field::Counts(vec![("absent", 2), ("busy", 1)])),
        ];
        let Info::Map(info) = shared(fields) else {
            panic!("not a map")
        };
        let names: Vec<&str> = info.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            ["topology", "tls", "master", "replica", "gets", "misses"]
        );
        assert_eq!(get(&info, "topology"), &Info::Name("sentinel"));
        assert_eq!(get(&info, "tls"), &Info::Flag(true));
        assert_eq!(
            get(&info, "master"),
            &Info::Text(Some("10.0.0.7:6379".into()))
        );
        assert_eq!(get(&info, "replica"), &Info::Text(None));
        assert_eq!(get(&info, "gets"), &Info::Number(9));
        assert_eq!(
            get(&info, "misses"),
            &Info::Map(numbers([("absent", 2), ("busy", 1)]))
        );
    }
}
