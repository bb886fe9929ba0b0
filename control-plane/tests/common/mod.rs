//! Shared test harness: a real `jamd` on 127.0.0.1 port 0 backed by SQLite
//! or PostgreSQL, and a small HTTP client.
//!
//! PostgreSQL comes from `JAM_TEST_POSTGRES_URL` (a superuser URL; each test
//! creates and drops its own database), else from a throwaway cluster this
//! process starts with Debian's `initdb`/`pg_ctl` (as the `postgres` user
//! when running as root) and stops when the test ends. Without either the
//! test is skipped loudly (failed in CI).

#![allow(dead_code, unreachable_pub)]

pub mod relay_client;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jam_control_plane::config::Config;
use jam_control_plane::server::Server;
use jam_join::sse::SseDecoder;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in the test's temp dir.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A throwaway PostgreSQL cluster, stopped on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    /// Superuser URL.
    pub url: String,
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

impl PgCluster {
    fn cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Starts a cluster, or `None` if the binaries are not installed.
    pub fn start() -> Option<PgCluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())?;
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = tempfile::Builder::new().prefix("jam-pg-").tempdir().ok()?;
        if is_root {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown of the cluster directory to postgres failed");
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            l.local_addr().ok()?.port()
        };
        let cluster = PgCluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            as_postgres: is_root,
        };
        let data = cluster.dir.path().join("data");
        let out = cluster
            .cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            cluster.dir.path().display()
        );
        let out = cluster
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(cluster.dir.path().join("log"))
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(cluster.dir.path().join("log")).unwrap_or_default()
        );
        Some(cluster)
    }
}

/// A fresh database on a PostgreSQL server, dropped on [`PgDb::drop_db`].
pub struct PgDb {
    admin_url: String,
    name: String,
    /// URL of the fresh database.
    pub url: String,
    _cluster: Option<PgCluster>,
}

impl PgDb {
    /// A fresh database, or `None` (skipped) when no server can be had.
    pub async fn create() -> Option<PgDb> {
        let (admin_url, cluster) = match std::env::var("JAM_TEST_POSTGRES_URL") {
            Ok(u) if !u.is_empty() => (u, None),
            _ => match PgCluster::start() {
                Some(c) => (c.url.clone(), Some(c)),
                None => {
                    return jam_tests::missing(
                        "PostgreSQL (JAM_TEST_POSTGRES_URL or Debian's /usr/lib/postgresql/*/bin/initdb)",
                        "apt-get install postgresql",
                    );
                }
            },
        };
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let name = format!("jam_test_{}", jam_control_plane::db::random_hex(8));
        let mut conn = sqlx::AnyConnection::connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL test server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        Some(PgDb {
            url: format!("{base}/{name}"),
            admin_url,
            name,
            _cluster: cluster,
        })
    }

    /// Drops the database.
    pub async fn drop_db(&self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::AnyConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
            conn.close().await.ok();
        }
    }
}

/// A running server and a client for it.
pub struct TestServer {
    /// The server.
    pub server: Option<Server>,
    /// Base URL, `http://127.0.0.1:PORT`.
    pub base: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Data directory.
    pub dir: tempfile::TempDir,
    pg: Option<PgDb>,
}

