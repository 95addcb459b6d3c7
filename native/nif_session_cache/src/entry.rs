//! An entry's memory: one VM resource object (`bytes.rs`) holding a [`Header`] and the entry's bytes, behind a
//! counted reference ([`Packed`]) that wipes the secret section when its last clone goes. What the bytes mean is
//! `packed.rs`'s business: it writes them (`Packed::pack`) and reads them back (`Packed::session`).
//!
//! Nothing here implements Debug or Display: an entry holds a master secret.

use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Arc;

use session_codec::wipe;
use session_store::Value;

use crate::bytes;
use crate::held::Held;
use crate::weight;

/// A counted reference to one entry, which lives in one VM resource object (`bytes.rs`): a [`Header`], then
/// the entry's bytes in four sections. First the key's canonical bytes (`key.rs`), which the store's entry map
/// compares with instead of keeping its own copy; then the secret section, the bytes of binaries of up to
/// `SECRET_BINARY_MAX` bytes in the order of their `SECRET` tags; then the encoding of `{Key, Session}`; then the
/// blob section, the bytes of the larger inlined binaries in the order of their `BINARY` tags. A lookup reads the
/// header and the first three sections, a few cache lines together, and never the blobs, which it hands out by
/// reference.
///
/// Cloning is an `Arc`'s clone, counted in the header. The count is of the store's and cursors' references
/// only: when the last goes, the entry wipes its secret section, drops its held parts and gives up its
/// reference to the object, which binaries handed out may keep alive (their bytes are never written).
pub struct Packed {
    header: NonNull<Header>,
}

/// Lengths of an entry's first three sections, as packing found them.
pub(crate) struct Lengths {
    pub key: u32,
    pub secret: u32,
    pub code: u32,
}

/// The start of an entry's resource object; its bytes follow it.
#[repr(C)]
pub(crate) struct Header {
    /// Clones of the `Packed` that refers to this entry.
    pub refs: AtomicUsize,
    pub held: HeldParts,
    /// Where the session starts: its encoding, and its first bytes in the secret and blob sections.
    pub session_at: Cursor,
    /// Lengths of the key, the secret section and the encoding; the blob section is the rest.
    pub key_len: u32,
    pub secret_len: u32,
    pub code_len: u32,
    /// Length of the four sections together.
    pub len: usize,
    pub weight: usize,
}

// SAFETY: after `pack` returns, the header and bytes are only read, except `refs` (atomic) and the secret
// section, which the last reference wipes when nothing else can reach the entry. Held parts are `Send` and
// `Sync`; resource objects may be released on any thread.
unsafe impl Send for Packed {}
unsafe impl Sync for Packed {}

/// An entry's held parts, numbered in the order their `HELD` tags appear: the first `INLINE_HELD` in place
/// (an OTP session has two, its certificate chain and private key), the rest in a vector, so that a typical
/// entry makes no allocation for them.
#[derive(Default)]
pub(crate) struct HeldParts {
    inline: [Option<Arc<Held>>; INLINE_HELD],
    spill: Vec<Arc<Held>>,
}

const INLINE_HELD: usize = 2;

impl HeldParts {
    pub fn push(&mut self, held: Arc<Held>) {
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(held),
            None => self.spill.push(held),
        }
    }

    pub fn len(&self) -> usize {
        self.inline.iter().flatten().count() + self.spill.len()
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Held>> {
        match index.checked_sub(INLINE_HELD) {
            None => self.inline[index].as_ref(),
            Some(spilled) => self.spill.get(spilled),
        }
    }
}

/// A position in each section of an entry.
#[derive(Clone, Copy, Default)]
pub(crate) struct Cursor {
    pub code: u32,
    pub secret: u32,
    pub blob: u32,
}

impl Packed {
    /// A new entry of `sections` (key, secrets, encoding, blobs), one after another, behind its header; `None`
    /// if the VM has no memory.
    pub(crate) fn new(
        held: HeldParts,
        session_at: Cursor,
        lengths: Lengths,
        sections: [&[u8]; 4],
    ) -> Option<Packed> {
        let len = sections.iter().map(|section| section.len()).sum();
        let header = Header {
            refs: AtomicUsize::new(1),
            weight: weight::entry_bytes(len, held.len()),
            held,
            session_at,
            key_len: lengths.key,
            secret_len: lengths.secret,
            code_len: lengths.code,
            len,
        };
        let block = bytes::alloc(HEADER_BYTES + len, std::mem::align_of::<Header>())?;
        // SAFETY: the block is `HEADER_BYTES + len` bytes, aligned for `Header`, and ours alone; the sections
        // fill exactly `len` bytes after the header.
        unsafe {
            let mut at = block.as_ptr().add(HEADER_BYTES);
            for section in sections {
                ptr::copy_nonoverlapping(section.as_ptr(), at, section.len());
                at = at.add(section.len());
            }
            let header_at = block.cast::<Header>();
            header_at.as_ptr().write(header);
            Some(Packed { header: header_at })
        }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the header lives as long as any `Packed` that refers to it.
        unsafe { self.header.as_ref() }
    }

