//! Stable slots for every live entry, so that a fold can walk the store in small resumable steps, and chains
//! of slots, so that a group's members can be listed without a table of their own.
//!
//! A hash table moves entries when it grows, so a position in it means nothing between two calls. A slot here
//! keeps its entry from insert to delete (a replace reuses it), which gives folds their guarantee: an entry
//! present for the whole fold is visited exactly once. Slots live in fixed blocks, so growing never copies
//! the live ones and no single insert pays for a reallocation of the whole index.
//!
//! Each slot also carries the previous and the next slot of its chain, a doubly linked list threaded through
//! the slots. Joining a chain at its front writes two links and leaving it at most two, where a table of
//! members per chain is probed, and now and then grown, on every insert and delete. Whoever names a chain
//! keeps its first slot: [`Slab::insert`] and [`Slab::remove`] say when that changes.

const BLOCK: usize = 1024;

/// A slot index as a chain's link stores it: 32 bits keep a slot of an 8-byte value within 16 bytes.
type Link = u32;

/// No slot: the end of a chain.
const NONE: Link = Link::MAX;

/// Slots a slab hands out at most: every index below `NONE`. Four billion entries of a kilobyte or more, terabytes
/// of sessions, lie beyond any store this serves.
const LIMIT: usize = NONE as usize;

struct Slot<V> {
    value: Option<V>,
    prev: Link,
    next: Link,
}

/// What removing a slot did to its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unlinked {
    /// The slot was not its chain's first, which is unchanged.
    Inside,
    /// The slot was its chain's first: the chain now starts at this slot, or is empty.
    First(Option<usize>),
}

pub(crate) struct Slab<V> {
    blocks: Vec<Box<[Slot<V>]>>,
    free: Vec<usize>,
    /// Slots ever handed out; every slot at or above it is empty.
    high_water: usize,
    /// Slots it may hand out: [`LIMIT`], lowered by tests.
    limit: usize,
}

impl<V: Clone> Slab<V> {
    pub(crate) fn new() -> Self {
        Slab {
            blocks: Vec::new(),
            free: Vec::new(),
            high_water: 0,
            limit: LIMIT,
        }
    }

