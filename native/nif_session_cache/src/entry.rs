//! The memory of one stored entry, as `session_codec::entry` plans it: one block holding a header, the entry's
//! held parts (an `Arc` each) and its bytes (key, secret section, code, blobs), behind a counted reference. This
//! module only allocates, reads and frees that block; where things lie, when the last reference has gone and what
//! to wipe then are decided in the plan, and tested there.
//!
//! An entry with blobs (a peer certificate) lives in a VM resource object, so that a copy hands its blobs out as
//! binaries that refer to it, as ETS hands out a shared binary: a lookup neither copies nor reads them. The type
//! has no destructor: an entry finishes with its object (wipes its secrets, drops its parts) before it gives up
//! its reference, and the VM frees the memory with the last binary. Any other entry, a plain server session
//! among them, is a plain allocation through the VM's allocator (rustler's `allocator` feature). Either way
//! `erlang:memory(system)` sees the block, and `info/1`'s figure matches it (`Value::weight`).
//!
//! Nothing here implements Debug: an entry holds a master secret.

use std::alloc::Layout;
use std::ffi::CStr;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::Arc;

use rustler::sys::{
    enif_alloc_resource, enif_init_resource_type, enif_release_resource, ErlNifResourceFlags,
    ErlNifResourceType, ErlNifResourceTypeInit,
};
use rustler::{Env, Term};
use session_codec::entry::{block_bytes, entry_bytes, Header, BLOCK_ALIGN, HEADER_BYTES};
use session_codec::pack::{Packer, PART_UNITS};
use session_codec::unpack::unpack;
use session_store::Value;

use crate::held::Held;
use crate::reaper;
use crate::term::Builder;

/// The OTP release the library runs on, which decides what the VM's allocators add to each block.
static OTP_RELEASE: AtomicU32 = AtomicU32::new(u32::MAX);

/// The resource type of the current load for entries with blobs; those of earlier loads live on while their
/// objects do.
static BLOCK_TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(ptr::null_mut());

/// Called from the library's load or upgrade callback, with the OTP release and its environment: opens the
/// blocks' type, which has no callbacks (the module's doc says why).
pub fn load(env: Env, release: u32) -> bool {
    OTP_RELEASE.store(release, Ordering::Relaxed);
    let none = ErlNifResourceTypeInit {
        dtor: ptr::null(),
        stop: ptr::null(),
        down: ptr::null(),
        members: 0,
        dyncall: ptr::null(),
    };
    let opened = open_type(env, c"nif_session_cache_entry", &none);
    BLOCK_TYPE.store(opened.cast_mut(), Ordering::Release);
    !opened.is_null()
}

/// Takes the resource type `name` over from a loaded library that has it, else creates it: from a load or upgrade
/// callback, with its environment. Null if the VM refuses.
pub fn open_type(
    env: Env,
    name: &CStr,
    init: &ErlNifResourceTypeInit,
) -> *const ErlNifResourceType {
    let (env, name) = (env.as_c_arg(), name.as_ptr());
    let (takeover, create) = (
        ErlNifResourceFlags::ERL_NIF_RT_TAKEOVER,
        ErlNifResourceFlags::ERL_NIF_RT_CREATE,
    );
    // SAFETY: called from load or upgrade, with its environment; `init`'s callbacks are the caller's to vouch for.
    // TAKEOVER alone finds only a type a loaded library has; CREATE alone makes one.
    unsafe {
        match enif_init_resource_type(env, name, init, takeover, ptr::null_mut()) {
            taken if !taken.is_null() => taken,
            _ => enif_init_resource_type(env, name, init, create, ptr::null_mut()),
        }
    }
}

/// A counted reference to one entry.
pub struct Entry {
    header: NonNull<Header>,
}

const PART_BYTES: usize = std::mem::size_of::<Arc<Held>>();
const _: () = assert!(
    std::mem::align_of::<Arc<Held>>() <= BLOCK_ALIGN && HEADER_BYTES.is_multiple_of(PART_BYTES)
);

// SAFETY: after `new` returns, the block is only read, but for the header's atomic count and for the wipe of the
// secret section by the last reference, when nothing else can reach the entry. Held parts are `Send` and `Sync`,
// and a block may be freed on any thread.
unsafe impl Send for Entry {}
// SAFETY: as for `Send`.
unsafe impl Sync for Entry {}

