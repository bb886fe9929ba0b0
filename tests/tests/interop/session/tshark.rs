//! A session between two drivers on loopback, captured live with tshark and
//! dissected: every session command must decode as AppleMIDI, the RTP
//! packets as RTP-MIDI, with no malformed packet and no expert warning.

use super::*;
use jam_tests::tshark::{self, LiveCapture};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_decodes_a_whole_session_without_warnings() {
    let Some(tshark) = jam_tests::require_tool("tshark", "apt-get install tshark") else {
        return;
    };
    let mut a = local("alice", 31).await;
    let mut b = local("bob", 32).await;
    let (pa, pb) = (
        a.driver.control_addr().port(),
        b.driver.control_addr().port(),
    );
    let filter = format!("portrange {pa}-{} or portrange {pb}-{}", pa + 1, pb + 1);
    let capturer = tokio::task::block_in_place(|| {
        LiveCapture::start(&tshark, &filter, Duration::from_secs(90))
    });

    // The session: handshakes, CK, RTP both ways, RS, RL, BY.
    let b_control = b.driver.control_addr();
    let ha = a
        .driver
        .call(move |ep, now| ep.invite(now, b_control))
        .await
        .unwrap()
        .unwrap();
    wait_for("Joined at a", &mut a.events, LIMIT, |e| {
        matches!(e, EndpointEvent::Joined { .. }).then_some(())
    })
    .await;
    let hb = wait_for("Joined at b", &mut b.events, LIMIT, |e| match e {
        EndpointEvent::Joined { peer, .. } => Some(*peer),
        _ => None,
    })
    .await;
    wait_for("ClockUpdated at b", &mut b.events, LIMIT, |e| {
        matches!(e, EndpointEvent::ClockUpdated { .. }).then_some(())
    })
    .await;
    let (sa, sb) = (
        a.driver.call(|ep, _| ep.ssrc()).await.unwrap(),
        b.driver.call(|ep, _| ep.ssrc()).await.unwrap(),
    );
    let (pkt_a, pkt_b) = (
        note_on_packet(sa, 4660, 10_000, 60, 100),
        note_on_packet(sb, 7, 20_000, 64, 90),
    );
    a.driver
        .call(move |ep, _| ep.send_rtp(ha, pkt_a))
        .await
        .unwrap()
        .unwrap();
    b.driver
        .call(move |ep, _| ep.send_rtp(hb, pkt_b))
        .await
        .unwrap()
        .unwrap();
    wait_for("RTP at b", &mut b.events, LIMIT, |e| {
        matches!(e, EndpointEvent::Rtp { .. }).then_some(())
    })
    .await;
    wait_for("RTP at a", &mut a.events, LIMIT, |e| {
        matches!(e, EndpointEvent::Rtp { .. }).then_some(())
    })
    .await;
    b.driver
        .call(move |ep, _| ep.send_feedback(hb, 4660))
        .await
        .unwrap()
        .unwrap();
    b.driver
        .call(move |ep, _| ep.send_bitrate_limit(hb, 31_250))
        .await
        .unwrap()
        .unwrap();
    wait_for("RL at a", &mut a.events, LIMIT, |e| {
        matches!(e, EndpointEvent::BitrateLimit { limit: 31_250, .. }).then_some(())
    })
    .await;
    a.driver
        .call(move |ep, now| ep.end(now, ha))
        .await
        .unwrap()
        .unwrap();
    wait_for("Left at b", &mut b.events, LIMIT, |e| {
        matches!(e, EndpointEvent::Left { .. }).then_some(())
    })
    .await;
    a.driver.shutdown().await.unwrap();
    b.driver.shutdown().await.unwrap();

    let capture = tokio::task::block_in_place(|| capturer.stop());
    let capture = &capture.path;

    let commands = tshark::applemidi_commands(&tshark, capture);
    for code in ["IN", "OK", "CK", "RS", "RL", "BY"] {
        assert!(
            commands.contains(code),
            "tshark saw no {code} as AppleMIDI; commands seen: {commands:?}"
        );
    }
    let rtp_midi = tshark::fields(&tshark, capture, &[], "rtpmidi", &["frame.number"]);
    assert_eq!(rtp_midi.len(), 2, "both RTP packets decode as RTP-MIDI");
    let bad = tshark::flagged_frames(&tshark, capture, &[], "frame");
    assert!(
        bad.is_empty(),
        "malformed or expert-flagged frames: {bad:?}"
    );
}
