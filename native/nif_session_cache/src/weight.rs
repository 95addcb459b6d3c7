//! What one stored entry costs in memory, for `info/1` and the byte counts operators read.
//!
//! The figure is computed, not sampled: the term's flat size in heap words (what `enif_make_copy` allocates),
//! rounded up to the minimum heap fragment the VM gives a process-independent environment, plus the
//! environment itself, plus the payload of every reference-counted binary the entry keeps alive. Shared binaries
//! are counted in full, so the figure is an upper bound on what deleting the entry could free.
//! `ENV_BYTES` was calibrated on OTP 25 against `erlang:memory(system)`; the benchmark re-checks it.

use rustler::{Binary, Term, TermType};

const WORD: usize = 8;
/// `enif_alloc_env`'s own allocation: an environment and the phony process it carries.
pub const ENV_BYTES: usize = 1024;
/// The smallest heap fragment the VM allocates for a process-independent environment (`MIN_HEAP_FRAG_SZ`).
const MIN_FRAGMENT_WORDS: usize = 200;
/// A heap fragment's header.
const FRAGMENT_HEADER_BYTES: usize = 48;
/// Binaries up to this size live on the heap; larger ones are reference-counted and off-heap.
const HEAP_BINARY_LIMIT: usize = 64;
/// The off-heap part of a reference-counted binary besides its payload.
const REFC_BINARY_HEADER_BYTES: usize = 48;
/// A term kind this walk does not size exactly (references, external pids, funs, bignums) is taken as this.
const OTHER_WORDS: usize = 6;

/// Bytes an entry holding `term` (a term in the caller's environment, before it is copied) will own.
pub fn entry_bytes(term: Term) -> usize {
    let (words, off_heap) = flat_size(term);
    ENV_BYTES + FRAGMENT_HEADER_BYTES + words.max(MIN_FRAGMENT_WORDS) * WORD + off_heap
}

/// Heap words and off-heap bytes of a term. Walks with an explicit stack, so a deep term cannot overflow it.
fn flat_size(term: Term) -> (usize, usize) {
    let mut words = 0;
    let mut off_heap = 0;
    let mut stack = vec![term];
    while let Some(term) = stack.pop() {
        match term.get_type() {
            TermType::Atom | TermType::Pid | TermType::Port => {}
            TermType::Integer => {
                if term
                    .decode::<i64>()
                    .map_or(true, |v| !(-(1 << 59)..(1 << 59)).contains(&v))
                {
                    words += OTHER_WORDS;
                }
            }
            TermType::Float => words += 2,
            TermType::Binary => {
                let len = Binary::from_term(term).map_or(0, |b| b.len());
                if len <= HEAP_BINARY_LIMIT {
                    words += 2 + len.div_ceil(WORD);
                } else {
                    words += 6;
                    off_heap += REFC_BINARY_HEADER_BYTES + len;
                }
            }
            TermType::Tuple => {
                if let Ok(elements) = rustler::types::tuple::get_tuple(term) {
                    words += 1 + elements.len();
                    stack.extend(elements);
                }
            }
            TermType::List => {
                let mut rest = term;
                while let Ok((head, tail)) = rest.list_get_cell() {
                    words += 2;
                    stack.push(head);
                    rest = tail;
                }
                if !rest.is_empty_list() {
                    stack.push(rest);
                }
            }
            TermType::Map => {
                if let Some(iter) = rustler::MapIterator::new(term) {
                    for (key, value) in iter {
                        words += 3;
                        stack.push(key);
                        stack.push(value);
                    }
                }
                words += 3;
            }
            TermType::Ref | TermType::Fun | TermType::Unknown => words += OTHER_WORDS,
        }
    }
    (words, off_heap)
}
