//! The Redis client of the shared level, for one store.
//!
//! Writes go to a background thread through a bounded queue, so the owner never waits on the network: a full
//! queue drops the write, counted. Reads run on the calling thread (a dirty IO scheduler, in the NIF) within the
//! timeout, through a small pool of connections, to wherever `topology.rs` says Redis is. At most
//! `max_in_flight` reads wait on Redis at once, and none while the breaker is open. The read rate bounds what a
//! flood of handshakes with made-up ids can cost, without refusing a storm of clients that come back with real
//! sessions after their node died: a read that finds nothing spends a place of `max_reads_per_s`, a read that
//! finds a blob gives its place back, and what was found is kept beside the store for its lifetime
//! (`recent.rs`), so that an id replayed again and again reaches Redis once. A broken connection is dropped and
//! made again on next use, so the client comes back by itself when Redis does, or when Sentinel or the Cluster
//! has promoted a replica.
//!
//! The writer thread runs this library's code until the `Remote` is dropped: the NIF keeps its library mapped
//! for the life of the VM (its `reaper.rs`), so the thread never outlives the code it runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use redis::RedisError;
use zeroize::Zeroizing;

use crate::breaker::{Breaker, State};
use crate::recent::Recent;
use crate::stats::{Miss, Snapshot, Stats};
use crate::topology::{is_auth, set_deadline, Conn, Kind, Target, Tls};

/// How to reach Redis, and how much to wait for it. No `Debug`: it holds the password and the client key.
#[derive(Clone)]
pub struct Config {
    /// One URL for a server (`redis://host:port/db`, or `rediss://` for TLS), several for the seeds of a Redis
    /// Cluster; or, with `master_name`, the URLs of the sentinels that watch the master.
    pub urls: Vec<String>,
    /// The name Sentinel knows the master by; `None`: no Sentinel.
    pub master_name: Option<String>,
    /// Certificates for `rediss://` URLs; `None`: the system's roots, no client certificate.
    pub tls: Option<Tls>,
    /// An ACL user and its password, in place of any the URLs carry.
    pub username: Option<String>,
    pub password: Option<Zeroizing<String>>,
    /// The longest a connection, a read or a write may take.
    pub timeout: Duration,
    /// Writes waiting for the writer thread; more are dropped.
    pub queue: usize,
    /// Reads waiting on Redis at once; more are misses (`busy`).
    pub max_in_flight: usize,
    /// Reads that found nothing, per second, counted in windows of a tenth of a second: once a window's are
    /// spent, no read is sent until the next (`busy`). A read that finds a session gives its place back, so a
    /// flood of made-up ids costs at most this many round trips a second, and a storm of real sessions is not
    /// refused for it.
    pub max_reads_per_s: u32,
    /// Failures in a row that open the breaker, and for how long it stays open.
    pub breaker_threshold: u32,
    pub breaker_cool_down: Duration,
    /// Blobs found in Redis and opened, kept for what is left of their lifetime (`recent.rs`, `Remote::keep`).
    pub replay_cache: usize,
}

impl Config {
    /// `urls` with the defaults of the Erlang side's options.
    pub fn new(urls: Vec<String>) -> Config {
        Config {
            urls,
            master_name: None,
            tls: None,
            username: None,
            password: None,
            timeout: Duration::from_millis(50),
            queue: 10_000,
            max_in_flight: 16,
            max_reads_per_s: 1000,
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(1),
            replay_cache: 1000,
        }
    }
}

/// Why a configuration was refused. Names the URL's position, never its text (it may hold a password).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("Redis URL {index} is not a valid redis:// or rediss:// URL")]
    BadUrl { index: usize },
    #[error("sentinel URL {index} is not a valid redis:// or rediss:// URL")]
    BadSentinel { index: usize },
    #[error("the TLS certificates are not valid PEM, or were given for redis:// URLs")]
    Tls,
    #[error("a timeout, queue, in-flight limit, read rate or replay cache of zero")]
    Zero,
    #[error("the writer thread could not be started")]
    NoThread,
}

impl ConfigError {
    /// The option at fault, as the user named it.
    pub fn option(self) -> &'static str {
        match self {
            ConfigError::BadUrl { .. } => "url",
            ConfigError::BadSentinel { .. } => "sentinels",
            ConfigError::Tls => "tls",
            ConfigError::Zero => "timeout_ms",
            ConfigError::NoThread => "enomem",
        }
    }
}

/// Makes, on the writer thread, what a write stores and for how long: the caller's path only queues it. `None`:
/// nothing to store after all.
pub type Make = Box<dyn FnOnce() -> Option<(Vec<u8>, Duration)> + Send>;

