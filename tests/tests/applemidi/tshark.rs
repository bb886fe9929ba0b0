//! A session between two drivers on loopback, captured live with tshark and
//! dissected: every session command must decode as AppleMIDI, the RTP
//! packets as RTP-MIDI, with no malformed packet and no expert warning.

use super::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const LIMIT: Duration = Duration::from_secs(10);

fn tshark_fields(tshark: &Path, capture: &Path, filter: &str, field: &str) -> Vec<String> {
    let out = Command::new(tshark)
        .arg("-r")
        .arg(capture)
        .args(["-n", "-Y", filter, "-T", "fields", "-e", field])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jam-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

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
    let dir = scratch_dir();
    let capture = dir.join("session.pcapng");
    let _ = std::fs::remove_file(&capture);
    // A probe socket whose datagrams to itself tell us when the capture is
    // really live ("Capturing on" comes earlier than that).
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
    let probe_port = probe.local_addr().unwrap().port();
    let filter = format!(
        "udp and (port {probe_port} or portrange {pa}-{} or portrange {pb}-{})",
        pa + 1,
        pb + 1
    );
    let mut capturer = Command::new(&tshark)
        .args([
            "-i",
            "lo",
            "-n",
            "-l",
            "-P",
            "-f",
            &filter,
            "-a",
            "duration:90",
            "-w",
        ])
        .arg(&capture)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tshark");
    // With -P -l tshark prints a line per captured packet as it goes.
    let stdout = capturer.stdout.take().expect("piped stdout");
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = seen_tx.send(line);
        }
    });
    let live = (0..300).any(|_| {
        let _ = probe.send_to(b"probe", ("127.0.0.1", probe_port));
        seen_rx.recv_timeout(Duration::from_millis(100)).is_ok()
    });
    if !live {
        let _ = capturer.kill();
        panic!("tshark did not start capturing on lo (needs root or the wireshark group)");
    }

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

    // Let the capture flush, then stop tshark cleanly (SIGINT writes the file out).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = Command::new("kill")
        .args(["-INT", &capturer.id().to_string()])
        .status();
    let status = tokio::task::block_in_place(|| capturer.wait()).expect("tshark exits");
    assert!(
        capture.is_file(),
        "no capture written (tshark exit {status})"
    );

    let commands: BTreeSet<String> =
        tshark_fields(&tshark, &capture, "applemidi", "applemidi.command")
            .into_iter()
            .collect();
    for code in ["IN", "OK", "CK", "RS", "RL", "BY"] {
        let value = u16::from_be_bytes([code.as_bytes()[0], code.as_bytes()[1]]);
        assert!(
            commands.contains(&format!("0x{value:04x}")) || commands.contains(&value.to_string()),
            "tshark saw no {code} as AppleMIDI; commands seen: {commands:?}"
        );
    }
    let rtp_midi = tshark_fields(&tshark, &capture, "rtpmidi", "frame.number");
    assert_eq!(rtp_midi.len(), 2, "both RTP packets decode as RTP-MIDI");
    let bad = tshark_fields(
        &tshark,
        &capture,
        "_ws.malformed || _ws.expert",
        "frame.number",
    );
    assert!(
        bad.is_empty(),
        "malformed or expert-flagged frames: {bad:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
