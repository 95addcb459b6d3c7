//! Where the shared level's Redis is, and how to open a connection to it within a deadline: one server, the seeds
//! of a Redis Cluster, or the sentinels of a master that Sentinel fails over; in clear or over TLS (rustls, the
//! `redis` crate's own), with the credentials the URLs carry or the options give.
//!
//! Sentinel: the `redis` crate's synchronous Sentinel client connects and reads without a timeout (its
//! `reconnect` calls `get_connection()`), so a silent sentinel would hold a dirty IO scheduler or the writer
//! thread for as long as the kernel waits. The master is found here instead, as Redis's Sentinel client guide
//! describes, with every step inside the caller's deadline: ask each sentinel in turn for the master's address
//! (`SENTINEL get-master-addr-by-name`), the one that answered last first and each within its share of the time
//! left, connect to the master it names and check that it says it is a master (`ROLE`). The
//! address is kept until a connection to it fails or it refuses a write as a replica (`READONLY`); then it is
//! asked for again, which is how a failover is followed.
//!
//! Nothing here formats a URL, a password or a key: errors name the option at fault.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::{
    Client, ClientTlsConfig, Connection, ConnectionAddr, ConnectionInfo, ConnectionLike, ErrorKind,
    IntoConnectionInfo, RedisError, Role, TlsCertificates,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::remote::{Config, ConfigError};

/// Certificates for `rediss://` URLs, in PEM. Its `Debug` shows which are set, never their bytes.
#[derive(Clone, Default)]
pub struct Tls {
    /// The CAs that verify the servers; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its private key, for mutual TLS.
    pub client: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl Tls {
    /// Whether a CA given holds at least one certificate, and nothing but certificates: an empty set of roots
    /// would trust nothing, and every connection would fail far from the option at fault.
    fn ca_is_valid(&self) -> bool {
        self.ca.as_ref().is_none_or(|pem| {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
            certs.is_ok_and(|certs| !certs.is_empty())
        })
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.to_vec(),
            }),
            root_cert: self.ca.clone(),
        }
    }
}

/// Which kind of deployment, as `info/1` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Single,
    Cluster,
    Sentinel,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Single => "single",
            Kind::Cluster => "cluster",
            Kind::Sentinel => "sentinel",
        }
    }
}

// One per store, made once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Target {
    Single(Client),
    /// For reads, and for the writer thread.
    Cluster(ClusterClient, ClusterClient),
    Sentinel(Sentinel),
}

pub(crate) enum Conn {
    Single(Connection),
    // Boxed: a cluster connection is several times a single one's size, and pools hold mostly single ones.
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    pub(crate) fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Single(conn) => conn,
            Conn::Cluster(conn) => conn.as_mut(),
        }
    }
}

/// A master found through its sentinels.
pub(crate) struct Sentinel {
    sentinels: Vec<Client>,
    master_name: String,
    /// How to reach the master: the sentinels' scheme, the credentials and certificates of the options.
    tls: bool,
    certificates: Option<TlsCertificates>,
    settings: redis::RedisConnectionInfo,
    /// The master last found, and its address as `host:port`.
    current: Mutex<Option<(Client, String)>>,
    /// The sentinel that answered last.
    answered: AtomicUsize,
}

