//! Each error of the NIF layer (`session_nif::error`) as the atom Erlang receives.

use rustler::Atom;
pub use session_nif::error::CacheError;

use crate::atoms;

/// The atom of an error.
pub trait AsAtom {
    fn atom(self) -> Atom;
}

impl AsAtom for CacheError {
    /// The atom a write returns for this error; the Erlang wrapper turns it into the exception.
    fn atom(self) -> Atom {
        match self {
            CacheError::BadArg => atoms::badarg(),
            CacheError::NotOwner => atoms::not_owner(),
            CacheError::Terminated => atoms::terminated(),
            CacheError::BadKey => atoms::bad_key(),
            CacheError::HoldsStore => atoms::holds_store(),
            CacheError::OutOfMemory => atoms::enomem(),
            CacheError::OverBudget => atoms::dirty(),
            CacheError::Internal => atoms::internal_error(),
        }
    }
}
