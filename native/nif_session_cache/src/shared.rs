//! The glue of the shared level (`session_share`): a server store may be given a namespace, sealing keys and a
//! Redis to share its sessions with other nodes.
//!
//! `share/2` attaches the level (owner only). After each insert into such a store, `publish` queues the entry
//! for the writer thread, which is all the owner pays: there, the session is rebuilt from the entry's bytes in an
//! environment of its own, stripped of every private key, its time stamp turned into system time, encoded and
//! sealed. What comes back is checked by the Erlang side (`nif_session_cache_shared.erl`, `incoming/4`) before
//! OTP sees it: `fetch/2` asks Redis on a dirty IO scheduler, within the timeout, and opens what it finds.
//! Errors are returned as atoms, never raised: `share/2`'s arguments hold the keys, and a NIF exception would put
//! them in a stack trace.

use std::sync::Arc;
use std::time::Duration;

use once_cell::sync::OnceCell;
use rustler::env::OwnedEnv;
use rustler::sys::{enif_monotonic_time, enif_time_offset, ErlNifTimeUnit, ERL_NIF_TIME_ERROR};
use rustler::types::map::MapIterator;
use rustler::{Atom, Binary, Encoder, Env, NifResult, OwnedBinary, Term, TermType};
use session_share::breaker::State;
use session_share::remote::{redis_key, Config, ConfigError, Remote};
use session_share::seal::{KeyError, Keys, OpenError};
use session_share::stats::Miss;
use zeroize::Zeroizing;

use crate::atoms;
use crate::error::CacheError;
use crate::packed::Packed;
use crate::raw;
use crate::resource::StoreResource;

/// A store's shared level.
pub struct Shared {
    /// What the writer thread needs to make a session's blob.
    sealing: Arc<Sealing>,
    remote: Remote,
    /// Seconds of lifetime a session found in Redis must have left to be returned (the Erlang side checks).
    margin_s: u64,
}

