//! The C ABI through which one load of the library reaches the objects another load made (`object.rs`), and this
//! library's own NIFs as that ABI names them.
//!
//! Version 1, frozen: a later version may append fields to `Table` and `Call` and raise `version`'s minor part
//! (`MINOR`), never move or change a field. So a library calls any table whose major part is its own; a table of
//! another major is one it cannot call, and the caller answers honest misses (`forward.rs`).
//! - An object starts with a pointer to the `Table` of the library that made it.
//! - `drop` frees an object of that library; `call` runs that library's own NIF `name`/`argc` on `argv`, in the
//!   caller's environment and on the caller's scheduler, writing its result (a term, or the exception marker the
//!   NIF raised) to `result`: 0 when it ran, 1 when it has no such NIF, 2 when it panicked.
//! - The object type's dynamic call writes the object's address through `call_data`, a `*mut *mut c_void`.

use std::ffi::{c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use rustler::env::OwnedEnv;
use rustler::sys::{ErlNifEnv, ERL_NIF_TERM};
use rustler::{Atom, Nif};

/// The major part (high 16 bits) and minor part of `Table::version`.
pub const MAJOR: u32 = 1;
pub const MINOR: u32 = 0;

#[repr(C)]
pub struct Table {
    pub version: u32,
    pub drop: unsafe extern "C" fn(object: *mut c_void),
    pub call: unsafe extern "C" fn(call: *mut Call) -> c_int,
}

#[repr(C)]
pub struct Call {
    pub env: *mut ErlNifEnv,
    /// The NIF's name, an atom: atoms are the same term in every library of a VM.
    pub name: ERL_NIF_TERM,
    pub argc: c_int,
    pub argv: *const ERL_NIF_TERM,
    pub result: ERL_NIF_TERM,
}

// The frozen layout, on the 64-bit systems the library builds for.
const _: () = assert!(
    std::mem::offset_of!(Table, drop) == 8
        && std::mem::offset_of!(Table, call) == 16
        && std::mem::offset_of!(Call, name) == 8
        && std::mem::offset_of!(Call, argc) == 16
        && std::mem::offset_of!(Call, argv) == 24
        && std::mem::offset_of!(Call, result) == 32
);

/// Whether a table of `version` can be called by this library.
pub fn callable(version: u32) -> bool {
    version >> 16 == MAJOR
}

pub type NifFn = unsafe extern "C" fn(*mut ErlNifEnv, c_int, *const ERL_NIF_TERM) -> ERL_NIF_TERM;

/// One of this library's NIFs, as rustler made it.
pub struct Function {
    pub name: &'static CStr,
    pub atom: ERL_NIF_TERM,
    pub arity: u32,
    pub flags: u32,
    pub body: NifFn,
}

/// This library's NIFs, in a fixed order (rustler's registry's), with their names as atoms. Made once per mapping
/// of the library, when it is first loaded.
pub fn functions() -> &'static [Function] {
    static FUNCTIONS: OnceLock<Vec<Function>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        OwnedEnv::new().run(|env| {
            rustler::codegen_runtime::inventory::iter::<Nif>()
                .map(|nif| {
                    // SAFETY: rustler's registry holds the NUL-terminated names its `nif` macro wrote.
                    let name = unsafe { CStr::from_ptr(nif.name) };
                    let atom = Atom::from_bytes(env, name.to_bytes()).map_or(0, Atom::as_c_arg);
                    let (arity, flags, body) = (nif.arity, nif.flags, nif.raw_func);
                    Function {
                        name,
                        atom,
                        arity,
                        flags,
                        body,
                    }
                })
                .collect()
        })
    })
}

/// `Table::call` of this library: runs its own NIF, never a forwarding one.
///
/// # Safety
/// Called through the ABI only, with a `Call` whose env and arguments are live for the call.
pub unsafe extern "C" fn answer(call: *mut Call) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        let call = &mut *call;
        let Some(function) = functions()
            .iter()
            .find(|f| f.atom == call.name && f.arity as c_int == call.argc)
        else {
            return 1;
        };
        call.result = (function.body)(call.env, call.argc, call.argv);
        0
    }))
    .unwrap_or(2)
}