impl Target {
    /// The target `config` describes, checked but not connected to.
    pub(crate) fn new(config: &Config) -> Result<(Target, bool), ConfigError> {
        let bad_url = |index| {
            if config.master_name.is_some() {
                ConfigError::BadSentinel { index }
            } else {
                ConfigError::BadUrl { index }
            }
        };
        if config.urls.is_empty() {
            return Err(bad_url(0));
        }
        let infos = config
            .urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|_| bad_url(index))?;
                match info.addr() {
                    // No way around the host name check: `rediss://...#insecure` is refused.
                    ConnectionAddr::TcpTls { insecure: true, .. } | ConnectionAddr::Unix(_) => {
                        Err(bad_url(index))
                    }
                    _ => Ok(info),
                }
            })
            .collect::<Result<Vec<ConnectionInfo>, ConfigError>>()?;
        let tls = infos
            .iter()
            .map(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }))
            .collect::<Vec<bool>>();
        if let Some(index) = tls.iter().position(|&on| on != tls[0]) {
            return Err(bad_url(index)); // all of one scheme
        }
        let tls = tls[0];
        if config
            .tls
            .as_ref()
            .is_some_and(|given| !tls || !given.ca_is_valid())
        {
            return Err(ConfigError::Tls);
        }
        let certificates = config.tls.as_ref().map(Tls::certificates);
        let settings = |info: &ConnectionInfo| credentials(info.redis_settings().clone(), config);
        let client = |info: ConnectionInfo| -> Result<Client, ConfigError> {
            match &certificates {
                Some(certs) => Client::build_with_tls(info, certs.clone()),
                None => Client::open(info),
            }
            .map_err(|_| ConfigError::Tls)
        };
        let target = match &config.master_name {
            Some(master_name) => Target::Sentinel(Sentinel {
                // A sentinel is asked with the credentials its own URL carries, if any.
                sentinels: infos
                    .iter()
                    .map(|info| client(skip_lib_name(info.clone())))
                    .collect::<Result<_, _>>()?,
                master_name: master_name.clone(),
                tls,
                certificates,
                settings: credentials(redis::RedisConnectionInfo::default(), config),
                current: Mutex::new(None),
                answered: AtomicUsize::new(0),
            }),
            None if infos.len() == 1 => {
                let info = infos[0].clone();
                let with = settings(&info);
                Target::Single(client(info.set_redis_settings(with))?)
            }
            None => {
                // Reads: one more try after a MOVED or a refused node, without the default's 16 tries and
                // sleeps of seconds: a failover costs a few misses, not a dirty scheduler held for them. The
                // writer thread may wait longer (8 tries, sleeps of at most half a second) rather than lose a
                // batch while the cluster settles.
                let build = |retries: u32, max_wait_ms: u64| {
                    let mut builder = ClusterClientBuilder::new(infos.clone())
                        .connection_timeout(config.timeout)
                        .response_timeout(config.timeout)
                        .retries(retries)
                        .min_retry_wait(0)
                        .max_retry_wait(max_wait_ms);
                    if let Some(username) = &config.username {
                        builder = builder.username(username);
                    }
                    if let Some(password) = &config.password {
                        builder = builder.password(password.as_str());
                    }
                    if let Some(certs) = &certificates {
                        builder = builder.certs(certs.clone());
                    }
                    builder
                        .build()
                        .map_err(|_| ConfigError::BadUrl { index: 0 })
                };
                let timeout_ms = config.timeout.as_millis() as u64;
                Target::Cluster(build(1, timeout_ms / 2 + 1)?, build(8, 500)?)
            }
        };
        Ok((target, tls))
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Target::Single(_) => Kind::Single,
            Target::Cluster(..) => Kind::Cluster,
            Target::Sentinel(_) => Kind::Sentinel,
        }
    }

    /// A new connection, made by `deadline` (a cluster connection within its own timeouts, set to ours), for the
    /// writer thread or for reads.
    pub(crate) fn connect(&self, deadline: Instant, writer: bool) -> Result<Conn, RedisError> {
        match self {
            Target::Single(client) => client
                .get_connection_with_timeout(remaining(deadline)?)
                .map(Conn::Single),
            Target::Cluster(reads, writes) => if writer { writes } else { reads }
                .get_connection()
                .map(|conn| Conn::Cluster(Box::new(conn))),
            Target::Sentinel(sentinel) => sentinel.connect(deadline).map(Conn::Single),
        }
    }

    /// The master in use, as `host:port`, for Sentinel.
    pub(crate) fn master(&self) -> Option<String> {
        match self {
            Target::Sentinel(sentinel) => crate::locked(&sentinel.current)
                .as_ref()
                .map(|(_, at)| at.clone()),
            _ => None,
        }
    }

    /// After `error`: forget a master that refused a write as a replica, so that the next connection asks the
    /// sentinels again.
    pub(crate) fn failed(&self, error: &RedisError) {
        if let Target::Sentinel(sentinel) = self {
            if error.code() == Some("READONLY") {
                *crate::locked(&sentinel.current) = None;
            }
        }
    }
}

