//! The Redis client of the shared level, for one store.
//!
//! Writes go to a background thread through a bounded queue, so the owner never waits on the network: a full
//! queue drops the write, counted. Reads run on the calling thread (a dirty IO scheduler, in the NIF) within the
//! timeout, through a small pool of connections. At most `max_in_flight` reads wait on Redis at once and at most
//! `max_reads_per_s` are sent a second, so that a flood of handshakes with unknown ids cannot pile up round
//! trips, and none while the breaker is open. A broken
//! connection is dropped and made again on next use, so the client comes back by itself when Redis does.
//!
//! The writer thread runs this library's code until the `Remote` is dropped: the NIF keeps its library mapped
//! for the life of the VM (its `reaper.rs`), so the thread never outlives the code it runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::{Client, Connection, ConnectionInfo, ConnectionLike, IntoConnectionInfo, RedisError};

use crate::breaker::{Breaker, State};
use crate::stats::{Miss, Snapshot, Stats};

/// How to reach Redis, and how much to wait for it.
#[derive(Debug, Clone)]
pub struct Config {
    /// One URL for a server (`redis://host:port/db`), several for the seeds of a Redis Cluster.
    pub urls: Vec<String>,
    /// The longest a connection, a read or a write may take.
    pub timeout: Duration,
    /// Writes waiting for the writer thread; more are dropped.
    pub queue: usize,
    /// Reads waiting on Redis at once; more are misses (`busy`).
    pub max_in_flight: usize,
    /// Reads sent to Redis per second, counted in windows of a tenth of a second; more are misses (`busy`). A
    /// flood of handshakes with unknown session ids then costs the listener at most this many round trips.
    pub max_reads_per_s: u32,
    /// Failures in a row that open the breaker, and for how long it stays open.
    pub breaker_threshold: u32,
    pub breaker_cool_down: Duration,
}

/// Why a configuration was refused. Names the URL's position, never its text (it may hold a password).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no Redis URL given")]
    NoUrl,
    #[error("Redis URL {index} is not a valid redis:// URL")]
    BadUrl { index: usize },
    #[error("a timeout, queue or in-flight limit of zero")]
    Zero,
    #[error("the writer thread could not be started")]
    NoThread,
}

/// Makes, on the writer thread, what a write stores and for how long: the caller's path only queues it. `None`:
/// nothing to store after all.
pub type Make = Box<dyn FnOnce() -> Option<(Vec<u8>, Duration)> + Send>;

/// A write: its Redis key, and what makes its value.
struct Write {
    key: Vec<u8>,
    make: Make,
}

enum Target {
    Single(Client),
    Cluster(ClusterClient),
}

enum Conn {
    Single(Connection),
    // Boxed: a cluster connection is several times a single one's size, and pools hold mostly single ones.
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Single(conn) => conn,
            Conn::Cluster(conn) => conn.as_mut(),
        }
    }
}

/// What the writer thread and the readers share.
struct Shared {
    target: Target,
    timeout: Duration,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    /// Reads admitted per window, and the window they are counted in.
    reads_per_window: u32,
    window: Mutex<(Instant, u32)>,
    pool: Mutex<Vec<Conn>>,
    breaker: Breaker,
    stats: Stats,
}