    /// Places `value` in a free slot and returns the slot's index, which is the first of its chain: a chain
    /// of its own, or, with `first`, the chain that started at slot `first`. O(1) amortised; a new block
    /// costs one allocation of `BLOCK` slots. `None`, and nothing changed, if every slot up to the limit
    /// holds a value.
    pub(crate) fn insert(&mut self, value: V, first: Option<usize>) -> Option<usize> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = self.high_water;
                if index >= self.limit {
                    return None;
                }
                if index / BLOCK == self.blocks.len() {
                    self.blocks.push(
                        (0..BLOCK)
                            .map(|_| Slot {
                                value: None,
                                prev: NONE,
                                next: NONE,
                            })
                            .collect(),
                    );
                }
                self.high_water += 1;
                index
            }
        };
        let mut next = NONE;
        if let Some(first) = first.filter(|&first| first != index) {
            if let Some(slot) = self.link_mut(link(first)) {
                slot.prev = link(index);
                next = link(first);
            }
        }
        let slot = &mut self.blocks[index / BLOCK][index % BLOCK];
        *slot = Slot {
            value: Some(value),
            prev: NONE,
            next,
        };
        Some(index)
    }

    /// Puts `value` in an occupied slot, returning what was there. The slot keeps its place in its chain.
    pub(crate) fn replace(&mut self, index: usize, value: V) -> Option<V> {
        self.live_mut(index)?.value.replace(value)
    }

    /// Empties a slot, takes it out of its chain and makes it reusable.
    pub(crate) fn remove(&mut self, index: usize) -> Option<(V, Unlinked)> {
        let slot = self.live_mut(index)?;
        let old = slot.value.take()?;
        let (prev, next) = (slot.prev, slot.next);
        (slot.prev, slot.next) = (NONE, NONE);
        if let Some(after) = self.link_mut(next) {
            after.prev = prev;
        }
        let unlinked = match self.link_mut(prev) {
            Some(before) => {
                before.next = next;
                Unlinked::Inside
            }
            None => Unlinked::First((next != NONE).then_some(next as usize)),
        };
        self.free.push(index);
        Some((old, unlinked))
    }

    /// Empties slot `index` as [`remove`](Self::remove) does, but only if it is not its chain's first, so that
    /// the chain's first is known to stay the same. Returns the slot's value, or `None` if it was left alone.
    pub(crate) fn remove_inside(&mut self, index: usize) -> Option<V> {
        if self.live(index)?.prev == NONE {
            return None;
        }
        self.remove(index).map(|(value, _)| value)
    }

    /// Walks the chain from slot `from`, in chain order (newest first), calling `visit` with each member's slot
    /// and value for at most `steps` members, and stopping before a member for which `visit` returns false.
    /// Returns the slot the walk stopped at, which it did not visit, or `None` at the chain's end.
    pub(crate) fn walk(
        &self,
        from: usize,
        steps: usize,
        mut visit: impl FnMut(usize, &V) -> bool,
    ) -> Option<usize> {
        let mut index = from;
        for _ in 0..steps {
            let Some(Slot {
                value: Some(value),
                next,
                ..
            }) = self.live(index)
            else {
                return None;
            };
            if !visit(index, value) {
                return Some(index);
            }
            index = *next as usize;
        }
        self.live(index).map(|_| index)
    }

    /// The value in slot `index`, if it holds one.
    pub(crate) fn get(&self, index: usize) -> Option<&V> {
        self.live(index)?.value.as_ref()
    }

    /// Clones up to `max` live values from slot `from` on, examining at most `budget` slots so that a
    /// sparse stretch costs bounded time too, and stopping before the first value `take` refuses. Returns the
    /// slot to resume from (that value's, if one was refused), or `None` past the end.
    pub(crate) fn scan(
        &self,
        from: usize,
        max: usize,
        budget: usize,
        out: &mut Vec<V>,
        mut take: impl FnMut(&V) -> bool,
    ) -> Option<usize> {
        let end = self.high_water.min(from.saturating_add(budget));
        let mut index = from;
        let mut taken = 0;
        while index < end && taken < max {
            if let Some(value) = &self.blocks[index / BLOCK][index % BLOCK].value {
                if !take(value) {
                    break;
                }
                out.push(value.clone());
                taken += 1;
            }
            index += 1;
        }
        (index < self.high_water).then_some(index)
    }

    /// The memory the slot index itself takes, in bytes (not counting the values).
    pub(crate) fn index_bytes(&self) -> usize {
        self.blocks.len() * BLOCK * std::mem::size_of::<Slot<V>>()
            + self.free.capacity() * std::mem::size_of::<usize>()
    }

    /// The slot at `index` if it holds a value. `NONE` finds nothing, as no slot at or past the limit is ever
    /// handed out.
    fn live(&self, index: usize) -> Option<&Slot<V>> {
        let slot = self.blocks.get(index / BLOCK)?.get(index % BLOCK)?;
        slot.value.is_some().then_some(slot)
    }

    fn live_mut(&mut self, index: usize) -> Option<&mut Slot<V>> {
        let slot = self.blocks.get_mut(index / BLOCK)?.get_mut(index % BLOCK)?;
        slot.value.is_some().then_some(slot)
    }

    /// The slot at `link`, to be relinked: a neighbour that a chain names, so a live one. That is checked only
    /// in debug builds: relinking then writes the slot without first waiting to read it from memory.
    fn link_mut(&mut self, link: Link) -> Option<&mut Slot<V>> {
        if link == NONE {
            return None;
        }
        let index = link as usize;
        let slot = self.blocks.get_mut(index / BLOCK)?.get_mut(index % BLOCK)?;
        debug_assert!(slot.value.is_some(), "a chain names an empty slot");
        Some(slot)
    }
}

