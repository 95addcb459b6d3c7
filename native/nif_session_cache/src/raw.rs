//! The few term inspections rustler offers only with an allocation, done without one. Hot paths (key encoding
//! runs on every lookup) use these; everything else uses rustler's safe API.

use std::ffi::c_void;
use std::ptr::NonNull;

use rustler::sys::{
    enif_get_string, enif_get_tuple, enif_open_resource_type, enif_release_binary,
    enif_term_to_binary, ErlNifBinary, ErlNifCharEncoding, ErlNifEnv, ErlNifResourceFlags,
    ErlNifResourceType, ERL_NIF_TERM,
};
use rustler::{Env, Term};

/// The elements of a tuple, borrowed from the term itself (rustler's `get_tuple` copies them into a Vec).
pub fn tuple_elements(term: Term) -> Option<TupleElements> {
    let env = term.get_env();
    let mut arity = 0;
    let mut array: *const ERL_NIF_TERM = std::ptr::null();
    // SAFETY: enif_get_tuple only reads the term; on success `array` points at `arity` elements that live as
    // long as the term's environment, which the lifetime 'a ties the returned terms to.
    let elements = unsafe {
        if enif_get_tuple(env.as_c_arg(), term.as_c_arg(), &mut arity, &mut array) == 0 {
            return None;
        }
        if arity == 0 || array.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(array, arity as usize)
        }
    };
    Some(TupleElements {
        env,
        elements: elements.iter(),
    })
}

/// The elements of a tuple, as terms of its environment.
pub struct TupleElements<'a> {
    env: Env<'a>,
    elements: std::slice::Iter<'a, ERL_NIF_TERM>,
}

impl<'a> Iterator for TupleElements<'a> {
    type Item = Term<'a>;

    fn next(&mut self) -> Option<Term<'a>> {
        // SAFETY: each element is a valid term of the tuple's environment (`tuple_elements`).
        self.elements
            .next()
            .map(|&element| unsafe { Term::new(self.env, element) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.elements.size_hint()
    }
}

impl ExactSizeIterator for TupleElements<'_> {}

/// Copies a proper list of integers 0..=255 (a Latin-1 string such as a host name) into `buf` in one call into
/// the VM, which reads at most `buf.len()` cells however long the list is. Returns the number of bytes, or
/// `None` if the list is not such a string or does not fit (`buf` must leave room for a NUL).
pub fn latin1(term: Term, buf: &mut [u8]) -> Option<usize> {
    let capacity = u32::try_from(buf.len()).ok()?;
    // SAFETY: enif_get_string writes at most `capacity` bytes, NUL included, into `buf`, and only reads the term.
    let written = unsafe {
        enif_get_string(
            term.get_env().as_c_arg(),
            term.as_c_arg(),
            buf.as_mut_ptr(),
            capacity,
            ErlNifCharEncoding::ERL_NIF_LATIN1,
        )
    };
    // A positive result counts the bytes and the NUL; 0 means not a Latin-1 list, negative means truncated.
    usize::try_from(written)
        .ok()
        .filter(|&n| n > 0)
        .map(|n| n - 1)
}

/// Whether an integer term is a small (immediate) integer on a 64-bit VM: 60 bits and a sign.
pub fn is_small(term: Term) -> bool {
    const SMALL_MAX: i64 = (1 << 59) - 1;
    term.decode::<i64>()
        .is_ok_and(|n| (-SMALL_MAX - 1..=SMALL_MAX).contains(&n))
}

/// The size of `term` in the external term format, or `None` if the VM has no memory for the encoding.
pub fn external_size(term: Term) -> Option<usize> {
    external(term, <[u8]>::len)
}

/// `f` applied to `term`'s external term format, or `None` if the VM has no memory for the encoding. Unlike
/// rustler's `Term::to_binary`, which panics then, and a panic in a NIF becomes an exception whose stack trace
/// carries the call's arguments: a session, in `update/3`.
pub fn external<R>(term: Term, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    // SAFETY: the term and its environment are live for this call.
    unsafe { with_external(term.get_env().as_c_arg(), term.as_c_arg(), f) }
}

/// Whether `a` and `b`, two terms of any environments, have the same external term format: exact where `=:=`
/// and `enif_is_identical` are not before OTP 27, which take 0.0 and -0.0 for the same. `None` if the VM has no
/// memory for the encodings.
///
/// # Safety
/// `env` must be the live environment of the running NIF call, and `a` and `b` live terms.
pub unsafe fn same_external_format(
    env: *mut ErlNifEnv,
    a: ERL_NIF_TERM,
    b: ERL_NIF_TERM,
) -> Option<bool> {
    with_external(env, a, |a| with_external(env, b, |b| a == b)).flatten()
}

/// `f` applied to `term`'s external term format, made in a VM binary that is released at once. `None` if the VM
/// has no memory for it.
///
/// # Safety
/// `env` must be the live environment of the running NIF call, and `term` a live term.
unsafe fn with_external<R>(
    env: *mut ErlNifEnv,
    term: ERL_NIF_TERM,
    f: impl FnOnce(&[u8]) -> R,
) -> Option<R> {
    let mut binary = std::mem::MaybeUninit::<ErlNifBinary>::uninit();
    // SAFETY: enif_term_to_binary only reads `term` (a term of any environment may be read from the calling one,
    // as enif_make_copy does) and, on success, initialises `binary` with a fresh VM binary that is ours until
    // released. Its `size` bytes at `data` are never empty (the format starts with a version byte), and the
    // slice does not outlive the release below.
    if enif_term_to_binary(env, term, binary.as_mut_ptr()) == 0 {
        return None;
    }
    let mut binary = binary.assume_init();
    let result = f(std::slice::from_raw_parts(binary.data, binary.size));
    enif_release_binary(&mut binary);
    Some(result)
}

/// A resource destructor, as the VM calls it.
pub type Destructor = unsafe extern "C" fn(env: *mut ErlNifEnv, object: *mut c_void);

/// Opens a new resource type named `name` (a NUL-terminated string), with `destructor` if any. `None` if the VM
/// refuses.
///
/// # Safety
/// Only from the library's load callback, with `env` its environment; `destructor` must handle every resource
/// the caller creates of this type.
pub unsafe fn open_resource_type(
    env: Env,
    name: &'static [u8],
    destructor: Option<Destructor>,
) -> Option<NonNull<ErlNifResourceType>> {
    if name.last() != Some(&0) {
        return None;
    }
    let opened = enif_open_resource_type(
        env.as_c_arg(),
        std::ptr::null(),
        name.as_ptr().cast(),
        destructor,
        ErlNifResourceFlags::ERL_NIF_RT_CREATE,
        std::ptr::null_mut(),
    );
    NonNull::new(opened as *mut ErlNifResourceType)
}
