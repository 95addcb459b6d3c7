//! This library's side of the C ABI between loads (`session_nif::abi`): its NIFs as the ABI names them, and the
//! `call` of its table, which runs them for another library.

use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use rustler::env::OwnedEnv;
use rustler::{Atom, Nif};
use session_nif::abi::Call;

/// One of this library's NIFs, as rustler made it, with its name as an atom.
pub struct Function {
    pub nif: &'static Nif,
    pub name: &'static CStr,
    pub atom: usize,
}

/// This library's NIFs, in rustler's registry's order, made once per mapping of the library.
pub fn functions() -> &'static [Function] {
    static FUNCTIONS: OnceLock<Vec<Function>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        OwnedEnv::new().run(|env| {
            let nifs = rustler::codegen_runtime::inventory::iter::<Nif>();
            nifs.map(|nif| {
                // SAFETY: rustler's registry holds the NUL-terminated names its `nif` macro wrote.
                let name = unsafe { CStr::from_ptr(nif.name) };
                let atom = Atom::from_bytes(env, name.to_bytes()).map_or(0, Atom::as_c_arg);
                Function { nif, name, atom }
            })
            .collect()
        })
    })
}

/// `Table::call` of this library: runs its own NIF, never its trampoline.
///
/// # Safety
/// Called through the ABI only, with a `Call` whose environment and arguments live for the call.
pub unsafe extern "C" fn answer(call: *mut Call) -> c_int {
    let call = &mut *call;
    let arity = call.argc as u32;
    let found = functions()
        .iter()
        .find(|f| f.atom == call.name && f.nif.arity == arity);
    let Some(function) = found else { return 1 };
    let run = || (function.nif.raw_func)(call.env.cast(), call.argc, call.argv);
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => {
            call.result = result;
            0
        }
        Err(_) => 2,
    }
}
