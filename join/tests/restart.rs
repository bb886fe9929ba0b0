//! The real `jamd` binary killed with SIGKILL in the middle of a session
//! and started again on the same ports and data directory: the peers say
//! hello again by themselves, the music goes on, and the accounts, the
//! session and its members are all still in the database.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Heard, join_peer, listen, play, wait_healthy, wait_joined};
use jam_join::Jamd;
use jam_tests::jamd::{JamdProcess, free_ports};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_reconnect_by_themselves_after_jamd_is_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (http, relay) = free_ports();
    let mut jamd = JamdProcess::start_on(dir.path(), http, relay);
    let base = jamd.base();
    wait_healthy(&base).await;

    let mut peers = Vec::new();
    for user in ["alice", "bob", "carol"] {
        peers.push(join_peer(&base, "restart", user, None).await);
    }
    for p in &peers {
        wait_joined(p, 2, Duration::from_secs(30)).await;
    }
    let mut heard: Vec<Heard> = (0..3).map(|_| Heard::default()).collect();
    let mut names: Vec<BTreeMap<_, _>> = (0..3).map(|_| BTreeMap::new()).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        listen(
            p,
            &mut heard[i],
            &mut names[i],
            Duration::from_secs(10),
            |h| h.connects >= 1,
        )
        .await;
    }
    play(&peers[0], 0, &[40, 41]).await;
    for i in 1..3 {
        listen(
            &mut peers[i],
            &mut heard[i],
            &mut names[i],
            Duration::from_secs(10),
            |h| h.notes.len() >= 2,
        )
        .await;
        assert_eq!(heard[i].notes.len(), 2);
    }

    // SIGKILL: no goodbye, no flush.
    jamd.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    jamd = JamdProcess::start_on(dir.path(), http, relay);
    wait_healthy(&base).await;
    let restarted = killed.elapsed();

    let mut worst = Duration::ZERO;
    for (i, p) in peers.iter_mut().enumerate() {
        listen(
            p,
            &mut heard[i],
            &mut names[i],
            Duration::from_secs(30),
            |h| h.connects >= 2,
        )
        .await;
        assert!(
            heard[i].connects >= 2,
            "peer {i} did not say hello again within 30 s"
        );
        let at = *heard[i].connected_at.last().unwrap();
        worst = worst.max(at.duration_since(killed));
    }
    eprintln!(
        "jamd back after {:.2} s; every peer reconnected {:.2} s after the kill",
        restarted.as_secs_f64(),
        worst.as_secs_f64()
    );

    // The session goes on.
    play(&peers[1], 1, &[60, 61, 62]).await;
    for i in [0, 2] {
        let want = heard[i].notes.len() + 3;
        listen(
            &mut peers[i],
            &mut heard[i],
            &mut names[i],
            Duration::from_secs(10),
            |h| h.notes.len() >= want,
        )
        .await;
        assert_eq!(heard[i].notes.len(), want, "peer {i}: {:?}", heard[i].notes);
    }

    // Nothing in the database was lost: the accounts log in, the session
    // is found by name, all three members are listed.
    let mut api = Jamd::new(&base);
    api.login("carol", &common::password("carol"))
        .await
        .unwrap();
    let id = api.find_session("restart").await.unwrap().expect("session");
    assert_eq!(id, peers[0].joined.session_id);
    let members = api.members(&id).await.unwrap();
    assert_eq!(members.len(), 3, "{members:?}");

    for p in peers {
        p.close().await.unwrap();
    }
    drop(jamd);
}