/// One store's link to Redis. Dropping it ends its writer thread once the queue is drained.
pub struct Remote {
    shared: Arc<Shared>,
    queue: SyncSender<Write>,
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
        if config.urls.is_empty() {
            return Err(ConfigError::NoUrl);
        }
        if config.timeout.is_zero()
            || config.queue == 0
            || config.max_in_flight == 0
            || config.max_reads_per_s == 0
        {
            return Err(ConfigError::Zero);
        }
        let infos = config
            .urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                url.as_str()
                    .into_connection_info()
                    .map(connection_info)
                    .map_err(|_| ConfigError::BadUrl { index })
            })
            .collect::<Result<Vec<ConnectionInfo>, ConfigError>>()?;
        let target = if infos.len() == 1 {
            Client::open(infos[0].clone())
                .map(Target::Single)
                .map_err(|_| ConfigError::BadUrl { index: 0 })?
        } else {
            ClusterClientBuilder::new(infos)
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .build()
                .map(Target::Cluster)
                .map_err(|_| ConfigError::BadUrl { index: 0 })?
        };
        let shared = Arc::new(Shared {
            target,
            timeout: config.timeout,
            max_in_flight: config.max_in_flight,
            in_flight: AtomicUsize::new(0),
            reads_per_window: config.max_reads_per_s.div_ceil(WINDOWS_PER_S).max(1),
            window: Mutex::new((Instant::now(), 0)),
            pool: Mutex::new(Vec::new()),
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cool_down),
            stats: Stats::default(),
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

    /// The blob under `key`, asked of Redis within the timeout. Blocks the calling thread: call it off the
    /// schedulers.
    pub fn get(&self, key: &[u8]) -> Result<Vec<u8>, Miss> {
        let shared = &self.shared;
        shared.stats.get();
        let result = shared.get(key);
        match &result {
            Ok(_) => shared.stats.hit(),
            Err(why) => shared.stats.miss(*why),
        }
        result
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
}

impl Shared {
    fn get(&self, key: &[u8]) -> Result<Vec<u8>, Miss> {
        if !self.admit(Instant::now()) {
            return Err(Miss::Busy);
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Miss::Busy);
        }
        let result = self.get_in_flight(key);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        result
    }

    fn get_in_flight(&self, key: &[u8]) -> Result<Vec<u8>, Miss> {
        let start = Instant::now();
        if !self.breaker.allow(start) {
            return Err(Miss::BreakerOpen);
        }
        let pooled = self.lock_pool().pop();
        let (answer, conn) = self.call(pooled, start + self.timeout, |conn| {
            redis::cmd("GET")
                .arg(key)
                .query::<Option<Vec<u8>>>(conn.as_dyn())
        });
        self.stats.latency(start.elapsed());
        match answer {
            Ok(found) => {
                self.breaker.success();
                let mut pool = self.lock_pool();
                if let (Some(conn), true) = (conn, pool.len() < POOL_MAX) {
                    pool.push(conn);
                }
                found.ok_or(Miss::Absent)
            }
            Err(error) => {
                self.breaker.failure(Instant::now());
                Err(classify(&error))
            }
        }
    }

    /// Whether one more read fits in the current window of the read rate.
    fn admit(&self, now: Instant) -> bool {
        // Two plain fields, always valid together: a poisoned lock still holds a usable window.
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(window.0) >= WINDOW {
            *window = (now, 0);
        }
        if window.1 >= self.reads_per_window {
            return false;
        }
        window.1 += 1;
        true
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
            let (result, kept) = self.call(conn.take(), deadline, |open| match open {
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
                    self.breaker.success();
                    made.iter().for_each(|_| self.stats.set());
                }
                Err(_) => {
                    self.breaker.failure(Instant::now());
                    made.iter().for_each(|_| self.stats.write_error());
                }
            }
        }
    }

    /// `call` on `kept`, a connection made earlier, and if that fails other than by timing out (Redis may have
    /// restarted since), once more on a new one; all of it by `deadline`. Returns the connection to keep, if the
    /// call succeeded.
    fn call<T>(
        &self,
        kept: Option<Conn>,
        deadline: Instant,
        call: impl Fn(&mut Conn) -> Result<T, RedisError>,
    ) -> (Result<T, RedisError>, Option<Conn>) {
        if let Some(mut conn) = kept {
            let tried = set_deadline(&mut conn, deadline).and_then(|()| call(&mut conn));
            match tried {
                Ok(value) => return (Ok(value), Some(conn)),
                Err(error) if error.is_timeout() => return (Err(error), None),
                Err(_) => {}
            }
        }
        let fresh = self.connect(deadline).and_then(|mut conn| {
            set_deadline(&mut conn, deadline)?;
            call(&mut conn).map(|value| (value, conn))
        });
        match fresh {
            Ok((value, conn)) => (Ok(value), Some(conn)),
            Err(error) => (Err(error), None),
        }
    }

    fn connect(&self, deadline: Instant) -> Result<Conn, RedisError> {
        match &self.target {
            Target::Single(client) => client
                .get_connection_with_timeout(remaining(deadline)?)
                .map(Conn::Single),
            // The cluster client applies its own connection and response timeouts, set to ours.
            Target::Cluster(client) => client
                .get_connection()
                .map(|conn| Conn::Cluster(Box::new(conn))),
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        // Connections are whole or absent: a poisoned pool is still a valid one.
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A URL's connection settings, without the `CLIENT SETINFO` round trip redis-rs makes on every new connection
/// by default: it would be a second wait within a read's timeout.
fn connection_info(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    info.set_redis_settings(settings)
}

/// Time left until `deadline`, or a timeout error once it has passed.
fn remaining(deadline: Instant) -> Result<Duration, RedisError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        )));
    }
    Ok(left)
}

/// Makes a single server's connection give up reading and writing at `deadline`.
fn set_deadline(conn: &mut Conn, deadline: Instant) -> Result<(), RedisError> {
    if let Conn::Single(conn) = conn {
        let left = remaining(deadline)?;
        conn.set_read_timeout(Some(left))?;
        conn.set_write_timeout(Some(left))?;
    }
    Ok(())
}

fn classify(error: &RedisError) -> Miss {
    if error.is_timeout() {
        Miss::Timeout
    } else {
        Miss::Error
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
