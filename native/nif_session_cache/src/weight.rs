//! What stored entries cost in memory, for `info/1`'s `bytes`.
//!
//! The figures are computed, not sampled. An entry is its packed bytes (see `packed.rs`), a reference per held
//! part, its header, and the VM's bookkeeping of the block around them (`entry.rs`); the store's structures (its maps and
//! fold slots) are `info/1`'s `index_bytes`, which `Store::index_bytes` computes. A held term is an environment (the
//! environment and the phony process the VM gives it) whose heap fragment holds the term's heap words plus the
//! slack the VM adds to every fragment of such an environment; a shared one is counted once per store, however
//! many entries use it. Payloads of reference-counted binaries (over 64 bytes) inside held terms are not
//! counted: they are shared with whatever else holds the same binary, and ETS's `memory` does not count them
//! either. The constants were measured on OTP 25 (the entries' overheads on 27 and 29 as well) against
//! `erlang:memory(system)` (the NIF's Rust allocations go through the VM's allocator, so that figure sees them);
//! `make bench` prints both figures side by side.

use std::sync::atomic::{AtomicBool, Ordering};

use rustler::types::map::MapIterator;
use rustler::{Binary, Term, TermType};

use crate::raw;
use crate::resource;

const WORD: usize = 8;
/// `enif_alloc_env`'s own allocation: the environment and the phony process it carries.
const ENV_BYTES: usize = 864;
/// Words the VM adds to each heap fragment of a process-independent environment (`MIN_HEAP_FRAG_SZ`).
const FRAGMENT_SLACK_WORDS: usize = 200;
/// A heap fragment's header.
const FRAGMENT_HEADER_BYTES: usize = 48;
/// A held term's `Arc` and header.
const HELD_HEADER_BYTES: usize = 64;
/// What the VM adds to an entry's block, beyond its own bytes rounded up to a word (the allocators hand out
/// whole words): the resource object's bookkeeping and the allocator's block header for an entry with blobs (a
/// resource object), the allocator's block header for a plain allocation. Calibrated against
/// `erlang:memory(system)` at 100k entries, where resource objects and the NIF's allocations are counted (`make
/// bench` prints both figures side by side), on OTP 25 and on OTP 27 and 29, whose allocators add more per block
/// (the same on both): entries of every size from 88 to 104 bytes cost exactly this, on each.
#[derive(Clone, Copy)]
struct Overheads {
    resource: usize,
    allocation: usize,
}

const OTP_25: Overheads = Overheads {
    resource: 76,
    allocation: 16,
};
const OTP_26_AND_LATER: Overheads = Overheads {
    resource: 94,
    allocation: 24,
};

/// Whether the VM is of OTP 26 or later, as the library's load info said (`set_release`).
static LATER_THAN_25: AtomicBool = AtomicBool::new(true);

/// Chooses the overheads for OTP `release`; called from the library's load callback.
pub fn set_release(release: u32) {
    LATER_THAN_25.store(release > 25, Ordering::Relaxed);
}

fn overheads() -> Overheads {
    if LATER_THAN_25.load(Ordering::Relaxed) {
        OTP_26_AND_LATER
    } else {
        OTP_25
    }
}

/// Binaries up to this size are heap binaries, copied into the term's own heap; larger ones are a reference.
const HEAP_BINARY_MAX: usize = 64;
/// A reference to a shared binary on a heap (a ProcBin).
const REFC_BINARY_WORDS: usize = 6;
/// Maps of up to this many keys are flat; larger ones are hash tries.
const FLAT_MAP_MAX: usize = 32;

/// Bytes an entry whose block is `block` bytes (its header, held part references and packed bytes, its key's
/// included) owns, in a resource object or a plain allocation.
pub fn entry_bytes(resource: bool, block: usize) -> usize {
    let overheads = overheads();
    block.next_multiple_of(WORD)
        + if resource {
            overheads.resource
        } else {
            overheads.allocation
        }
}

/// Bytes a held term of `words` heap words costs.
pub fn held_bytes(words: usize) -> usize {
    HELD_HEADER_BYTES + ENV_BYTES + FRAGMENT_HEADER_BYTES + (words + FRAGMENT_SLACK_WORDS) * WORD
}

/// What a walk of a held term finds.
pub struct Measure {
    /// The heap words the term occupies, what `erts_debug:flat_size/1` reports, give or take a word for kinds the
    /// NIF API does not show (funs, references and bignums are sized from their external format, maps from their
    /// size and contents).
    pub words: usize,
    /// Whether the term may hold a float: it has one, or a fun, whose insides the walk does not see.
    pub may_hold_float: bool,
    /// Whether it holds a store or a cursor of this library in its tuples, lists or maps (`held.rs`).
    pub holds_store: bool,
}

/// Walks the whole term with a stack of its own (a held term may be nested arbitrarily deep), or gives up with
/// `None` as soon as it has found more than `limit` words: the walk costs O(min(size, limit)). A fun, whose
/// captured terms only its external format shows, and only whole, is measured only when `limit` is `usize::MAX`.
pub fn measure(term: Term, limit: usize) -> Option<Measure> {
    let mut measure = Measure {
        words: 0,
        may_hold_float: false,
        holds_store: false,
    };
    let mut todo = vec![term];
    while let Some(term) = todo.pop() {
        measure.words += match term.get_type() {
            TermType::Atom | TermType::Pid | TermType::Port => 0,
            TermType::Float => {
                measure.may_hold_float = true;
                2
            }
            TermType::Integer if raw::is_small(term) => 0,
            TermType::Binary => match Binary::from_term(term) {
                Ok(binary) if binary.len() <= HEAP_BINARY_MAX => 2 + binary.len().div_ceil(WORD),
                _ => REFC_BINARY_WORDS,
            },
            TermType::Tuple => match raw::tuple_elements(term) {
                Some(elements) => {
                    let arity = elements.len();
                    todo.extend(elements);
                    1 + arity
                }
                None => 0,
            },
            TermType::List => match term.list_get_cell() {
                Ok((head, tail)) => {
                    todo.push(head);
                    todo.push(tail);
                    2
                }
                Err(_) => 0,
            },
            // A map of up to 32 keys is a header, its values and a tuple of its keys; a larger one is a tree of
            // about as many words again. Its size is known without a walk, so one over the limit is refused
            // before any of its entries is walked: an entry costs tens of nanoseconds through the NIF API, which a
            // walk up to the limit would spend by the thousand on a normal scheduler.
            TermType::Map => {
                let entries = term.map_size().ok()?;
                let words = if entries <= FLAT_MAP_MAX {
                    4 + 2 * entries
                } else {
                    4 + 4 * entries
                };
                if measure.words.saturating_add(words) > limit {
                    return None;
                }
                for (key, value) in MapIterator::new(term).into_iter().flatten() {
                    todo.extend([key, value]);
                }
                words
            }
            TermType::Ref => {
                measure.holds_store |= resource::is_ours(term);
                1 + raw::external_size(term).unwrap_or(0).div_ceil(WORD)
            }
            TermType::Fun if limit < usize::MAX => return None,
            // Bignums (at most a few megabytes, so their encoding is bounded) and funs: about their external
            // size, which packs about as densely.
            kind => {
                measure.may_hold_float |= kind == TermType::Fun;
                1 + raw::external_size(term).unwrap_or(0).div_ceil(WORD)
            }
        };
        if measure.words > limit {
            return None;
        }
    }
    Some(measure)
}
