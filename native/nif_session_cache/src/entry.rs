//! An entry's memory: one block holding a [`Header`], the entry's held parts and its bytes, behind a counted
//! reference ([`Packed`]) that wipes the secret section when its last clone goes. What the bytes mean is
//! `packed.rs`'s business: it writes them (`Packed::pack`) and reads them back (`Packed::session`).
//!
//! An entry with a blob section (a peer certificate) lives in a VM resource object (`bytes.rs`), so that its
//! blobs reach processes as binaries that refer to it. Any other entry, a plain server session among them, is a
//! plain allocation: a resource object's own bookkeeping costs 76 to 94 bytes, a third of such an entry.
//!
//! Nothing here implements Debug or Display: an entry holds a master secret.

use std::alloc::Layout;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;

use session_codec::wipe;
use session_store::Value;

use crate::bytes;
use crate::held::Held;
use crate::packed::copy_cost;
use crate::reaper;
use crate::weight;

/// A counted reference to one entry, which lives in one block: a [`Header`], the entry's held parts (an `Arc`
/// each), then its bytes in four sections. First the key's canonical bytes (`key.rs`), which the store's entry
/// map compares with instead of keeping its own copy; then the secret section, the bytes of binaries of up to
/// `SECRET_BINARY_MAX` bytes in the order of their `SECRET` tags; then the encoding of the session followed by
/// that of its key term (a lookup reads the first, a fold both), then the blob section, the bytes of the larger inlined binaries in the order of their `BINARY` tags. A lookup reads the
/// header and the first three sections, a few cache lines together, and never the blobs, which it hands out by
/// reference.
///
/// Cloning is an `Arc`'s clone, counted in the header. The count is of the store's and cursors' references
/// only: when the last goes, the entry wipes its secret section, drops its held parts and frees its block, or,
/// in a resource object, gives up its reference to it, which binaries handed out may keep alive (their bytes
/// are never written).
pub struct Packed {
    header: NonNull<Header>,
}

/// Lengths of an entry's first three sections, as packing found them.
pub(crate) struct Lengths {
    pub key: u32,
    pub secret: u32,
    pub code: u32,
    /// Whether the entry costs more than `packed::SCHEDULER_BUDGET` to copy out (`Packed::cost`), so that its
    /// held parts are too much to free on a normal scheduler.
    pub heavy: bool,
}

/// The start of an entry's block, six 32-bit words; its held parts and then its bytes follow it.
#[repr(C)]
pub(crate) struct Header {
    /// Clones of the `Packed` that refers to this entry.
    refs: AtomicU32,
    /// Four times the number of held parts (numbered in the order their `HELD` tags appear), plus two if they
    /// are to be freed off the schedulers (`Lengths::heavy`), plus one if the block is a VM resource object (the
    /// entry has blobs), else a plain allocation.
    parts: u32,
    /// Lengths of the key, the secret section and the encoding; the blob section is the rest.
    pub key_len: u32,
    pub secret_len: u32,
    pub code_len: u32,
    /// Length of the four sections together.
    pub len: u32,
}

impl Header {
    fn held(&self) -> usize {
        (self.parts >> 2) as usize
    }

    fn heavy(&self) -> bool {
        self.parts & 2 == 2
    }

    fn resource(&self) -> bool {
        self.parts & 1 == 1
    }
}

// SAFETY: after `new` returns, the header, held parts and bytes are only read, except `refs` (atomic) and the
// secret section, which the last reference wipes when nothing else can reach the entry. Held parts are `Send`
// and `Sync`; blocks of either kind may be freed on any thread.
unsafe impl Send for Packed {}
unsafe impl Sync for Packed {}

