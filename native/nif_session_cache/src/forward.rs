//! The VM calls every NIF that takes arguments through a trampoline. If the first argument is an object another
//! library made (`object::Found::Foreign`), the call is that library's, and goes to it whole through its table,
//! so that a store, its cursors and its stopped packings always run the code that made them; otherwise rustler's
//! function runs here. A forwarded call runs on the scheduler this library's entry asked for: a NIF keeps its
//! scheduler across versions. One that cannot be forwarded answers `session_nif::abi::miss`, never `badarg`.

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rustler::codegen_runtime::DEF_NIF_FUNC;
use rustler::sys::{ErlNifEnv, ERL_NIF_TERM};
use rustler::{Encoder, Env};
use session_nif::abi::{Call, Miss};

use crate::abi;
use crate::atoms;
use crate::object::{self, Found};

/// Puts the trampoline of the `i`-th of `abi::functions()` in its entry, if it takes arguments.
pub fn wrap(def: &mut DEF_NIF_FUNC, i: usize) {
    macro_rules! trampolines {
        ($($i:literal)*) => { match i { $($i => trampoline::<$i>,)* _ => return } };
    }
    if def.arity > 0 {
        def.function =
            trampolines!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27);
    }
}

/// # Safety
/// Called by the VM only, as the NIF `I`, with at least one argument.
unsafe extern "C" fn trampoline<const I: usize>(
    env: *mut ErlNifEnv,
    argc: c_int,
    argv: *const ERL_NIF_TERM,
) -> ERL_NIF_TERM {
    let function = &abi::functions()[I];
    let Found::Foreign(table) = object::found(env, *argv) else {
        return (function.nif.raw_func)(env, argc, argv);
    };
    let mut call = Call {
        env: env.cast(),
        name: function.atom,
        argc,
        argv,
        result: 0,
    };
    let forwarded = || session_nif::abi::callable(table.version) && (table.call)(&mut call) == 0;
    match catch_unwind(AssertUnwindSafe(forwarded)) {
        Ok(true) => call.result,
        Ok(false) => {
            let env = Env::new(&env, env);
            match session_nif::abi::miss(function.name.to_bytes()) {
                Miss::Undefined => atoms::undefined().encode(env),
                Miss::Done => (Vec::<u8>::new(), atoms::done()).encode(env),
                Miss::Zero => 0.encode(env),
                Miss::Nil => Vec::<u8>::new().encode(env),
                Miss::Unusable => (atoms::miss(), atoms::unusable(), false).encode(env),
                Miss::Unreachable => atoms::unreachable().encode(env),
            }
            .as_c_arg()
        }
        Err(_) => atoms::internal_error().as_c_arg(),
    }
}
