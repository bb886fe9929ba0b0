//! Sessions with the `rtpmidi` crate 0.4.4 (GPL, a dev-dependency of this
//! test crate only; its mDNS feature is off). It binds 0.0.0.0, so every
//! address we give it or use with it is 127.0.0.1.
//!
//! What it does differently, and what these tests pin:
//! - it refuses an `IN` without a name (pitfall 8): we always send ours;
//! - as initiator it invites our data port with a *fresh* token: we match
//!   the data `IN` by SSRC and address and echo its token;
//! - as initiator it sends an unsolicited `CK` with count 1 right after
//!   joining (we drop it as stale), then a `CK0` every 10 s;
//! - it says `BY` on both ports: the first ends the session, the second
//!   matches nothing and is only counted.

use super::*;
use jam_transport::applemidi::{LeaveReason, PeerHandle};
use rtpmidi::sessions::events::event_handling::MidiMessageEvent;

#[tokio::test]
async fn we_invite_rtpmidi_sync_send_a_note_and_end() {
    let (session, their_control) = start_rtpmidi("rtp-midi-rs", 0x5EED_0001).await;
    let (notes_tx, mut notes) = mpsc::unbounded_channel::<String>();
    session
        .add_listener(MidiMessageEvent, move |(message, _ts)| {
            let _ = notes_tx.send(format!("{message:?}"));
        })
        .await;
    let mut us = local("jam", 21).await;
    let ours = us.driver.call(|ep, _| ep.ssrc()).await.unwrap();
    let peer: PeerHandle = us
        .driver
        .call(move |ep, now| ep.invite(now, their_control))
        .await
        .unwrap()
        .unwrap();
    let (name, ssrc) = wait_for(
        "Joined",
        &mut us.events,
        Duration::from_secs(10),
        |e| match e {
            EndpointEvent::Joined {
                peer: p,
                name,
                ssrc,
                ..
            } if *p == peer => Some((name.clone(), *ssrc)),
            _ => None,
        },
    )
    .await;
    assert_eq!((name.as_deref(), ssrc), (Some("rtp-midi-rs"), 0x5EED_0001));
    participants_until(&session, "one participant", |n| n == 1).await;

    // Our CK0 is answered with CK1 at once.
    let (_, rtt) = wait_for(
        "ClockUpdated",
        &mut us.events,
        Duration::from_secs(10),
        |e| match e {
            EndpointEvent::ClockUpdated {
                peer: p,
                clock,
                rtt,
            } if *p == peer => Some((*clock, *rtt)),
            _ => None,
        },
    )
    .await;
    assert!(rtt.latest < Duration::from_secs(1));

    // A hand-built Note On reaches its MIDI listener.
    let pkt = note_on_packet(ours, 100, 0, 60, 100);
    us.driver
        .call(move |ep, _| ep.send_rtp(peer, pkt))
        .await
        .unwrap()
        .unwrap();
    let note = wait_for(
        "note at rtpmidi",
        &mut notes,
        Duration::from_secs(10),
        |n| Some(n.clone()),
    )
    .await;
    assert!(note.contains("NoteOn"), "{note}");

    // Our BY (control port only) removes us from its participants.
    us.driver
        .call(move |ep, now| ep.end(now, peer))
        .await
        .unwrap()
        .unwrap();
    participants_until(&session, "no participant", |n| n == 0).await;
    session.stop_gracefully().await;
    let ep = us.driver.shutdown().await.unwrap();
    assert_eq!(ep.stats().malformed_commands, 0);
}

#[tokio::test]
async fn rtpmidi_invites_us_syncs_and_ends() {
    let mut us = local("jam", 22).await;
    let our_control = us.driver.control_addr();
    let (session, _their_control) = start_rtpmidi("rtp-midi-rs", 0x5EED_0002).await;
    session.invite_participant(our_control).await;

    let peer = wait_for(
        "Joined",
        &mut us.events,
        Duration::from_secs(10),
        |e| match e {
            EndpointEvent::Joined {
                peer,
                name,
                ssrc,
                initiated_by_us: false,
                ..
            } => {
                assert_eq!((name.as_deref(), *ssrc), (Some("rtp-midi-rs"), 0x5EED_0002));
                Some(*peer)
            }
            _ => None,
        },
    )
    .await;
    participants_until(&session, "one participant", |n| n == 1).await;

    // It starts a CK exchange every 10 s; we answer CK1 and learn the
    // offset from its CK2.
    let (_, rtt) = wait_for(
        "ClockUpdated",
        &mut us.events,
        Duration::from_secs(25),
        |e| match e {
            EndpointEvent::ClockUpdated {
                peer: p,
                clock,
                rtt,
            } if *p == peer => Some((*clock, *rtt)),
            _ => None,
        },
    )
    .await;
    assert!(rtt.latest < Duration::from_secs(1));
    let stats = us.driver.call(|ep, _| ep.stats()).await.unwrap();
    assert_eq!(
        stats.stale_clock_syncs, 1,
        "its unsolicited CK1 after joining is dropped"
    );

    // It ends the session: BY on both ports, the first one counts.
    session.remove_all_participants().await;
    let reason = wait_for(
        "Left",
        &mut us.events,
        Duration::from_secs(10),
        |e| match e {
            EndpointEvent::Left { peer: p, reason } if *p == peer => Some(*reason),
            _ => None,
        },
    )
    .await;
    assert_eq!(reason, LeaveReason::ByeReceived);
    session.stop_gracefully().await;
    let ep = us.driver.shutdown().await.unwrap();
    assert_eq!(ep.peers().count(), 0);
    assert_eq!(
        ep.stats().unmatched_commands,
        1,
        "the second BY matches nothing"
    );
}
