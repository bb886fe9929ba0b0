//! Direct paths through a real `jamd` (in-process on loopback, real UDP
//! sockets, real HTTP): two peers that can reach each other switch from
//! the relay to a direct path and the relay forwards nothing more; two
//! peers that cannot (no reported address, and a public address that
//! filters everyone but the relay) play through the relay. Every note
//! arrives either way.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Heard, Tap, join_peer_with, listen, play, wait_joined};
use jam_control_plane::config::Config;
use jam_control_plane::server::Server;
use jam_join::RunningPeer;
use jam_transport::direct::Path;
use jam_transport::relay_client::RelayPeerStats;

async fn server() -> (Server, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config::for_tests(dir.path(), None))
        .await
        .expect("jamd starts");
    let base = format!("http://{}", server.http_addr);
    (server, dir, base)
}

/// `jamd_relay_data_forwarded_total` from `/metrics`.
async fn forwarded(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("jamd_relay_data_forwarded_total "))
        .expect("the counter is exported")
        .trim()
        .parse()
        .expect("a number")
}

/// [`forwarded`] once it has stopped moving: `jamd` publishes its relay
/// counters every 100 ms, so a packet relayed just before a path switched
/// shows up to a tick later. Two readings 300 ms apart must agree (a relay
/// that keeps forwarding never settles, and the caller's assertion then
/// fails on the latest reading).
async fn settled_forwarded(base: &str) -> u64 {
    let mut last = forwarded(base).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = forwarded(base).await;
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

async fn path(peer: &RunningPeer, to: u32) -> Path {
    peer.driver.call(move |p, _| p.path(to)).await.unwrap()
}

/// Plays `notes` from `from` and checks `to` hears each exactly once.
async fn every_note_arrives(from: &RunningPeer, to: &mut RunningPeer, notes: &[u8]) {
    play(from, 0, notes).await;
    let mut heard = Heard::default();
    let mut names = BTreeMap::new();
    listen(to, &mut heard, &mut names, Duration::from_secs(20), |h| {
        h.notes.len() >= notes.len()
    })
    .await;
    let got: Vec<u8> = heard.notes.iter().map(|(_, n)| *n).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, notes, "heard {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reachable_peers_switch_to_the_direct_path_and_the_relay_forwards_nothing() {
    let (_server, _dir, base) = server().await;
    let mut alice = join_peer_with(&base, "direct", "alice", None, |_| {}).await;
    let mut bob = join_peer_with(&base, "direct", "bob", None, |_| {}).await;
    wait_joined(&alice, 1, Duration::from_secs(30)).await;
    wait_joined(&bob, 1, Duration::from_secs(30)).await;
    let (a, b) = (alice.joined.member_id, bob.joined.member_id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (bob_addr, alice_addr) = (bob.driver.control_addr(), alice.driver.control_addr());
    loop {
        let (pa, pb) = (path(&alice, b).await, path(&bob, a).await);
        if pa != Path::Relay && pb != Path::Relay {
            // Each sends to the other's own socket.
            assert_eq!(pa, Path::Direct(bob_addr));
            assert_eq!(pb, Path::Direct(alice_addr));
            break;
        }
        assert!(Instant::now() < deadline, "no direct path: {pa:?} {pb:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = settled_forwarded(&base).await;
    let stats_before = alice.driver.call(|p, _| p.stats()).await.unwrap();
    let bob_before = bob.driver.call(|p, _| p.stats()).await.unwrap();

    let tune: Vec<u8> = (40..70).collect();
    every_note_arrives(&alice, &mut bob, &tune).await;
    let tune: Vec<u8> = (70..100).collect();
    every_note_arrives(&bob, &mut alice, &tune).await;

    let after = settled_forwarded(&base).await;
    let stats = alice.driver.call(|p, _| p.stats()).await.unwrap();
    let bob_stats = bob.driver.call(|p, _| p.stats()).await.unwrap();
    // 60 notes (plus clock sync and receiver feedback) went direct: the
    // relay forwarded no data packet after the switch, and neither peer
    // sent one to it, but for copies sent while an answer was late (a
    // stalled process on a loaded machine puts the path in doubt for a
    // moment): every relayed packet is one of those.
    let copies = |s: &RelayPeerStats, b: &RelayPeerStats| s.relay_copies - b.relay_copies;
    let relayed = |s: &RelayPeerStats, b: &RelayPeerStats| s.relay_out - b.relay_out;
    assert_eq!(
        relayed(&stats, &stats_before),
        copies(&stats, &stats_before)
    );
    assert_eq!(
        relayed(&bob_stats, &bob_before),
        copies(&bob_stats, &bob_before)
    );
    let all_copies = copies(&stats, &stats_before) + copies(&bob_stats, &bob_before);
    assert_eq!(
        after - before,
        all_copies,
        "relay forwarded data after the switch"
    );
    assert!(
        stats.direct_out >= stats_before.direct_out + 30,
        "{stats:?}"
    );
    assert!(stats.direct_in > stats_before.direct_in + 30, "{stats:?}");
    assert_eq!(path(&alice, b).await, Path::Direct(bob_addr));
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_cannot_reach_each_other_play_through_the_relay() {
    let (server, _dir, base) = server().await;
    // Each peer's relay traffic goes through a tap that takes datagrams
    // from the relay only: the address jamd lists for it reaches no other
    // peer, and the peers report no address of their own.
    let tap_a = Tap::start_filtered(server.relay_addr, true).await;
    let tap_b = Tap::start_filtered(server.relay_addr, true).await;
    let blind = |o: &mut jam_join::PeerOptions| o.report_addrs = false;
    let mut alice = join_peer_with(&base, "blocked", "alice", Some(tap_a.addr), blind).await;
    let mut bob = join_peer_with(&base, "blocked", "bob", Some(tap_b.addr), blind).await;
    wait_joined(&alice, 1, Duration::from_secs(30)).await;
    wait_joined(&bob, 1, Duration::from_secs(30)).await;
    let (a, b) = (alice.joined.member_id, bob.joined.member_id);
    let before = forwarded(&base).await;

    let tune: Vec<u8> = (40..70).collect();
    every_note_arrives(&alice, &mut bob, &tune).await;
    let tune: Vec<u8> = (70..100).collect();
    every_note_arrives(&bob, &mut alice, &tune).await;

    // They did try: probes went out to the listed (filtered) addresses.
    let stats = alice.driver.call(|p, _| p.stats()).await.unwrap();
    assert!(stats.direct_out > 0, "{stats:?}");
    assert_eq!(stats.direct_in, 0, "{stats:?}");
    assert_eq!(path(&alice, b).await, Path::Relay);
    assert_eq!(path(&bob, a).await, Path::Relay);
    assert!(forwarded(&base).await >= before + 60);
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}