impl Sentinel {
    fn connect(&self, deadline: Instant) -> Result<Connection, RedisError> {
        let known = crate::locked(&self.current)
            .as_ref()
            .map(|(client, _)| client.clone());
        if let Some(client) = known {
            match client.get_connection_with_timeout(remaining(deadline)?) {
                Ok(conn) => return Ok(conn),
                Err(_) => *crate::locked(&self.current) = None,
            }
        }
        // The sentinel that answered last is asked first, and each gets its share of the time left: a silent
        // one costs the others a part of the deadline, not all of it.
        let count = self.sentinels.len();
        let first = self.answered.load(Ordering::Relaxed);
        let mut last = None;
        for turn in 0..count {
            let index = (first + turn) % count;
            let share = remaining(deadline)? / (count - turn) as u32;
            match self.ask(&self.sentinels[index], Instant::now() + share, deadline) {
                Ok((client, at, conn)) => {
                    self.answered.store(index, Ordering::Relaxed);
                    *crate::locked(&self.current) = Some((client, at));
                    return Ok(conn);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::Io, "no sentinel"))))
    }

    /// The master `sentinel` names by `asked`, connected and checked to be a master by `deadline`.
    fn ask(
        &self,
        sentinel: &Client,
        asked: Instant,
        deadline: Instant,
    ) -> Result<(Client, String, Connection), RedisError> {
        let mut conn = sentinel.get_connection_with_timeout(remaining(asked)?)?;
        set_deadline(&mut conn, asked)?;
        let (host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query(&mut conn)?;
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), port)
        };
        let info = sentinel
            .get_connection_info()
            .clone()
            .set_addr(addr)
            .set_redis_settings(self.settings.clone());
        let client = match &self.certificates {
            Some(certs) => Client::build_with_tls(info, certs.clone())?,
            None => Client::open(info)?,
        };
        let mut conn = client.get_connection_with_timeout(remaining(deadline)?)?;
        set_deadline(&mut conn, deadline)?;
        match redis::cmd("ROLE").query::<Role>(&mut conn)? {
            Role::Primary { .. } => Ok((client, format!("{host}:{port}"), conn)),
            _ => Err(RedisError::from((ErrorKind::Io, "not a master yet"))),
        }
    }
}

/// A URL's settings with the options' credentials, which take the place of any the URL carries, and without the
/// `CLIENT SETINFO` round trip redis-rs makes on every new connection by default: it would be a second wait
/// within a read's timeout.
fn credentials(
    settings: redis::RedisConnectionInfo,
    config: &Config,
) -> redis::RedisConnectionInfo {
    let mut settings = settings.set_skip_set_lib_name();
    if let Some(username) = &config.username {
        settings = settings.set_username(username);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.as_str());
    }
    settings
}

fn skip_lib_name(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    info.set_redis_settings(settings)
}

/// Time left until `deadline`, or a timeout error once it has passed.
pub(crate) fn remaining(deadline: Instant) -> Result<Duration, RedisError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        )));
    }
    Ok(left)
}

/// Makes a connection give up reading and writing at `deadline`.
pub(crate) fn set_deadline(conn: &mut Connection, deadline: Instant) -> Result<(), RedisError> {
    let left = remaining(deadline)?;
    conn.set_read_timeout(Some(left))?;
    conn.set_write_timeout(Some(left))
}

/// Whether Redis refused our credentials or our rights: a wrong password or user, no password where one is
/// needed, or an ACL that does not allow a command or key.
pub(crate) fn is_auth(error: &RedisError) -> bool {
    error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}
