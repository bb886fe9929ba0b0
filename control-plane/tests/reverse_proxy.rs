//! `jamd` behind a real nginx configured by `control-plane/deploy/nginx.conf`,
//! the file the README gives self-hosters (its TLS lines replaced by a plain
//! listen on loopback, its upstream by the test server): the relay address
//! a join hands out names the host the client asked for, server-sent events
//! (a member stream, the dashboard) pass at once, and a sealed file larger
//! than nginx's default body limit uploads and downloads whole.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, MemberStream, TestServer};
use jam_join::sse::SseDecoder;
use jam_tests::process::KillOnDrop;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The host name the client uses for the proxy (resolved to loopback by the
/// client itself, so nothing outside the test needs to know it).
const HOST: &str = "jam.test";

/// A running nginx with its own prefix directory.
struct Nginx {
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

/// The example site with its TLS lines swapped for `listen <listen>;` and
/// its upstream for `upstream`. Panics if the example no longer has the
/// lines this replaces, so the file and this test cannot drift apart.
fn site_from_example(example: &str, listen: SocketAddr, upstream: SocketAddr) -> String {
    let (mut listened, mut proxied) = (false, false);
    let mut out = String::new();
    for line in example.lines() {
        let t = line.trim_start();
        if t.starts_with("listen 443 ssl;") {
            out.push_str(&format!("    listen {listen};\n"));
            listened = true;
        } else if t.starts_with("ssl_certificate") {
        } else if t.starts_with("proxy_pass http://127.0.0.1:8080;") {
            out.push_str(&line.replace("127.0.0.1:8080", &upstream.to_string()));
            out.push('\n');
            proxied = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        listened && proxied,
        "deploy/nginx.conf no longer has `listen 443 ssl;` and `proxy_pass http://127.0.0.1:8080;`"
    );
    out
}

impl Nginx {
    /// nginx in the foreground, one process, everything under a temporary
    /// prefix, serving the example site in front of `upstream`; `None`
    /// (skipped, failed in CI) without nginx.
    fn start(upstream: SocketAddr) -> Option<Nginx> {
        let bin = jam_tests::require_tool("nginx", "apt-get install nginx-light")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let listen = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .expect("control-plane/deploy/nginx.conf");
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n    access_log off;\n\
             client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
             {}\n}}\n",
            site_from_example(&example, listen, upstream)
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("writing nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx");
        let mut child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(listen).is_err() {
            let log = || std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("nginx exited ({status}): {}", log());
            }
            assert!(Instant::now() < deadline, "nginx never listened: {}", log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Nginx {
            _child: child,
            _dir: dir,
            addr: listen,
        })
    }

    /// A client that reaches the proxy as `http://jam.test:PORT`.
    fn client(&self) -> (reqwest::Client, String) {
        let http = reqwest::Client::builder()
            .resolve(HOST, self.addr)
            .build()
            .expect("an HTTP client");
        (http, format!("http://{HOST}:{}", self.addr.port()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jamd_behind_nginx_as_the_readme_configures_it() {
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let Some(nginx) = Nginx::start(ts.server().http_addr) else {
        ts.stop().await;
        return;
    };
    let (http, base) = nginx.client();
    let call = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.expect("request through nginx");
        let status = resp.status();
        let body = resp.text().await.expect("response body");
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };

    // Accounts and a session through the proxy.
    let login = |name: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = json!({"username": name, "password": "correct horse battery"});
            let (s, _) = call(http.post(format!("{base}/api/accounts")).json(&body)).await;
            assert_eq!(s, StatusCode::CREATED);
            let (s, v) = call(http.post(format!("{base}/api/login")).json(&body)).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["token"].as_str().expect("a token").to_string()
        }
    };
    let ann = login("ann").await;
    let ben = login("ben").await;
    let (s, v) = call(
        http.post(format!("{base}/api/sessions"))
            .bearer_auth(&ann)
            .json(&json!({"name": "behind nginx"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sid = v["id"].as_str().unwrap().to_string();

    // The relay address names the host the client asked nginx for (direct
    // requests get the address they used).
    let join_via_nginx = |token: String| {
        let req = http
            .post(format!("{base}/api/sessions/{sid}/join"))
            .bearer_auth(token)
            .json(&json!({}));
        async move {
            let (s, join) = call(req).await;
            assert_eq!(s, StatusCode::OK, "{join}");
            join
        }
    };
    let join = join_via_nginx(ann.clone()).await;
    let relay_port = ts.server().relay_addr.port();
    assert_eq!(join["relay"], format!("{HOST}:{relay_port}"));
    let direct = ts.join(&ann, &sid).await;
    assert_eq!(direct["relay"], format!("127.0.0.1:{relay_port}"));

    // A member stream through nginx carries each change as it happens, and
    // jamd marks it unbuffered for proxies.
    let resp = ts
        .http
        .get(format!("{}/api/sessions/{sid}/members/events", ts.base))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    drop(resp);
    let mut stream = MemberStream::open_at(&http, &base, &ann, &sid).await;
    let first = stream.next("the list at once, through nginx").await;
    assert_eq!(first.as_array().map(Vec::len), Some(1), "{first}");
    join_via_nginx(ben.clone()).await;
    let second = stream.next("ben's join, through nginx").await;
    assert_eq!(second.as_array().map(Vec::len), Some(2), "{second}");

    // The dashboard's stream too: snapshots arrive until one shows the
    // session (the first may predate it).
    let mut resp = http
        .get(format!("{base}/api/events"))
        .send()
        .await
        .expect("the dashboard stream");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut decoder = SseDecoder::new();
    let snapshot = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let chunk = resp.chunk().await.expect("readable")?;
            let events = decoder.push(&chunk).expect("well-formed");
            if let Some(e) = events.into_iter().find(|e| e.data.contains("behind nginx")) {
                return Some(e);
            }
        }
    })
    .await
    .expect("a dashboard snapshot with the session within 30 s, through nginx")
    .expect("the stream stayed open");
    assert_eq!(snapshot.event, "snapshot");

    // A sealed capture of 3 MiB (above nginx's default 1 MiB) up and down.
    let blob: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let (s, v) = call(
        http.post(format!("{base}/api/blobs?name=night.scp&kind=scp"))
            .bearer_auth(&ann)
            .body(blob.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    let back = http
        .get(format!("{base}/api/blobs/{id}"))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    assert!(
        back.bytes().await.unwrap() == blob,
        "the blob came back whole"
    );

    drop(nginx);
    ts.stop().await;
}
