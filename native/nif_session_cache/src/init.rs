//! The library's `nif_init`, written here instead of by `rustler::init!`, which wires no `upgrade` callback: a load
//! while the old code of `nif_session_cache_nif` is still loaded (as release_handler's load_module does) would
//! fail with "Upgrade not supported by this NIF library". It mirrors rustler_codegen 0.36.2's `init!`
//! (src/init.rs), the release `Cargo.toml` pins, in all but that callback and the trampolines (`forward.rs`); the
//! assertions below fail to compile if that release's entry layout is not the one this file fills in. Nothing
//! else of rustler's internals is copied: its registry lists the NIFs, and its `Registration` opens the pin's type.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use rustler::codegen_runtime::{DEF_NIF_ENTRY, DEF_NIF_FUNC, NIF_MAJOR_VERSION, NIF_MINOR_VERSION};
use rustler::sys::{ErlNifEnv, ERL_NIF_TERM};
use rustler::{Env, Term};

use crate::{abi, entry, forward, object, reaper, resource};

// rustler 0.36.2's `ErlNifEntry`, field by field, on the 64-bit systems the library builds for.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(DEF_NIF_ENTRY, major) == 0 && offset_of!(DEF_NIF_ENTRY, minor) == 4);
    assert!(offset_of!(DEF_NIF_ENTRY, name) == 8 && offset_of!(DEF_NIF_ENTRY, num_of_funcs) == 16);
    assert!(offset_of!(DEF_NIF_ENTRY, funcs) == 24 && offset_of!(DEF_NIF_ENTRY, load) == 32);
    assert!(offset_of!(DEF_NIF_ENTRY, reload) == 40 && offset_of!(DEF_NIF_ENTRY, upgrade) == 48);
    assert!(offset_of!(DEF_NIF_ENTRY, unload) == 56 && offset_of!(DEF_NIF_ENTRY, vm_variant) == 64);
    assert!(offset_of!(DEF_NIF_ENTRY, options) == 72);
    assert!(offset_of!(DEF_NIF_ENTRY, sizeof_ErlNifResourceTypeInit) == 80);
    assert!(size_of::<DEF_NIF_ENTRY>() == 88 && size_of::<DEF_NIF_FUNC>() == 32);
};

#[no_mangle]
extern "C" fn nif_init() -> *const DEF_NIF_ENTRY {
    // The entry's address: made once per mapping of the library, and never freed, as the VM keeps it.
    static ENTRY: OnceLock<usize> = OnceLock::new();
    // SAFETY: as rustler's `init!`: fills rustler's table of the VM's functions before anything calls one.
    unsafe { rustler::codegen_runtime::internal_write_symbols() };
    *ENTRY.get_or_init(|| {
        let funcs: Vec<DEF_NIF_FUNC> = abi::functions()
            .iter()
            .enumerate()
            .map(|(i, f)| DEF_NIF_FUNC {
                name: f.name.as_ptr(),
                arity: f.arity,
                flags: f.flags,
                function: match forward::trampoline(i) {
                    Some(trampoline) if f.arity > 0 => trampoline,
                    _ => f.body,
                },
            })
            .collect();
        let entry = Box::new(DEF_NIF_ENTRY {
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
        Box::leak(entry) as *const DEF_NIF_ENTRY as usize
    }) as *const DEF_NIF_ENTRY
}

extern "C" fn load(env: *mut ErlNifEnv, _: *mut *mut c_void, info: ERL_NIF_TERM) -> c_int {
    opened(env, info)
}

/// A load while the old code is still loaded: the same as a first load, as `opened` takes over what it finds.
extern "C" fn upgrade(
    env: *mut ErlNifEnv,
    _: *mut *mut c_void,
    _: *mut *mut c_void,
    info: ERL_NIF_TERM,
) -> c_int {
    opened(env, info)
}

/// What load and upgrade both do: open the resource types, taking over those a loaded library has, and read the
/// load info, `{OtpRelease, Load}`: the release decides what the VM's allocators add to each entry, the load's
/// number (one more at each load in the VM) the first store id this load gives. 0 if all went well.
fn opened(env: *mut ErlNifEnv, info: ERL_NIF_TERM) -> c_int {
    std::panic::catch_unwind(|| {
        // SAFETY: the VM's environment for this callback and its load info, alive while it runs.
        let env = unsafe { Env::new_init_env(&env, env) };
        // SAFETY: as above.
        let info = unsafe { Term::new(env, info) };
        let (release, load) = info.decode::<(u32, u64)>().unwrap_or((u32::MAX, 0));
        resource::first_id(load);
        entry::load(env, release) && object::open(env) && reaper::register(env)
    })
    .map_or(1, |ok| c_int::from(!ok))
}
