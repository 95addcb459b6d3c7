//! A listener store's shared level (`session_share`): a namespace, sealing keys and a Redis to share its sessions
//! with other nodes. What leaves the node is made by the Erlang side (`nif_session_cache_shared.erl`), which owns
//! the format and checks what comes back; here it is only encoded, sealed and sent on a writer thread, or
//! fetched and opened. Nothing here is logged, and errors name options, never their values: the keys and the
//! Redis password are secrets.

use std::sync::Arc;
use std::time::Duration;

use rustler::env::OwnedEnv;
use rustler::{Atom, Binary, Env, NifMap, Term};
use session_codec::term::Term as _;
use session_nif::info::Info;
use session_share::remote::{redis_key, Config, Remote};
use session_share::seal::{Keys, OpenError};
use session_share::stats::Miss;
use session_share::topology::Tls;
use zeroize::Zeroizing;

use crate::atoms;
use crate::term::Viewed;

pub struct SharedLevel {
    sealing: Arc<Sealing>,
    remote: Remote,
    /// Seconds of lifetime a session found in Redis must have left to be returned (the Erlang side checks).
    margin_s: u64,
}

/// `share/2`'s configuration, a map the Erlang side made and checked (`nif_session_cache_shared:config/1`): every
/// key present, `<<>>` for a string not given, `tls` empty or `[CaPem, CertPem, KeyPem]`.
#[derive(NifMap)]
struct Options<'a> {
    url: Vec<Binary<'a>>,
    master_name: Binary<'a>,
    username: Binary<'a>,
    password: Binary<'a>,
    tls: Vec<Binary<'a>>,
    namespace: Binary<'a>,
    keys: Vec<Binary<'a>>,
    timeout_ms: u64,
    queue: usize,
    max_in_flight: usize,
    max_reads_per_s: u32,
    breaker_threshold: u32,
    breaker_cool_down_ms: u64,
    replay_cache: usize,
    margin_s: u64,
}

impl SharedLevel {
    /// The level `config` describes (`Options`). Refused: the name of the bad option. Starts the writer thread.
    pub fn start(env: Env, config: Term) -> Result<SharedLevel, Atom> {
        let o: Options = config.decode().map_err(|_| atoms::shared())?;
        let text = |b: &Binary| String::from_utf8(b.to_vec()).ok().filter(|s| !s.is_empty());
        let pem = |b: &Binary| Some(b.to_vec()).filter(|b| !b.is_empty());
        let keys = Keys::new(&o.keys.iter().map(Binary::as_slice).collect::<Vec<_>>())
            .map_err(|_| atoms::keys())?;
        let remote = Remote::start(Config {
            urls: o.url.iter().filter_map(text).collect(),
            master_name: text(&o.master_name),
            tls: match o.tls.as_slice() {
                [ca, cert, key] => Some(Tls {
                    ca: pem(ca),
                    client: pem(cert).zip(pem(key).map(Zeroizing::new)),
                }),
                _ => None,
            },
            username: text(&o.username),
            password: text(&o.password).map(Zeroizing::new),
            timeout: Duration::from_millis(o.timeout_ms),
            queue: o.queue,
            max_in_flight: o.max_in_flight,
            max_reads_per_s: o.max_reads_per_s,
            breaker_threshold: o.breaker_threshold,
            breaker_cool_down: Duration::from_millis(o.breaker_cool_down_ms),
            replay_cache: o.replay_cache,
        })
        .map_err(|error| Atom::from_str(env, error.option()).unwrap_or(atoms::shared()))?;
        let namespace = o.namespace.as_slice().to_vec();
        let sealing = Arc::new(Sealing { namespace, keys });
        Ok(SharedLevel {
            sealing,
            remote,
            margin_s: o.margin_s,
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
                Some((sealing.keys.seal(&sealing.namespace, &id, &bytes, ttl), ttl))
            }),
        );
    }

    /// The session bytes kept in Redis for `id` (or read from it lately), opened, or why there are none. Waits on
    /// Redis for at most the timeout: call it off the normal schedulers.
    pub fn fetch(&self, id: &[u8]) -> Result<Zeroizing<Vec<u8>>, Miss> {
        let Sealing { namespace, keys } = &*self.sealing;
        let key = redis_key(namespace, id);
        let blob = self.remote.get(&key)?;
        let session = keys.open(namespace, id, &blob).map_err(|_: OpenError| {
            self.remote.unusable(Miss::Unsealed);
            Miss::Unsealed
        })?;
        // Opened, so its expiry is the sealer's: kept beside the store until then.
        self.remote.keep(&key, blob);
        Ok(session)
    }

    /// Counts a session found in Redis that the Erlang side could not use as a miss.
    pub fn unusable(&self) {
        self.remote.unusable(Miss::Unusable);
    }

    pub fn margin_s(&self) -> u64 {
        self.margin_s
    }

    /// True once after Redis refused the credentials: the caller logs one warning naming the options.
    pub fn take_auth_warning(&self) -> bool {
        self.remote.take_auth_warning()
    }

    /// `info/1`'s `shared` map, as the shared level lists it (`Remote::info`). No URL, no password.
    pub fn info(&self) -> Info {
        session_nif::info::shared(self.remote.info())
    }
}

/// What the writer thread needs to seal a session.
struct Sealing {
    namespace: Vec<u8>,
    keys: Keys,
}

/// A miss's reason, as Erlang sees it (`absent`, `busy`, `auth`, ...).
pub fn reason(env: Env, why: Miss) -> Atom {
    Atom::from_str(env, why.name()).unwrap_or(atoms::error())
}
