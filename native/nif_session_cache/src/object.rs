//! What Erlang holds, across loads of the library: stores, select cursors, stopped packings and library handles
//! are objects of one resource type, which every load takes over or creates. Each starts with a pointer to the
//! ABI table (`session_nif::abi`) of the library that made it, and the type's callbacks go through it, so an
//! object is freed by the code that made it. One another library made is `Found::Foreign`, and `forward.rs` takes
//! the call there. docs/design.md ("Upgrades and reloads") has the whole story.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use rustler::sys::{
    enif_alloc_resource, enif_dynamic_resource_call, enif_get_resource, enif_make_resource,
    enif_release_resource, ErlNifEnv, ErlNifResourceDtor, ErlNifResourceDynCall,
    ErlNifResourceType, ErlNifResourceTypeInit, ERL_NIF_TERM,
};
use rustler::{Env, Term};
use session_nif::abi::Table;

use crate::resource::{Cursor, Resume, Store};
use crate::{abi, atoms, entry};

/// What an object of this library holds.
pub enum Body {
    Store(Arc<Store>),
    Cursor(Box<Cursor>),
    Resume(Box<Resume>),
    /// A handle on this library, through which others list its stores.
    Library,
}

#[repr(C)]
struct Object {
    table: *const Table,
    body: Body,
}

// A resource's data is aligned for any C type, 8 bytes on 64-bit systems.
const _: () = assert!(std::mem::align_of::<Object>() <= 8);

/// This library's table: its objects point to it, and its address tells them from others'.
static OWN: Table = Table {
    version: session_nif::abi::VERSION,
    drop: drop_object,
    call: abi::answer,
};

/// The type the current load opened: new objects get it, and it is tried first.
static TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(ptr::null_mut());

/// Opens the object type, taking it over from a loaded library that has it: from the load or upgrade callback.
/// Its callbacks serve any object of the type, whoever made it.
pub fn open(env: Env) -> bool {
    let init = ErlNifResourceTypeInit {
        dtor: destructor as *const ErlNifResourceDtor,
        stop: ptr::null(),
        down: ptr::null(),
        members: 4,
        dyncall: find as *const ErlNifResourceDynCall,
    };
    let opened = entry::open_type(env, c"nif_session_cache_object", &init);
    TYPE.store(opened.cast_mut(), Ordering::Release);
    !opened.is_null()
}

/// A new object of `body`, as a term of `env`; `None` if the VM has no memory.
pub fn make(env: Env<'_>, body: Body) -> Option<Term<'_>> {
    // SAFETY: the type is open (a load fails without it); the allocation is large enough and aligned (asserted
    // above) for an `Object`, written before the term is made. Releasing our reference leaves the term the owner.
    unsafe {
        let object = enif_alloc_resource(TYPE.load(Ordering::Acquire), size_of::<Object>());
        if object.is_null() {
            return None;
        }
        object.cast::<Object>().write(Object { table: &OWN, body });
        let term = enif_make_resource(env.as_c_arg(), object);
        enif_release_resource(object);
        Some(Term::new(env, term))
    }
}

/// What a term is to this library.
pub enum Found<'a> {
    Own(&'a Body),
    /// An object another library made, and its table.
    Foreign(&'a Table),
    None,
}

/// What `term`, of `env`, is: an object of this library, of another, or none.
pub fn found<'a>(env: *mut ErlNifEnv, term: ERL_NIF_TERM) -> Found<'a> {
    let mut object: *mut c_void = ptr::null_mut();
    let out: *mut *mut c_void = &mut object;
    let named = |name: rustler::Atom| name.as_c_arg();
    // SAFETY: enif_get_resource compares the object's type with the one this load opened; the dynamic call reaches
    // an object of any type with our module and name, whose dyncall (`find`, in every library) writes its address.
    // Either way it is an `Object` of some library, its table first, alive as long as the term.
    unsafe {
        if enif_get_resource(env, term, TYPE.load(Ordering::Acquire), out.cast()) == 0 {
            let (module, name) = (
                named(atoms::nif_session_cache_nif()),
                named(atoms::nif_session_cache_object()),
            );
            if enif_dynamic_resource_call(env, module, name, term, out.cast()) != 0 {
                return Found::None;
            }
        }
        match object.cast::<*const Table>().read() {
            table if ptr::eq(table, &OWN) => Found::Own(&(*object.cast::<Object>()).body),
            table => Found::Foreign(&*table),
        }
    }
}

/// The body of an object of this library.
pub fn own(term: Term<'_>) -> Option<&Body> {
    match found(term.get_env().as_c_arg(), term.as_c_arg()) {
        Found::Own(body) => Some(body),
        _ => None,
    }
}

/// The store `term` refers to, if this library made it.
pub fn store(term: Term<'_>) -> Option<&Arc<Store>> {
    match own(term) {
        Some(Body::Store(store)) => Some(store),
        _ => None,
    }
}

/// Whether a term is an object of any library: a session must not hold one.
pub fn is_ours(term: Term<'_>) -> bool {
    !matches!(
        found(term.get_env().as_c_arg(), term.as_c_arg()),
        Found::None
    )
}

/// A number for this mapping of the library, the same at each of its loads: its table's address.
pub fn mapping() -> usize {
    &OWN as *const Table as usize
}

/// The type's destructor, whichever library owns the type: frees the object by the code that made it.
///
/// # Safety
/// Called by the VM only, with an object of the type.
unsafe extern "C" fn destructor(_env: *mut ErlNifEnv, object: *mut c_void) {
    ((*object.cast::<*const Table>().read()).drop)(object);
}

/// `Table::drop` of this library. A panic in a store's drop (it frees entries) must not unwind into the VM: what
/// the object held then leaks.
///
/// # Safety
/// Called through a table only, with an object `make` wrote, once.
unsafe extern "C" fn drop_object(object: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        ptr::drop_in_place(object.cast::<Object>())
    }));
}

/// The type's dynamic call: hands out the object's address, the ABI's one use of it.
///
/// # Safety
/// Called by the VM only, for `enif_dynamic_resource_call` with a `*mut *mut c_void` as `call_data`.
unsafe extern "C" fn find(_env: *mut ErlNifEnv, object: *mut c_void, call_data: *mut c_void) {
    call_data.cast::<*mut c_void>().write(object);
}
