//! `Remote` over TLS (rustls, with the ring provider), against `redis-server`s that speak only TLS, with a CA made
//! for the run: the server verified against the CA given, its name checked against the URL, a client certificate
//! for mutual TLS; and an untrusted CA, a wrong name or a missing client certificate refused as errors, quickly.

mod common;

use std::time::Duration;

use common::{get_soon, Pki, Server};
use session_share::remote::{redis_key, Config, Remote};
use session_share::stats::Miss;
use session_share::topology::{Kind, Tls};
use zeroize::Zeroizing;

/// The tests' configuration, with time for a TLS handshake: on a busy machine, with cargo's tests in parallel, one
/// took more than the 300 ms of the other tests, and a write whose connection times out is lost (the shared level
/// never retries one), so a test that wrote once then found nothing. No test here times anything.
fn tls_config(urls: Vec<String>) -> Config {
    let mut config = common::config(urls);
    config.timeout = Duration::from_secs(2);
    config
}

fn tls(pki: &Pki, client: bool) -> Tls {
    Tls {
        ca: Some(pki.file("ca.pem")),
        client: client.then(|| {
            (
                pki.file("client.pem"),
                Zeroizing::new(pki.file("client.key")),
            )
        }),
    }
}

#[test]
fn a_tls_redis_verified_against_our_ca_stores_and_reads() {
    let pki = Pki::new("plain");
    let server = Server::start_tls(&pki, false, &[]);
    let mut config = tls_config(vec![server.tls_url()]);
    config.tls = Some(tls(&pki, false));
    let remote = Remote::start(config).expect("valid config");
    let key = redis_key(b"tls", &[3; 32]);
    assert!(remote.put_blob(key.clone(), b"over tls".to_vec(), Duration::from_secs(60)));
    assert_eq!(get_soon(&remote, &key), Ok(b"over tls".to_vec()));
    let topology = remote.topology();
    assert_eq!((topology.kind, topology.tls), (Kind::Single, true));
    // The name in the URL is checked too: the certificate names 127.0.0.1 and localhost, so both work...
    let mut by_name = tls_config(vec![format!("rediss://localhost:{}/", server.port)]);
    by_name.tls = Some(tls(&pki, false));
    assert_eq!(
        Remote::start(by_name).expect("valid").get(&key),
        Ok(b"over tls".to_vec())
    );
    // ... and another address of a server with the same certificate, which it does not name, is refused.
    let on_both = Server::start_tls(&pki, false, &["--bind", "127.0.0.1 127.0.0.2"]);
    let mut other_name = tls_config(vec![format!("rediss://127.0.0.2:{}/", on_both.port)]);
    other_name.tls = Some(tls(&pki, false));
    assert_eq!(
        Remote::start(other_name).expect("valid").get(&key),
        Err(Miss::Error)
    );
}

#[test]
fn a_server_signed_by_another_ca_is_refused_and_the_system_roots_do_not_know_ours() {
    let pki = Pki::new("ours");
    let theirs = Pki::new("theirs");
    let server = Server::start_tls(&theirs, false, &[]);
    let mut config = tls_config(vec![server.tls_url()]);
    config.tls = Some(tls(&pki, false));
    config.breaker_threshold = 100;
    let remote = Remote::start(config).expect("valid config");
    let key = redis_key(b"tls", &[4; 32]);
    remote.put_blob(key.clone(), b"never".to_vec(), Duration::from_secs(60));
    assert!(common::wait_until(10, || remote.stats().write_errors == 1));
    assert_eq!(remote.get(&key), Err(Miss::Error));
    // Without a CA, the system's roots: they do not know this one either.
    let remote = Remote::start(tls_config(vec![server.tls_url()])).expect("valid config");
    assert_eq!(remote.get(&key), Err(Miss::Error));
}

#[test]
fn mutual_tls_works_with_a_client_certificate_and_is_refused_without_one() {
    let pki = Pki::new("mutual");
    let server = Server::start_tls(&pki, true, &[]);
    let key = redis_key(b"mtls", &[5; 32]);
    let mut with = tls_config(vec![server.tls_url()]);
    with.tls = Some(tls(&pki, true));
    let remote = Remote::start(with).expect("valid config");
    remote.put_blob(key.clone(), b"mutual".to_vec(), Duration::from_secs(60));
    assert_eq!(get_soon(&remote, &key), Ok(b"mutual".to_vec()));
    let mut without = tls_config(vec![server.tls_url()]);
    without.tls = Some(tls(&pki, false));
    assert_eq!(
        Remote::start(without).expect("valid").get(&key),
        Err(Miss::Error)
    );
}

/// Reads over TLS reuse their connections, as reads in clear do: a hundred reads open a handful of connections
/// (counted by the server on a port in clear), not a hundred TLS handshakes.
#[test]
fn reads_over_tls_reuse_their_connections() {
    let pki = Pki::new("reuse");
    let plain = common::free_port();
    let server = Server::start_tls(&pki, false, &["--port", &plain.to_string()]);
    let admin = Server::attach(plain);
    let mut config = tls_config(vec![server.tls_url()]);
    config.tls = Some(tls(&pki, false));
    let remote = Remote::start(config).expect("valid config");
    let key = redis_key(b"tls", &[6; 32]);
    let before = common::connections(&admin);
    for _ in 0..100 {
        assert_eq!(remote.get(&key), Err(Miss::Absent));
    }
    // One for the reads, one for this count's own connection.
    let opened = common::connections(&admin) - before;
    assert!(opened <= 2, "{opened} connections for 100 reads");
}