impl TestServer {
    /// Starts a server on `backend`; `tweak` may change the test config.
    /// `None` when the backend is unavailable (skipped).
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<TestServer> {
        let dir = tempfile::tempdir().expect("temp dir");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDb::create().await?),
        };
        let mut config = Config::for_tests(dir.path(), pg.as_ref().map(|p| p.url.clone()));
        tweak(&mut config);
        let server = Server::start(config).await.expect("server starts");
        Some(TestServer {
            base: format!("http://{}", server.http_addr),
            server: Some(server),
            http: reqwest::Client::new(),
            dir,
            pg,
        })
    }

    /// [`TestServer::start_with`] without changes.
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |_| {}).await
    }

    /// The server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// Stops the server and drops a PostgreSQL test database.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        if let Some(pg) = &self.pg {
            pg.drop_db().await;
        }
    }

    /// Sends a request with an optional bearer token and JSON body; returns
    /// status and parsed JSON (Null when the body is empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends raw bytes with a content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET returning bytes.
    pub async fn get_bytes(&self, path: &str, token: &str) -> (StatusCode, Vec<u8>) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        let status = resp.status();
        (status, resp.bytes().await.unwrap_or_default().to_vec())
    }

    /// Registers a user and logs in; returns the token.
    pub async fn user(&self, name: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/accounts",
                None,
                Some(json!({"username": name, "password": "password-of-".to_string() + name})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "register {name}: {v}");
        self.login(name).await
    }

    /// Logs in an existing user (password from [`TestServer::user`]).
    pub async fn login(&self, name: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/login",
                None,
                Some(json!({"username": name, "password": "password-of-".to_string() + name})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "login {name}: {v}");
        v["token"].as_str().expect("token").to_string()
    }

    /// Creates a public session; returns its id.
    pub async fn session(&self, token: &str, name: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/sessions",
                Some(token),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    /// Joins a session; returns the join response.
    pub async fn join(&self, token: &str, session: &str) -> Value {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/api/sessions/{session}/join"),
                Some(token),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// One metric's value from `/metrics` (full name with labels).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("metric {name} missing"))
            .trim()
            .parse::<f64>()
            .expect("a number") as u64
    }
}

/// Path of a file in the server's data directory.
pub fn data_path(ts: &TestServer, rel: &str) -> PathBuf {
    Path::new(ts.dir.path()).join(rel)
}

/// Generates one `#[tokio::test]` per backend for a scenario
/// `async fn NAME(ts: &TestServer)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(ts) = $crate::common::TestServer::start($crate::common::Backend::Sqlite).await {
                        super::$name(&ts).await;
                        ts.stop().await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(ts) = $crate::common::TestServer::start($crate::common::Backend::Postgres).await {
                        super::$name(&ts).await;
                        ts.stop().await;
                    }
                }
            )*
        }
    };
}

/// A member stream (`GET /api/sessions/{id}/members/events`) over real
/// HTTP, decoded by the peers' own decoder.
pub struct MemberStream {
    resp: reqwest::Response,
    decoder: SseDecoder,
    ready: VecDeque<Value>,
}

impl MemberStream {
    /// The stream from `ts`.
    pub async fn open(ts: &TestServer, token: &str, session: &str) -> MemberStream {
        Self::open_at(&ts.http, &ts.base, token, session).await
    }

    /// The stream from the node at `base` (`http://host:port`).
    pub async fn open_at(
        http: &reqwest::Client,
        base: &str,
        token: &str,
        session: &str,
    ) -> MemberStream {
        let resp = http
            .get(format!("{base}/api/sessions/{session}/members/events"))
            .bearer_auth(token)
            .send()
            .await
            .expect("stream request sent");
        assert_eq!(resp.status(), StatusCode::OK);
        MemberStream {
            resp,
            decoder: SseDecoder::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next member list; `None` when the stream ends.
    pub async fn read(&mut self) -> Option<Value> {
        loop {
            if let Some(v) = self.ready.pop_front() {
                return Some(v);
            }
            let chunk = self.resp.chunk().await.expect("stream readable")?;
            for e in self.decoder.push(&chunk).expect("well-formed events") {
                assert_eq!(e.event, "members", "{e:?}");
                self.ready
                    .push_back(serde_json::from_str(&e.data).expect("a JSON list"));
            }
        }
    }

    /// The next member list, which must come within 30 s.
    pub async fn next(&mut self, what: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(30), self.read())
            .await
            .unwrap_or_else(|_| panic!("{what}: no event within 30 s"))
            .unwrap_or_else(|| panic!("{what}: the stream ended"))
    }
}
