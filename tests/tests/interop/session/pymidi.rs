//! We invite pymidi 0.5.0 (a responder only) running as a subprocess.
//!
//! pymidi's server answers the control and the data invitation with two
//! different SSRCs (its two protocol objects each draw one; `rtp-midi.md`
//! pitfall 9). Our endpoint keeps one SSRC per participant and refuses such
//! a peer; `tests/python/pymidi_peer.py` works around the quirk on the test
//! side by giving pymidi's two protocol objects one SSRC, and
//! `--keep-ssrc-quirk` keeps it so the refusal is tested too.

use super::*;
use jam_tests::pymidi::PymidiPeer;
use jam_transport::applemidi::{FailReason, PeerHandle};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_invite_pymidi_sync_clocks_send_a_note_and_say_bye() {
    let Some(python) = jam_tests::require_python(&["pymidi"]) else {
        return;
    };
    let mut py = tokio::task::block_in_place(|| PymidiPeer::start(&python, &[]));
    let pymidi_ssrc = py.ssrc();
    let mut us = local("jam", 11).await;
    let ours = us.driver.call(|ep, _| ep.ssrc()).await.unwrap();
    let control = py.control();
    let peer: PeerHandle = us
        .driver
        .call(move |ep, now| ep.invite(now, control))
        .await
        .unwrap()
        .unwrap();

    // Both handshakes, with one SSRC, and pymidi's name.
    let (name, ssrc) = wait_for("Joined", &mut us.events, LIMIT, |e| match e {
        EndpointEvent::Joined {
            peer: p,
            name,
            ssrc,
            data,
            ..
        } if *p == peer => {
            assert_eq!(data.port(), control.port() + 1);
            Some((name.clone(), *ssrc))
        }
        _ => None,
    })
    .await;
    assert_eq!((name.as_deref(), ssrc), (Some("pymidi"), pymidi_ssrc));
    for port in ["control", "data"] {
        let v = tokio::task::block_in_place(|| {
            py.expect("pymidi connected", |v| {
                v["event"] == "connected" && v["port"] == port
            })
        });
        assert_eq!(v["ssrc"].as_u64(), Some(u64::from(ours)), "{v}");
        assert_eq!(v["name"], "jam");
    }

    // CK: we start, pymidi answers CK1 (on its epoch clock), we close with CK2.
    let (clock, rtt) = wait_for("ClockUpdated", &mut us.events, LIMIT, |e| match e {
        EndpointEvent::ClockUpdated {
            peer: p,
            clock,
            rtt,
        } if *p == peer => Some((*clock, *rtt)),
        _ => None,
    })
    .await;
    assert!(
        clock.offset_ticks != 0,
        "pymidi's clock counts from the Unix epoch"
    );
    assert!(rtt.latest < Duration::from_secs(1));
    tokio::task::block_in_place(|| {
        py.expect("CK0 at pymidi", |v| v["event"] == "ck" && v["count"] == 0);
        py.expect("CK2 at pymidi", |v| v["event"] == "ck" && v["count"] == 2);
    });

    // RS is unknown to pymidi (it logs and ignores it); RTP still flows.
    us.driver
        .call(move |ep, _| ep.send_feedback(peer, 1))
        .await
        .unwrap()
        .unwrap();
    let pkt = note_on_packet(ours, 4660, 10_000, 60, 100);
    us.driver
        .call(move |ep, _| ep.send_rtp(peer, pkt))
        .await
        .unwrap()
        .unwrap();
    let midi =
        tokio::task::block_in_place(|| py.expect("note at pymidi", |v| v["event"] == "midi"));
    assert_eq!(
        jam_tests::pymidi::commands(&midi),
        [Some((0x90, 60, 100, None))],
        "{midi}"
    );
    // A J=0 packet is one pymidi's whole-packet parser accepts.
    assert_eq!(midi["full_parse"], true, "{midi}");
    assert_eq!(midi["ssrc"].as_u64(), Some(u64::from(ours)));

    // BY ends it on both sides.
    us.driver
        .call(move |ep, now| ep.end(now, peer))
        .await
        .unwrap()
        .unwrap();
    let (code, _) = tokio::task::block_in_place(|| {
        py.expect("BY at pymidi", |v| {
            v["event"] == "disconnected" && v["port"] == "control"
        });
        py.wait(LIMIT)
    });
    assert_eq!(code, Some(0));
    let ep = us.driver.shutdown().await.unwrap();
    assert_eq!(ep.stats().malformed_commands, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymidi_answering_with_two_ssrcs_is_refused() {
    let Some(python) = jam_tests::require_python(&["pymidi"]) else {
        return;
    };
    let py = tokio::task::block_in_place(|| PymidiPeer::start(&python, &["--keep-ssrc-quirk"]));
    let (control_ssrc, data_ssrc) = (
        py.ready["control_ssrc"].as_u64().unwrap() as u32,
        py.ready["data_ssrc"].as_u64().unwrap() as u32,
    );
    assert_ne!(
        control_ssrc, data_ssrc,
        "pymidi draws one SSRC per protocol object"
    );
    let mut us = local("jam", 12).await;
    let control = py.control();
    let peer = us
        .driver
        .call(move |ep, now| ep.invite(now, control))
        .await
        .unwrap()
        .unwrap();
    let reason = wait_for("InvitationFailed", &mut us.events, LIMIT, |e| match e {
        EndpointEvent::InvitationFailed {
            peer: p, reason, ..
        } if *p == peer => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(
        reason,
        FailReason::SsrcMismatch {
            control: control_ssrc,
            data: data_ssrc
        }
    );
    // We closed the half-made session with BY, which pymidi honours.
    let (code, _) = tokio::task::block_in_place(|| py.wait(LIMIT));
    assert_eq!(code, Some(0));
}
