//! The C ABI through which one load of nif_session_cache's NIF library reaches the objects another load made
//! (`native/nif_session_cache/src/object.rs`), so that a release upgrade carries every store over.
//!
//! Version 1, frozen: a later version may append fields to `Table` and `Call` and raise `MINOR`, never move or
//! change a field. So a library calls any table of its own major version; one of another major is a table it
//! cannot call, and the call answers what an empty store would (`Miss`).
//! - An object starts with a pointer to the `Table` of the library that made it.
//! - `drop` frees an object of that library; `call` runs that library's own NIF `name`/`argc` on `argv`, in the
//!   caller's environment and on the caller's scheduler, writing its result (a term, or the exception marker the
//!   NIF raised) to `result`: 0 when it ran, 1 when it has no such NIF, 2 when it panicked.
//! - The object type's dynamic call (`enif_dynamic_resource_call`) writes the object's address through its
//!   `call_data`, a `*mut *mut c_void`.

use std::ffi::{c_int, c_void};

/// `Table::version`: the major part in the high 16 bits.
pub const MAJOR: u32 = 1;
pub const MINOR: u32 = 0;
pub const VERSION: u32 = MAJOR << 16 | MINOR;

#[repr(C)]
pub struct Table {
    pub version: u32,
    /// Safety: only with an object of this table's library, once.
    pub drop: unsafe extern "C" fn(object: *mut c_void),
    /// Safety: only with a `Call` whose environment and arguments live for the call.
    pub call: unsafe extern "C" fn(call: *mut Call) -> c_int,
}

/// A NIF call carried to the library that made its first argument. Terms are `ERL_NIF_TERM`s, words.
#[repr(C)]
pub struct Call {
    /// The caller's `ErlNifEnv`.
    pub env: *mut c_void,
    /// The NIF's name, an atom: atoms are the same term in every library of a VM.
    pub name: usize,
    pub argc: c_int,
    pub argv: *const usize,
    pub result: usize,
}

/// Whether a table of `version` can be called by this library.
pub fn callable(version: u32) -> bool {
    version >> 16 == MAJOR
}

/// What a NIF answers for an object whose library cannot be called: reads find nothing, and writes, which are
/// lost, say `unreachable`, which the Erlang layer takes for `ok` and logs once. Never `badarg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// `undefined`.
    Undefined,
    /// `{[], done}`: the end of a select or a fold.
    Done,
    /// `0`.
    Zero,
    /// `[]`.
    Nil,
    /// `{miss, unusable, false}`: a miss, and no warning to log.
    Unusable,
    /// `unreachable`.
    Unreachable,
}

/// The miss the NIF `name` answers.
pub fn miss(name: &[u8]) -> Miss {
    match name {
        b"lookup" | b"lookup_dirty" => Miss::Undefined,
        b"select" | b"next" | b"next_dirty" | b"fold" | b"fold_dirty" => Miss::Done,
        b"size" => Miss::Zero,
        b"stores" => Miss::Nil,
        b"fetch" => Miss::Unusable,
        _ => Miss::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn the_layout_of_version_1_is_frozen() {
        assert_eq!(
            (
                offset_of!(Table, drop),
                offset_of!(Table, call),
                size_of::<Table>()
            ),
            (8, 16, 24)
        );
        let call = [
            offset_of!(Call, name),
            offset_of!(Call, argc),
            offset_of!(Call, argv),
            offset_of!(Call, result),
        ];
        assert_eq!((call, size_of::<Call>()), ([8, 16, 24, 32], 40));
    }

    #[test]
    fn a_table_is_callable_by_its_major_version_alone() {
        assert!(callable(VERSION) && callable(MAJOR << 16 | 7));
        assert!(!callable(0) && !callable((MAJOR + 1) << 16) && !callable(MINOR));
    }

    #[test]
    fn reads_answer_nothing_and_writes_unreachable() {
        for (names, expected) in [
            (&["lookup", "lookup_dirty"][..], Miss::Undefined),
            (
                &["select", "next", "next_dirty", "fold", "fold_dirty"],
                Miss::Done,
            ),
            (&["size"], Miss::Zero),
            (&["stores"], Miss::Nil),
            (&["fetch"], Miss::Unusable),
            (
                &[
                    "update",
                    "update_dirty",
                    "delete",
                    "terminate",
                    "share",
                    "publish",
                    "unusable",
                    "info",
                ],
                Miss::Unreachable,
            ),
        ] {
            assert!(
                names.iter().all(|name| miss(name.as_bytes()) == expected),
                "{names:?}"
            );
        }
    }
}