impl Packed {
    /// A new entry of `sections` (key, secrets, encoding, blobs), one after another, behind its header and
    /// `held` (emptied); `None` if the VM has no memory.
    pub(crate) fn new(
        held: &mut Vec<Arc<Held>>,
        lengths: Lengths,
        sections: [&[u8]; 4],
    ) -> Option<Packed> {
        let len: usize = sections.iter().map(|section| section.len()).sum();
        let resource = !sections[3].is_empty();
        let header = Header {
            refs: AtomicU32::new(1),
            parts: u32::try_from(held.len())
                .ok()?
                .checked_mul(4)?
                .checked_add(2 * u32::from(lengths.heavy) + u32::from(resource))?,
            key_len: lengths.key,
            secret_len: lengths.secret,
            code_len: lengths.code,
            len: u32::try_from(len).ok()?,
        };
        let layout = block_layout(held.len(), len)?;
        let block = if resource {
            bytes::alloc(layout.size(), layout.align())?
        } else {
            // SAFETY: the layout's size is at least the header's, never zero.
            NonNull::new(unsafe { std::alloc::alloc(layout) })?
        };
        // SAFETY: the block is `layout` (aligned for `Header`, and so for the held parts' pointers, which follow
        // the header at a multiple of their alignment) and ours alone; the held parts and sections fill exactly
        // the rest. The held parts move into the block and `held` forgets them.
        unsafe {
            let header_at = block.cast::<Header>();
            header_at.as_ptr().write(header);
            let held_at = block.as_ptr().add(HEADER_BYTES).cast::<Arc<Held>>();
            let count = held.len();
            ptr::copy_nonoverlapping(held.as_ptr(), held_at, count);
            held.set_len(0);
            let mut at = held_at.add(count).cast::<u8>();
            for section in sections {
                ptr::copy_nonoverlapping(section.as_ptr(), at, section.len());
                at = at.add(section.len());
            }
            Some(Packed { header: header_at })
        }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the header lives as long as any `Packed` that refers to it.
        unsafe { self.header.as_ref() }
    }

    /// The entry's held parts, numbered as their `HELD` tags number them.
    pub(crate) fn held(&self) -> &[Arc<Held>] {
        // SAFETY: `held` initialised parts follow the header, alive as long as the header.
        unsafe { std::slice::from_raw_parts(self.held_at(), self.header().held()) }
    }

    /// The entry's four sections.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes follow the held parts, alive as long as the header.
        unsafe { std::slice::from_raw_parts(self.data(), self.header().len as usize) }
    }

    /// The cache line before a resource object's header: the VM's bookkeeping of it, whose reference count every
    /// binary made of the entry increments and whose allocator header freeing it writes. Only ever prefetched,
    /// never dereferenced; `None` for a plain allocation, which binaries never refer to.
    pub(crate) fn vm_line(&self) -> Option<*const u8> {
        self.header().resource().then(|| {
            self.header
                .as_ptr()
                .cast::<u8>()
                .wrapping_sub(64)
                .cast_const()
        })
    }

    /// The entry's resource object, which binaries made of its blobs refer to (`bytes.rs`); `None` for an entry
    /// without blobs, which is a plain allocation.
    pub(crate) fn block(&self) -> Option<NonNull<u8>> {
        self.header().resource().then(|| self.header.cast())
    }

    fn held_at(&self) -> *mut Arc<Held> {
        // SAFETY: in bounds of the block (`new`).
        unsafe { self.header.as_ptr().cast::<u8>().add(HEADER_BYTES).cast() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: in bounds of the block (`new`).
        unsafe { self.held_at().add(self.header().held()).cast() }
    }

    /// What copying the entry out costs (`packed::copy_cost`). O(held parts).
    pub fn cost(&self) -> usize {
        let held_words: usize = self.held().iter().map(|held| held.words()).sum();
        copy_cost(
            self.header().code_len as usize,
            held_words,
            self.header().held(),
        )
    }
}

/// The block of an entry with `held` parts and `len` bytes; `None` past what a layout can describe.
fn block_layout(held: usize, len: usize) -> Option<Layout> {
    let size = held
        .checked_mul(std::mem::size_of::<Arc<Held>>())?
        .checked_add(HEADER_BYTES)?
        .checked_add(len)?;
    Layout::from_size_align(size, BLOCK_ALIGN).ok()
}

