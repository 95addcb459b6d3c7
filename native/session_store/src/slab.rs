//! Stable slots for every live entry, so that a fold can walk the store in small resumable steps.
//!
//! A hash table moves entries when it grows, so a position in it means nothing between two calls. A slot here
//! keeps its entry from insert to delete (a replace reuses it), which gives folds their guarantee: an entry
//! present for the whole fold is visited exactly once. Slots live in fixed blocks, so growing never copies
//! the live ones and no single insert pays for a reallocation of the whole index.

const BLOCK: usize = 1024;

pub(crate) struct Slab<V> {
    blocks: Vec<Box<[Option<V>]>>,
    free: Vec<usize>,
    /// Slots ever handed out; every slot at or above it is empty.
    high_water: usize,
}

impl<V: Clone> Slab<V> {
    pub(crate) fn new() -> Self {
        Slab {
            blocks: Vec::new(),
            free: Vec::new(),
            high_water: 0,
        }
    }

    /// Places `value` in a free slot and returns the slot's index. O(1) amortised; a new block costs one
    /// allocation of `BLOCK` pointers.
    pub(crate) fn insert(&mut self, value: V) -> usize {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = self.high_water;
                if index / BLOCK == self.blocks.len() {
                    self.blocks.push((0..BLOCK).map(|_| None).collect());
                }
                self.high_water += 1;
                index
            }
        };
        self.blocks[index / BLOCK][index % BLOCK] = Some(value);
        index
    }

    /// Puts `value` in an occupied slot, returning what was there.
    pub(crate) fn replace(&mut self, index: usize, value: V) -> Option<V> {
        self.slot_mut(index)?.replace(value)
    }

    /// Empties a slot and makes it reusable.
    pub(crate) fn remove(&mut self, index: usize) -> Option<V> {
        let old = self.slot_mut(index)?.take();
        if old.is_some() {
            self.free.push(index);
        }
        old
    }

    /// Clones up to `max` live values from slot `from` on, examining at most `budget` slots so that a
    /// sparse stretch costs bounded time too. Returns the slot to resume from, or `None` past the end.
    pub(crate) fn scan(
        &self,
        from: usize,
        max: usize,
        budget: usize,
        out: &mut Vec<V>,
    ) -> Option<usize> {
        let end = self.high_water.min(from.saturating_add(budget));
        let mut index = from;
        let mut taken = 0;
        while index < end && taken < max {
            if let Some(value) = &self.blocks[index / BLOCK][index % BLOCK] {
                out.push(value.clone());
                taken += 1;
            }
            index += 1;
        }
        (index < self.high_water).then_some(index)
    }

    /// The memory the slot index itself takes, in bytes (not counting the values).
    pub(crate) fn index_bytes(&self) -> usize {
        self.blocks.len() * BLOCK * std::mem::size_of::<Option<V>>()
            + self.free.capacity() * std::mem::size_of::<usize>()
    }

    fn slot_mut(&mut self, index: usize) -> Option<&mut Option<V>> {
        self.blocks.get_mut(index / BLOCK)?.get_mut(index % BLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(slab: &Slab<u32>, max: usize, budget: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut from = Some(0);
        while let Some(start) = from {
            from = slab.scan(start, max, budget, &mut out);
        }
        out
    }

    #[test]
    fn freed_slots_are_reused_before_the_slab_grows() {
        let mut slab = Slab::new();
        let a = slab.insert(1);
        let _b = slab.insert(2);
        assert_eq!(slab.remove(a), Some(1));
        assert_eq!(slab.insert(3), a);
        assert_eq!(slab.high_water, 2);
    }

    #[test]
    fn removing_twice_frees_the_slot_once() {
        let mut slab = Slab::new();
        let a = slab.insert(1);
        assert!(slab.remove(a).is_some());
        assert!(slab.remove(a).is_none());
        assert_eq!(slab.free, vec![a]);
    }

    #[test]
    fn scan_visits_every_live_value_across_blocks_in_small_steps() {
        let mut slab = Slab::new();
        let slots: Vec<usize> = (0..3 * BLOCK as u32).map(|v| slab.insert(v)).collect();
        for slot in slots.iter().step_by(3) {
            slab.remove(*slot);
        }
        let mut seen = scan_all(&slab, 7, 50);
        seen.sort_unstable();
        let expected: Vec<u32> = (0..3 * BLOCK as u32).filter(|v| v % 3 != 0).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn scan_respects_its_slot_budget() {
        let mut slab = Slab::new();
        for v in 0..100 {
            slab.insert(v);
        }
        let mut out = Vec::new();
        assert_eq!(slab.scan(0, 1000, 10, &mut out), Some(10));
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn replace_keeps_the_slot() {
        let mut slab = Slab::new();
        let a = slab.insert(1);
        assert_eq!(slab.replace(a, 2), Some(1));
        assert_eq!(scan_all(&slab, 10, 10), vec![2]);
    }
}
