//! `Remote` against real Redis: a `redis-server` (Debian's, which scripts/setup.sh installs) started by each test
//! on a free loopback port, without persistence, and stopped with it; and a three-master Redis Cluster.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{calls, config, free_port, get_soon, wait_until, Server};
use session_share::breaker::State;
use session_share::remote::{redis_key, ConfigError, Field, Remote};
use session_share::stats::Miss;

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
    // Redis stops only once the writer has its answer: it counts for the breaker too, and a write that Redis had
    // done but whose answer the writer had yet to read (a busy machine) failed after Redis stopped, and opened the
    // breaker a read early.
    assert!(wait_until(5, || remote.stats().sets == 1));
    drop(server);
    // Each read fails (the port refuses, within timeout_ms), and after three the breaker stops asking: the
    // fourth is refused without a connection, as its reason says.
    let key = redis_key(b"fleet", b"another id");
    for _ in 0..3 {
        let got = remote.get(&key);
        assert!(matches!(got, Err(Miss::Error | Miss::Timeout)), "{got:?}");
    }
    assert_eq!(remote.breaker(), State::Open);
    assert_eq!(remote.get(&key), Err(Miss::BreakerOpen));
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
    // The writer is stuck on its first write: the queue takes two more, and the rest are dropped, not waited for.
    let queued = (0..10)
        .filter(|i| {
            remote.put_blob(
                redis_key(b"fleet", &[*i]),
                vec![0; 8],
                Duration::from_secs(1),
            )
        })
        .count();
    assert!((2..=3).contains(&queued), "{queued}");
    assert_eq!(remote.stats().drops, 10 - queued as u64);
    // One read waits on the silent server; a second one at the same time is not sent.
    let waiting = {
        let remote = std::sync::Arc::clone(&remote);
        thread::spawn(move || remote.get(b"k"))
    };
    thread::sleep(Duration::from_millis(50));
    assert_eq!(remote.get(b"k2"), Err(Miss::Busy));
    // It ends at timeout_ms, as a timeout: the silent server never answers.
    assert_eq!(waiting.join().expect("reader"), Err(Miss::Timeout));
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

/// `info/1`'s `shared` map, as the NIF encodes it: every field, in order, before Redis was asked; neither the URL,
/// nor its password, nor the option's.
#[test]
fn info_lists_every_field_and_no_secret() {
    let mut config = config(vec!["redis://user:url-secret@127.0.0.1:1/".into()]);
    config.password = Some(zeroize::Zeroizing::new("option-secret".into()));
    let info = Remote::start(config).expect("valid config").info();
    let names: Vec<&str> = info.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "topology",
            "tls",
            "master",
            "state",
            "gets",
            "hits",
            "replayed",
            "replay_cache",
            "misses",
            "sets",
            "drops",
            "errors",
            "latency_us"
        ]
    );
    assert_eq!(
        info[..5],
        [
            ("topology", Field::Name("single")),
            ("tls", Field::Flag(false)),
            ("master", Field::Text(None)),
            ("state", Field::Name("closed")),
            ("gets", Field::Count(0))
        ]
    );
    let Some((_, Field::Counts(misses))) = info.iter().find(|(name, _)| *name == "misses") else {
        panic!("no misses")
    };
    let reasons: Vec<&str> = misses.iter().map(|(why, _)| *why).collect();
    assert_eq!(
        reasons,
        Miss::ALL.iter().map(|why| why.name()).collect::<Vec<_>>()
    );
    let text = format!("{info:?}");
    assert!(!text.contains("secret") && !text.contains("127.0.0.1") && !text.contains("user"));
}

