//! The dashboard in a real browser: headless Chromium, driven through
//! chromedriver (WebDriver), shows a live session with three members who
//! said hello to the relay, and drops one when it leaves, without a reload
//! (the page follows server-sent events).

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::relay_client::RelayClient;
use common::{Backend, TestServer};
use fantoccini::{ClientBuilder, Locator};
use jam_tests::process::KillOnDrop;
use reqwest::{Method, StatusCode};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn member_rows(client: &fantoccini::Client) -> Vec<String> {
    let mut out = Vec::new();
    for row in client
        .find_all(Locator::Css("tr.member"))
        .await
        .unwrap_or_default()
    {
        out.push(row.text().await.unwrap_or_default());
    }
    out
}

async fn wait_rows(
    client: &fantoccini::Client,
    what: &str,
    f: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = member_rows(client).await;
        if f(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}; rows: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_live_session_and_follows_a_leave() {
    let Some(chromium) = jam_tests::require_tool("chromium", "apt-get install chromium") else {
        return;
    };
    let Some(chromedriver) =
        jam_tests::require_tool("chromedriver", "apt-get install chromium-driver")
    else {
        return;
    };
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let owner = ts.user("host").await;
    let sid = ts.session(&owner, "browser jam").await;
    let mut players = Vec::new();
    for (i, name) in ["ana", "ben", "cai"].iter().enumerate() {
        let token = ts.user(name).await;
        let join = ts.join(&token, &sid).await;
        let mut c = RelayClient::from_join(&join);
        c.hello().unwrap();
        c.keepalive(2_000 * (i as u32 + 1), 5, 300).unwrap();
        c.send_data(0, b"note");
        players.push((token, c));
    }

    let port = free_port();
    let _driver = KillOnDrop(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1200,800",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "no WebDriver session: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    client.goto(&format!("{}/", ts.base)).await.unwrap();
    let rows = wait_rows(&client, "three online members", |r| {
        r.len() == 3 && r.iter().all(|l| l.contains("online"))
    })
    .await;
    for name in ["ana", "ben", "cai"] {
        assert!(
            rows.iter().any(|r| r.contains(name)),
            "{name} missing from {rows:?}"
        );
    }
    // RTT reported in cai's keepalive (6 ms) shows in its row.
    assert!(
        rows.iter().any(|r| r.contains("cai") && r.contains("6.0")),
        "{rows:?}"
    );
    let heading = client
        .find(Locator::Css("section.session h2"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(heading.contains("browser jam"), "{heading}");
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(ts.dir.path().join("dashboard-3.png"), png);
    }

    // Ben leaves; the page updates by itself.
    let (s, _) = ts
        .call(
            Method::POST,
            &format!("/api/sessions/{sid}/leave"),
            Some(&players[1].0),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let rows = wait_rows(&client, "two members after the leave", |r| r.len() == 2).await;
    assert!(rows.iter().all(|r| !r.contains("ben")), "{rows:?}");
    let status = client
        .find(Locator::Id("status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(status, "live");
    if let Some(dir) = std::env::var_os("JAM_SCREENSHOT_DIR")
        && let Ok(png) = client.screenshot().await
    {
        std::fs::write(std::path::Path::new(&dir).join("dashboard.png"), png).unwrap();
    }
    client.close().await.unwrap();
    ts.stop().await;
}
