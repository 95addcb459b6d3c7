//! Helpers shared by the store's integration tests.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::sync::Arc;

use session_store::{Config, Key, Store, Value};

/// A stored value that remembers which key and which write produced it, so that a read can be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Val {
    pub key: Vec<u8>,
    pub version: u64,
}

impl Value for Val {
    fn key(&self) -> &[u8] {
        &self.key
    }

    fn weight(&self) -> usize {
        16
    }
}

/// Values are stored as handles; an `Arc` is the plainest.
pub type Stored = Arc<Val>;

pub fn store() -> Store<Stored> {
    Store::new(Config::default())
}

/// A client-style key: a group (host and port) followed by a session id.
pub fn client_key(host: u8, id: u16) -> Key {
    let mut bytes = vec![b'h', host];
    bytes.extend_from_slice(&id.to_be_bytes());
    Key::grouped(bytes, 0..2).expect("group range is inside the key")
}

pub fn server_key(id: u16) -> Key {
    Key::plain(id.to_be_bytes().to_vec())
}

pub fn val(key: &Key, version: u64) -> Stored {
    Arc::new(Val {
        key: key.bytes().to_vec(),
        version,
    })
}

/// Every member of `group`, taken `max` at a time, so that a larger group spans several calls.
pub fn select_all(store: &Store<Stored>, group: &[u8], max: usize) -> Vec<Stored> {
    let mut out = Vec::new();
    if let Some(mut selection) = store.select(group, max, &mut out) {
        while store.select_more(&mut selection, max, &mut out) {}
    }
    out
}
