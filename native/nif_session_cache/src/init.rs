//! The library's `nif_init`, written here instead of by `rustler::init!`, which wires no `upgrade` callback: a load
//! while the old code of `nif_session_cache_nif` is still loaded (release_handler's load_module) would fail with
//! "Upgrade not supported by this NIF library". It mirrors `init!` of rustler_codegen 0.36.2 (src/init.rs), the
//! release `Cargo.toml` pins, but for that callback and the trampolines (`forward.rs`); the assertion below stops
//! the build if that release's entry layout is not the one filled in here. Nothing else of rustler's internals is
//! copied: its registry lists the NIFs, and its `Registration` opens the pin's type.

use std::ffi::{c_int, c_void};
use std::mem::offset_of;
use std::sync::OnceLock;

use rustler::codegen_runtime::{
    DEF_NIF_ENTRY as E, DEF_NIF_FUNC, NIF_MAJOR_VERSION, NIF_MINOR_VERSION,
};
use rustler::sys::{ErlNifEnv, ERL_NIF_TERM};
use rustler::{Env, Term};

use crate::{abi, entry, forward, object, reaper, resource};

// rustler 0.36.2's `ErlNifEntry`, field by field, on the 64-bit systems the library builds for.
const _: () = assert!(
    offset_of!(E, minor) == 4
        && offset_of!(E, name) == 8
        && offset_of!(E, num_of_funcs) == 16
        && offset_of!(E, funcs) == 24
        && offset_of!(E, load) == 32
        && offset_of!(E, reload) == 40
        && offset_of!(E, upgrade) == 48
        && offset_of!(E, unload) == 56
        && offset_of!(E, vm_variant) == 64
        && offset_of!(E, options) == 72
        && offset_of!(E, sizeof_ErlNifResourceTypeInit) == 80
        && size_of::<E>() == 88
        && size_of::<DEF_NIF_FUNC>() == 32
);

#[no_mangle]
extern "C" fn nif_init() -> *const E {
    // The entry's address: made once per mapping of the library, never freed, as the VM keeps it.
    static ENTRY: OnceLock<usize> = OnceLock::new();
    // SAFETY: as rustler's `init!`: fills rustler's table of the VM's functions before anything calls one.
    unsafe { rustler::codegen_runtime::internal_write_symbols() };
    *ENTRY.get_or_init(|| {
        let mut funcs: Vec<DEF_NIF_FUNC> =
            abi::functions().iter().map(|f| f.nif.get_def()).collect();
        funcs
            .iter_mut()
            .enumerate()
            .for_each(|(i, def)| forward::wrap(def, i));
        let entry = Box::new(E {
            major: NIF_MAJOR_VERSION,
            minor: NIF_MINOR_VERSION,
            name: c"nif_session_cache_nif".as_ptr(),
            num_of_funcs: funcs.len() as c_int,
            funcs: funcs.leak().as_ptr(),
            load: Some(load),
            reload: None,
            upgrade: Some(upgrade),
            unload: None,
            vm_variant: c"beam.vanilla".as_ptr(),
            options: 0,
            sizeof_ErlNifResourceTypeInit:
                rustler::codegen_runtime::get_nif_resource_type_init_size(),
        });
        Box::leak(entry) as *const E as usize
    }) as *const E
}

extern "C" fn load(env: *mut ErlNifEnv, _: *mut *mut c_void, info: ERL_NIF_TERM) -> c_int {
    opened(env, info)
}

/// A load while the old code is still loaded: as a first load, since `opened` takes over what it finds.
extern "C" fn upgrade(
    env: *mut ErlNifEnv,
    _: *mut *mut c_void,
    _: *mut *mut c_void,
    info: ERL_NIF_TERM,
) -> c_int {
    opened(env, info)
}

/// Opens the resource types, taking over those a loaded library has, and reads the load info, `{OtpRelease,
/// Load}`: the release decides what the VM's allocators add to each entry, the load's number (one more at each
/// load in the VM) the first store id of this load. 0 if all went well.
fn opened(env: *mut ErlNifEnv, info: ERL_NIF_TERM) -> c_int {
    let ok = std::panic::catch_unwind(|| {
        // SAFETY: the VM's environment for this callback, and its load info, alive while it runs.
        let (env, info) = unsafe {
            let env = Env::new_init_env(&env, env);
            (env, Term::new(env, info))
        };
        let (release, load) = info.decode::<(u32, u64)>().unwrap_or((u32::MAX, 0));
        resource::STORES.first_id(load);
        entry::load(env, release) && object::open(env) && reaper::register(env)
    });
    c_int::from(!matches!(ok, Ok(true)))
}
