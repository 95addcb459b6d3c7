//! `Remote` through Redis Sentinel: a master, a replica and three sentinels started on free loopback ports. The
//! master is found through the sentinels, and after it is killed and the sentinels have promoted the replica,
//! reads and writes go to the new master by themselves. A silent sentinel first in the list (one that accepts
//! connections and never answers) costs a timeout, not a hang.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use common::{config, get_within, wait_until, Server};
use session_share::remote::{redis_key, Remote};
use session_share::topology::Kind;

fn role(server: &Server) -> String {
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query(&mut server.conn())
        .unwrap_or_default();
    match role.first() {
        Some(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    }
}

/// Whether every sentinel knows the replica and the other sentinels: only then can they fail over.
fn sentinels_ready(sentinels: &[Server]) -> bool {
    sentinels.iter().all(|sentinel| {
        let mut conn = sentinel.conn();
        let mut count = |what: &str| {
            redis::cmd("SENTINEL")
                .arg(what)
                .arg("mymaster")
                .query::<Vec<redis::Value>>(&mut conn)
                .map(|v| v.len())
                .unwrap_or(0)
        };
        count("replicas") == 1 && count("sentinels") == 2
    })
}

#[test]
fn the_master_is_found_through_sentinels_and_followed_across_a_failover() {
    let mut master = Server::start();
    let replica = Server::start_on(
        common::free_port(),
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    );
    let sentinels: Vec<Server> = (0..3)
        .map(|_| Server::start_sentinel(master.port))
        .collect();
    assert!(
        wait_until(30, || sentinels_ready(&sentinels)),
        "sentinels never saw the replica and each other"
    );
    // A silent "sentinel" first: asking it times out, and the next one answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let _held = thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
            let _ = stream.read(&mut [0; 64]);
            held.push(stream);
        }
    });
    let mut urls = vec![format!("redis://127.0.0.1:{silent_port}/")];
    urls.extend(sentinels.iter().map(Server::url));
    let mut config = config(urls);
    config.master_name = Some("mymaster".into());
    config.breaker_threshold = 1000;
    let remote = Remote::start(config).expect("valid config");
    let before = redis_key(b"sentinel", &[1; 32]);
    remote.put_blob(before.clone(), b"before".to_vec(), Duration::from_secs(60));
    assert_eq!(get_within(&remote, &before, 10), Ok(b"before".to_vec()));
    let topology = remote.topology();
    assert_eq!(topology.kind, Kind::Sentinel);
    assert_eq!(topology.master, Some(format!("127.0.0.1:{}", master.port)));
    // Replication is asynchronous: what the master had when it died may be lost. Wait until the replica has it.
    assert!(wait_until(10, || redis::cmd("EXISTS")
        .arg(&before)
        .query::<u32>(&mut replica.conn())
        .unwrap_or(0)
        == 1));
    // The master dies; once the sentinels have promoted the replica, writes and reads reach it.
    master.kill();
    assert!(wait_until(60, || role(&replica) == "master"), "no failover");
    let after = redis_key(b"sentinel", &[2; 32]);
    assert!(wait_until(30, || {
        remote.put_blob(after.clone(), b"after".to_vec(), Duration::from_secs(60));
        thread::sleep(Duration::from_millis(50));
        get_within(&remote, &after, 1) == Ok(b"after".to_vec())
    }));
    assert_eq!(
        remote.topology().master,
        Some(format!("127.0.0.1:{}", replica.port))
    );
    // What the old master had replicated is still there, read from the new master.
    assert_eq!(remote.get(&before), Ok(b"before".to_vec()));
}
