//! What one stored entry costs in memory, for `info/1`'s `bytes`.
//!
//! The figure is computed, not sampled. An entry is a process-independent environment (the environment and the
//! phony process the VM gives it) whose heap fragment holds the `{Key, Session}` term: its flat size in words
//! (what `erts_debug:flat_size/1` reports, passed in by the Erlang wrapper) plus the slack the VM adds to every
//! fragment it allocates for such an environment. Then the store's own structures for the entry. Payloads of
//! reference-counted binaries (certificates) are not counted: they are shared with the processes that hold the
//! same session, and ETS's `memory` does not count them either, which keeps the two comparable.
//! The constants were measured on OTP 25 against `erlang:memory(total)` (the NIF's Rust allocations go through
//! the VM's allocator, so that figure sees them); `make bench` prints both figures side by side.

const WORD: usize = 8;
/// `enif_alloc_env`'s own allocation: the environment and the phony process it carries.
const ENV_BYTES: usize = 864;
/// Words the VM adds to each heap fragment of a process-independent environment (`MIN_HEAP_FRAG_SZ`).
const FRAGMENT_SLACK_WORDS: usize = 200;
/// A heap fragment's header.
const FRAGMENT_HEADER_BYTES: usize = 48;
/// The store's structures for one entry: its slot in the entry map and the slab, the shared `Arc`, and the
/// group index entry of a client key. The key bytes are added separately.
const STORE_ENTRY_BYTES: usize = 160;

/// Bytes an entry whose `{Key, Session}` term has a flat size of `words`, under a key of `key_bytes`, owns.
pub fn entry_bytes(words: usize, key_bytes: usize) -> usize {
    ENV_BYTES
        + FRAGMENT_HEADER_BYTES
        + (words + FRAGMENT_SLACK_WORDS) * WORD
        + STORE_ENTRY_BYTES
        + key_bytes
}
