//! An entry's bytes, kept in a VM resource so that its larger binaries reach processes without a copy.
//!
//! A lookup that built each binary of over 64 bytes afresh (a 1.2 KB peer certificate) would allocate and fill
//! it on every call, and read the whole entry from memory to do so. Instead the entry's bytes live in a
//! resource object, and such a binary is handed out with `enif_make_resource_binary`: a reference into the
//! entry's bytes that keeps them alive, as ETS hands out a reference to the binary it holds. The bytes a
//! process may hold that way are never written again. The entry's secret section (binaries of up to 64 bytes,
//! which the VM always copies) is never handed out by reference, so the entry may wipe it when it is dropped,
//! even while processes still hold certificates that point into the rest.
//!
//! The resource type has no destructor: the VM frees the bytes itself when the last reference goes, which
//! may be after this library is purged, without calling back into it. A type is opened per load of the
//! library; types of earlier loads live on while their resources do.

use std::ffi::c_void;
use std::ops::Range;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};

use rustler::sys::{
    enif_alloc_resource, enif_make_resource_binary, enif_release_resource, ErlNifEnv,
    ErlNifResourceType, ERL_NIF_TERM,
};
use rustler::Env;

use crate::raw;

static BYTES_TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(ptr::null_mut());

/// Opens the resource type; called from the library's load callback. Returns false if the VM refuses.
pub fn open(env: Env) -> bool {
    // SAFETY: called from load; the type has no destructor.
    let opened = unsafe { raw::open_resource_type(env, b"nif_session_cache_entry_bytes\0", None) };
    let opened = opened.map_or(ptr::null_mut(), NonNull::as_ptr);
    BYTES_TYPE.store(opened, Ordering::Release);
    !opened.is_null()
}

/// Our reference to one resource holding `len` bytes.
pub struct EntryBytes {
    data: NonNull<u8>,
    len: usize,
}

// SAFETY: the bytes are written only in `new` (before the value exists) and in `wipe_prefix`, which takes
// `&mut self` and touches bytes no binary refers to. Everything else only reads them; reference counts of
// resources are atomic, and a resource may be released on any thread.
unsafe impl Send for EntryBytes {}
unsafe impl Sync for EntryBytes {}

impl EntryBytes {
    /// A new resource holding `parts` one after another. `None` if the VM has no memory.
    pub fn new<const N: usize>(parts: [&[u8]; N]) -> Option<EntryBytes> {
        let resource_type = BYTES_TYPE.load(Ordering::Acquire);
        if resource_type.is_null() {
            return None;
        }
        let len: usize = parts.iter().map(|part| part.len()).sum();
        // SAFETY: the type is open; the allocation holds `len` bytes (at least one, so it is never empty),
        // which are filled before anything else can see them.
        unsafe {
            let data = NonNull::new(enif_alloc_resource(resource_type, len.max(1)) as *mut u8)?;
            let mut at = 0;
            for part in parts {
                ptr::copy_nonoverlapping(part.as_ptr(), data.as_ptr().add(at), part.len());
                at += part.len();
            }
            Some(EntryBytes { data, len })
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes, alive as long as our reference.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }

    /// The first `len` bytes, to be wiped. The caller must never have handed any of them out with `binary`.
    pub fn prefix_mut(&mut self, len: usize) -> &mut [u8] {
        let len = len.min(self.len);
        // SAFETY: in bounds; no binary refers to these bytes (the caller's promise), and `&mut self` excludes
        // every other reader of this entry.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), len) }
    }

    /// A binary of the bytes in `range`, referring to them rather than copying. `None` if out of bounds.
    ///
    /// # Safety
    /// `env` must be the live environment of the running NIF call.
    pub unsafe fn binary(&self, env: *mut ErlNifEnv, range: Range<usize>) -> Option<ERL_NIF_TERM> {
        let bytes = self.as_slice().get(range)?;
        Some(enif_make_resource_binary(
            env,
            self.data.as_ptr() as *const c_void,
            bytes.as_ptr() as *const c_void,
            bytes.len(),
        ))
    }
}

impl Drop for EntryBytes {
    fn drop(&mut self) {
        // SAFETY: releases the reference `new` took; binaries handed out hold their own.
        unsafe { enif_release_resource(self.data.as_ptr() as *const c_void) }
    }
}
