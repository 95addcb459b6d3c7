//! The concurrent store: entries by key (`table.rs`), an index by group, stable slots for folds, and exact
//! counts.
//!
//! Concurrency model: any number of threads read; writes are serialised by an internal mutex (the NIF layer
//! further allows only one process to write). Readers take exactly one lock each (an entry shard, a group shard
//! or the slot index), and never call back into the store while holding it, so no lock order exists to violate.
//! A writer takes the locks one after another and releases each before the next.
//!
//! Values are handles: the store keeps a clone of each in the entry map, the fold slots and the group index, and
//! hands clones out, so a value's clone must be cheap and share what it points to (an `Arc`, or the NIF layer's
//! counted reference to a packed entry).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use dashmap::DashMap;

use crate::key::{Key, KeyRef};
use crate::slab::Slab;
use crate::small::SmallBytes;
use crate::stats::{Counter, Counts, Stats};
use crate::table::{Filed, Table};

/// What the store asks of the values it holds. Values are handles (see the module documentation).
pub trait Value: Clone {
    /// The key the value is stored under, as the bytes of [`Key`]: the store keeps no copy of its own, and finds
    /// an entry by comparing with this.
    fn key(&self) -> &[u8];

    /// How much the entry weighs, in bytes of memory it owns, its key included. Feeds [`Store::bytes`].
    fn weight(&self) -> usize;

    /// Called when the store has taken this value out of its map and is about to drop it, before the store's
    /// own bookkeeping for the removal: a value whose drop touches memory of its own (a wipe, a free) may start
    /// loading that memory here, so that the loads overlap that bookkeeping. A hint; the default does nothing.
    fn prefetch_for_drop(&self) {}

    /// Called when a lookup is about to compare `key` with this value's: a value whose reads span cold memory
    /// may start loading it here, so that those loads overlap the comparison's. A hint; the default does
    /// nothing.
    fn prefetch_for_read(&self) {}
}

impl<T: Value> Value for Arc<T> {
    fn key(&self) -> &[u8] {
        (**self).key()
    }

    fn weight(&self) -> usize {
        (**self).weight()
    }

    fn prefetch_for_drop(&self) {
        (**self).prefetch_for_drop();
    }

    fn prefetch_for_read(&self) {
        (**self).prefetch_for_read();
    }
}

/// Tuning of a store. Every field has a default that suits OTP's session caches.
#[derive(Clone, Debug)]
pub struct Config {
    /// Lock shards of the entry map; a power of two. More shards mean less contention between readers and the
    /// writer, and smaller pauses when one shard's table grows (at a million entries, 64 shards keep a resize
    /// near 15k entries). Each shard takes 128 bytes, apart from its table. Default: 64.
    pub shards: usize,
    /// Lock shards of the group index (client stores only); a power of two. Default: 16.
    pub group_shards: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shards: 64,
            group_shards: 16,
        }
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store was terminated")]
    Terminated,
    #[error("the value does not carry the key it was inserted under")]
    KeyMismatch,
}

/// What an insert did.
pub enum Inserted<V> {
    New,
    /// The key was present; this is the value it held.
    Replaced(V),
}

struct Slot<V> {
    /// The hash the entry map filed it under.
    hash: u64,
    value: V,
    slot: usize,
    /// Where the key's group name lies in the key's bytes.
    group: Option<Range<usize>>,
}

impl<V: Value> Filed for Slot<V> {
    fn key(&self) -> &[u8] {
        self.value.key()
    }

    fn hash(&self) -> u64 {
        self.hash
    }

    fn prefetch_for_read(&self) {
        self.value.prefetch_for_read();
    }
}

/// A group's members, by fold slot. A slot number is the cheapest name a member has: hashing it reads no key
/// bytes, and rehashing the table touches none of them (a group loses and gains members all the time).
type Group<V> = HashMap<usize, V, BuildHasherDefault<SlotHasher>>;

