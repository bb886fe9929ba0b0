//! `jamd` pushes member changes (server-sent events on
//! `/api/sessions/{id}/members/events`) and the peers follow them: with
//! the poll interval set to an hour, a member who joins is still known to
//! the others (they hear its notes); only members see the stream; and the
//! stream comes back by itself after `jamd` is killed with SIGKILL and
//! restarted, again carrying a new member without any poll.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Heard, join_peer_with, listen, play, wait_healthy, wait_joined};
use jam_control_plane::config::Config;
use jam_control_plane::server::Server;
use jam_join::{Jamd, JoinError, MemberFeed, RunningPeer};
use jam_tests::jamd::{JamdProcess, free_ports};
use reqwest::StatusCode;

/// Long enough that no test here sees a second poll.
const NEVER: Duration = Duration::from_secs(3600);

async fn join_without_polls(base: &str, session: &str, user: &str) -> RunningPeer {
    join_peer_with(base, session, user, None, |o| o.poll_interval = NEVER).await
}

/// Waits until `peer`'s member feed satisfies `done`.
async fn wait_feed(
    peer: &RunningPeer,
    what: &str,
    done: impl Fn(&MemberFeed) -> bool,
) -> MemberFeed {
    let mut rx = peer.member_feed();
    let got = match tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|f| done(f))).await {
        Ok(Ok(f)) => Some(*f),
        _ => None,
    };
    got.unwrap_or_else(|| panic!("{what}: member feed is {:?}", *rx.borrow()))
}

/// `from` plays `notes`; `to` hears each of them.
async fn hears(from: &RunningPeer, to: &mut RunningPeer, channel: u8, notes: &[u8]) {
    play(from, channel, notes).await;
    let mut heard = Heard::default();
    let mut names = BTreeMap::new();
    listen(to, &mut heard, &mut names, Duration::from_secs(20), |h| {
        h.notes.len() >= notes.len()
    })
    .await;
    let mut got: Vec<u8> = heard.notes.iter().map(|(_, n)| *n).collect();
    got.sort_unstable();
    assert_eq!(got, notes, "heard {:?}", heard.notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_joins_is_known_to_the_others_without_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config::for_tests(dir.path(), None))
        .await
        .expect("jamd starts");
    let base = format!("http://{}", server.http_addr);
    let alice = join_without_polls(&base, "pushed", "alice").await;
    // Alice's stream is open and has shown her the list with herself only.
    wait_feed(&alice, "alice's stream opens", |f| f.pushed >= 1).await;
    let mut bob = join_without_polls(&base, "pushed", "bob").await;
    wait_joined(&alice, 1, Duration::from_secs(30)).await;
    wait_joined(&bob, 1, Duration::from_secs(30)).await;
    // Alice can only decrypt Bob if she learnt his key after he joined.
    let mut alice = alice;
    hears(&bob, &mut alice, 1, &[50, 51, 52]).await;
    hears(&alice, &mut bob, 2, &[60, 61]).await;
    for (name, p) in [("alice", &alice), ("bob", &bob)] {
        let f = *p.member_feed().borrow();
        assert_eq!(f.polled, 0, "{name} polled: {f:?}");
        assert_eq!(f.streams_opened, 1, "{name}: {f:?}");
    }
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_follow_the_stream_and_it_ends_when_they_leave() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config::for_tests(dir.path(), None))
        .await
        .expect("jamd starts");
    let base = format!("http://{}", server.http_addr);
    let alice = join_without_polls(&base, "closed", "alice").await;
    let id = alice.joined.session_id.clone();

    let login = |user: &'static str| {
        let base = base.clone();
        async move {
            let mut api = Jamd::new(&base);
            let _ = api.register(user, &common::password(user)).await;
            api.login(user, &common::password(user)).await.unwrap();
            api
        }
    };
    let carol = login("carol").await;
    match carol.member_events(&id).await {
        Err(JoinError::Refused { status, .. }) => assert_eq!(status, StatusCode::FORBIDDEN),
        other => panic!("a non-member follows the stream: {other:?}"),
    }
    match carol.member_events("00000000000000ff").await {
        Err(JoinError::Refused { status, .. }) => assert_eq!(status, StatusCode::NOT_FOUND),
        other => panic!("a stream of no session: {other:?}"),
    }
    let anonymous = reqwest::get(format!("{base}/api/sessions/{id}/members/events"))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Bob joins by the API (no peer) and follows the stream.
    let bob = login("bob").await;
    bob.join(&id, None, None).await.unwrap();
    let mut events = bob.member_events(&id).await.unwrap();
    let first = events.next().await.unwrap().expect("the list at once");
    assert_eq!(
        first.len(),
        1,
        "bob has no device key, alice has: {first:?}"
    );
    // Bob leaves: the stream tells nobody anything more and ends.
    bob.leave(&id).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the stream ends after the leave");
    assert!(matches!(end, Ok(None)), "{end:?}");
    match bob.member_events(&id).await {
        Err(JoinError::Refused { status, .. }) => assert_eq!(status, StatusCode::FORBIDDEN),
        other => panic!("a former member follows the stream: {other:?}"),
    }
    alice.close().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_reconnects_after_jamd_is_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (http, relay) = free_ports();
    let mut jamd = JamdProcess::start_on(dir.path(), http, relay);
    let base = jamd.base();
    wait_healthy(&base).await;
    let mut alice = join_without_polls(&base, "restart-stream", "alice").await;
    let bob = join_without_polls(&base, "restart-stream", "bob").await;
    wait_joined(&alice, 1, Duration::from_secs(30)).await;
    wait_feed(&alice, "alice's stream opens", |f| f.streams_opened >= 1).await;

    // SIGKILL: the stream's connection dies with the process.
    jamd.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    jamd = JamdProcess::start_on(dir.path(), http, relay);
    wait_healthy(&base).await;
    let reopened = wait_feed(&alice, "alice's stream reopens", |f| {
        f.streams_opened >= 2 && f.failures >= 1
    })
    .await;

    // Carol joins after the restart: Alice learns of her from the stream.
    let carol = join_without_polls(&base, "restart-stream", "carol").await;
    wait_joined(&alice, 2, Duration::from_secs(30)).await;
    hears(&carol, &mut alice, 3, &[70, 71, 72]).await;
    let now = *alice.member_feed().borrow();
    assert_eq!(
        now.polled, reopened.polled,
        "carol reached alice by a poll: {reopened:?} then {now:?}"
    );
    assert!(now.pushed > reopened.pushed, "{reopened:?} then {now:?}");
    for p in [alice, bob, carol] {
        p.close().await.unwrap();
    }
    drop(jamd);
}