#[test]
fn bad_configurations_name_the_problem_not_the_url() {
    let bad =
        |urls: Vec<&str>| Remote::start(config(urls.into_iter().map(String::from).collect())).err();
    assert_eq!(bad(vec![]), Some(ConfigError::BadUrl { index: 0 }));
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
    // No way to turn the host name check off, nor to mix schemes.
    assert_eq!(
        bad(vec!["rediss://127.0.0.1:1/#insecure"]),
        Some(ConfigError::BadUrl { index: 0 })
    );
    assert_eq!(
        bad(vec!["rediss://127.0.0.1:1/", "redis://127.0.0.1:2/"]),
        Some(ConfigError::BadUrl { index: 1 })
    );
    let mut tls_in_clear = config(vec!["redis://127.0.0.1:1/".into()]);
    tls_in_clear.tls = Some(Default::default());
    assert_eq!(Remote::start(tls_in_clear).err(), Some(ConfigError::Tls));
    let mut bad_pem = config(vec!["rediss://127.0.0.1:1/".into()]);
    bad_pem.tls = Some(session_share::topology::Tls {
        ca: Some(b"not a certificate".to_vec()),
        client: None,
    });
    assert_eq!(Remote::start(bad_pem).err(), Some(ConfigError::Tls));
    let mut sentinels = config(vec!["nonsense:hunter2".into()]);
    sentinels.master_name = Some("mymaster".into());
    assert_eq!(
        Remote::start(sentinels).err().map(ConfigError::option),
        Some("sentinels")
    );
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

/// The read rate is spent on reads that find nothing: sessions found in Redis give their place back, so a storm
/// of clients coming back with real sessions is not refused, while a flood of made-up ids still reaches Redis at
/// most at the rate (counted by Redis itself).
#[test]
fn the_read_rate_bounds_reads_that_find_nothing_and_not_those_that_find_a_session() {
    let server = Server::start();
    let mut config = config(vec![server.url()]);
    config.max_reads_per_s = 10; // one a tenth of a second
    config.queue = 1000;
    let remote = Remote::start(config).expect("valid config");
    let keys: Vec<Vec<u8>> = (0..200u8).map(|i| redis_key(b"storm", &[i; 32])).collect();
    for key in &keys {
        assert!(remote.put_blob(key.clone(), vec![1; 64], Duration::from_secs(60)));
    }
    assert!(common::wait_until(10, || remote.stats().sets == 200));
    // The storm: 200 reads of sessions Redis has, as fast as they go, far past one a tenth of a second.
    let before = calls(&server, "get");
    let storm = Instant::now();
    let found = keys.iter().filter(|key| remote.get(key).is_ok()).count();
    let storm_ms = storm.elapsed().as_millis();
    assert_eq!(found, 200);
    assert_eq!(calls(&server, "get") - before, 200);
    // The flood: 500 made-up ids. Redis sees at most one a tenth of a second, one more for a partial tenth.
    let before = calls(&server, "get");
    let flood = Instant::now();
    let refused = (0..500u32)
        .filter(|i| remote.get(&redis_key(b"storm", &i.to_be_bytes())) == Err(Miss::Busy))
        .count();
    let windows = flood.elapsed().as_millis() / 100 + 2;
    let sent = calls(&server, "get") - before;
    assert!(sent as u128 <= windows, "{sent} reads in {windows} windows");
    assert_eq!(sent as usize + refused, 500);
    eprintln!("storm: 200 found in {storm_ms} ms at a bound of 10/s; flood: {sent} of 500 sent");
}

/// An id replayed a thousand times (an attacker who saw it in clear, or a client that moved here) reaches Redis
/// once: the blob, once its reader has opened it, is kept beside the store for what is left of its lifetime, by
/// the expiry sealed in it, and no longer.
#[test]
fn a_replayed_id_reaches_redis_once_and_the_replay_cache_keeps_it_no_longer_than_it_lives() {
    let server = Server::start();
    let remote = Remote::start(config(vec![server.url()])).expect("valid config");
    let keys = session_share::seal::Keys::new(&[[7u8; 32]]).expect("keys");
    let key = redis_key(b"replay", &[9; 32]);
    let ttl = Duration::from_millis(1500);
    remote.put_blob(
        key.clone(),
        keys.seal(b"replay", &[9; 32], b"session", ttl),
        ttl,
    );
    assert!(common::wait_until(10, || remote.stats().sets == 1));
    let before = calls(&server, "get");
    for _ in 0..1000 {
        let blob = remote.get(&key).expect("found");
        assert_eq!(
            &keys.open(b"replay", &[9; 32], &blob).expect("opens")[..],
            b"session"
        );
        remote.keep(&key, blob);
    }
    assert_eq!(calls(&server, "get") - before, 1);
    let stats = remote.stats();
    assert_eq!((stats.replayed, stats.hits), (999, 1000));
    assert_eq!(remote.topology().replay_cached, 1);
    // Once its lifetime is over, the cache has dropped it, as Redis has.
    assert!(common::wait_until(10, || remote.get(&key) == Err(Miss::Absent)));
    assert_eq!(remote.topology().replay_cached, 0);
}

/// A wrong password is Redis refusing us: an `auth` miss, the breaker counting it as a failure, and one warning to
/// take; the right one, from the options or the URL, works. The error names no password.
#[test]
fn a_wrong_password_is_an_auth_miss_warned_once_and_the_right_one_works() {
    let server = Server::start_on(free_port(), &["--requirepass", "s3cret-pw"]);
    let key = redis_key(b"auth", &[1; 32]);
    let mut wrong = config(vec![server.url()]);
    wrong.password = Some(zeroize::Zeroizing::new("not-it".into()));
    let remote = Remote::start(wrong).expect("valid config");
    assert_eq!(remote.get(&key), Err(Miss::Auth));
    assert!(remote.take_auth_warning());
    assert_eq!(remote.get(&key), Err(Miss::Auth));
    assert!(!remote.take_auth_warning());
    remote.put_blob(key.clone(), b"x".to_vec(), Duration::from_secs(60));
    assert!(common::wait_until(10, || remote.stats().write_errors == 1));
    let mut right = config(vec![server.url()]);
    right.password = Some(zeroize::Zeroizing::new("s3cret-pw".into()));
    let remote = Remote::start(right).expect("valid config");
    remote.put_blob(key.clone(), b"x".to_vec(), Duration::from_secs(60));
    assert_eq!(get_soon(&remote, &key), Ok(b"x".to_vec()));
    let in_url = format!("redis://:s3cret-pw@127.0.0.1:{}/", server.port);
    let remote = Remote::start(config(vec![in_url])).expect("valid config");
    assert_eq!(remote.get(&key), Ok(b"x".to_vec()));
    assert!(!remote.take_auth_warning());
}

/// An ACL user allowed only our keys and the commands we send, with the default user off: both the URL form and
/// the username and password options work; a user without those rights is refused as `auth`.
#[test]
fn an_acl_user_limited_to_our_keys_works_with_the_default_user_off() {
    let server = Server::start();
    let admin = |args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        args[1..].iter().for_each(|a| {
            cmd.arg(*a);
        });
        cmd
    };
    let mut conn = server.conn();
    admin(&[
        "ACL", "SETUSER", "admin", "on", ">adminpw", "~*", "&*", "+@all",
    ])
    .query::<()>(&mut conn)
    .expect("admin");
    admin(&[
        "ACL",
        "SETUSER",
        "nsc",
        "on",
        ">nsc-pw",
        "~nif_session_cache:*",
        "+get",
        "+set",
        "+pttl",
    ])
    .query::<()>(&mut conn)
    .expect("acl user");
    admin(&[
        "ACL",
        "SETUSER",
        "other",
        "on",
        ">other-pw",
        "~elsewhere:*",
        "+get",
        "+set",
        "+pttl",
    ])
    .query::<()>(&mut conn)
    .expect("acl user");
    admin(&["ACL", "SETUSER", "default", "off"])
        .query::<()>(&mut conn)
        .expect("default off");
    let key = redis_key(b"acl", &[2; 32]);
    let mut options = config(vec![server.url()]);
    options.username = Some("nsc".into());
    options.password = Some(zeroize::Zeroizing::new("nsc-pw".into()));
    let remote = Remote::start(options).expect("valid config");
    remote.put_blob(key.clone(), b"blob".to_vec(), Duration::from_secs(60));
    assert_eq!(get_soon(&remote, &key), Ok(b"blob".to_vec()));
    let url = format!("redis://nsc:nsc-pw@127.0.0.1:{}/", server.port);
    let remote = Remote::start(config(vec![url])).expect("valid config");
    assert_eq!(remote.get(&key), Ok(b"blob".to_vec()));
    // The default user is off: no credentials, no reads; another user's keys are not ours.
    assert_eq!(
        Remote::start(config(vec![server.url()]))
            .expect("valid")
            .get(&key),
        Err(Miss::Auth)
    );
    let url = format!("redis://other:other-pw@127.0.0.1:{}/", server.port);
    assert_eq!(
        Remote::start(config(vec![url])).expect("valid").get(&key),
        Err(Miss::Auth)
    );
}