impl Value for Packed {
    fn key(&self) -> &[u8] {
        let bytes = self.bytes();
        &bytes[..(self.header().key_len as usize).min(bytes.len())]
    }

    fn weight(&self) -> usize {
        let header = self.header();
        let block =
            block_layout(header.held(), header.len as usize).map_or(0, |layout| layout.size());
        weight::entry_bytes(header.resource(), block)
    }

    /// A lookup compares the key behind the header, reads the first sections and makes binaries that count
    /// a reference in the VM's bookkeeping: start all of those loads before the comparison waits for the first.
    fn prefetch_for_read(&self) {
        if let Some(line) = self.vm_line() {
            prefetch(line, 64, true);
        }
        prefetch(self.header.as_ptr().cast(), 4 * 64, false);
    }

    /// Dropping the last reference writes the header and the secret section, behind the key (most entries' fit
    /// in the first four cache lines), then the allocator's bookkeeping before the block and the allocator's
    /// header of the block after it, as it frees this one. A delete otherwise finds each cold and waits for
    /// them line by line, behind the store's locks. Prefetched for writing, those loads overlap the store's
    /// bookkeeping.
    fn prefetch_for_drop(&self) {
        let start = self.header.as_ptr().cast::<u8>().wrapping_sub(64);
        prefetch(start, 5 * 64, true);
        prefetch(
            self.data().wrapping_add(self.header().len as usize),
            64,
            true,
        );
    }
}

impl Clone for Packed {
    fn clone(&self) -> Packed {
        // Relaxed, as `Arc` does: a reference is only ever cloned from one that is alive.
        let before = self.header().refs.fetch_add(1, Ordering::Relaxed);
        if before > i32::MAX as u32 {
            // As `Arc` does past `isize::MAX`: unreachable short of 2^31 clones (a store holds two, a cursor or
            // a queued publish one), and unsound to go on from.
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
        let (len, secret_at) = (header.len as usize, header.key_len as usize);
        let secret_at = secret_at.min(len);
        let secret_len = (header.secret_len as usize).min(len - secret_at);
        let (held, resource) = (header.held(), header.resource());
        // An entry too large to pack or copy on a normal scheduler is too large to free on one: releasing its
        // held parts releases each one's environment and every reference-counted binary inside them. They are
        // freed on the reaper thread instead (they hold no secret: see `packed.rs`).
        let heavy = header.heavy();
        // SAFETY: this was the last reference, so nothing else reads the entry. The secret section was never
        // handed out (the VM copies binaries of up to 64 bytes), so no binary refers to it. The held parts are
        // dropped once, here or, moved out of the block, on the reaper, then the block is freed with the layout
        // it was allocated with, or our reference to the resource object is given up (binaries may keep it
        // alive). The header needs no drop.
        unsafe {
            wipe(std::slice::from_raw_parts_mut(
                self.data().add(secret_at),
                secret_len,
            ));
            if heavy {
                let parts: Vec<Arc<Held>> = (0..held)
                    .map(|i| ptr::read(self.held_at().add(i)))
                    .collect();
                reaper::dispose_later(Box::new(parts));
            } else {
                ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.held_at(), held));
            }
            if resource {
                bytes::release(self.header.cast());
            } else if let Some(layout) = block_layout(held, len) {
                std::alloc::dealloc(self.header.as_ptr().cast(), layout);
            }
        }
    }
}

/// Bytes from the start of an entry's block to its held parts: the header, rounded up to their alignment.
const HEADER_BYTES: usize = std::mem::size_of::<Header>().next_multiple_of(BLOCK_ALIGN);

/// A block's alignment: the header's and the held parts' pointers'.
const BLOCK_ALIGN: usize = {
    let (header, held) = (
        std::mem::align_of::<Header>(),
        std::mem::align_of::<Arc<Held>>(),
    );
    if header > held {
        header
    } else {
        held
    }
};

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
