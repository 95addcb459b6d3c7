//! Real Redis for the tests: `redis-server`s (Debian's, which scripts/setup.sh installs) started on free loopback
//! ports, in clear, over TLS, as a replica or as a sentinel, each killed when dropped; and certificates made with
//! `openssl` for each run.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use session_share::remote::{Config, Remote};
use session_share::stats::Miss;

/// A `redis-server` of this test's own, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        Server::start_on(free_port(), &[])
    }

    pub fn start_on(port: u16, extra: &[&str]) -> Server {
        Server::spawn(port, &["--port", &port.to_string()], extra)
    }

    /// A server that speaks only TLS on `port`, with the certificates of `pki`; `clients` asks for client
    /// certificates (mutual TLS).
    pub fn start_tls(pki: &Pki, clients: bool, extra: &[&str]) -> Server {
        let port = free_port();
        let tls = pki.server_args(clients);
        let mut args: Vec<&str> = vec!["--port", "0"];
        let port_text = port.to_string();
        args.extend(["--tls-port", &port_text]);
        args.extend(tls.iter().map(String::as_str));
        Server::spawn(port, &args, extra)
    }

    /// A sentinel on a free port watching the master on `master_port` as `mymaster`, with a quorum of two.
    pub fn start_sentinel(master_port: u16) -> Server {
        let port = free_port();
        let dir = temp_dir(port);
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 3000\n",
                dir.display()
            ),
        )
        .expect("sentinel.conf");
        let mut command = Command::new("redis-server");
        command.arg(&conf).arg("--sentinel");
        Server::launch(port, dir, command)
    }

    fn spawn(port: u16, args: &[&str], extra: &[&str]) -> Server {
        let mut command = Command::new("redis-server");
        command
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra);
        Server::launch(port, temp_dir(port), command)
    }

    /// Runs `command` in `dir`, quietly, and waits until the server listens on `port`.
    fn launch(port: u16, dir: PathBuf, mut command: Command) -> Server {
        let child = command
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup.sh)");
        let server = Server {
            child: Some(child),
            port,
            dir,
        };
        server.await_listening();
        server
    }

    /// A handle on a server started by another `Server` (on another of its ports), for commands only.
    pub fn attach(port: u16) -> Server {
        Server {
            child: None,
            port,
            dir: temp_dir(port),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    /// A plain connection, for the test's own commands.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("a connection to the test's redis-server")
    }

    /// Kills the server now, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn await_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not listen", self.port);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("session_share-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A loopback port free now and never handed out before in this test process: tests run in parallel, and one
/// that stops its server and starts it again on the same port must not find another test's server there.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A cluster node also listens on its port + 10000, for the cluster bus.
        if port < 55000 && !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn config(urls: Vec<String>) -> Config {
    let mut config = Config::new(urls);
    config.timeout = Duration::from_millis(300);
    config.queue = 64;
    config.max_in_flight = 8;
    config.max_reads_per_s = 100_000;
    config.breaker_threshold = 3;
    config.breaker_cool_down = Duration::from_millis(200);
    config
}

/// Asks until `get` gives something other than a miss Redis may yet turn into a hit (writes are asynchronous,
/// and a failover takes a while), for up to `secs` seconds.
pub fn get_within(remote: &Remote, key: &[u8], secs: u64) -> Result<Vec<u8>, Miss> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match remote.get(key) {
            Err(Miss::Absent | Miss::BreakerOpen | Miss::Error | Miss::Timeout)
                if Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(10))
            }
            other => return other,
        }
    }
}

pub fn get_soon(remote: &Remote, key: &[u8]) -> Result<Vec<u8>, Miss> {
    get_within(remote, key, 2)
}

/// Polls `check` every 20 ms for up to `secs` seconds.
pub fn wait_until(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// The calls of `command` Redis has served since it started, from `INFO commandstats`.
pub fn calls(server: &Server, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.conn())
        .expect("info");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The connections the server has accepted since it started, from `INFO stats`.
pub fn connections(server: &Server) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut server.conn())
        .expect("info");
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A certificate authority made for this run with `openssl`, and a server certificate for 127.0.0.1 and
/// localhost, and a client certificate, both signed by it.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("session_share-pki-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl is installed (scripts/setup.sh)");
            assert!(status.success(), "openssl {args:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=session_share test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        for (who, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{who}.ext")), ext).expect("ext");
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &[
                        "-keyout",
                        &format!("{who}.key"),
                        "-out",
                        &format!("{who}.csr"),
                        "-subj",
                        &format!("/CN={who}"),
                    ],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        Pki { dir }
    }

    pub fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).expect("pki file")
    }

    fn path(&self, name: &str) -> String {
        Path::new(&self.dir).join(name).display().to_string()
    }

    fn server_args(&self, clients: bool) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.path("server.pem"),
            "--tls-key-file".into(),
            self.path("server.key"),
            "--tls-ca-cert-file".into(),
            self.path("ca.pem"),
            "--tls-auth-clients".into(),
            if clients { "yes" } else { "no" }.into(),
        ]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
