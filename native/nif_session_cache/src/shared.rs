//! The glue of the shared level (`session_share`): a server store may be given a namespace, sealing keys and a
//! Redis to share its sessions with other nodes. The Erlang side (`nif_session_cache_shared.erl`) decides what
//! of a session leaves the node and checks what comes back; here sessions are only bytes to seal and open.
//!
//! `share/2` attaches the level (owner only). `publish/4` seals a session's bytes and queues them for Redis,
//! never waiting. `fetch/2` asks Redis on a dirty IO scheduler, within the timeout, and opens what it finds.
//! Errors are returned as atoms, never raised: `share/2`'s arguments hold the keys, and a NIF exception would put
//! them in a stack trace.

use std::time::Duration;

use once_cell::sync::OnceCell;
use rustler::{Atom, Binary, Encoder, Env, NifResult, OwnedBinary, Term};
use session_share::breaker::State;
use session_share::remote::{redis_key, Config, ConfigError, Remote};
use session_share::seal::{KeyError, Keys, OpenError};
use session_share::stats::Miss;

use crate::atoms;
use crate::error::CacheError;
use crate::resource::StoreResource;

/// A store's shared level.
pub struct Shared {
    namespace: Vec<u8>,
    keys: Keys,
    remote: Remote,
    /// Seconds of lifetime a session found in Redis must have left to be returned (the Erlang side checks).
    margin_s: u64,
}

/// Where a store keeps its shared level, once given.
pub type Slot = OnceCell<Shared>;

rustler::atoms! {
    url,
    namespace,
    keys,
    timeout_ms,
    queue,
    max_in_flight,
    max_reads_per_s,
    breaker_threshold,
    breaker_cool_down_ms,
    margin_s,
    already_shared,
    state,
    closed,
    open,
    probing,
    gets,
    hits,
    misses,
    sets,
    drops,
    errors,
    latency_us,
    p50,
    p99,
    max,
    miss,
    error,
    dropped,
    // Miss reasons (`session_share::stats::Miss`).
    absent,
    breaker_open,
    busy,
    timeout,
    unsealed,
    unusable,
}

/// Gives the store a shared level; owner only, once. `config` is a map checked by the Erlang side, with the
/// keys `url` (a list of binaries), `namespace`, `keys` (a list of 32-byte binaries), `timeout_ms`, `queue`,
/// `max_in_flight`, `max_reads_per_s`, `breaker_threshold`, `breaker_cool_down_ms` and `margin_s`. Returns `ok`, or
/// `{error, Option}` naming the option that was refused (never its value). Normal scheduler; starts a thread.
#[rustler::nif]
fn share<'a>(env: Env<'a>, store: Term<'a>, config: Term<'a>) -> Term<'a> {
    let outcome = (|| -> Result<(), Atom> {
        let store = StoreResource::from_term(store).map_err(|_| atoms::badarg())?;
        store.check_writer(env).map_err(CacheError::atom)?;
        let field = |name: Atom| config.map_get(name).map_err(|_| name);
        let list = |name: Atom| -> Result<Vec<Vec<u8>>, Atom> {
            let items: Vec<Binary> = field(name)?.decode().map_err(|_| name)?;
            Ok(items.iter().map(|item| item.as_slice().to_vec()).collect())
        };
        let number = |name: Atom| -> Result<u64, Atom> { field(name)?.decode().map_err(|_| name) };
        let namespace: Binary = field(namespace())?.decode().map_err(|_| namespace())?;
        let key_list: Vec<Binary> = field(keys())?.decode().map_err(|_| keys())?;
        let sealing = Keys::new(&key_list.iter().map(|k| k.as_slice()).collect::<Vec<_>>())
            .map_err(|_: KeyError| keys())?;
        let urls = list(url())?
            .into_iter()
            .map(String::from_utf8)
            .collect::<Result<Vec<String>, _>>()
            .map_err(|_| url())?;
        let config = Config {
            urls,
            timeout: Duration::from_millis(number(timeout_ms())?),
            queue: number(queue())? as usize,
            max_in_flight: number(max_in_flight())? as usize,
            max_reads_per_s: u32::try_from(number(max_reads_per_s())?)
                .map_err(|_| max_reads_per_s())?,
            breaker_threshold: u32::try_from(number(breaker_threshold())?)
                .map_err(|_| breaker_threshold())?,
            breaker_cool_down: Duration::from_millis(number(breaker_cool_down_ms())?),
        };
        let remote = Remote::start(config).map_err(|error| match error {
            ConfigError::NoUrl | ConfigError::BadUrl { .. } => url(),
            ConfigError::Zero => timeout_ms(),
            ConfigError::NoThread => atoms::enomem(),
        })?;
        let shared = Shared {
            namespace: namespace.as_slice().to_vec(),
            keys: sealing,
            remote,
            margin_s: number(margin_s())?,
        };
        store.shared.set(shared).map_err(|_| already_shared())
    })();
    match outcome {
        Ok(()) => atoms::ok().encode(env),
        Err(option) => (error(), option).encode(env),
    }
}

