//! An entry's memory, as a plan. The NIF allocates one block per entry and does what this module says: where
//! each section lies, when the last reference has gone, which bytes to wipe then, and what the block costs. The
//! block is a [`Header`], the entry's held parts (a pointer each, numbered as their `PART` tags), then its bytes:
//! the key, the secret section, the code and the blobs (`pack`). An entry with blobs lives in a VM resource
//! object, so that the binaries a copy makes of its blobs can refer to it; any other in a plain allocation, as a
//! resource object's bookkeeping would cost a plain server session a third of its size.
//!
//! Nothing here implements Debug: a header is harmless, but its block holds a master secret.

use std::ops::Range;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use crate::pack::{copy_cost, SCHEDULER_BUDGET};
use crate::unpack::Sections;
use crate::wipe;

/// The start of an entry's block: six 32-bit words.
#[repr(C)]
pub struct Header {
    /// References to the entry: the store's and any cursor's.
    refs: AtomicU32,
    /// Twice the number of held parts, plus one if freeing them is too much for a normal scheduler.
    parts: u32,
    key_len: u32,
    secret_len: u32,
    code_len: u32,
    blob_len: u32,
}

/// Bytes from the start of a block to its held parts.
pub const HEADER_BYTES: usize = std::mem::size_of::<Header>();
/// A block's alignment: its header's and its parts' pointers'.
pub const BLOCK_ALIGN: usize = 8;
const _: () = assert!(
    HEADER_BYTES.is_multiple_of(BLOCK_ALIGN) && std::mem::align_of::<Header>() <= BLOCK_ALIGN
);

impl Header {
    /// The header of a new entry, with one reference: sections of these lengths, and `parts` held parts that cost
    /// `part_units` to copy or free. `None` past 4 GiB, which no session reaches.
    pub fn new(
        key: usize,
        secrets: usize,
        code: usize,
        blobs: usize,
        parts: usize,
        part_units: usize,
    ) -> Option<Header> {
        let heavy = part_units > SCHEDULER_BUDGET;
        Some(Header {
            refs: AtomicU32::new(1),
            parts: u32::try_from(parts)
                .ok()?
                .checked_mul(2)?
                .checked_add(u32::from(heavy))?,
            key_len: u32::try_from(key).ok()?,
            secret_len: u32::try_from(secrets).ok()?,
            code_len: u32::try_from(code).ok()?,
            blob_len: u32::try_from(blobs).ok()?,
        })
        .filter(|header| u32::try_from(header.len()).is_ok())
    }

    /// Held parts.
    pub fn parts(&self) -> usize {
        (self.parts / 2) as usize
    }

    /// Whether freeing the held parts costs more than a normal scheduler may spend: they are then freed on another
    /// thread.
    pub fn heavy(&self) -> bool {
        !self.parts.is_multiple_of(2)
    }

    /// Whether the block is a VM resource object: the entry has blobs.
    pub fn resource(&self) -> bool {
        self.blob_len > 0
    }

    /// What copying the entry out costs (`pack::copy_cost`), its parts costing `part_units`.
    pub fn cost(&self, part_units: usize) -> usize {
        copy_cost(
            self.code_len as usize,
            self.secret_len as usize,
            self.blob_len as usize,
            part_units,
        )
    }

    /// Bytes of the four sections together.
    pub fn len(&self) -> usize {
        [self.key_len, self.secret_len, self.code_len, self.blob_len]
            .iter()
            .map(|&n| n as usize)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the key lies in the entry's bytes.
    pub fn key(&self) -> Range<usize> {
        0..self.key_len as usize
    }

    /// Where the secret section lies in the entry's bytes.
    pub fn secrets(&self) -> Range<usize> {
        let start = self.key_len as usize;
        start..start + self.secret_len as usize
    }

    /// The sections of `bytes`, the entry's bytes; `None` if they are not as long as the header says.
    pub fn sections<'e>(&self, bytes: &'e [u8]) -> Option<Sections<'e>> {
        if bytes.len() != self.len() {
            return None;
        }
        let (key, rest) = bytes.split_at(self.key_len as usize);
        let (secrets, rest) = rest.split_at(self.secret_len as usize);
        let (code, blobs) = rest.split_at(self.code_len as usize);
        Some(Sections {
            key,
            secrets,
            code,
            blobs,
        })
    }

    /// Wipes the secret section of `bytes`, the entry's bytes, and nothing else.
    pub fn wipe_secrets(&self, bytes: &mut [u8]) {
        if let Some(secrets) = bytes.get_mut(self.secrets()) {
            wipe(secrets);
        }
    }

    /// Counts one more reference, as `Arc::clone` does.
    pub fn retain(&self) {
        // Relaxed, as `Arc`: a reference is only ever cloned from one that is alive.
        let before = self.refs.fetch_add(1, Ordering::Relaxed);
        if before > i32::MAX as u32 {
            // As `Arc` past `isize::MAX`: unreachable short of 2^31 clones (a store holds two, a cursor one), and
            // unsound to go on from.
            std::process::abort();
        }
    }

    /// Counts one reference less, and says whether it was the last: the caller then owns the block alone, with
    /// every use through other references finished before (Release, then Acquire on the last, as `Arc`).
    pub fn release(&self) -> bool {
        if self.refs.fetch_sub(1, Ordering::Release) != 1 {
            return false;
        }
        fence(Ordering::Acquire);
        true
    }
}

/// The bytes of the block of an entry with `parts` held parts of `part_bytes` each and `len` bytes.
pub fn block_bytes(parts: usize, part_bytes: usize, len: usize) -> Option<usize> {
    parts
        .checked_mul(part_bytes)?
        .checked_add(HEADER_BYTES)?
        .checked_add(len)
}

/// What the VM adds to a block of the NIF's: the allocator's header for a plain allocation, and for a resource
/// object its bookkeeping as well. OTP 26 and later add more. Calibrated against `erlang:memory(system)` at 100k
/// entries on OTP 25, 27 and 29 (`make bench` prints both figures).
pub fn overhead(resource: bool, otp_release: u32) -> usize {
    match (resource, otp_release > 25) {
        (false, false) => 16,
        (false, true) => 24,
        (true, false) => 76,
        (true, true) => 94,
    }
}

/// Bytes an entry whose block is `block` bytes owns: the block, in whole words as the allocators hand it out,
/// and the VM's overhead.
pub fn entry_bytes(block: usize, resource: bool, otp_release: u32) -> usize {
    block.next_multiple_of(8) + overhead(resource, otp_release)
}

/// Bytes a held part of `words` heap words owns: its reference count and header, the environment with the phony
/// process it carries (864 bytes), a heap fragment's header (48) and the fragment, whose 200 words of slack
/// every fragment of such an environment has. Payloads of shared binaries inside are not counted: they are
/// shared with whatever else holds them, as ETS's `memory` does not count them either.
pub fn held_bytes(words: usize) -> usize {
    64 + 864 + 48 + (words + 200) * 8
}