/// A write: its Redis key, and what makes its value.
struct Write {
    key: Vec<u8>,
    make: Make,
}

/// What the writer thread and the readers share.
struct Shared {
    target: Target,
    tls: bool,
    timeout: Duration,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    /// Reads that found nothing admitted per window, and the window they are counted in.
    reads_per_window: u32,
    window: Mutex<(Instant, u32)>,
    pool: Mutex<Vec<Conn>>,
    recent: Recent,
    breaker: Breaker,
    stats: Stats,
    /// Redis refused our credentials since the last warning was taken (`take_auth_warning`).
    auth_failed: AtomicBool,
    auth_warned: AtomicBool,
}

/// One store's link to Redis. Dropping it ends its writer thread once the queue is drained.
pub struct Remote {
    shared: Arc<Shared>,
    queue: SyncSender<Write>,
}

/// What `info/1` says of where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub kind: Kind,
    pub tls: bool,
    /// Sentinel's master in use, as `host:port`, once one was found.
    pub master: Option<String>,
    /// Blobs in the replay cache.
    pub replay_cached: usize,
}

/// A value of `info/1`'s `shared` map (`Remote::info`): the NIF encodes each kind and knows no field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// An atom, by its name.
    Name(&'static str),
    Flag(bool),
    /// A binary, or `undefined`.
    Text(Option<String>),
    Count(u64),
    /// A map of atoms, by their names, to counts.
    Counts(Vec<(&'static str, u64)>),
}

/// Connections kept for reads when idle.
const POOL_MAX: usize = 4;
/// Writes sent together in one pipelined round trip, at most.
const BATCH: usize = 64;
/// The read rate is counted in windows of a tenth of a second.
const WINDOWS_PER_S: u32 = 10;
const WINDOW: Duration = Duration::from_millis(100);

impl Remote {
    pub fn start(config: Config) -> Result<Remote, ConfigError> {
        if config.timeout.is_zero()
            || config.queue == 0
            || config.max_in_flight == 0
            || config.max_reads_per_s == 0
            || config.replay_cache == 0
        {
            return Err(ConfigError::Zero);
        }
        let (target, tls) = Target::new(&config)?;
        let shared = Arc::new(Shared {
            target,
            tls,
            timeout: config.timeout,
            max_in_flight: config.max_in_flight,
            in_flight: AtomicUsize::new(0),
            reads_per_window: config.max_reads_per_s.div_ceil(WINDOWS_PER_S).max(1),
            window: Mutex::new((Instant::now(), 0)),
            pool: Mutex::new(Vec::new()),
            recent: Recent::new(config.replay_cache),
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cool_down),
            stats: Stats::default(),
            auth_failed: AtomicBool::new(false),
            auth_warned: AtomicBool::new(false),
        });
        let (queue, writes) = mpsc::sync_channel(config.queue);
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("nif_session_cache_redis_writer".into())
            .spawn(move || writer.write_all(writes))
            .map_err(|_| ConfigError::NoThread)?;
        Ok(Remote { shared, queue })
    }

    /// Queues a write under `key`, whose value and lifetime `make` makes on the writer thread. Never waits: with
    /// the queue full, the write is dropped and counted. Returns whether it was queued.
    pub fn put(&self, key: Vec<u8>, make: Make) -> bool {
        match self.queue.try_send(Write { key, make }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.stats.drop_write();
                false
            }
        }
    }

    /// Queues `blob` to be stored under `key` for `ttl`, as `put` does.
    pub fn put_blob(&self, key: Vec<u8>, blob: Vec<u8>, ttl: Duration) -> bool {
        self.put(key, Box::new(move || Some((blob, ttl))))
    }

    /// The blob under `key`: from the replay cache if Redis returned it lately and it is still alive, else asked of
    /// Redis within the timeout. Blocks the calling thread: call it off the schedulers.
    pub fn get(&self, key: &[u8]) -> Result<Vec<u8>, Miss> {
        let shared = &self.shared;
        shared.stats.get();
        let result = match shared.recent.get(key, Instant::now()) {
            Some(blob) => {
                shared.stats.replayed();
                Ok(blob)
            }
            None => shared.get(key),
        };
        match &result {
            Ok(_) => shared.stats.hit(),
            Err(why) => shared.stats.miss(*why),
        }
        result
    }

    /// Keeps `blob`, found under `key` and opened by the caller (so its expiry is its sealer's), beside the store
    /// until that expiry (`seal::expiry`), so that the id costs Redis nothing more while it lives.
    pub fn keep(&self, key: &[u8], blob: Vec<u8>) {
        let left =
            crate::seal::expiry(&blob).and_then(|at| at.duration_since(SystemTime::now()).ok());
        if let Some(left) = left {
            self.shared.recent.put(key, blob, Instant::now() + left);
        }
    }

    /// Counts a read that found a blob the caller could not use (`Unsealed` or `Unusable`), as a miss instead of a hit.
    pub fn unusable(&self, why: Miss) {
        self.shared.stats.unhit(why);
    }

    pub fn breaker(&self) -> State {
        self.shared.breaker.state()
    }

    pub fn stats(&self) -> Snapshot {
        self.shared.stats.snapshot()
    }

    /// `info/1`'s `shared` map: where Redis is, the breaker's state, the counters, the replay cache, and the
    /// latency of reads that reached Redis. No URL, no password, no key.
    pub fn info(&self) -> Vec<(&'static str, Field)> {
        let (stats, topology) = (self.stats(), self.topology());
        let misses = stats.misses.iter().map(|&(why, n)| (why.name(), n));
        let latency = [
            ("p50", stats.p50_us),
            ("p99", stats.p99_us),
            ("max", stats.max_us),
        ];
        vec![
            ("topology", Field::Name(topology.kind.name())),
            ("tls", Field::Flag(topology.tls)),
            ("master", Field::Text(topology.master)),
            ("state", Field::Name(self.breaker().name())),
            ("gets", Field::Count(stats.gets)),
            ("hits", Field::Count(stats.hits)),
            ("replayed", Field::Count(stats.replayed)),
            ("replay_cache", Field::Count(topology.replay_cached as u64)),
            ("misses", Field::Counts(misses.collect())),
            ("sets", Field::Count(stats.sets)),
            ("drops", Field::Count(stats.drops)),
            ("errors", Field::Count(stats.write_errors)),
            ("latency_us", Field::Counts(latency.to_vec())),
        ]
    }

    pub fn topology(&self) -> Topology {
        Topology {
            kind: self.shared.target.kind(),
            tls: self.shared.tls,
            master: self.shared.target.master(),
            replay_cached: self.shared.recent.len(),
        }
    }

    /// True once after Redis refused our credentials (a read or a write), until it refuses them again after a
    /// success: the caller logs one warning for it.
    pub fn take_auth_warning(&self) -> bool {
        self.shared.auth_failed.load(Ordering::Relaxed)
            && !self.shared.auth_warned.swap(true, Ordering::Relaxed)
    }
}

