//! The entry map: entries found by the key bytes their values carry, in lock shards of hash tables.
//!
//! A map from key to value stores every key twice, once in the map and once in the value that must carry it
//! anyway (a fold hands out `{Key, Session}`), and a lookup of a large store then reads both from cold memory.
//! Here a table slot holds the entry's hash beside it and nothing of its key: a lookup compares against the key
//! inside the value, which it reads next in any case, and a shard grows by the stored hashes without reading a
//! single key. The stored hash is 32 bits, so that a slot is two words with its value and its fold slot: the
//! bits pick the lock shard, and spread over 64 (`spread`) they index and tag the shard's table.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use crate::sync::{read, write};

/// A key's hash as the table files it: 32 bits of SipHash.
pub(crate) type Hash = u32;

/// What a table holds: something that knows its key and the hash the table filed it under.
pub(crate) trait Filed {
    fn key(&self) -> &[u8];
    fn hash(&self) -> Hash;
}

pub(crate) struct Table<T> {
    shards: Box<[Shard<T>]>,
    /// SipHash with keys chosen per table: keys come from peers, so their hashes must not be predictable.
    hasher: RandomState,
}

/// One lock shard, alone on its cache lines so that readers of neighbouring shards do not contend.
#[repr(align(128))]
struct Shard<T>(RwLock<HashTable<T>>);

impl<T: Filed> Table<T> {
    /// A table of `shards` lock shards.
    ///
    /// # Panics
    /// If `shards` is not a power of two (a programming error, caught at construction).
    pub(crate) fn new(shards: usize) -> Self {
        assert!(
            shards.is_power_of_two(),
            "shard count must be a power of two"
        );
        Table {
            shards: (0..shards)
                .map(|_| Shard(RwLock::new(HashTable::new())))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn hash(&self, key: &[u8]) -> Hash {
        // The low half of a keyed SipHash is as unpredictable as the whole.
        self.hasher.hash_one(key) as Hash
    }

    /// Runs `read` on the entry under `key` while its shard is read-locked.
    pub(crate) fn read<R>(&self, key: &[u8], read: impl FnOnce(&T) -> R) -> Option<R> {
        let hash = self.hash(key);
        let shard = self.read_shard(hash);
        shard
            .find(spread(hash), |entry| entry.key() == key)
            .map(read)
    }

    /// Runs `update` on the entry under `key`, whose hash is `hash` (an insert reuses it to file a new entry),
    /// while its shard is write-locked: readers see it before or after.
    pub(crate) fn update<R>(
        &self,
        hash: Hash,
        key: &[u8],
        update: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        let mut shard = self.write_shard(hash);
        shard
            .find_mut(spread(hash), |entry| entry.key() == key)
            .map(update)
    }

    /// Adds an entry whose key the table does not hold (the caller has checked, and no other writer runs).
    pub(crate) fn insert_new(&self, entry: T) {
        let hash = entry.hash();
        self.write_shard(hash)
            .insert_unique(spread(hash), entry, |entry| spread(entry.hash()));
    }

    /// Takes out the entry under `key`.
    pub(crate) fn remove(&self, key: &[u8]) -> Option<T> {
        let hash = self.hash(key);
        let mut shard = self.write_shard(hash);
        match shard.find_entry(spread(hash), |entry| entry.key() == key) {
            Ok(found) => Some(found.remove().0),
            Err(_) => None,
        }
    }

    /// Bytes the table has allocated: its shards, and the block of each shard's hash table, at the size hashbrown
    /// gives a table of its capacity. Removals leave the block in place, as hashbrown never shrinks a table, but
    /// a removal that leaves a tombstone takes its slot out of the capacity reported until the table is
    /// rehashed: with tombstones in over half its slots, a table's block is understated by half.
    pub(crate) fn bytes(&self) -> usize {
        let tables: usize = self
            .shards
            .iter()
            .map(|shard| table_bytes::<T>(read(&shard.0).capacity()))
            .sum();
        tables + std::mem::size_of_val(&*self.shards)
    }

    /// Empties every shard, handing back what each held.
    pub(crate) fn take_all(&self) -> Vec<HashTable<T>> {
        self.shards
            .iter()
            .map(|shard| std::mem::take(&mut *write(&shard.0)))
            .collect()
    }

    fn shard(&self, hash: Hash) -> &RwLock<HashTable<T>> {
        // The top bits: a shard's table indexes by the low bits of `spread`, which only the low bits of the hash
        // decide, up to 2^(32 - log2 shards) buckets per shard.
        let bits = self.shards.len().trailing_zeros();
        let index = (hash as u64 >> (Hash::BITS - bits)) as usize;
        &self.shards[index & (self.shards.len() - 1)].0
    }

    fn read_shard(&self, hash: Hash) -> RwLockReadGuard<'_, HashTable<T>> {
        read(self.shard(hash))
    }

    fn write_shard(&self, hash: Hash) -> RwLockWriteGuard<'_, HashTable<T>> {
        write(self.shard(hash))
    }
}

/// The 64-bit hash a shard's table works with: hashbrown indexes by its low bits and tags by its top seven, so
/// a multiplication by an odd constant (a bijection) carries the stored bits into both.
fn spread(hash: Hash) -> u64 {
    u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Control bytes hashbrown reads at once, and adds to the end of a table: 16 where it uses SSE2, else a word's
/// worth (its NEON groups on 64-bit ARM are 8 too). The unit test below checks it on the machine it runs on.
const GROUP_WIDTH: usize = if cfg!(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "sse2"
)) {
    16
} else {
    std::mem::size_of::<usize>()
};

/// The size of the block hashbrown allocates for a table of `capacity` slots of `T`: a power of two of buckets
/// with one of them empty below 8 buckets and an eighth of them above, the slots (padded to the control bytes'
/// alignment), then a control byte per bucket and a group more. Nothing for a table that has allocated nothing.
fn table_bytes<T>(capacity: usize) -> usize {
    let buckets = match capacity {
        0 => return 0,
        1..=3 => 4,
        4..=7 => 8,
        _ => (capacity * 8 / 7).next_power_of_two(),
    };
    let slots = buckets * std::mem::size_of::<T>();
    slots.next_multiple_of(std::mem::align_of::<T>().max(GROUP_WIDTH)) + buckets + GROUP_WIDTH
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formula is hashbrown's layout: a `RawTable`, which reports the block it allocated, agrees with it at
    /// every size, for the capacity a `HashTable` of as many entries reports.
    #[test]
    fn table_bytes_is_the_size_of_the_block_hashbrown_allocates() {
        type Entry = [u64; 6];
        for n in [0_u64, 1, 3, 4, 7, 8, 15, 28, 29, 100, 1000, 5000] {
            let mut table: HashTable<Entry> = HashTable::new();
            let mut raw: hashbrown::raw::RawTable<Entry> = hashbrown::raw::RawTable::new();
            for i in 0..n {
                table.insert_unique(i, [i; 6], |entry| entry[0]);
                raw.insert(i, [i; 6], |entry| entry[0]);
            }
            let computed = table_bytes::<Entry>(table.capacity());
            assert_eq!(computed, raw.allocation_info().1.size(), "{n} entries");
        }
    }
}
