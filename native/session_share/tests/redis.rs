//! `Remote` against real Redis: a `redis-server` (Debian's, which scripts/setup.sh installs) started by each test
//! on a free loopback port, without persistence, and stopped with it; and a three-master Redis Cluster.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use session_share::breaker::State;
use session_share::remote::{redis_key, Config, ConfigError, Remote};
use session_share::stats::Miss;

/// A `redis-server` of this test's own, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start() -> Server {
        Server::start_on(free_port(), &[])
    }

    fn start_on(port: u16, extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!("session_share-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup.sh)");
        let server = Server { child, port, dir };
        server.await_ping();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn await_ping(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut conn) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn config(urls: Vec<String>) -> Config {
    Config {
        urls,
        timeout: Duration::from_millis(300),
        queue: 64,
        max_in_flight: 8,
        max_reads_per_s: 100_000,
        breaker_threshold: 3,
        breaker_cool_down: Duration::from_millis(200),
    }
}

/// Asks until `get` gives something other than `Absent` (writes are asynchronous), for up to two seconds.
fn get_soon(remote: &Remote, key: &[u8]) -> Result<Vec<u8>, Miss> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match remote.get(key) {
            Err(Miss::Absent | Miss::BreakerOpen) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10))
            }
            other => return other,
        }
    }
}

#[test]
fn a_written_blob_is_read_back_and_expires_with_its_ttl() {
    let server = Server::start();
    let remote = Remote::start(config(vec![server.url()])).expect("valid config");
    let key = redis_key(b"fleet", &[7; 32]);
    assert_eq!(remote.get(&key), Err(Miss::Absent));
    assert!(remote.put_blob(key.clone(), b"sealed".to_vec(), Duration::from_millis(300)));
    assert_eq!(get_soon(&remote, &key), Ok(b"sealed".to_vec()));
    thread::sleep(Duration::from_millis(400));
    assert_eq!(remote.get(&key), Err(Miss::Absent));
    let stats = remote.stats();
    assert_eq!(stats.sets, 1);
    assert!(stats.hits >= 1 && stats.gets >= 3);
    assert!(stats.p99_us > 0);
}

#[test]
fn redis_down_is_bounded_misses_an_open_breaker_and_then_a_recovery() {
    let port = free_port();
    let server = Server::start_on(port, &[]);
    let remote = Remote::start(config(vec![server.url()])).expect("valid config");
    let key = redis_key(b"fleet", b"id");
    remote.put_blob(key.clone(), b"v1".to_vec(), Duration::from_secs(60));
    assert_eq!(get_soon(&remote, &key), Ok(b"v1".to_vec()));
    // The writer reports its write to the breaker when it has read Redis's reply, which may come after the read
    // above found the value. Reported after the server is gone, it would be a fourth failure.
    let deadline = Instant::now() + Duration::from_secs(2);
    while remote.stats().sets == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!((remote.stats().sets, remote.breaker()), (1, State::Closed));
    drop(server);
    // Each failure is quick (the port refuses), and after three the breaker stops asking.
    for _ in 0..3 {
        let start = Instant::now();
        assert!(matches!(remote.get(&key), Err(Miss::Error | Miss::Timeout)));
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
    }
    assert_eq!(remote.breaker(), State::Open);
    let start = Instant::now();
    assert_eq!(remote.get(&key), Err(Miss::BreakerOpen));
    assert!(start.elapsed() < Duration::from_millis(5));
    // Redis comes back, empty: after the cool-down a probe finds it, and writes and reads work again.
    let _back = Server::start_on(port, &[]);
    thread::sleep(Duration::from_millis(250));
    assert_eq!(remote.get(&key), Err(Miss::Absent));
    assert_eq!(remote.breaker(), State::Closed);
    remote.put_blob(key.clone(), b"v2".to_vec(), Duration::from_secs(60));
    assert_eq!(get_soon(&remote, &key), Ok(b"v2".to_vec()));
}

/// A server that accepts connections and never answers: every call on it lasts until the timeout.
fn silent_server() -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        listener.set_nonblocking(true).expect("nonblocking");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok((stream, _)) = listener.accept() {
                held.push(stream);
            }
            for stream in &mut held {
                let _ = stream.set_nonblocking(true);
                let _ = stream.read(&mut [0; 1024]);
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    (port, handle)
}

