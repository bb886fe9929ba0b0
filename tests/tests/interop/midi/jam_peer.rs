//! The `jam peer` binary against real peers: pymidi exchanging notes with
//! it both ways, and two `jam peer` processes captured with tshark.

use super::*;
use jam_tests::jam_peer::{self, JamPeer};
use jam_tests::pymidi::{self, Command, PymidiPeer};
use jam_tests::tshark::{self, LiveCapture};
use std::collections::BTreeSet;

/// Writes `events` to a MIDI file `gap_ms` apart (1 tick = 1 ms: 500 ticks
/// per beat at 120 BPM).
fn song(dir: &std::path::Path, events: &[ShortMessage], gap_ms: u32) -> std::path::PathBuf {
    let path = dir.join("song.mid");
    let timed: Vec<(u32, Vec<u8>)> = events
        .iter()
        .enumerate()
        .map(|(i, m)| (if i == 0 { 0 } else { gap_ms }, m.as_slice().to_vec()))
        .collect();
    jam_tests::smf::write(&path, 500, 500_000, &timed);
    path
}

#[test]
fn a_pymidi_peer_and_jam_peer_exchange_notes_both_ways_on_loopback() {
    let Some(python) = jam_tests::require_python(&["pymidi"]) else {
        return;
    };
    // Build `jam` before pymidi's clock starts: a cold build can take
    // longer than the script's time limit.
    jam_tests::workspace_bin("jam-cli", "jam");
    let dir = tempfile::tempdir().unwrap();
    let ours = notes_and_controllers();
    let file = song(dir.path(), &ours, 60);
    let mut py = PymidiPeer::start(&python, &[]);
    let invite = py.control().to_string();
    let jam = JamPeer::start(
        "jam",
        "127.0.0.1:0",
        &[
            "--invite",
            &invite,
            "--play",
            file.to_str().unwrap(),
            "--duration",
            "3",
        ],
    );
    py.expect_joined();

    // pymidi plays to `jam peer` while the file plays to pymidi: one packet
    // per command, built by pymidi.
    let theirs: Vec<ShortMessage> = ours
        .iter()
        .map(|m| m.with_channel(m.channel().unwrap() ^ 3))
        .collect();
    for m in &theirs {
        py.send(&[Command::new(m.as_slice())], false);
        std::thread::sleep(Duration::from_millis(20));
    }

    let (status, printed) = jam.wait(Duration::from_secs(30));
    assert!(status.success(), "jam peer exited with {status}");
    let want: Vec<Vec<u8>> = theirs.iter().map(|m| m.as_slice().to_vec()).collect();
    assert_eq!(jam_peer::played(&printed, "pymidi"), want);

    // `jam peer --duration` ends the session with BY; pymidi then exits.
    let (code, lines) = py.wait(LIMIT);
    assert_eq!(code, Some(0));
    let heard: Vec<Option<pymidi::Parsed>> = lines
        .iter()
        .filter(|l| l["event"] == "midi")
        .flat_map(pymidi::commands)
        .collect();
    let want: Vec<Option<pymidi::Parsed>> = ours
        .iter()
        .map(|m| Some((m.status(), m.data1(), m.data2(), None)))
        .collect();
    assert_eq!(heard, want);
}

/// A minute's worth of playing squeezed into a few seconds: notes on two
/// channels, controllers (modulation, volume, sustain), pitch bend,
/// program changes and channel pressure, every 25 ms.
fn busy_song() -> Vec<ShortMessage> {
    let mut out = Vec::new();
    for i in 0..160u16 {
        let k = (i % 24) as u8;
        let ch = (i / 40 % 2) as u8;
        let m = match i % 8 {
            0 => ShortMessage::note_on(ch, 48 + k, 90),
            1 => ShortMessage::control_change(ch, 1, (i % 128) as u8),
            2 => ShortMessage::pitch_bend(ch, 8192 + 64 * (i % 64)),
            3 => ShortMessage::note_off(ch, 48 + k, 0),
            4 if i % 32 == 4 => ShortMessage::program_change(ch, (i / 32) as u8),
            4 => ShortMessage::control_change(ch, 7, 100 - (i % 50) as u8),
            5 => ShortMessage::control_change(ch, 64, if i % 16 == 5 { 127 } else { 0 }),
            6 => ShortMessage::channel_pressure(ch, (i % 100) as u8),
            _ => ShortMessage::note_on(ch, 60 + k, 70),
        };
        out.push(m);
        if i % 8 == 7 {
            out.push(ShortMessage::note_off(ch, 60 + k, 0));
        }
    }
    out
}

fn flag(v: &str) -> bool {
    matches!(v, "1" | "True" | "true")
}