struct Sealing {
    namespace: Vec<u8>,
    keys: Keys,
    /// ssl's `session_lifetime`, and its version, which a session's shape depends on (`incoming/4` checks it).
    lifetime_s: u64,
    ssl_vsn: Vec<u8>,
    /// Units of `erlang:monotonic_time/0` in a second: a session's time stamp is in them.
    native_per_s: u64,
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
    lifetime_s,
    ssl_vsn,
    native_per_s,
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
    format_v1 = "nif_session_cache_shared_v1",
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
        let ssl_version: Binary = field(ssl_vsn())?.decode().map_err(|_| ssl_vsn())?;
        let shared = Shared {
            sealing: Arc::new(Sealing {
                namespace: namespace.as_slice().to_vec(),
                keys: sealing,
                lifetime_s: number(lifetime_s())?,
                ssl_vsn: ssl_version.as_slice().to_vec(),
                native_per_s: number(native_per_s())?.max(1),
            }),
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

/// Queues `packed`, just stored under the server session id `id`, for Redis. Never waits: a full queue drops it,
/// counted. The work (rebuilding, stripping, encoding, sealing) happens on the writer thread (`outgoing`).
pub fn publish(shared: &Shared, id: &[u8], packed: &Packed) {
    // Read here, on the scheduler: the VM answers time questions only on its own threads.
    // SAFETY: both only read the VM's clocks, and this is a scheduler thread.
    let clock = unsafe {
        Clock {
            now_ns: enif_monotonic_time(ErlNifTimeUnit::ERL_NIF_NSEC),
            offset_ns: enif_time_offset(ErlNifTimeUnit::ERL_NIF_NSEC),
        }
    };
    if clock.now_ns == ERL_NIF_TIME_ERROR || clock.offset_ns == ERL_NIF_TIME_ERROR {
        return;
    }
    let sealing = Arc::clone(&shared.sealing);
    let packed = packed.clone();
    let session_id = id.to_vec();
    let key = redis_key(&sealing.namespace, id);
    shared.remote.put(
        key,
        Box::new(move || {
            let (bytes, ttl) = outgoing(&packed, &sealing, clock)?;
            Some((
                sealing.keys.seal(&sealing.namespace, &session_id, &bytes),
                ttl,
            ))
        }),
    );
}

/// The VM's monotonic time and its offset to system time, in nanoseconds, when a session was stored.
#[derive(Clone, Copy)]
struct Clock {
    now_ns: i64,
    offset_ns: i64,
}

/// What leaves the node for the session in `packed`, and for how long Redis keeps it: `{FORMAT, SslVsn,
/// SystemNs, Session}` in the external term format, `Session` with every private key set to `undefined`, and
/// `SystemNs` its time stamp as system time in nanoseconds. `None` for a term that is no OTP server session
/// (no time stamp next to an internal id `{Stamp, Unique}`), or one past its lifetime. Runs on the writer
/// thread, in an environment of its own; the encoding is wiped once sealed.
fn outgoing(
    packed: &Packed,
    sealing: &Sealing,
    clock: Clock,
) -> Option<(Zeroizing<Vec<u8>>, Duration)> {
    let workspace = OwnedEnv::new();
    workspace.run(|env| {
        let session = packed.session(env)?;
        let fields: Vec<Term> = raw::tuple_elements(session)?.collect();
        if fields.first()?.atom_to_string().ok()? != "session" {
            return None;
        }
        let stamp = time_stamp(&fields)?;
        let Clock { now_ns, offset_ns } = clock;
        let stamp_ns =
            i64::try_from(i128::from(stamp) * 1_000_000_000 / i128::from(sealing.native_per_s))
                .ok()?;
        let age_ms = now_ns.saturating_sub(stamp_ns).max(0) as u64 / 1_000_000;
        let ttl_ms = sealing
            .lifetime_s
            .saturating_mul(1000)
            .checked_sub(age_ms)
            .filter(|&ms| ms > 0)?;
        let sent: Vec<Term> = fields
            .iter()
            .map(|&field| {
                if private_key(field) {
                    atoms::undefined().encode(env)
                } else {
                    field
                }
            })
            .collect();
        let mut vsn = OwnedBinary::new(sealing.ssl_vsn.len())?;
        vsn.as_mut_slice().copy_from_slice(&sealing.ssl_vsn);
        let payload = (
            format_v1(),
            Binary::from_owned(vsn, env),
            stamp_ns.saturating_add(offset_ns),
            rustler::types::tuple::make_tuple(env, &sent),
        )
            .encode(env);
        let bytes = raw::external(payload, |bytes| Zeroizing::new(bytes.to_vec()))?;
        Some((bytes, Duration::from_millis(ttl_ms)))
    })
}

/// The session's time stamp: the integer `Stamp` of a field next to an internal id `{Stamp, Unique}`, as OTP's
/// listener cache sets them. The same rule as `nif_session_cache_shared:time_stamp/1`.
fn time_stamp(fields: &[Term]) -> Option<i64> {
    let integers: Vec<i64> = fields
        .iter()
        .filter_map(|f| f.decode::<i64>().ok())
        .collect();
    let mut stamps = fields.iter().filter_map(|field| {
        let mut pair = raw::tuple_elements(*field).filter(|pair| pair.len() == 2)?;
        let stamp = pair.next()?.decode::<i64>().ok()?;
        // The second element, OTP's unique integer, must be an integer too.
        pair.next()?.decode::<i64>().ok()?;
        integers.contains(&stamp).then_some(stamp)
    });
    let stamp = stamps.next()?;
    stamps.next().is_none().then_some(stamp)
}

/// Whether a field holds the listener's private key: a `public_key` private key record, one with its parameters
/// (`{Key, Params}`, RSA-PSS), or a key held by an engine or a signing fun (a map with `engine`, `sign_fun` or
/// `key_id`).
fn private_key(field: Term) -> bool {
    const KEY_RECORDS: [&str; 5] = [
        "RSAPrivateKey",
        "ECPrivateKey",
        "DSAPrivateKey",
        "PrivateKeyInfo",
        "OneAsymmetricKey",
    ];
    match field.get_type() {
        TermType::Tuple => {
            let Some(elements) = raw::tuple_elements(field) else {
                return false;
            };
            let elements: Vec<Term> = elements.collect();
            let record = elements
                .first()
                .and_then(|tag| tag.atom_to_string().ok())
                .is_some_and(|tag| KEY_RECORDS.contains(&tag.as_str()));
            record || (elements.len() == 2 && private_key(elements[0]))
        }
        TermType::Map => MapIterator::new(field)
            .into_iter()
            .flatten()
            .any(|(key, _)| {
                key.atom_to_string()
                    .is_ok_and(|name| matches!(name.as_str(), "engine" | "sign_fun" | "key_id"))
            }),
        _ => false,
    }
}

/// The session bytes kept in Redis for `id`, opened: `{ok, Bytes, MarginS}`, or `{miss, Reason}`. Dirty IO
/// scheduler: waits on Redis for at most the timeout, and not at all while the breaker is open or when too many
/// reads are out already.
#[rustler::nif(schedule = "DirtyIo")]
fn fetch<'a>(env: Env<'a>, store: Term<'a>, id: Binary<'a>) -> NifResult<Term<'a>> {
    let store = StoreResource::from_term(store)?;
    let shared = store.shared.get().ok_or(rustler::Error::BadArg)?;
    let key = redis_key(&shared.sealing.namespace, id.as_slice());
    let blob = match shared.remote.get(&key) {
        Ok(blob) => blob,
        Err(why) => return Ok((miss(), reason(why)).encode(env)),
    };
    let sealing = &shared.sealing;
    match sealing.keys.open(&sealing.namespace, id.as_slice(), &blob) {
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