impl Entry {
    /// A new entry of `key` (its canonical bytes) and what `packer` made, whose parts move into the block. `None`
    /// if the VM has no memory, or past 4 GiB.
    pub fn new(key: &[u8], packer: &mut Packer<Arc<Held>>) -> Option<Entry> {
        let (secrets, code, blobs) = (&packer.secrets, &packer.code, &packer.blobs);
        let header = Header::new(
            key.len(),
            secrets.len(),
            code.len(),
            blobs.len(),
            packer.parts.len(),
            packer.part_units(),
        )?;
        let layout = layout(packer.parts.len(), header.len())?;
        let block_type = BLOCK_TYPE.load(Ordering::Acquire);
        // SAFETY: the layout's size is at least the header's, never zero. A resource object's data is aligned for
        // any C type (erl_nif's guarantee), 8 bytes here, which is `BLOCK_ALIGN`.
        let block = NonNull::new(unsafe {
            match header.resource() {
                true if block_type.is_null() => return None,
                true => enif_alloc_resource(block_type, layout.size()).cast::<u8>(),
                false => std::alloc::alloc(layout),
            }
        })?;
        // SAFETY: the block is `layout`, aligned for the header and the parts' pointers, and ours alone. The header,
        // the parts (moved: `packer` forgets them) and the sections fill it exactly, one after another.
        unsafe {
            let header_at = block.cast::<Header>();
            header_at.as_ptr().write(header);
            let parts_at = block.as_ptr().add(HEADER_BYTES).cast::<Arc<Held>>();
            let count = packer.parts.len();
            ptr::copy_nonoverlapping(packer.parts.as_ptr(), parts_at, count);
            packer.parts.set_len(0);
            let mut at = parts_at.add(count).cast::<u8>();
            for section in [key, secrets, code, blobs] {
                ptr::copy_nonoverlapping(section.as_ptr(), at, section.len());
                at = at.add(section.len());
            }
            Some(Entry { header: header_at })
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the header lives as long as any `Entry` that refers to it.
        unsafe { self.header.as_ref() }
    }

    /// The held parts, numbered as their `PART` tags number them.
    fn parts(&self) -> &[Arc<Held>] {
        // SAFETY: `parts()` initialised parts follow the header, alive as long as it.
        unsafe { std::slice::from_raw_parts(self.parts_at(), self.header().parts()) }
    }

    /// The three sections.
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len()` initialised bytes follow the parts, alive as long as the header.
        unsafe { std::slice::from_raw_parts(self.bytes_at(), self.header().len()) }
    }

    fn parts_at(&self) -> *mut Arc<Held> {
        self.header
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(HEADER_BYTES)
            .cast()
    }

    fn bytes_at(&self) -> *mut u8 {
        self.parts_at().wrapping_add(self.header().parts()).cast()
    }

    /// Whether its held parts are freed off the schedulers when it goes.
    pub fn heavy(&self) -> bool {
        self.header().heavy()
    }

    /// What copying the entry out costs, in `SCHEDULER_BUDGET`'s units. O(parts): an OTP session has two or three.
    pub fn cost(&self) -> usize {
        let part_units = self
            .parts()
            .iter()
            .map(|part| part.words() + PART_UNITS)
            .sum();
        self.header().cost(part_units)
    }

    /// The session, or with `with_key` the `{Key, Session}` pair, on the heap of `env`'s process. `None` if the VM
    /// has no memory. O(`cost`), which the caller checked against where it runs.
    pub fn copy_out<'a>(&self, env: Env<'a>, with_key: bool) -> Option<Term<'a>> {
        let sections = self.header().sections(self.bytes())?;
        let parts = self.parts();
        let block = self.header().resource().then_some(self.header.cast::<u8>());
        let mut builder = Builder::new(env, block, |index| Some(parts.get(index)?.copy_to(env)));
        STACK.with_borrow_mut(|stack| {
            let term = unpack(sections, &mut builder, stack, with_key)?;
            Some(builder.made(term))
        })
    }
}

thread_local! {
    /// Unpacking's scratch space, one per scheduler thread, so that a lookup allocates nothing of its own. It
    /// holds term handles only, never bytes of a session.
    static STACK: std::cell::RefCell<Vec<rustler::sys::ERL_NIF_TERM>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The block of an entry with `parts` held parts and `len` bytes.
fn layout(parts: usize, len: usize) -> Option<Layout> {
    Layout::from_size_align(block_bytes(parts, PART_BYTES, len)?, BLOCK_ALIGN).ok()
}

impl Value for Entry {
    fn key(&self) -> &[u8] {
        &self.bytes()[self.header().key()]
    }

    fn weight(&self) -> usize {
        let header = self.header();
        let block = block_bytes(header.parts(), PART_BYTES, header.len()).unwrap_or(0);
        entry_bytes(
            block,
            header.resource(),
            OTP_RELEASE.load(Ordering::Relaxed),
        )
    }
}

impl Clone for Entry {
    fn clone(&self) -> Entry {
        self.header().retain();
        Entry {
            header: self.header,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if !self.header().release() {
            return;
        }
        let header = self.header();
        let (parts, heavy, len, resource) = (
            header.parts(),
            header.heavy(),
            header.len(),
            header.resource(),
        );
        // The parts are dropped once, here or, moved out, on the reaper (parts too costly to free on a scheduler
        // hold no secret); then our reference to the resource object is given up, or the block freed.
        // SAFETY: this was the last reference, so nothing else reads the block: its secret section may be written,
        // which the plan restricts the wipe to (binaries made of the blobs refer to those only).
        unsafe {
            self.header()
                .wipe_secrets(std::slice::from_raw_parts_mut(self.bytes_at(), len));
            if heavy {
                let moved: Vec<Arc<Held>> = (0..parts)
                    .map(|i| ptr::read(self.parts_at().add(i)))
                    .collect();
                reaper::later(Box::new(moved));
            } else {
                ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.parts_at(), parts));
            }
            if resource {
                enif_release_resource(self.header.as_ptr().cast());
            } else if let Some(layout) = layout(parts, len) {
                std::alloc::dealloc(self.header.as_ptr().cast(), layout);
            }
        }
    }
}