    /// The entry's four sections.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes follow the header, alive as long as the header.
        unsafe { std::slice::from_raw_parts(self.data(), self.header().len) }
    }

    /// The cache line before the header: the VM's bookkeeping of the resource object, whose reference count
    /// every binary made of the entry increments and whose allocator header freeing it writes. Only ever
    /// prefetched, never dereferenced.
    pub(crate) fn vm_line(&self) -> *const u8 {
        self.header.as_ptr().cast::<u8>().wrapping_sub(64)
    }

    /// The start of the entry's block, which binaries made of its bytes refer to (`bytes.rs`).
    pub(crate) fn block(&self) -> NonNull<u8> {
        self.header.cast()
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: in bounds of the block (`new`).
        unsafe { self.header.as_ptr().cast::<u8>().add(HEADER_BYTES) }
    }

    /// What copying the entry out costs, in `packed::SCHEDULER_BUDGET`'s units: its encoding's bytes and its held parts'
    /// words. Blobs are handed out by reference. O(held parts).
    pub fn cost(&self) -> usize {
        let header = self.header();
        let held = &header.held;
        let held_words: usize = (0..held.len())
            .filter_map(|index| held.get(index))
            .map(|held| held.words())
            .sum();
        header.code_len as usize + held_words
    }
}

impl Value for Packed {
    fn key(&self) -> &[u8] {
        let key_len = self.header().key_len as usize;
        &self.bytes()[..key_len.min(self.header().len)]
    }

    fn weight(&self) -> usize {
        self.header().weight
    }

    /// A lookup compares the key behind the header, reads the first sections and makes binaries that count
    /// a reference in the VM's bookkeeping: start all of those loads before the comparison waits for the first.
    fn prefetch_for_read(&self) {
        prefetch(self.vm_line(), 64, true);
        prefetch(self.header.as_ptr().cast(), 4 * 64, false);
    }

    /// Dropping the last reference writes the header and the secret section, behind the key (most entries' fit
    /// in the first four cache lines), then the VM's bookkeeping before the block and the allocator's header
    /// of the block after it, as it frees this one. A delete otherwise finds each cold and waits for them line
    /// by line, behind the store's locks. Prefetched for writing, those loads overlap the store's bookkeeping.
    fn prefetch_for_drop(&self) {
        prefetch(self.vm_line(), 5 * 64, true);
        prefetch(self.data().wrapping_add(self.header().len), 64, true);
    }
}

impl Clone for Packed {
    fn clone(&self) -> Packed {
        // Relaxed, as `Arc` does: a reference is only ever cloned from one that is alive.
        let before = self.header().refs.fetch_add(1, Ordering::Relaxed);
        if before > isize::MAX as usize {
            // As `Arc` does: unreachable short of 2^63 clones, and unsound to go on from.
            std::process::abort();
        }
        Packed {
            header: self.header,
        }
    }
}

impl Drop for Packed {
    fn drop(&mut self) {
        // Release, then Acquire on the last one, as `Arc` does: every use through other references happens
        // before the entry is finished with.
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let header = self.header();
        let secret_at = (header.key_len as usize).min(header.len);
        let secret_len = (header.secret_len as usize).min(header.len - secret_at);
        // SAFETY: this was the last reference, so nothing else reads the entry. The secret section was never
        // handed out (the VM copies binaries of up to 64 bytes), so no binary refers to it. The header is
        // dropped once, then our reference to the block is given up; binaries may keep the block alive.
        unsafe {
            wipe(std::slice::from_raw_parts_mut(
                self.data().add(secret_at),
                secret_len,
            ));
            ptr::drop_in_place(self.header.as_ptr());
            bytes::release(self.header.cast());
        }
    }
}

/// Bytes from the start of an entry's block to its sections: the header, rounded up to a word.
const HEADER_BYTES: usize = std::mem::size_of::<Header>().next_multiple_of(8);

/// Asks the CPU to start loading the cache lines from `start` to `start + len`, for reading or for writing, so
/// that misses a cold entry would take one after another overlap instead. A hint: it never faults, whatever the
/// addresses, and does nothing off x86_64.
pub(crate) fn prefetch(start: *const u8, len: usize, for_write: bool) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch instructions read nothing into the program and never fault.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        for offset in (0..len).step_by(64) {
            let line = start.wrapping_add(offset).cast::<i8>();
            if for_write {
                _mm_prefetch::<_MM_HINT_ET0>(line);
            } else {
                _mm_prefetch::<_MM_HINT_T0>(line);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len, for_write);
}
