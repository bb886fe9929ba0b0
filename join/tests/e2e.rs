//! End-to-end sessions through a real `jamd` (the control-plane server
//! in-process on loopback, real UDP sockets, real HTTP): three peers join
//! one session by name and hear every note; what crosses the wire reveals
//! neither names nor MIDI; replayed, tampered and forged packets are
//! refused; a member who leaves reads nothing sent after the rotation.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Heard, Tap, join_peer, listen, play, wait_joined};
use jam_control_plane::config::Config;
use jam_control_plane::server::Server;
use jam_core::Micros;
use jam_join::Jamd;
use jam_transport::relay::{self, Packet};
use jam_transport::secure::{Channel, Member, Opened, SecureSession};

async fn server() -> (Server, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config::for_tests(dir.path(), None))
        .await
        .expect("jamd starts");
    let base = format!("http://{}", server.http_addr);
    (server, dir, base)
}

/// The relay data packets in `seen` going the given way, as (sender, dest,
/// payload).
fn data_packets(seen: &[common::Seen], upstream: bool) -> Vec<(u32, u32, Vec<u8>)> {
    seen.iter()
        .filter(|s| s.upstream == upstream)
        .filter_map(|s| match Packet::decode(&s.bytes) {
            Ok(Packet::Data {
                header,
                dest,
                payload,
            }) => Some((header.member, dest, payload.to_vec())),
            _ => None,
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_join_through_jamd_hear_every_note_and_the_wire_reveals_nothing() {
    let (server, _dir, base) = server().await;
    let tap = Tap::start(server.relay_addr).await;
    let mut alice = join_peer(&base, "friday", "alice", Some(tap.addr)).await;
    let mut bob = join_peer(&base, "friday", "bob", None).await;
    let mut carol = join_peer(&base, "friday", "carol", None).await;
    for p in [&alice, &bob, &carol] {
        wait_joined(p, 2, Duration::from_secs(30)).await;
    }

    let tunes: [(&str, u8, Vec<u8>); 3] = [
        ("alice", 0, (40..50).collect()),
        ("bob", 1, (60..70).collect()),
        ("carol", 2, (80..90).collect()),
    ];
    play(&alice, 0, &tunes[0].2).await;
    play(&bob, 1, &tunes[1].2).await;
    play(&carol, 2, &tunes[2].2).await;

    let mut heard: Vec<Heard> = (0..3).map(|_| Heard::default()).collect();
    let mut names: Vec<BTreeMap<_, _>> = (0..3).map(|_| BTreeMap::new()).collect();
    for (i, peer) in [&mut alice, &mut bob, &mut carol].into_iter().enumerate() {
        listen(
            peer,
            &mut heard[i],
            &mut names[i],
            Duration::from_secs(20),
            |h| h.notes.len() >= 20,
        )
        .await;
        let expected: BTreeSet<(String, u8)> = tunes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, (name, _, notes))| notes.iter().map(|n| (name.to_string(), *n)))
            .collect();
        let got: BTreeSet<(String, u8)> = heard[i].notes.iter().cloned().collect();
        assert_eq!(got, expected, "peer {i} heard {:?}", heard[i].notes);
        assert_eq!(heard[i].notes.len(), 20, "no note twice");
    }

    // What the relay and anyone on the path saw of alice's traffic: no
    // participant name (AppleMIDI invitations carry it in the clear on a
    // LAN) and none of her notes' bytes, only sealed frames.
    let seen = tap.snapshot();
    assert!(seen.len() > 20, "the tap saw the session");
    for s in &seen {
        for name in [&b"alice"[..], b"bob", b"carol"] {
            assert!(!contains(&s.bytes, name), "a name crossed the wire");
        }
        assert!(!contains(&s.bytes, &[0x90, 40, 100]));
    }
    let up = data_packets(&seen, true);
    let down = data_packets(&seen, false);
    assert!(!up.is_empty() && !down.is_empty());
    for (_, _, payload) in up.iter().chain(&down) {
        jam_transport::secure::FrameHeader::parse(payload).expect("every payload is a frame");
    }

    // Replays and tampered copies of alice's packets, injected from her
    // registered address (so the relay forwards them), are refused by the
    // receivers, and nobody hears a note twice.
    let bob_id = bob.joined.member_id;
    let before = bob.driver.call(|p, _| p.stats()).await.unwrap();
    let to_bob: Vec<_> = up.iter().filter(|(_, d, _)| *d == bob_id).collect();
    assert!(to_bob.len() > 10);
    let mut buf = vec![0u8; relay::MAX_PACKET_LEN];
    for (sender, dest, payload) in &to_bob {
        let n =
            relay::encode_data(server_session(&alice), *sender, *dest, payload, &mut buf).unwrap();
        tap.inject(&buf[..n]).await;
        // Changing the counter makes it a fresh one, so the frame gets past
        // the replay window and must fail authentication.
        let mut tampered = payload.clone();
        tampered[6] ^= 0x40;
        let n = relay::encode_data(server_session(&alice), *sender, *dest, &tampered, &mut buf)
            .unwrap();
        tap.inject(&buf[..n]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // A non-member who knows every public key (they are public) but not a
    // member's secret: it cannot forge a frame as alice, and cannot open
    // anything it captured.
    let members: Vec<Member> = carol
        .joined
        .members
        .iter()
        .map(|m| Member {
            id: m.id,
            public_key: m.public_key,
        })
        .collect();
    let mut eve = SecureSession::new(
        server_session(&alice),
        alice.joined.member_id,
        [0x66; 32],
        [0x67; 32],
        1_700_000_000,
    );
    eve.set_members(1_700_000_000, &members);
    let members_now = bob.driver.call(|p, _| p.secure().members().count()).await;
    assert_eq!(members_now.unwrap(), 2);
    let forged = eve
        .seal(bob_id, Channel::Data, &[0x80, 0x61, 0, 1])
        .unwrap();
    let n = relay::encode_data(
        server_session(&alice),
        alice.joined.member_id,
        bob_id,
        &forged,
        &mut buf,
    )
    .unwrap();
    tap.inject(&buf[..n]).await;
    for (sender, _, payload) in &down {
        let opened = eve.open(Micros::ZERO, *sender, payload);
        assert!(
            !matches!(
                opened,
                Ok(Opened::Data { .. } | Opened::KeyInstalled { .. })
            ),
            "a non-member opened a captured frame"
        );
    }

    listen(
        &mut bob,
        &mut heard[1],
        &mut names[1],
        Duration::from_millis(800),
        |_| false,
    )
    .await;
    assert_eq!(heard[1].notes.len(), 20, "an injected packet played a note");
    let after = bob.driver.call(|p, _| p.stats()).await.unwrap();
    assert!(
        after.replayed - before.replayed >= to_bob.len() as u64 - 2,
        "replays refused: {before:?} -> {after:?}"
    );
    assert!(
        after.bad_tag - before.bad_tag >= to_bob.len() as u64 - 2,
        "tampered frames refused: {before:?} -> {after:?}"
    );
    assert!(
        after.bad_tag + after.no_key > before.bad_tag + before.no_key + to_bob.len() as u64 - 3,
        "the forged frame was refused: {before:?} -> {after:?}"
    );

    for p in [alice, bob, carol] {
        p.close().await.unwrap();
    }
    server.shutdown().await.unwrap();
}

/// How many of `frames` (relay data packets' sender, destination and
/// payload) `peer` opens as data from `sender` with the keys it holds.
async fn count_opened(
    peer: &jam_join::RunningPeer,
    sender: u32,
    frames: Vec<(u32, u32, Vec<u8>)>,
) -> usize {
    peer.driver
        .call(move |p, now| {
            frames
                .iter()
                .filter(|(_, _, f)| {
                    matches!(p.secure_mut().open(now, sender, f), Ok(Opened::Data { .. }))
                })
                .count()
        })
        .await
        .unwrap()
}

fn server_session(p: &jam_join::RunningPeer) -> u64 {
    p.joined.ticket.session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_cannot_read_anything_sent_after_the_rotation() {
    let (server, _dir, base) = server().await;
    let tap = Tap::start(server.relay_addr).await;
    let mut alice = join_peer(&base, "sunday", "alice", Some(tap.addr)).await;
    let mut bob = join_peer(&base, "sunday", "bob", None).await;
    let carol = join_peer(&base, "sunday", "carol", None).await;
    for p in [&alice, &bob, &carol] {
        wait_joined(p, 2, Duration::from_secs(30)).await;
    }
    play(&alice, 0, &[50, 51, 52]).await;
    let mut heard_b = Heard::default();
    let mut names_b = BTreeMap::new();
    listen(
        &mut bob,
        &mut heard_b,
        &mut names_b,
        Duration::from_secs(10),
        |h| h.notes.len() >= 3,
    )
    .await;
    assert_eq!(heard_b.notes.len(), 3);
    let bob_id = bob.joined.member_id;
    let alice_id = alice.joined.member_id;
    let before_leave: Vec<_> = data_packets(&tap.snapshot(), true)
        .into_iter()
        .filter(|(_, d, _)| *d == bob_id)
        .collect();

    // Carol leaves through the API; her peer keeps running with every key
    // it ever held.
    let mut carol_api = Jamd::new(&base);
    carol_api
        .login("carol", &common::password("carol"))
        .await
        .unwrap();
    carol_api.leave(&carol.joined.session_id).await.unwrap();

    let mut heard_a = Heard::default();
    let mut names_a = BTreeMap::new();
    listen(
        &mut alice,
        &mut heard_a,
        &mut names_a,
        Duration::from_secs(10),
        |h| h.rotations >= 1,
    )
    .await;
    assert_eq!(heard_a.rotations, 1, "alice rotated when carol left");
    let mark = tap.snapshot().len();
    // Give the new key a moment to reach bob (a lost key frame is asked
    // for again anyway), then play.
    tokio::time::sleep(Duration::from_millis(300)).await;
    play(&alice, 0, &[60, 61, 62, 63]).await;
    listen(
        &mut bob,
        &mut heard_b,
        &mut names_b,
        Duration::from_secs(10),
        |h| h.notes.len() >= 7,
    )
    .await;
    assert_eq!(
        heard_b.notes.len(),
        7,
        "bob still hears alice: {:?}",
        heard_b.notes
    );

    let after: Vec<_> = data_packets(&tap.snapshot()[mark..], true)
        .into_iter()
        .filter(|(_, d, _)| *d == bob_id)
        .collect();
    assert!(after.len() >= 4, "alice sent to bob after the rotation");
    let opened = count_opened(&carol, alice_id, after).await;
    assert_eq!(
        opened, 0,
        "the leaver opened frames sent after the rotation"
    );
    // The same attempt on frames from before the rotation succeeds: the
    // check above is not vacuous.
    let tail: Vec<_> = before_leave.into_iter().rev().take(5).collect();
    let opened_before = count_opened(&carol, alice_id, tail).await;
    assert!(opened_before > 0, "carol could read alice before she left");

    for p in [alice, bob, carol] {
        p.close().await.unwrap();
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_document_sync_frames_ride_the_relay_sealed() {
    use jam_transport::relay_client::RelayPeerEvent;
    use jam_transport::reliable::{Reliable, ReliableConfig, ReliableEvent};
    let (server, _dir, base) = server().await;
    let tap = Tap::start(server.relay_addr).await;
    let mut alice = join_peer(&base, "sync", "alice", Some(tap.addr)).await;
    let mut bob = join_peer(&base, "sync", "bob", None).await;
    wait_joined(&alice, 1, Duration::from_secs(30)).await;
    wait_joined(&bob, 1, Duration::from_secs(30)).await;
    let (a_id, b_id) = (alice.joined.member_id, bob.joined.member_id);

    // A message larger than one packet (the reliable channel fragments it),
    // with a pattern that must not show on the wire.
    let message: Vec<u8> = b"automerge-sync-"
        .iter()
        .copied()
        .cycle()
        .take(3_000)
        .collect();
    let mut ra = Reliable::new(ReliableConfig::default(), 1);
    let mut rb = Reliable::new(ReliableConfig::default(), 2);
    ra.send(&message).unwrap();
    let clock = std::time::Instant::now();
    let now = || Micros(clock.elapsed().as_micros() as u64);
    let mut got = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.is_none() && tokio::time::Instant::now() < deadline {
        while let Some(f) = ra.poll_transmit(now()) {
            alice
                .driver
                .call(move |p, _| p.send_reliable(b_id, &f))
                .await
                .unwrap()
                .unwrap();
        }
        while let Some(f) = rb.poll_transmit(now()) {
            bob.driver
                .call(move |p, _| p.send_reliable(a_id, &f))
                .await
                .unwrap()
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        while let Ok(e) = bob.events.try_recv() {
            if let RelayPeerEvent::Reliable { from, bytes } = e {
                assert_eq!(from, a_id);
                rb.handle_datagram(now(), &bytes).unwrap();
            }
        }
        while let Ok(e) = alice.events.try_recv() {
            if let RelayPeerEvent::Reliable { bytes, .. } = e {
                ra.handle_datagram(now(), &bytes).unwrap();
            }
        }
        ra.handle_timeout(now());
        rb.handle_timeout(now());
        while let Some(e) = rb.poll_event() {
            if let ReliableEvent::Message(m) = e {
                got = Some(m);
            }
        }
    }
    assert_eq!(
        got.as_deref(),
        Some(&message[..]),
        "bob got the sync message"
    );
    for s in tap.snapshot() {
        assert!(
            !contains(&s.bytes, b"automerge-sync-"),
            "sync bytes in the clear"
        );
    }
    for p in [alice, bob] {
        p.close().await.unwrap();
    }
    server.shutdown().await.unwrap();
}
