//! Entries live in VM resource objects, so that their larger binaries reach processes without a copy.
//!
//! A lookup that built each binary of over 64 bytes afresh (a 1.2 KB peer certificate) would allocate and fill
//! it on every call, and read the whole entry from memory to do so. Instead an entry (`packed.rs`) is laid out
//! in one resource object, and such a binary is handed out with `enif_make_resource_binary`: a reference into
//! the entry's bytes that keeps the object alive, as ETS hands out a reference to the binary it holds.
//!
//! The resource type has no destructor: the VM frees the object itself when its last reference goes, which
//! may be after this library is purged, without calling back into it. An entry therefore finishes with its
//! object (wipes its secrets, drops its held parts) before it gives up its own reference, and the VM's count
//! only decides when the memory is returned. A type is opened per load of the library; types of earlier loads
//! live on while their resources do.

use std::ffi::c_void;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};

use rustler::sys::{
    enif_alloc_resource, enif_make_resource_binary, enif_release_resource, ErlNifEnv,
    ErlNifResourceType, ERL_NIF_TERM,
};
use rustler::Env;

use crate::raw;

static BLOCK_TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(ptr::null_mut());

/// Opens the resource type; called from the library's load callback. Returns false if the VM refuses.
pub fn open(env: Env) -> bool {
    // SAFETY: called from load; the type has no destructor.
    let opened = unsafe { raw::open_resource_type(env, b"nif_session_cache_entry_bytes\0", None) };
    let opened = opened.map_or(ptr::null_mut(), NonNull::as_ptr);
    BLOCK_TYPE.store(opened, Ordering::Release);
    !opened.is_null()
}

/// A new resource object of `len` bytes (at least one), uninitialised, whose start is aligned to `align`, with
/// one reference owned by the caller. `None` if the VM has no memory or gives a block aligned less strictly.
pub fn alloc(len: usize, align: usize) -> Option<NonNull<u8>> {
    let resource_type = BLOCK_TYPE.load(Ordering::Acquire);
    if resource_type.is_null() {
        return None;
    }
    // SAFETY: the type is open. The VM aligns resource data for any C type (8 bytes here); the check below
    // makes that an observed fact rather than an assumption.
    let block =
        NonNull::new(unsafe { enif_alloc_resource(resource_type, len.max(1)) }.cast::<u8>())?;
    if block.as_ptr().align_offset(align) != 0 {
        // SAFETY: the reference taken just above, never shared.
        unsafe { release(block) };
        return None;
    }
    Some(block)
}

/// Gives up one reference to a block from [`alloc`]; the VM frees it with the last one.
///
/// # Safety
/// `block` must come from [`alloc`], and the caller must own the reference it gives up.
pub unsafe fn release(block: NonNull<u8>) {
    enif_release_resource(block.as_ptr() as *const c_void);
}

/// A binary of `bytes`, which lie inside `block`, referring to them rather than copying: it keeps the block
/// alive. Nothing may write to those bytes while the block lives.
///
/// # Safety
/// `env` must be the live environment of the running NIF call; `block` must be a live block from [`alloc`] and
/// `bytes` a slice of it.
pub unsafe fn binary(env: *mut ErlNifEnv, block: NonNull<u8>, bytes: &[u8]) -> ERL_NIF_TERM {
    enif_make_resource_binary(
        env,
        block.as_ptr() as *const c_void,
        bytes.as_ptr() as *const c_void,
        bytes.len(),
    )
}
