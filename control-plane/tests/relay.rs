//! The relay over real UDP sockets on loopback, with tickets from the real
//! HTTP API: fan-out, strangers and spoofers, rate limits, keepalive
//! expiry, replayed and tampered control packets, and leaving.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::relay_client::RelayClient;
use common::{Backend, MemberStream, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_millis(300);

/// A server, a session and `n` members that said hello.
async fn session_with(ts: &TestServer, n: usize) -> (String, Vec<(String, RelayClient, Value)>) {
    let owner = ts.user("owner").await;
    let sid = ts.session(&owner, "relay test").await;
    let mut members = Vec::new();
    for i in 0..n {
        let token = ts.user(&format!("player{i}")).await;
        let join = ts.join(&token, &sid).await;
        let mut client = RelayClient::from_join(&join);
        let ack = client.hello().expect("hello accepted");
        assert_eq!(
            ack.observed,
            client.sock.local_addr().unwrap(),
            "the relay saw our address"
        );
        members.push((token, client, join));
    }
    (sid, members)
}

/// Polls until `f` is true (the relay publishes stats every 100 ms).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_fans_out_to_every_other_member_and_unicasts() {
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let (_, mut m) = session_with(&ts, 3).await;
    let ids: Vec<u32> = m.iter().map(|(_, c, _)| c.member).collect();
    m[0].1.send_data(0, b"C4 from 0");
    for (i, (_, c, _)) in m.iter_mut().enumerate().skip(1) {
        assert_eq!(
            c.recv_data(WAIT * 3),
            Some((ids[0], b"C4 from 0".to_vec())),
            "member {i}"
        );
    }
    assert_eq!(m[0].1.recv_data(WAIT), None, "no echo to the sender");
    // Unicast to member 2 only.
    m[1].1.send_data(ids[2], b"to 2");
    assert_eq!(m[2].1.recv_data(WAIT * 3), Some((ids[1], b"to 2".to_vec())));
    assert_eq!(m[0].1.recv_data(WAIT), None);
    eventually("traffic counted", async || {
        ts.metric("jamd_relay_packets_out_total").await >= 3 + 3
    })
    .await;
    ts.stop().await;
}