impl Shared {
    fn get(&self, key: &[u8]) -> Result<Vec<u8>, Miss> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Miss::Busy);
        }
        let result = match self.admit(Instant::now()) {
            Some(window) => {
                let result = self.get_in_flight(key);
                if result.is_ok() {
                    self.give_back(window);
                }
                result
            }
            None => Err(Miss::Busy),
        };
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        result
    }

    fn get_in_flight(&self, key: &[u8]) -> Result<Vec<u8>, Miss> {
        let start = Instant::now();
        if !self.breaker.allow(start) {
            return Err(Miss::BreakerOpen);
        }
        let pooled = crate::locked(&self.pool).pop();
        let (answer, conn) = self.call(pooled, start + self.timeout, false, |conn| {
            redis::cmd("GET")
                .arg(key)
                .query::<Option<Vec<u8>>>(conn.as_dyn())
        });
        self.stats.latency(start.elapsed());
        match answer {
            Ok(found) => {
                self.succeeded();
                let mut pool = crate::locked(&self.pool);
                if let (Some(conn), true) = (conn, pool.len() < POOL_MAX) {
                    pool.push(conn);
                }
                found.ok_or(Miss::Absent)
            }
            Err(error) => Err(self.failed(&error)),
        }
    }

    fn succeeded(&self) {
        self.breaker.success();
        if self.auth_failed.swap(false, Ordering::Relaxed) {
            self.auth_warned.store(false, Ordering::Relaxed);
        }
    }

    /// Accounts for a failed call, and says why it failed.
    fn failed(&self, error: &RedisError) -> Miss {
        self.breaker.failure(Instant::now());
        self.target.failed(error);
        if is_auth(error) {
            self.auth_failed.store(true, Ordering::Relaxed);
            Miss::Auth
        } else if error.is_timeout() {
            Miss::Timeout
        } else {
            Miss::Error
        }
    }

    /// Takes a place for one read in the current window of the read rate, if one is left: the window's start.
    fn admit(&self, now: Instant) -> Option<Instant> {
        let mut window = crate::locked(&self.window);
        if now.saturating_duration_since(window.0) >= WINDOW {
            *window = (now, 0);
        }
        if window.1 >= self.reads_per_window {
            return None;
        }
        window.1 += 1;
        Some(window.0)
    }

    /// A read admitted in `window` found a session: its place goes back, if that window is still the current one.
    fn give_back(&self, window: Instant) {
        let mut current = crate::locked(&self.window);
        if current.0 == window {
            current.1 = current.1.saturating_sub(1);
        }
    }

    /// The writer thread: one connection, made again after any failure; writes refused while the breaker is
    /// open. Writes waiting in the queue go together, up to `BATCH`, in one pipelined round trip. Ends when the
    /// `Remote` is dropped and the queue is empty.
    fn write_all(&self, writes: Receiver<Write>) {
        let mut conn: Option<Conn> = None;
        while let Ok(first) = writes.recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match writes.try_recv() {
                    Ok(write) => batch.push(write),
                    Err(_) => break,
                }
            }
            // Made first: a batch the breaker lets through as its probe must then be tried, to report.
            let made: Vec<(Vec<u8>, Vec<u8>, u64)> = batch
                .into_iter()
                .filter_map(|write| {
                    let (blob, ttl) = (write.make)()?;
                    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                    Some((write.key, blob, ttl_ms))
                })
                .collect();
            if made.is_empty() {
                continue;
            }
            if !self.breaker.allow(Instant::now()) {
                made.iter().for_each(|_| self.stats.drop_write());
                continue;
            }
            let set = |key: &[u8], blob: &[u8], ttl_ms: u64| {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(blob).arg("PX").arg(ttl_ms);
                cmd
            };
            let deadline = Instant::now() + self.timeout;
            let (result, kept) = self.call(conn.take(), deadline, true, |open| match open {
                // One server: one pipelined round trip for the batch.
                Conn::Single(_) => {
                    let mut pipeline = redis::pipe();
                    for (key, blob, ttl_ms) in &made {
                        pipeline.add_command(set(key, blob, *ttl_ms)).ignore();
                    }
                    pipeline.query::<()>(open.as_dyn())
                }
                // A cluster: the keys live on different masters, so one command each.
                Conn::Cluster(_) => made.iter().try_for_each(|(key, blob, ttl_ms)| {
                    set(key, blob, *ttl_ms).query::<()>(open.as_dyn())
                }),
            });
            conn = kept;
            match result {
                Ok(()) => {
                    self.succeeded();
                    made.iter().for_each(|_| self.stats.set());
                }
                Err(error) => {
                    self.failed(&error);
                    made.iter().for_each(|_| self.stats.write_error());
                }
            }
        }
    }

    /// `call` on `kept`, a connection made earlier, and if that fails other than by timing out (Redis may have
    /// restarted since, or failed over), once more on a new one (the writer's, or a reader's); all of it by
    /// `deadline`. Returns the connection to keep, if the call succeeded.
    fn call<T>(
        &self,
        kept: Option<Conn>,
        deadline: Instant,
        writer: bool,
        call: impl Fn(&mut Conn) -> Result<T, RedisError>,
    ) -> (Result<T, RedisError>, Option<Conn>) {
        if let Some(mut conn) = kept {
            let tried = deadline_on(&mut conn, deadline).and_then(|()| call(&mut conn));
            match tried {
                Ok(value) => return (Ok(value), Some(conn)),
                Err(error) if error.is_timeout() => return (Err(error), None),
                Err(error) => self.target.failed(&error),
            }
        }
        let fresh = self.target.connect(deadline, writer).and_then(|mut conn| {
            deadline_on(&mut conn, deadline)?;
            call(&mut conn).map(|value| (value, conn))
        });
        match fresh {
            Ok((value, conn)) => (Ok(value), Some(conn)),
            Err(error) => (Err(error), None),
        }
    }
}

/// Makes a single server's connection give up reading and writing at `deadline` (a cluster connection has its
/// own timeouts, set to ours).
fn deadline_on(conn: &mut Conn, deadline: Instant) -> Result<(), RedisError> {
    match conn {
        Conn::Single(conn) => set_deadline(conn, deadline),
        Conn::Cluster(_) => Ok(()),
    }
}

/// The Redis key of session `id` in `namespace`: a fixed prefix, the namespace behind its length, and the id, so
/// that no two namespaces can name the same key.
pub fn redis_key(namespace: &[u8], id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(32 + namespace.len() + id.len());
    key.extend_from_slice(b"nif_session_cache:");
    key.extend_from_slice(namespace.len().to_string().as_bytes());
    key.push(b':');
    key.extend_from_slice(namespace);
    key.push(b':');
    key.extend_from_slice(id);
    key
}