#[test]
fn tshark_decodes_a_session_between_two_jam_peers_without_warnings() {
    let Some(tshark) = jam_tests::require_tool("tshark", "apt-get install tshark") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let events = busy_song();
    let file = song(dir.path(), &events, 25);
    // Bob outlasts Alice's 6 s by far more than tshark can take to start
    // on a loaded machine (it ran out once with 8 s and missed her end).
    let bob = JamPeer::start("bob", "127.0.0.1:0", &["--duration", "20"]);
    let port = bob.control().port();
    // Every packet of the session has bob's control or data port at one end.
    let capture = LiveCapture::start(
        &tshark,
        &format!("portrange {port}-{}", port + 1),
        Duration::from_secs(90),
    );
    let alice = JamPeer::start(
        "alice",
        "127.0.0.1:0",
        &[
            "--invite",
            &bob.control().to_string(),
            "--play",
            file.to_str().unwrap(),
            "--duration",
            "6",
        ],
    );
    let alice_data = alice.data().port();
    let (status, _) = alice.wait(Duration::from_secs(30));
    assert!(status.success(), "alice exited with {status}");
    let (status, printed) = bob.wait(Duration::from_secs(30));
    assert!(status.success(), "bob exited with {status}");
    let capture = capture.stop();
    let cap = &capture.path;

    // Bob heard the whole file, in order, except the note-offs for keys
    // that were not sounding: `jam peer` prints what its engine plays, and
    // the engine never passes on a note-off for a key it did not turn on.
    // It tracks keys per participant (one output channel each), not per
    // channel played on.
    let mut sounding = BTreeSet::new();
    let want: Vec<Vec<u8>> = events
        .iter()
        .filter(|m| {
            let key = m.data1();
            match m.status() & 0xf0 {
                0x90 if m.data2() > 0 => {
                    sounding.insert(key);
                    true
                }
                0x80 | 0x90 => sounding.remove(&key),
                _ => true,
            }
        })
        .map(|m| m.as_slice().to_vec())
        .collect();
    assert!(want.len() < events.len(), "the song has stray note-offs");
    assert_eq!(jam_peer::played(&printed, "alice"), want);

    // The session commands decode as AppleMIDI.
    let commands = tshark::applemidi_commands(&tshark, cap);
    for code in ["IN", "OK", "CK", "RS", "BY"] {
        assert!(
            commands.contains(code),
            "tshark saw no {code} as AppleMIDI; commands seen: {commands:?}"
        );
    }

    // Alice's RTP packets decode as RTP-MIDI, each with a journal.
    let rows = tshark::fields(
        &tshark,
        cap,
        &[],
        &format!("rtpmidi && udp.srcport == {alice_data}"),
        &[
            "rtpmidi.j_flag",
            "rtpmidi.y_flag",
            "rtpmidi.a_flag",
            "rtpmidi.chanjour_toc_p",
            "rtpmidi.chanjour_toc_c",
            "rtpmidi.chanjour_toc_w",
            "rtpmidi.chanjour_toc_n",
            "rtpmidi.chanjour_toc_t",
        ],
    );
    let rtp_from_alice = tshark::fields(
        &tshark,
        cap,
        &[],
        &format!("udp.srcport == {alice_data} && !applemidi"),
        &["frame.number"],
    );
    assert_eq!(
        rows.len(),
        rtp_from_alice.len(),
        "every RTP packet from alice decodes as RTP-MIDI"
    );
    assert!(rows.len() >= events.len() / 2, "{} packets", rows.len());
    assert!(rows.iter().all(|r| flag(&r[0])), "J=1 in every packet");
    let non_empty = rows.iter().filter(|r| flag(&r[1]) || flag(&r[2])).count();
    assert!(
        non_empty * 4 >= rows.len() * 3,
        "the journal is non-empty in {non_empty} of {} packets",
        rows.len()
    );
    let mut chapters = BTreeSet::new();
    for r in &rows {
        for (i, name) in ["P", "C", "W", "N", "T"].iter().enumerate() {
            if r[3 + i].split(',').any(flag) {
                chapters.insert(*name);
            }
        }
    }
    assert_eq!(
        chapters,
        BTreeSet::from(["P", "C", "W", "N", "T"]),
        "journal chapters seen"
    );
    eprintln!(
        "{} RTP-MIDI packets from alice, journal non-empty in {non_empty}; commands {commands:?}",
        rows.len()
    );

    let bad = tshark::flagged_frames(&tshark, cap, &[], "frame");
    assert!(
        bad.is_empty(),
        "malformed or expert-flagged frames: {bad:?}"
    );
}
