//! The concurrent store: entries by key (`table.rs`), stable slots for folds (`slab.rs`), an index by group,
//! and exact counts.
//!
//! A group's members are a chain through their fold slots, and the group index names each group's first slot:
//! an insert links its slot in front of that one, and a delete unlinks its own.
//!
//! Concurrency model: any number of threads read; writes are serialised by an internal mutex (the NIF layer
//! further allows only one process to write). There is one lock order: a group's shard of the group index, then
//! the fold slots. A select takes both in that order, as does a write that changes which slot is a group's
//! first; every other read or write holds one lock at a time. Nothing calls back into the store while holding
//! a lock.
//!
//! Values are handles: the store keeps a clone of each in the entry map and in the fold slots, and hands clones
//! out, so a value's clone must be cheap and share what it points to (an `Arc`, or the NIF layer's counted
//! reference to a packed entry).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::key::{Key, KeyRef};
use crate::slab::{Slab, Unlinked};
use crate::small::SmallBytes;
use crate::stats::{Counter, Counts, Stats};
use crate::sync::{lock, read, write};
use crate::table::{Filed, Hash, Table};

/// What the store asks of the values it holds. Values are handles (see the module documentation).
pub trait Value: Clone {
    /// The key the value is stored under, as the bytes of [`Key`]: the store keeps no copy of its own, and finds
    /// an entry by comparing with this.
    fn key(&self) -> &[u8];

    /// How much the entry weighs, in bytes of memory it owns, its key included. Feeds [`Store::bytes`].
    fn weight(&self) -> usize;
}

impl<T: Value> Value for Arc<T> {
    fn key(&self) -> &[u8] {
        (**self).key()
    }

    fn weight(&self) -> usize {
        (**self).weight()
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
    /// Every fold slot, 2^32 - 1 of them, holds an entry.
    #[error("the store holds as many entries as it can")]
    Full,
}

/// What an insert did.
pub enum Inserted<V> {
    New,
    /// The key was present; this is the value it held.
    Replaced(V),
}

/// An entry map slot: two words. The group a key belongs to is not kept: a removal is told it with the key.
struct Slot<V> {
    value: V,
    /// The hash the entry map filed it under.
    hash: Hash,
    /// Its fold slot ([`Slab`]'s indices fit 32 bits).
    slot: u32,
}

impl<V: Value> Filed for Slot<V> {
    fn key(&self) -> &[u8] {
        self.value.key()
    }

    fn hash(&self) -> Hash {
        self.hash
    }
}

/// Slots a select looks at in one call at most: a walk of a chain waits for memory at every step, so this
/// bounds a call to a few hundred microseconds however large the group.
const SELECT_STEPS: usize = 4096;

/// A select of a group that did not fit in one call, between calls ([`Store::select_more`]).
///
/// It hands out every member present for the whole select exactly once; members inserted or removed meanwhile
/// may or may not be. It remembers the slots of the members it has handed out: a member keeps its slot while
/// it is in the store, and a slot takes another member only after its member is removed, so a member seen
/// by slot is never handed out twice, and none present throughout is taken for one already seen. It resumes
/// at the member it stopped before, if that slot still holds a value with the same key (a member removed and
/// inserted again under its key heads its group's chain, so resuming there misses nothing), and otherwise
/// walks the group's chain again from its first slot, skipping what it has handed out.
pub struct Selection<V> {
    group: SmallBytes,
    /// The member it stopped before, and its slot; `None` once the walk is complete.
    next: Option<(usize, V)>,
    /// Slots of the members handed out.
    seen: SlotSet,
}

/// A set of slot numbers, a bit each: a member costs the same to add however many came before (a hash set
/// would pause to rehash them all now and then), and a set of every slot of a million-entry store takes 128 KB.
#[derive(Default)]
struct SlotSet(Vec<u64>);

impl SlotSet {
    fn contains(&self, slot: usize) -> bool {
        self.0
            .get(slot / 64)
            .is_some_and(|word| word & (1 << (slot % 64)) != 0)
    }

    fn insert(&mut self, slot: usize) {
        let word = slot / 64;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (slot % 64);
    }

    fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }
}

