//! The VM calls every NIF that takes arguments through a trampoline: if the first argument is an object another
//! library made (`object::Found::Foreign`), the call is that library's, and goes to it whole through its table, so
//! a store, its cursors and its stopped packings always run the code that made them; otherwise rustler's function
//! runs here. The forwarded call runs on the scheduler this library's entry asked for, as each NIF keeps its
//! scheduler across versions; one that cannot be forwarded (a table of another major version, a NIF the maker
//! lacks) answers what an empty store would, never `badarg` (`honest`).

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rustler::sys::{ErlNifEnv, ERL_NIF_TERM};
use rustler::{Encoder, Env};

use crate::abi::{self, Call};
use crate::atoms;
use crate::object::{self, Found};

/// The trampoline of the `i`-th NIF of `abi::functions()`, or `None` past the last one made.
pub fn trampoline(i: usize) -> Option<abi::NifFn> {
    TRAMPOLINES.get(i).copied()
}

macro_rules! trampolines {
    ($($i:literal)*) => { [$(trampoline_of::<$i> as abi::NifFn),*] };
}
const TRAMPOLINES: [abi::NifFn; 32] = trampolines!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
);

/// # Safety
/// Called by the VM only, as the NIF `I`, with at least one argument.
unsafe extern "C" fn trampoline_of<const I: usize>(
    env: *mut ErlNifEnv,
    argc: c_int,
    argv: *const ERL_NIF_TERM,
) -> ERL_NIF_TERM {
    let function = &abi::functions()[I];
    match object::found(env, *argv) {
        Found::Foreign(table) => catch_unwind(AssertUnwindSafe(|| {
            let mut call = Call {
                env,
                name: function.atom,
                argc,
                argv,
                result: 0,
            };
            match abi::callable(table.version) && (table.call)(&mut call) == 0 {
                true => call.result,
                false => honest(env, function.name.to_bytes()),
            }
        }))
        .unwrap_or_else(|_| atoms::internal_error().as_c_arg()),
        _ => (function.body)(env, argc, argv),
    }
}

/// What a NIF answers for an object whose library cannot be called: reads find nothing, and writes, which are
/// lost, say `unreachable`, which the Erlang layer takes for `ok` and logs once.
fn honest(env: *mut ErlNifEnv, name: &[u8]) -> ERL_NIF_TERM {
    // SAFETY: `env` is the live environment of the call being answered.
    let env = unsafe { Env::new(&env, env) };
    let none: Vec<u8> = Vec::new();
    match name {
        b"lookup" | b"lookup_dirty" => atoms::undefined().encode(env),
        b"select" | b"next" | b"next_dirty" | b"fold" | b"fold_dirty" => {
            (&none, atoms::done()).encode(env)
        }
        b"size" => 0.encode(env),
        b"stores" => none.encode(env),
        b"fetch" => (atoms::miss(), atoms::unusable()).encode(env),
        _ => atoms::unreachable().encode(env),
    }
    .as_c_arg()
}