/// Slot `index` as a link. Every index a slab hands out is below [`LIMIT`]; any other becomes [`NONE`], which
/// names no slot.
fn link(index: usize) -> Link {
    Link::try_from(index).unwrap_or(NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(slab: &Slab<u32>, max: usize, budget: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut from = Some(0);
        while let Some(start) = from {
            from = slab.scan(start, max, budget, &mut out, |_| true);
        }
        out
    }

    fn put(slab: &mut Slab<u32>, value: u32, first: Option<usize>) -> usize {
        slab.insert(value, first).expect("a slot below the limit")
    }

    fn chain(slab: &Slab<u32>, first: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let end = slab.walk(first, usize::MAX, |_, value| {
            out.push(*value);
            true
        });
        assert_eq!(end, None);
        out
    }

    #[test]
    fn freed_slots_are_reused_before_the_slab_grows() {
        let mut slab = Slab::new();
        let a = put(&mut slab, 1, None);
        let _b = put(&mut slab, 2, None);
        assert_eq!(slab.remove(a), Some((1, Unlinked::First(None))));
        assert_eq!(put(&mut slab, 3, None), a);
        assert_eq!(slab.high_water, 2);
    }

    #[test]
    fn removing_twice_frees_the_slot_once() {
        let mut slab = Slab::new();
        let a = put(&mut slab, 1, None);
        assert!(slab.remove(a).is_some());
        assert!(slab.remove(a).is_none());
        assert_eq!(slab.free, vec![a]);
    }

    #[test]
    fn scan_visits_every_live_value_across_blocks_in_small_steps() {
        let mut slab = Slab::new();
        let slots: Vec<usize> = (0..3 * BLOCK as u32)
            .map(|v| put(&mut slab, v, None))
            .collect();
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
            put(&mut slab, v, None);
        }
        let mut out = Vec::new();
        assert_eq!(slab.scan(0, 1000, 10, &mut out, |_| true), Some(10));
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn replace_keeps_the_slot_and_its_place_in_the_chain() {
        let mut slab = Slab::new();
        let a = put(&mut slab, 1, None);
        let b = put(&mut slab, 2, Some(a));
        assert_eq!(slab.replace(a, 3), Some(1));
        assert_eq!(scan_all(&slab, 10, 10), vec![3, 2]);
        assert_eq!(chain(&slab, b), vec![2, 3]);
    }

    #[test]
    fn a_chain_lists_its_members_newest_first_and_survives_removal_anywhere() {
        let mut slab = Slab::new();
        let other = put(&mut slab, 100, None);
        let mut first = put(&mut slab, 0, None);
        let mut slots = vec![first];
        for v in 1..6 {
            first = put(&mut slab, v, Some(first));
            slots.push(first);
        }
        assert_eq!(chain(&slab, first), vec![5, 4, 3, 2, 1, 0]);

        // Inside (3), the last (0), then the first (5): only the last of these moves the chain's start.
        assert_eq!(slab.remove(slots[3]), Some((3, Unlinked::Inside)));
        assert_eq!(slab.remove(slots[0]), Some((0, Unlinked::Inside)));
        assert_eq!(chain(&slab, first), vec![5, 4, 2, 1]);
        assert_eq!(
            slab.remove(slots[5]),
            Some((5, Unlinked::First(Some(slots[4]))))
        );
        first = slots[4];
        assert_eq!(chain(&slab, first), vec![4, 2, 1]);

        // A freed slot is reused, and joins the front with no trace of its old links.
        let again = put(&mut slab, 9, Some(first));
        assert!(slots.contains(&again));
        assert_eq!(chain(&slab, again), vec![9, 4, 2, 1]);
        assert_eq!(slab.remove(slots[4]), Some((4, Unlinked::Inside)));
        assert_eq!(slab.remove(slots[2]), Some((2, Unlinked::Inside)));
        assert_eq!(
            slab.remove(again),
            Some((9, Unlinked::First(Some(slots[1]))))
        );
        assert_eq!(slab.remove(slots[1]), Some((1, Unlinked::First(None))));
        assert_eq!(chain(&slab, other), vec![100]);
        assert_eq!(scan_all(&slab, 10, 10), vec![100]);
    }

    #[test]
    fn remove_inside_leaves_a_chains_first_alone() {
        let mut slab = Slab::new();
        let last = put(&mut slab, 1, None);
        let middle = put(&mut slab, 2, Some(last));
        let first = put(&mut slab, 3, Some(middle));
        assert_eq!(slab.remove_inside(first), None);
        assert_eq!(slab.remove_inside(middle), Some(2));
        assert_eq!(slab.remove_inside(middle), None);
        assert_eq!(chain(&slab, first), vec![3, 1]);
        assert_eq!(slab.remove_inside(last), Some(1));
        assert_eq!(chain(&slab, first), vec![3]);
        assert_eq!(slab.remove(first), Some((3, Unlinked::First(None))));
    }

    #[test]
    fn a_chain_that_starts_at_an_empty_slot_lists_nothing() {
        let mut slab = Slab::new();
        let a = put(&mut slab, 1, None);
        slab.remove(a);
        assert!(chain(&slab, a).is_empty());
        assert!(chain(&slab, NONE as usize).is_empty());
    }

    #[test]
    fn a_walk_stops_where_told_and_says_where_to_resume() {
        let mut slab = Slab::new();
        let mut first = put(&mut slab, 0, None);
        let mut slots = vec![first];
        for v in 1..5 {
            first = put(&mut slab, v, Some(first));
            slots.push(first);
        }
        let mut seen = Vec::new();
        let stop = slab.walk(first, 2, |index, value| {
            seen.push((index, *value));
            true
        });
        assert_eq!(seen, vec![(slots[4], 4), (slots[3], 3)]);
        assert_eq!(stop, Some(slots[2]));
        let stop = slab.walk(slots[2], 10, |_, value| *value != 1);
        assert_eq!(stop, Some(slots[1]));
        assert_eq!(slab.get(slots[1]), Some(&1));
        assert_eq!(slab.walk(slots[1], 10, |_, _| true), None);
        // Two steps from the second-to-last: both visited, and nothing left to resume.
        assert_eq!(slab.walk(slots[1], 2, |_, _| true), None);
    }

    #[test]
    fn a_full_slab_refuses_an_insert_and_takes_one_again_once_a_slot_is_freed() {
        let mut slab = Slab {
            limit: 2,
            ..Slab::new()
        };
        let a = put(&mut slab, 1, None);
        let b = put(&mut slab, 2, Some(a));
        assert_eq!(slab.insert(3, Some(b)), None);
        assert_eq!(chain(&slab, b), vec![2, 1]);
        assert_eq!(scan_all(&slab, 10, 10), vec![1, 2]);
        slab.remove(a);
        assert_eq!(slab.insert(3, Some(b)), Some(a));
        assert_eq!(chain(&slab, a), vec![3, 2]);
    }

    #[test]
    fn a_slot_of_a_pointer_sized_value_takes_16_bytes() {
        assert_eq!(std::mem::size_of::<Slot<Box<u8>>>(), 16);
    }
}