impl<V> std::fmt::Debug for Selection<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selection")
            .field("done", &self.next.is_none())
            .field("seen", &self.seen.len())
            .finish_non_exhaustive()
    }
}

/// A store of `V` handles (see the module documentation) under byte-string keys.
pub struct Store<V> {
    entries: Table<Slot<V>>,
    /// Each group's first fold slot.
    groups: DashMap<SmallBytes, usize>,
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
            (old, slot.slot as usize)
        });
        if let Some((old, index)) = replaced {
            // The slot keeps its place in its group's chain.
            let _replaced = write(&self.slab).replace(index, value);
            self.bytes.fetch_add(weight, Ordering::Relaxed);
            self.bytes.fetch_sub(old.weight(), Ordering::Relaxed);
            self.stats.add(Counter::Replace);
            return Ok(Inserted::Replaced(old));
        }

        let index = match &group_range {
            Some(range) => self.join_group(&bytes[range.clone()], value.clone()),
            None => write(&self.slab).insert(value.clone(), None),
        }
        .ok_or(StoreError::Full)?;
        self.entries.insert_new(Slot {
            value,
            hash,
            // The slab hands out indices below `u32::MAX` only.
            slot: index as u32,
        });
        self.len.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(weight, Ordering::Relaxed);
        self.stats.add(Counter::Insert);
        Ok(Inserted::New)
    }

    /// Removes a key; removing a missing key is not an error. O(1). The key names the group it was inserted with:
    /// a key's group is a function of its bytes, which whoever builds keys guarantees ([`crate::key`]).
    pub fn remove(&self, key: KeyRef<'_>) -> Result<Option<V>, StoreError> {
        let (key, group_range) = (key.bytes(), key.group_range());
        let _writer = self.write_guard()?;
        let Some(slot) = self.entries.remove(key) else {
            return Ok(None);
        };
        self.stats.add(Counter::Delete);
        let index = slot.slot as usize;
        // The slot's clone of the value is dropped here, after the locks (the entry map's is returned).
        let _unslotted = match group_range {
            Some(range) => self.leave_group(&key[range], index),
            None => write(&self.slab).remove(index).map(|(value, _)| value),
        };
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

    /// The value under `key`, shared, without counting a lookup: for a lookup already counted, retried elsewhere.
    /// O(1).
    pub fn peek(&self, key: &[u8]) -> Option<V> {
        self.entries.read(key, |slot| slot.value.clone())
    }

    /// Appends up to `max` values whose keys belong to `group` to `out`, newest first. Returns `None` if that was
    /// the whole group, else a [`Selection`] that [`Store::select_more`] goes on with. O(matches handed out): one
    /// lookup in the group index, then a walk of the group's chain.
    pub fn select(&self, group: &[u8], max: usize, out: &mut Vec<V>) -> Option<Selection<V>> {
        let Some(first) = self.groups.get(group) else {
            self.stats.add(Counter::SelectMiss);
            return None;
        };
        self.stats.add(Counter::SelectHit);
        let mut seen = SlotSet::default();
        let next = take_members(&read(&self.slab), *first, max, &mut seen, out)?;
        Some(Selection {
            group: SmallBytes::from(group),
            next: Some(next),
            seen,
        })
    }

    /// Appends up to `max` more values of a [`Selection`]'s group to `out`. Returns whether any may remain.
    pub fn select_more(&self, selection: &mut Selection<V>, max: usize, out: &mut Vec<V>) -> bool {
        // Dropped last, after the locks: this may be the last reference to its value.
        let Some((index, member)) = selection.next.take() else {
            return false;
        };
        // A group without an entry has lost every member, and with them any still to hand out.
        let Some(first) = self.groups.get(selection.group.as_slice()) else {
            return false;
        };
        let slots = read(&self.slab);
        let from = match slots.get(index) {
            Some(value) if value.key() == member.key() => index,
            _ => *first,
        };
        selection.next = take_members(&slots, from, max, &mut selection.seen, out);
        selection.next.is_some()
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

    /// Appends up to `max` values to `out` from fold slot `from` on, looking at no more than `budget` slots and
    /// stopping before the first value `take` refuses (`take` sees each value before it is appended, under the
    /// slots' read lock: it must be quick). Returns the slot to resume from, or `None` when the walk is complete.
    /// Values present for a whole walk are seen exactly once; values inserted or removed meanwhile may or may not
    /// be. A slot is a plain number: a walk needs no state but it.
    pub fn scan(
        &self,
        from: usize,
        max: usize,
        budget: usize,
        out: &mut Vec<V>,
        take: impl FnMut(&V) -> bool,
    ) -> Option<usize> {
        read(&self.slab).scan(from, max, budget, out, take)
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

    /// Bytes the store's own structures take, at their capacity, which removals do not shrink: the entry map,
    /// the group index and the fold slots with their group links. Not the entries (see [`Store::bytes`]), nor
    /// the names of groups too long to be kept in place (over 62 bytes). O(shards).
    pub fn index_bytes(&self) -> usize {
        let groups: usize = self
            .groups
            .shards()
            .iter()
            .map(|shard| shard.read().allocation_info().1.size())
            .sum();
        self.entries.bytes()
            + groups
            + std::mem::size_of_val(self.groups.shards())
            + read(&self.slab).index_bytes()
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

    /// Files `value` in a new fold slot at the front of its group's chain, creating the group if needed, and
    /// returns the slot (`None` if the store is full). Takes the group's shard, then the slots.
    fn join_group(&self, group: &[u8], value: V) -> Option<usize> {
        match self.groups.entry(SmallBytes::from(group)) {
            Entry::Occupied(mut first) => {
                let index = write(&self.slab).insert(value, Some(*first.get()))?;
                *first.get_mut() = index;
                Some(index)
            }
            Entry::Vacant(vacant) => {
                let index = write(&self.slab).insert(value, None)?;
                vacant.insert(index);
                Some(index)
            }
        }
    }

    /// Empties fold slot `index`, unlinking it from its group's chain, and drops the group with its last
    /// member. Returns the slot's value.
    fn leave_group(&self, group: &[u8], index: usize) -> Option<V> {
        // Most members are not their group's first, and unlinking one changes only the slots, whose lock a
        // select holds while it walks: the group's shard is needed only when the first leaves.
        if let Some(value) = write(&self.slab).remove_inside(index) {
            return Some(value);
        }
        // The first: the group's shard, then the slots, as a select takes them. No other writer runs between.
        let mut first = match self.groups.entry(SmallBytes::from(group)) {
            Entry::Occupied(first) => first,
            // A member's group exists while it does; should that fail, the slot is still freed.
            Entry::Vacant(_) => return write(&self.slab).remove(index).map(|(value, _)| value),
        };
        let (value, unlinked) = write(&self.slab).remove(index)?;
        match unlinked {
            Unlinked::Inside => {}
            Unlinked::First(Some(next)) => *first.get_mut() = next,
            Unlinked::First(None) => {
                first.remove();
            }
        }
        Some(value)
    }
}

/// Hands out up to `max` (at least one) members of a chain, from slot `from`, that are not in `seen`, looking at
/// no more than [`SELECT_STEPS`] slots. Returns the member it stopped before and its slot, `None` at the chain's
/// end; only when it stopped short does it add the slots it handed out to `seen` (a selection that ends here is
/// never asked again). Called with the group's shard and the slots locked.
fn take_members<V: Value>(
    slots: &Slab<V>,
    from: usize,
    max: usize,
    seen: &mut SlotSet,
    out: &mut Vec<V>,
) -> Option<(usize, V)> {
    let max = max.max(1);
    // The first walk finds where this call stops; the second hands out, and remembers what it handed out only if
    // there is more, so that a select that ends here never sizes its set to the store's slots.
    let mut wanted = 0;
    let stop = slots.walk(from, SELECT_STEPS, |index, _| {
        if seen.contains(index) {
            return true;
        }
        if wanted == max {
            return false;
        }
        wanted += 1;
        true
    });
    slots.walk(from, SELECT_STEPS, |index, value| {
        if Some(index) == stop {
            return false;
        }
        if !seen.contains(index) {
            out.push(value.clone());
            if stop.is_some() {
                seen.insert(index);
            }
        }
        true
    });
    stop.and_then(|index| Some((index, slots.get(index)?.clone())))
}