/// Seals `session` (a session's bytes, as the Erlang side made them) for session `id` and queues it to be kept
/// in Redis for `ttl_ms`. Owner only. Never waits: a full queue drops it, counted. Returns `ok`, `dropped`, or
/// an error atom. Normal scheduler, O(size of the session): about a microsecond a kilobyte.
#[rustler::nif]
fn publish<'a>(
    env: Env<'a>,
    store: Term<'a>,
    id: Binary<'a>,
    session: Binary<'a>,
    ttl_ms: u64,
) -> Atom {
    let outcome = (|| -> Result<Atom, Atom> {
        let store = StoreResource::from_term(store).map_err(|_| atoms::badarg())?;
        store.check_writer(env).map_err(CacheError::atom)?;
        let shared = store.shared.get().ok_or(atoms::badarg())?;
        let blob = shared
            .keys
            .seal(&shared.namespace, id.as_slice(), session.as_slice());
        let key = redis_key(&shared.namespace, id.as_slice());
        Ok(
            if shared.remote.put(key, blob, Duration::from_millis(ttl_ms)) {
                atoms::ok()
            } else {
                dropped()
            },
        )
    })();
    outcome.unwrap_or_else(|error| error)
}

/// The session bytes kept in Redis for `id`, opened: `{ok, Bytes, MarginS}`, or `{miss, Reason}`. Dirty IO
/// scheduler: waits on Redis for at most the timeout, and not at all while the breaker is open or when too many
/// reads are out already.
#[rustler::nif(schedule = "DirtyIo")]
fn fetch<'a>(env: Env<'a>, store: Term<'a>, id: Binary<'a>) -> NifResult<Term<'a>> {
    let store = StoreResource::from_term(store)?;
    let shared = store.shared.get().ok_or(rustler::Error::BadArg)?;
    let key = redis_key(&shared.namespace, id.as_slice());
    let blob = match shared.remote.get(&key) {
        Ok(blob) => blob,
        Err(why) => return Ok((miss(), reason(why)).encode(env)),
    };
    match shared.keys.open(&shared.namespace, id.as_slice(), &blob) {
        Ok(session) => {
            let mut bytes =
                OwnedBinary::new(session.len()).ok_or(rustler::Error::RaiseAtom("enomem"))?;
            bytes.as_mut_slice().copy_from_slice(&session);
            Ok((atoms::ok(), bytes.release(env), shared.margin_s).encode(env))
        }
        Err(OpenError::Malformed | OpenError::UnknownKey | OpenError::Forged) => {
            shared.remote.unusable(Miss::Unsealed);
            Ok((miss(), reason(Miss::Unsealed)).encode(env))
        }
    }
}

/// Counts a session found in Redis that the Erlang side could not use (it did not decode to a session of this
/// release, or had too little lifetime left) as a miss. Any process.
#[rustler::nif(name = "unusable")]
fn count_unusable(store: Term) -> NifResult<Atom> {
    let store = StoreResource::from_term(store)?;
    if let Some(shared) = store.shared.get() {
        shared.remote.unusable(Miss::Unusable);
    }
    Ok(atoms::ok())
}

fn reason(why: Miss) -> Atom {
    match why {
        Miss::Absent => absent(),
        Miss::BreakerOpen => breaker_open(),
        Miss::Busy => busy(),
        Miss::Timeout => timeout(),
        Miss::Error => error(),
        Miss::Unsealed => unsealed(),
        Miss::Unusable => unusable(),
    }
}

/// `info/1`'s `shared` map: the breaker's state, the counters, and the latency of reads that reached Redis.
pub fn describe<'a>(env: Env<'a>, shared: &Shared) -> NifResult<Term<'a>> {
    let stats = shared.remote.stats();
    let state_atom = match shared.remote.breaker() {
        State::Closed => closed(),
        State::Open => open(),
        State::Probing => probing(),
    };
    let by_reason: Vec<(Atom, u64)> = stats
        .misses
        .iter()
        .map(|&(why, n)| (reason(why), n))
        .collect();
    let by_reason = Term::map_from_pairs(env, &by_reason)?;
    let latency = Term::map_from_pairs(
        env,
        &[
            (p50(), stats.p50_us),
            (p99(), stats.p99_us),
            (max(), stats.max_us),
        ],
    )?;
    let pairs: [(Atom, Term<'a>); 8] = [
        (state(), state_atom.encode(env)),
        (gets(), stats.gets.encode(env)),
        (hits(), stats.hits.encode(env)),
        (misses(), by_reason),
        (sets(), stats.sets.encode(env)),
        (drops(), stats.drops.encode(env)),
        (errors(), stats.write_errors.encode(env)),
        (latency_us(), latency),
    ];
    Term::map_from_pairs(env, &pairs)
}