/// Hashes a fold slot number by multiplication (Fibonacci hashing), spreading consecutive numbers over the
/// high bits the table's probe uses. Slot numbers are chosen by the store, never by a peer, so a keyless hash
/// cannot be flooded.
#[derive(Default)]
struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_usize` is called (slot numbers are `usize`); bytes are folded in the same way.
        for &byte in bytes {
            self.write_usize(usize::from(byte));
        }
    }

    fn write_usize(&mut self, value: usize) {
        self.0 = (self.0.rotate_left(8) ^ value as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A store of `V` handles (see the module documentation) under byte-string keys.
pub struct Store<V> {
    entries: Table<Slot<V>>,
    groups: DashMap<SmallBytes, Group<V>>,
    slab: RwLock<Slab<V>>,
    writer: Mutex<()>,
    len: AtomicUsize,
    bytes: AtomicUsize,
    terminated: AtomicBool,
    stats: Stats,
}

/// Everything a store held when it was terminated, detached so that the caller chooses where to free it
/// (freeing a million entries takes far longer than a scheduler may be held).
pub struct Retired {
    #[allow(dead_code)] // held only so that dropping `Retired` frees it
    parts: Vec<Box<dyn Send>>,
    entries: usize,
}

impl Retired {
    /// How many entries dropping this frees.
    pub fn entries(&self) -> usize {
        self.entries
    }
}

impl std::fmt::Debug for Retired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retired")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl<V: Value + Send + Sync + 'static> Store<V> {
    /// # Panics
    /// If a shard count in `config` is not a power of two (a programming error, caught at construction).
    pub fn new(config: Config) -> Self {
        Store {
            entries: Table::new(config.shards),
            groups: DashMap::with_shard_amount(config.group_shards),
            slab: RwLock::new(Slab::new()),
            writer: Mutex::new(()),
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            terminated: AtomicBool::new(false),
            stats: Stats::default(),
        }
    }

    /// Inserts or replaces. O(1); a replace keeps the entry's fold slot.
    pub fn insert(&self, key: Key, value: V) -> Result<Inserted<V>, StoreError> {
        self.insert_ref(key.as_ref(), value)
    }

    /// [`insert`](Self::insert) with a borrowed key, which `value` must carry ([`Value::key`]); else the store is
    /// left unchanged and [`StoreError::KeyMismatch`] returned.
    pub fn insert_ref(&self, key: KeyRef<'_>, value: V) -> Result<Inserted<V>, StoreError> {
        let (bytes, group_range) = (key.bytes(), key.group_range());
        if value.key() != bytes {
            return Err(StoreError::KeyMismatch);
        }
        let _writer = self.write_guard()?;
        let weight = value.weight();
        let hash = self.entries.hash(bytes);

        let replaced = self.entries.update(hash, bytes, |slot| {
            let old = std::mem::replace(&mut slot.value, value.clone());
            (old, slot.slot, slot.group.clone())
        });
        if let Some((old, index, group)) = replaced {
            old.prefetch_for_drop();
            write(&self.slab).replace(index, value.clone());
            if let Some(range) = group {
                if let Some(mut members) = self.groups.get_mut(&bytes[range]) {
                    if let Some(member) = members.get_mut(&index) {
                        *member = value;
                    }
                }
            }
            self.bytes.fetch_add(weight, Ordering::Relaxed);
            self.bytes.fetch_sub(old.weight(), Ordering::Relaxed);
            self.stats.add(Counter::Replace);
            return Ok(Inserted::Replaced(old));
        }

        let index = write(&self.slab).insert(value.clone());
        if let Some(range) = &group_range {
            self.join_group(&bytes[range.clone()], index, &value);
        }
        self.entries.insert_new(Slot {
            hash,
            value,
            slot: index,
            group: group_range,
        });
        self.len.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(weight, Ordering::Relaxed);
        self.stats.add(Counter::Insert);
        Ok(Inserted::New)
    }

    /// Removes a key; removing a missing key is not an error. O(1).
    pub fn remove(&self, key: &[u8]) -> Result<Option<V>, StoreError> {
        let _writer = self.write_guard()?;
        let Some(slot) = self.entries.remove(key) else {
            return Ok(None);
        };
        slot.value.prefetch_for_drop();
        self.stats.add(Counter::Delete);
        write(&self.slab).remove(slot.slot);
        if let Some(range) = slot.group.clone() {
            let group = &key[range];
            let emptied = match self.groups.get_mut(group) {
                Some(mut members) => {
                    members.remove(&slot.slot);
                    members.is_empty()
                }
                None => false,
            };
            if emptied {
                self.groups
                    .remove_if(group, |_, members| members.is_empty());
            }
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(slot.value.weight(), Ordering::Relaxed);
        Ok(Some(slot.value))
    }

    /// Runs `read` on the value under `key` while its shard is read-locked. `read` must not call the store.
    /// O(1). Prefer it to [`Store::get`] for short reads: it saves two atomic reference-count updates.
    pub fn read<R>(&self, key: &[u8], read: impl FnOnce(&V) -> R) -> Option<R> {
        let found = self.entries.read(key, |slot| read(&slot.value));
        self.stats.add(if found.is_some() {
            Counter::LookupHit
        } else {
            Counter::LookupMiss
        });
        found
    }

    /// The value under `key`, shared. O(1).
    pub fn get(&self, key: &[u8]) -> Option<V> {
        let found = self.entries.read(key, |slot| slot.value.clone());
        self.stats.add(if found.is_some() {
            Counter::LookupHit
        } else {
            Counter::LookupMiss
        });
        found
    }

    /// Appends every value whose key belongs to `group` to `out`. O(matches): one lookup in the group index.
    pub fn select(&self, group: &[u8], out: &mut Vec<V>) {
        match self.groups.get(group) {
            Some(members) => {
                out.extend(members.values().cloned());
                self.stats.add(Counter::SelectHit);
            }
            None => self.stats.add(Counter::SelectMiss),
        }
    }

    /// Every operation counter, summed now. Lookups count [`Store::read`] and [`Store::get`]; a select is a hit
    /// when its group has members. O(1).
    pub fn counts(&self) -> Counts {
        self.stats.counts()
    }

    /// Counts a lookup that found nothing without reaching the map (a key the caller could not encode).
    pub fn count_miss(&self) {
        self.stats.add(Counter::LookupMiss);
    }

    /// Appends up to `max` values to `out` from fold slot `from` on, looking at no more than `budget` slots.
    /// Returns the slot to resume from, or `None` when the walk is complete. Values present for a whole walk
    /// are seen exactly once; values inserted or removed meanwhile may or may not be.
    pub fn scan(&self, from: usize, max: usize, budget: usize, out: &mut Vec<V>) -> Option<usize> {
        read(&self.slab).scan(from, max, budget, out)
    }

    /// Exact number of entries. O(1).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sum of every entry's weight, as [`Value::weight`] reports it. O(1).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Bytes taken by the fold slot index, which does not shrink when entries are removed.
    pub fn index_bytes(&self) -> usize {
        read(&self.slab).index_bytes()
    }

    pub fn is_terminated(&self) -> bool {
        self.terminated.load(Ordering::Acquire)
    }

    /// Empties the store for good and hands back its contents. O(shards): nothing is freed here. Later writes
    /// fail with [`StoreError::Terminated`]; reads find nothing. Calling it again returns an empty [`Retired`].
    pub fn retire(&self) -> Retired {
        let _writer = lock(&self.writer);
        self.terminated.store(true, Ordering::Release);
        let mut parts: Vec<Box<dyn Send>> = Vec::new();
        for shard in self.entries.take_all() {
            parts.push(Box::new(shard));
        }
        for shard in self.groups.shards() {
            parts.push(Box::new(std::mem::take(&mut *shard.write())));
        }
        parts.push(Box::new(std::mem::replace(
            &mut *write(&self.slab),
            Slab::new(),
        )));
        let entries = self.len.swap(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        Retired { parts, entries }
    }

    fn write_guard(&self) -> Result<MutexGuard<'_, ()>, StoreError> {
        let guard = lock(&self.writer);
        if self.is_terminated() {
            return Err(StoreError::Terminated);
        }
        Ok(guard)
    }

    /// Adds the entry in fold slot `index` to its group, creating the group if needed, in one lookup of the
    /// index when the group exists.
    fn join_group(&self, group: &[u8], index: usize, value: &V) {
        if let Some(mut members) = self.groups.get_mut(group) {
            members.insert(index, value.clone());
            return;
        }
        self.groups
            .entry(SmallBytes::from(group))
            .or_default()
            .insert(index, value.clone());
    }
}

// A panic cannot happen while these locks are held (no code in their scope panics), but a poisoned lock would
// still guard consistent data: recover it rather than turn one bug into a permanent failure.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
