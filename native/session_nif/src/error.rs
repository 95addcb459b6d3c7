//! The one error type of the NIF layer. The glue gives each its atom (`native/nif_session_cache/src/error.rs`).
//!
//! Writes (update, delete, terminate) return their error as an atom instead of raising from native code: a NIF
//! exception carries the call's arguments in its stack trace, and update's arguments include the session, whose
//! master secret would then reach crash reports. The Erlang wrapper raises `error:badarg` or
//! `error:{badarg, Reason}` itself, with `erlang:error/1`, whose stack trace names only the arity.

use session_codec::key::KeyError;
use session_codec::pack::Stop;
use session_store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// An argument has the wrong type (the store is not a store). Raised as plain `badarg`.
    #[error("an argument has the wrong type")]
    BadArg,
    /// A process other than the one that called init tried to write. Raised as `{badarg, not_owner}`.
    #[error("only the process that created the store may write to it")]
    NotOwner,
    /// The store was terminated; it can no longer be written. Raised as `{badarg, terminated}`.
    #[error("the store was terminated")]
    Terminated,
    /// The key is a term the store does not accept (`session_codec::key`). Raised as `{badarg, bad_key}`.
    #[error("the key is not a supported term")]
    BadKey,
    /// The session holds a store or a cursor of this library, which its entry would keep alive for as long as
    /// it lives. Raised as `{badarg, holds_store}`.
    #[error("the session holds a store or a cursor")]
    HoldsStore,
    /// The VM could not allocate memory for the entry, or the store already holds 2^32 - 1 entries. Raised as
    /// `{badarg, enomem}`.
    #[error("out of memory")]
    OutOfMemory,
    /// The session costs more than the budget of a normal scheduler. Never reaches users: the NIF goes on on a
    /// dirty scheduler.
    #[error("the session is too costly for a normal scheduler")]
    OverBudget,
    /// A bug: a write panicked. Returned rather than raised, so that the session never reaches a stack trace.
    /// Raised as `{badarg, internal_error}`.
    #[error("internal error")]
    Internal,
}

impl From<StoreError> for CacheError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Terminated => CacheError::Terminated,
            // The entry is packed from the very key it is inserted under, so this is unreachable from Erlang.
            StoreError::KeyMismatch => CacheError::BadKey,
            // Four billion entries: terabytes of sessions, memory that no machine gives the VM.
            StoreError::Full => CacheError::OutOfMemory,
        }
    }
}

impl From<KeyError> for CacheError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Unsupported => CacheError::BadKey,
            KeyError::OutOfMemory => CacheError::OutOfMemory,
        }
    }
}

impl From<Stop> for CacheError {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::OverBudget => CacheError::OverBudget,
            Stop::HoldsStore => CacheError::HoldsStore,
            Stop::OutOfMemory => CacheError::OutOfMemory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_of_the_crates_below_has_its_error() {
        let errors = [
            CacheError::from(StoreError::Terminated),
            CacheError::from(StoreError::KeyMismatch),
            CacheError::from(StoreError::Full),
            CacheError::from(KeyError::Unsupported),
            CacheError::from(KeyError::OutOfMemory),
            CacheError::from(Stop::OverBudget),
            CacheError::from(Stop::HoldsStore),
            CacheError::from(Stop::OutOfMemory),
        ];
        use CacheError::*;
        let expected = [
            Terminated,
            BadKey,
            OutOfMemory,
            BadKey,
            OutOfMemory,
            OverBudget,
            HoldsStore,
            OutOfMemory,
        ];
        assert_eq!(errors, expected);
    }
}
