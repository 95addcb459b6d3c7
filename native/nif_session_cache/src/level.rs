//! A listener store's shared level (`session_share`): a namespace, sealing keys and a Redis to share its sessions
//! with other nodes. What leaves the node is made by the Erlang side (`nif_session_cache_shared.erl`), which owns
//! the format and checks what comes back; here it is only encoded, sealed and sent on a writer thread, or
//! fetched and opened. Nothing here is logged, and errors name options, never their values: the keys and the
//! Redis password are secrets.

use std::sync::Arc;
use std::time::Duration;

use rustler::env::OwnedEnv;
use rustler::{Atom, Binary, Env, NifResult, Term};
use session_codec::term::Term as _;
use session_nif::info::Info;
use session_share::remote::{redis_key, Config, ConfigError, Remote};
use session_share::seal::{Keys, OpenError};
use session_share::stats::Miss;
use zeroize::Zeroizing;

use crate::atoms;
use crate::term::Viewed;

pub struct SharedLevel {
    sealing: Arc<Sealing>,
    remote: Remote,
    /// Seconds of lifetime a session found in Redis must have left to be returned (the Erlang side checks).
    margin_s: u64,
}

impl SharedLevel {
    /// The level `config` describes: a map, checked by the Erlang side, with the keys `url` (a list of binaries),
    /// `namespace`, `keys` (32-byte binaries), `timeout_ms`, `queue`, `max_in_flight`, `max_reads_per_s`,
    /// `breaker_threshold`, `breaker_cool_down_ms` and `margin_s`. Refused: the name of the bad option. Starts the
    /// writer thread.
    pub fn start(config: Term) -> Result<SharedLevel, Atom> {
        let field = |name: Atom| config.map_get(name).map_err(|_| name);
        let number = |name: Atom| -> Result<u64, Atom> { field(name)?.decode().map_err(|_| name) };
        let binaries =
            |name: Atom| -> Result<Vec<Binary>, Atom> { field(name)?.decode().map_err(|_| name) };
        let namespace: Binary = field(atoms::namespace())?
            .decode()
            .map_err(|_| atoms::namespace())?;
        let keys = binaries(atoms::keys())?;
        let keys = Keys::new(&keys.iter().map(Binary::as_slice).collect::<Vec<_>>())
            .map_err(|_| atoms::keys())?;
        let urls = binaries(atoms::url())?
            .iter()
            .map(|url| String::from_utf8(url.as_slice().to_vec()).map_err(|_| atoms::url()))
            .collect::<Result<Vec<String>, Atom>>()?;
        let small = |name: Atom| u32::try_from(number(name)?).map_err(|_| name);
        let remote = Remote::start(Config {
            urls,
            timeout: Duration::from_millis(number(atoms::timeout_ms())?),
            queue: number(atoms::queue())? as usize,
            max_in_flight: number(atoms::max_in_flight())? as usize,
            max_reads_per_s: small(atoms::max_reads_per_s())?,
            breaker_threshold: small(atoms::breaker_threshold())?,
            breaker_cool_down: Duration::from_millis(number(atoms::breaker_cool_down_ms())?),
        })
        .map_err(|error| match error {
            ConfigError::NoUrl | ConfigError::BadUrl { .. } => atoms::url(),
            ConfigError::Zero => atoms::timeout_ms(),
            ConfigError::NoThread => atoms::enomem(),
        })?;
        Ok(SharedLevel {
            sealing: Arc::new(Sealing {
                namespace: namespace.as_slice().to_vec(),
                keys,
            }),
            remote,
            margin_s: number(atoms::margin_s())?,
        })
    }

    /// Queues `payload`, what the Erlang side made of the session stored under `id`, for Redis, to keep for `ttl`.
    /// Never waits: a full queue drops it, counted. The copy is made here; the encoding and sealing on the writer
    /// thread, where the encoding is wiped once sealed.
    pub fn publish(&self, id: &[u8], payload: Term, ttl: Duration) {
        let workspace = OwnedEnv::new();
        let saved = workspace.save(payload);
        let (sealing, id) = (Arc::clone(&self.sealing), id.to_vec());
        self.remote.put(
            redis_key(&sealing.namespace, &id),
            Box::new(move || {
                let bytes = workspace.run(|env| {
                    Viewed(saved.load(env)).external(|bytes| Zeroizing::new(bytes.to_vec()))
                })?;
                Some((sealing.keys.seal(&sealing.namespace, &id, &bytes), ttl))
            }),
        );
    }

    /// The session bytes kept in Redis for `id`, opened, or why there are none. Waits on Redis for at most the
    /// timeout: call it off the normal schedulers.
    pub fn fetch(&self, id: &[u8]) -> Result<Zeroizing<Vec<u8>>, Miss> {
        let Sealing { namespace, keys } = &*self.sealing;
        let blob = self.remote.get(&redis_key(namespace, id))?;
        keys.open(namespace, id, &blob).map_err(|_: OpenError| {
            self.remote.unusable(Miss::Unsealed);
            Miss::Unsealed
        })
    }

    /// Counts a session found in Redis that the Erlang side could not use as a miss.
    pub fn unusable(&self) {
        self.remote.unusable(Miss::Unusable);
    }

    pub fn margin_s(&self) -> u64 {
        self.margin_s
    }

    /// `info/1`'s `shared` map (`session_nif::info::shared`).
    pub fn info(&self) -> Info {
        session_nif::info::shared(&self.remote.stats(), self.remote.breaker())
    }
}

/// What the writer thread needs to seal a session.
struct Sealing {
    namespace: Vec<u8>,
    keys: Keys,
}

/// A miss's reason, as Erlang sees it.
pub fn reason(env: Env, why: Miss) -> NifResult<Atom> {
    Atom::from_str(env, why.name())
}