/// A session larger than one send slice: the relay queues each broadcast and
/// sends it a slice at a time between reads. Every copy still arrives, in
/// the order its sender sent them, and a unicast sent meanwhile by another
/// member gets through too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fan_outs_arrive_whole_and_in_order_with_other_traffic_between() {
    use jam_control_plane::relay::server::FANOUT_SLICE;
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let n = FANOUT_SLICE + 3;
    let (_, mut m) = session_with(&ts, n).await;
    let ids: Vec<u32> = m.iter().map(|(_, c, _)| c.member).collect();
    let sent: Vec<Vec<u8>> = (0..5u8).map(|k| vec![k; 32]).collect();
    for p in &sent {
        m[0].1.send_data(0, p);
    }
    m[1].1.send_data(ids[n - 1], b"unicast");
    for (i, (_, c, _)) in m.iter_mut().enumerate().skip(1) {
        let got = c.drain_data(WAIT * 3);
        let from0: Vec<&Vec<u8>> = got
            .iter()
            .filter(|(s, _)| *s == ids[0])
            .map(|(_, p)| p)
            .collect();
        assert_eq!(from0, sent.iter().collect::<Vec<_>>(), "member {i}");
        let others: Vec<_> = got.iter().filter(|(s, _)| *s != ids[0]).collect();
        if i == n - 1 {
            assert_eq!(others, [&(ids[1], b"unicast".to_vec())], "member {i}");
        } else {
            assert!(others.is_empty(), "member {i}: {others:?}");
        }
    }
    assert_eq!(m[0].1.recv_data(WAIT), None, "no echo to the sender");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_cannot_inject_or_read() {
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let (sid, mut m) = session_with(&ts, 2).await;
    // A stranger who knows the session and member ids sends from its own socket.
    let stranger_tok = ts.user("stranger").await;
    let other = ts.session(&stranger_tok, "elsewhere").await;
    let join = ts.join(&stranger_tok, &other).await;
    let mut stranger = RelayClient::from_join(&join);
    let victim = m[0].1.member;
    let session = u64::from_str_radix(&sid, 16).unwrap();
    stranger.send_data_as(session, victim, b"injected");
    // And a member of another session (registered) claims to be in ours.
    stranger.hello().unwrap();
    stranger.send_data_as(session, stranger.member, b"injected too");
    // A member claims another member's id.
    m[1].1.send_data_as(session, victim, b"spoofed");
    for (_, c, _) in m.iter_mut() {
        let got = c.drain_data(WAIT);
        assert!(got.is_empty(), "member received {got:?}");
    }
    // Nothing of the session reaches the stranger either.
    m[0].1.send_data(0, b"private note");
    assert_eq!(
        m[1].1.recv_data(WAIT * 3).map(|d| d.1),
        Some(b"private note".to_vec())
    );
    assert_eq!(stranger.recv_data(WAIT), None);
    eventually("drops counted", async || {
        ts.metric("jamd_relay_dropped_total{reason=\"unknown_source\"}")
            .await
            == 1
            && ts
                .metric("jamd_relay_dropped_total{reason=\"spoofed\"}")
                .await
                == 2
    })
    .await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_tampered_and_forged_hellos_are_rejected() {
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let (_, mut m) = session_with(&ts, 2).await;
    // Capture a genuine hello and replay it from an attacker's socket.
    let hello = m[0].1.hello_bytes(&[]);
    m[0].1.send_raw(&hello);
    assert!(
        m[0].1.recv_packet(WAIT * 3).is_some(),
        "the genuine hello is acked"
    );
    let attacker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.set_read_timeout(Some(WAIT)).unwrap();
    attacker.send_to(&hello, m[0].1.relay).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        attacker.recv_from(&mut buf).is_err(),
        "a replayed hello got an answer"
    );
    // Tampered: one byte of a fresh hello changed (the tag breaks).
    let mut tampered = m[0].1.hello_bytes(&[]);
    let i = tampered.len() - 20;
    tampered[i] ^= 0x40;
    attacker.send_to(&tampered, m[0].1.relay).unwrap();
    assert!(attacker.recv_from(&mut buf).is_err());
    // Forged ticket: expiry pushed out, tag left alone.
    let mut forged = m[0].1.hello_bytes(&[]);
    forged[16 + 13] ^= 0x01;
    attacker.send_to(&forged, m[0].1.relay).unwrap();
    assert!(attacker.recv_from(&mut buf).is_err());
    // The member still receives at its own address; the attacker nothing.
    m[1].1.send_data(0, b"still mine");
    assert_eq!(
        m[0].1.recv_data(WAIT * 3),
        Some((m[1].1.member, b"still mine".to_vec()))
    );
    assert!(attacker.recv_from(&mut buf).is_err());
    eventually("rejections counted", async || {
        ts.metric("jamd_relay_dropped_total{reason=\"replay\"}")
            .await
            == 1
            && ts
                .metric("jamd_relay_dropped_total{reason=\"bad_tag\"}")
                .await
                == 1
            && ts
                .metric("jamd_relay_dropped_total{reason=\"forged_ticket\"}")
                .await
                == 1
    })
    .await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_tampered_keepalives_are_rejected() {
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let (_, mut m) = session_with(&ts, 1).await;
    let c = &mut m[0].1;
    c.keepalive(1500, 3, 200).unwrap();
    // Build keepalive seq 2 by hand, send it twice: the second is a replay.
    let ka = jam_transport::relay::Keepalive {
        seq: 2,
        client_time_us: 1,
        rtt_us: 9_999,
        loss_permille: 0,
        jitter_us: 0,
    };
    let mut buf = [0u8; 128];
    let n =
        jam_transport::relay::encode_keepalive(c.session, c.member, &ka, &c.key, &mut buf).unwrap();
    c.send_raw(&buf[..n]);
    assert!(c.recv_packet(WAIT * 3).is_some());
    c.send_raw(&buf[..n]);
    assert!(
        c.recv_packet(WAIT).is_none(),
        "a replayed keepalive got an ack"
    );
    let mut t = buf;
    t[n - 1] ^= 1;
    // Sequence 3 with a broken tag.
    let ka3 = jam_transport::relay::Keepalive { seq: 3, ..ka };
    let n3 =
        jam_transport::relay::encode_keepalive(c.session, c.member, &ka3, &c.key, &mut t).unwrap();
    t[n3 - 1] ^= 1;
    c.send_raw(&t[..n3]);
    assert!(
        c.recv_packet(WAIT).is_none(),
        "a tampered keepalive got an ack"
    );
    eventually("rejections counted", async || {
        ts.metric("jamd_relay_dropped_total{reason=\"replay\"}")
            .await
            == 1
            && ts
                .metric("jamd_relay_dropped_total{reason=\"bad_tag\"}")
                .await
                == 1
    })
    .await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_drop_and_count_floods() {
    let ts = TestServer::start_with(Backend::Sqlite, |c| {
        c.relay.rate_packets_per_sec = 20;
        c.relay.burst_packets = 10;
    })
    .await
    .unwrap();
    let (_, mut m) = session_with(&ts, 2).await;
    for i in 0..200u32 {
        m[0].1.send_data(0, &i.to_be_bytes());
    }
    let got = m[1].1.drain_data(Duration::from_millis(500));
    // The burst plus what refills while the flood is sent (20/s; the
    // bound leaves room for a slow machine).
    assert!(
        (10..=60).contains(&got.len()),
        "{} packets passed the limit",
        got.len()
    );
    eventually("drops counted", async || {
        ts.metric("jamd_relay_dropped_total{reason=\"rate_limited\"}")
            .await
            == 200 - got.len() as u64
    })
    .await;
    ts.stop().await;
}

/// A player who starts right after the others were accepted counts them as
/// online: the relay publishes a member before acknowledging its hello, not
/// at its next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_online_as_soon_as_its_hello_is_acknowledged() {
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let (sid, _m) = session_with(&ts, 3).await;
    let newcomer = ts.user("newcomer").await;
    let join = ts.join(&newcomer, &sid).await;
    let online: Vec<bool> = join["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["username"].as_str().unwrap().starts_with("player"))
        .map(|x| x["online"].as_bool().unwrap())
        .collect();
    assert_eq!(online, vec![true, true, true], "{join:#}");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_members_expire_and_keepalives_keep_them() {
    let ts = TestServer::start_with(Backend::Sqlite, |c| {
        c.relay.keepalive_timeout = Duration::from_secs(2);
    })
    .await
    .unwrap();
    let (sid, mut m) = session_with(&ts, 3).await;
    let token = m[0].0.clone();
    // Members 0 and 1 keep alive; member 2 goes silent until the relay
    // forgets it (a stall of the machine shorter than the timeout cannot
    // make the others expire).
    let deadline = Instant::now() + Duration::from_secs(20);
    let online = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        m[0].1.keepalive(2_000, 10, 300).unwrap();
        m[1].1.keepalive(3_000, 0, 100).unwrap();
        let (s, members) = ts
            .call(
                Method::GET,
                &format!("/api/sessions/{sid}/members"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let online: Vec<bool> = members
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["online"].as_bool().unwrap())
            .collect();
        if !online[2] || Instant::now() > deadline {
            break online;
        }
    };
    assert_eq!(online, vec![true, true, false]);
    // Its packets are no longer forwarded; after a new hello they are again.
    m[2].1.send_data(0, b"late");
    assert!(m[0].1.drain_data(WAIT).is_empty());
    m[2].1.hello().unwrap();
    m[2].1.send_data(0, b"back");
    assert_eq!(
        m[0].1.recv_data(WAIT * 3).map(|d| d.1),
        Some(b"back".to_vec())
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_over_http_revokes_the_ticket_and_relay_leave_forgets_the_address() {
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let (sid, mut m) = session_with(&ts, 3).await;
    leave(&ts, &m[2].0, &sid).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    m[2].1.send_data(0, b"after leaving");
    assert!(
        m[0].1.drain_data(WAIT).is_empty(),
        "a left member still injects"
    );
    m[0].1.send_data(0, b"members only");
    assert_eq!(
        m[1].1.recv_data(WAIT * 3).map(|d| d.1),
        Some(b"members only".to_vec())
    );
    assert!(
        m[2].1.drain_data(WAIT).is_empty(),
        "a left member still reads"
    );
    assert!(m[2].1.hello().is_err(), "the old ticket still works");
    // A relay-level leave (client going away) stops forwarding to it at once.
    m[1].1.leave();
    tokio::time::sleep(Duration::from_millis(200)).await;
    m[0].1.send_data(0, b"anyone?");
    assert!(m[1].1.drain_data(WAIT).is_empty());
    eventually("revocation counted", async || {
        ts.metric("jamd_relay_dropped_total{reason=\"revoked\"}")
            .await
            >= 1
    })
    .await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_carry_the_addresses_for_a_direct_path() {
    let ts = TestServer::start(Backend::Sqlite).await.unwrap();
    let (sid, mut m) = session_with(&ts, 1).await;
    let lan: std::net::SocketAddr = "192.168.1.20:5004".parse().unwrap();
    m[0].1.hello_with(&[lan]).unwrap();
    let newcomer = ts.user("newcomer").await;
    let observed = m[0].1.sock.local_addr().unwrap().to_string();
    eventually("addresses recorded", async || {
        let join = ts.join(&newcomer, &sid).await;
        join["members"].as_array().unwrap().iter().any(|x| {
            x["observed_addr"] == observed
                && x["reported_addrs"] == json!([lan.to_string()])
                && x["online"] == true
        })
    })
    .await;
    ts.stop().await;
}

/// Two nodes share one database: a session created on node 2 is joined
/// through node 1's API, whose answer points at node 2's relay; node 2's
/// relay accepts node 1's tickets (shared secret), and learns of a leave
/// made through node 1 from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_database_agree_on_tickets_and_leaves() {
    let node1 = TestServer::start(Backend::Sqlite).await.unwrap();
    let (_dir2, _, node2) = second_node(&node1, |_| {}).await;
    let owner = node1.user("owner").await;
    let sid = session_on(&node1, node2.http_addr, &owner, "on node 2").await;
    let mut clients = Vec::new();
    for name in ["xia", "yan"] {
        let token = node1.user(name).await;
        let join = node1.join(&token, &sid).await;
        assert_eq!(join["session"]["node"], "node2");
        assert_eq!(
            join["relay"],
            node2.relay_addr.to_string(),
            "node 1 points at node 2's relay"
        );
        let mut c = RelayClient::from_join(&join);
        c.hello().expect("node 2 accepts node 1's ticket");
        clients.push((token, c));
    }
    clients[1].1.send_data(0, b"hello from yan");
    assert_eq!(
        clients[0].1.recv_data(WAIT * 3).map(|d| d.1),
        Some(b"hello from yan".to_vec())
    );
    // Node 1 has no relay state for this session; it shows who is online
    // from what node 2 recorded.
    assert_eq!(
        listed_online(&node1, &clients[0].0, &sid).await,
        ["xia", "yan"]
    );
    leave(&node1, &clients[1].0, &sid).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        clients[1].1.send_data(0, b"still here?");
        if clients[0].1.drain_data(WAIT).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 never learned of the leave"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    node2.shutdown().await.unwrap();
    node1.stop().await;
}

/// The usernames a member list shows online, in list order.
fn online_names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a member list")
        .iter()
        .filter(|m| m["online"] == true)
        .map(|m| m["username"].as_str().expect("username"))
        .collect()
}

/// A second node named `node2` on `node1`'s database (`tweak` may change
/// its config): its data directory (keep it alive), config and server.
async fn second_node(
    node1: &TestServer,
    tweak: impl FnOnce(&mut jam_control_plane::config::Config),
) -> (
    tempfile::TempDir,
    jam_control_plane::config::Config,
    jam_control_plane::server::Server,
) {
    let url = node1.server().state.config.database_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = jam_control_plane::config::Config::for_tests(dir.path(), Some(url));
    cfg.node_name = "node2".into();
    tweak(&mut cfg);
    let node2 = jam_control_plane::server::Server::start(cfg.clone())
        .await
        .unwrap();
    (dir, cfg, node2)
}

/// A public session named `name`, created by `token` through the API of
/// the node serving HTTP at `node` (so it lives on that node's relay); its
/// id.
async fn session_on(ts: &TestServer, node: SocketAddr, token: &str, name: &str) -> String {
    let resp = ts
        .http
        .post(format!("http://{node}/api/sessions"))
        .bearer_auth(token)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `token` leaves session `sid` through `ts`'s API.
async fn leave(ts: &TestServer, token: &str, sid: &str) {
    let (s, v) = ts
        .call(
            Method::POST,
            &format!("/api/sessions/{sid}/leave"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
}

/// Ends every connection to the database at `url` whose last statement was
/// a `LISTEN` (as a PostgreSQL restart or a network cut would); how many.
async fn end_listening_connections(url: &str) -> usize {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let ended = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .len();
    conn.close().await.ok();
    ended
}

/// Who `ts`'s `GET /api/sessions/{sid}/members` shows online.
async fn listed_online(ts: &TestServer, token: &str, sid: &str) -> Vec<String> {
    let (s, list) = ts
        .call(
            Method::GET,
            &format!("/api/sessions/{sid}/members"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    online_names(&list).into_iter().map(String::from).collect()
}

/// The next list on `stream` that `ok` accepts (lists in between are
/// transitions), within the stream's own 30 s per event.
async fn until(stream: &mut MemberStream, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    loop {
        let list = stream.next(what).await;
        if ok(&list) {
            return list;
        }
    }
}

/// Two nodes on one PostgreSQL database, each with its membership sweep an
/// hour apart, so that only the nodes' notices (`nodes`) can carry a change
/// from one to the other within the test: a member stream on node 1 follows
/// a session hosted by node 2 and sees members go online on node 2's relay;
/// node 2's relay drops at once a member who left through node 1; node 1's
/// list and dashboard show who is online there; node 2 stopping marks its
/// members offline, and so does node 2 starting after a crash left them
/// online in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_postgresql_tell_each_other_what_changed() {
    let hour = Duration::from_secs(3600);
    let Some(node1) =
        TestServer::start_with(Backend::Postgres, |c| c.membership_sweep = hour).await
    else {
        return;
    };
    let (_dir2, cfg2, node2) = second_node(&node1, |c| c.membership_sweep = hour).await;
    let owner = node1.user("owner").await;
    let sid = session_on(&node1, node2.http_addr, &owner, "hosted by node 2").await;

    let mut stream = MemberStream::open_at(&node1.http, &node1.base, &owner, &sid).await;
    let first = stream.next("the list at once").await;
    assert_eq!(first, json!([]), "nobody joined yet");
    let mut clients = Vec::new();
    for name in ["xia", "yan"] {
        let token = node1.user(name).await;
        let join = node1.join(&token, &sid).await;
        assert_eq!(join["relay"], node2.relay_addr.to_string());
        clients.push((token, RelayClient::from_join(&join)));
    }
    // Joins made on node 1 reach node 1's stream (its own changes).
    until(&mut stream, "both joined", |l| {
        l.as_array().unwrap().len() == 2
    })
    .await;

    // Hellos on node 2's relay reach node 1's stream through the notices.
    for (_, c) in &mut clients {
        tokio::task::block_in_place(|| c.hello()).expect("node 2 accepts node 1's ticket");
    }
    let list = until(&mut stream, "both online on node 2", |l| {
        online_names(l) == ["xia", "yan"]
    })
    .await;
    assert!(list[0]["observed_addr"].is_string(), "{list}");
    // Node 1's dashboard (rebuilt on the notices) shows the session as
    // node 2's, its members online.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, snap) = node1.call(Method::GET, "/api/dashboard", None, None).await;
        assert_eq!(s, StatusCode::OK);
        let line = snap["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == sid.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        let members = line["members"].as_array().cloned().unwrap_or_default();
        if line["node"] == "node2"
            && members.len() == 2
            && members.iter().all(|m| m["online"] == true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "node 1's dashboard: {line}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A leave made through node 1 reaches node 2's relay by a notice (its
    // sweep is an hour away): node 2's relay drops yan while xia, who
    // stays, is still live there (both keep sending, so neither times out
    // meanwhile).
    let yan = clients[1].1.member;
    let xia = clients[0].1.member;
    leave(&node1, &clients[1].0, &sid).await;
    let session = u64::from_str_radix(&sid, 16).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        clients[0].1.send_data(0, b"xia still here");
        clients[1].1.send_data(0, b"yan still here?");
        let live = node2.state.online_members(session);
        if !live.contains(&yan) {
            assert!(live.contains(&xia), "xia stayed live: {live:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2's relay never learned of the leave made through node 1"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    clients[0].1.drain_data(WAIT);
    clients[1].1.send_data(0, b"after the leave");
    let got = clients[0].1.drain_data(WAIT);
    assert!(
        !got.iter().any(|(_, p)| p == b"after the leave"),
        "yan's packets still reach xia: {got:?}"
    );
    until(&mut stream, "yan gone", |l| {
        l.as_array().unwrap().len() == 1 && online_names(l) == ["xia"]
    })
    .await;

    // Both nodes lose their listening connections (PostgreSQL ends them):
    // they listen again, and the next changes still cross.
    let ended = end_listening_connections(&node1.server().state.config.database_url).await;
    assert!(ended >= 2, "both nodes' listeners were ended: {ended}");
    tokio::task::block_in_place(|| clients[0].1.leave());
    until(
        &mut stream,
        "xia left the relay, after the reconnect",
        |l| l.as_array().unwrap().len() == 1 && online_names(l).is_empty(),
    )
    .await;
    tokio::task::block_in_place(|| clients[0].1.hello()).expect("xia back on node 2's relay");
    until(&mut stream, "xia back, after the reconnect", |l| {
        online_names(l) == ["xia"]
    })
    .await;

    // Node 2 stopping marks its members offline, and says so.
    node2.shutdown().await.unwrap();
    until(&mut stream, "xia offline after node 2 stopped", |l| {
        l.as_array().unwrap().len() == 1 && online_names(l).is_empty()
    })
    .await;

    // A crash leaves presence and a heartbeat behind; node 2 starting
    // clears the presence.
    let db = &node1.server().state.db;
    db.beat("node2", jam_control_plane::db::now_ms() + 60_000)
        .await
        .unwrap();
    let xia = db.members(&sid).await.unwrap()[0].member_id;
    db.set_member_online(&sid, xia, "127.0.0.1:9", "", 1)
        .await
        .unwrap();
    assert_eq!(
        listed_online(&node1, &owner, &sid).await,
        ["xia"],
        "as a crash would leave it"
    );
    let node2 = jam_control_plane::server::Server::start(cfg2)
        .await
        .unwrap();
    assert_eq!(
        listed_online(&node1, &owner, &sid).await,
        Vec::<String>::new(),
        "after node 2 started"
    );
    node2.shutdown().await.unwrap();
    node1.stop().await;
}

/// A node killed with SIGKILL tells nobody: the node sharing its database
/// shows the members of its sessions offline once the killed node's
/// heartbeat deadline passes (three of its sweeps), and wakes the member
/// streams that showed them online. Node 2 is the `jamd` binary on node 1's
/// SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_stops_showing_its_members_online() {
    let sweep = Duration::from_secs(1);
    let node1 = TestServer::start_with(Backend::Sqlite, |c| c.membership_sweep = sweep)
        .await
        .unwrap();
    let url = node1.server().state.config.database_url.clone();
    let dir2 = tempfile::tempdir().unwrap();
    let (http2, relay2) = jam_tests::jamd::free_ports();
    let mut node2 = jam_tests::jamd::JamdProcess::start_on_with(
        dir2.path(),
        http2,
        relay2,
        &[
            "--database-url",
            &url,
            "--node-name",
            "node2",
            "--membership-sweep-secs",
            "1",
        ],
    );
    tokio::task::block_in_place(|| node2.wait_listening());
    let owner = node1.user("owner").await;
    let sid = session_on(&node1, http2, &owner, "on a node that dies").await;
    let xia = node1.user("xia").await;
    let join = node1.join(&xia, &sid).await;
    assert_eq!(join["relay"], relay2.to_string());
    let mut client = RelayClient::from_join(&join);
    tokio::task::block_in_place(|| client.hello()).expect("node 2's relay accepts xia");

    let mut stream = MemberStream::open_at(&node1.http, &node1.base, &owner, &sid).await;
    until(&mut stream, "xia online on node 2", |l| {
        online_names(l) == ["xia"]
    })
    .await;
    node2.kill();
    until(&mut stream, "xia offline after node 2 was killed", |l| {
        online_names(l).is_empty()
    })
    .await;
    assert_eq!(
        listed_online(&node1, &owner, &sid).await,
        Vec::<String>::new()
    );
    node1.stop().await;
}