#[test]
fn a_silent_redis_fills_the_queue_and_bounds_reads_in_flight() {
    let (port, _silent) = silent_server();
    let mut config = config(vec![format!("redis://127.0.0.1:{port}/")]);
    config.queue = 2;
    config.max_in_flight = 1;
    config.breaker_threshold = 100;
    let remote = std::sync::Arc::new(Remote::start(config).expect("valid config"));
    // The writer is stuck on its first write: the queue takes two more, and the rest are dropped at once.
    let start = Instant::now();
    let queued = (0..10)
        .filter(|i| {
            remote.put_blob(
                redis_key(b"fleet", &[*i]),
                vec![0; 8],
                Duration::from_secs(1),
            )
        })
        .count();
    assert!(start.elapsed() < Duration::from_millis(50));
    assert!((2..=3).contains(&queued), "{queued}");
    assert_eq!(remote.stats().drops, 10 - queued as u64);
    // One read waits on the silent server; a second one at the same time is not sent.
    let waiting = {
        let remote = std::sync::Arc::clone(&remote);
        thread::spawn(move || remote.get(b"k"))
    };
    thread::sleep(Duration::from_millis(50));
    assert_eq!(remote.get(b"k2"), Err(Miss::Busy));
    let started = Instant::now();
    assert_eq!(waiting.join().expect("reader"), Err(Miss::Timeout));
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn reads_beyond_the_rate_are_not_sent() {
    let server = Server::start();
    let mut config = config(vec![server.url()]);
    config.max_reads_per_s = 50; // five a tenth of a second
    let remote = Remote::start(config).expect("valid config");
    let answers: Vec<Result<Vec<u8>, Miss>> = (0..20).map(|_| remote.get(b"unknown")).collect();
    let sent = answers.iter().filter(|a| **a == Err(Miss::Absent)).count();
    let refused = answers.iter().filter(|a| **a == Err(Miss::Busy)).count();
    assert!((5..=10).contains(&sent), "{sent}");
    assert_eq!(sent + refused, 20);
    // The next window admits reads again.
    thread::sleep(Duration::from_millis(110));
    assert_eq!(remote.get(b"unknown"), Err(Miss::Absent));
}

#[test]
fn bad_configurations_name_the_problem_not_the_url() {
    let bad =
        |urls: Vec<&str>| Remote::start(config(urls.into_iter().map(String::from).collect())).err();
    assert_eq!(bad(vec![]), Some(ConfigError::NoUrl));
    assert_eq!(
        bad(vec!["http://user:hunter2@example.org"]),
        Some(ConfigError::BadUrl { index: 0 })
    );
    let error = bad(vec!["redis://127.0.0.1:1/", "nonsense:hunter2"]).expect("refused");
    assert_eq!(error, ConfigError::BadUrl { index: 1 });
    assert!(!format!("{error} {error:?}").contains("hunter2"));
    let mut zero = config(vec!["redis://127.0.0.1:1/".into()]);
    zero.queue = 0;
    assert_eq!(Remote::start(zero).err(), Some(ConfigError::Zero));
}

#[test]
fn a_three_master_cluster_stores_and_reads_keys_of_every_slot() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let servers: Vec<Server> = ports
        .iter()
        .map(|&port| {
            Server::start_on(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ],
            )
        })
        .collect();
    let nodes: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let created = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli is installed");
    assert!(created.success());
    await_cluster_ok(&servers[0]);
    let remote =
        Remote::start(config(servers.iter().map(Server::url).collect())).expect("valid config");
    let keys: Vec<Vec<u8>> = (0..32u8).map(|i| redis_key(b"fleet", &[i; 32])).collect();
    for key in &keys {
        assert!(remote.put_blob(key.clone(), key.clone(), Duration::from_secs(60)));
    }
    for key in &keys {
        assert_eq!(get_soon(&remote, key).as_ref(), Ok(key));
    }
    // The keys really are spread over the three masters.
    let holding = servers
        .iter()
        .filter(|server| {
            let mut conn = redis::Client::open(server.url())
                .and_then(|c| c.get_connection())
                .expect("conn");
            redis::cmd("DBSIZE")
                .query::<u64>(&mut conn)
                .expect("dbsize")
                > 0
        })
        .count();
    assert_eq!(holding, 3);
}

fn await_cluster_ok(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut conn = redis::Client::open(server.url())
            .and_then(|c| c.get_connection())
            .expect("conn");
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut conn)
            .expect("cluster info");
        if info.contains("cluster_state:ok") {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("the cluster did not reach cluster_state:ok");
}
