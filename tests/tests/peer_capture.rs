//! `jam peer --capture`: two real `jam peer` processes play MIDI files to
//! each other, one records, and the real `jam capture` commands read the
//! capture back: every note it sent and received, with the right
//! participant and direction; a key it was not sealed for cannot open it.
//! On a full disk (a real, small tmpfs) the capture stops with a clear
//! error while the session plays on, and what was written before is read
//! back.

use jam_core::ShortMessage;
use jam_tests::jam_peer::{self, JamPeer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn jam(args: &[&str]) -> Output {
    Command::new(jam_tests::workspace_bin("jam-cli", "jam"))
        .args(args)
        .env_remove("JAM_KEY")
        .env_remove("JAM_PASSPHRASE")
        .output()
        .expect("jam runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `jam keys new -o PATH`; returns the public key it prints.
fn new_key(path: &Path) -> String {
    jam_tests::keys::new_key(&jam_tests::workspace_bin("jam-cli", "jam"), path)
}

/// Notes `base..base+n`, each on then off, `gap_ms` apart (1 tick = 1 ms).
fn song(path: &Path, channel: u8, base: u8, n: u8, gap_ms: u32) -> Vec<Vec<u8>> {
    song_of(path, channel, (base..base + n).map(|k| (k, 90)), gap_ms)
}

/// The notes `(key, velocity)`, each on then off, `gap_ms` apart.
fn song_of(
    path: &Path,
    channel: u8,
    notes: impl Iterator<Item = (u8, u8)>,
    gap_ms: u32,
) -> Vec<Vec<u8>> {
    let mut msgs = Vec::new();
    for (k, v) in notes {
        msgs.push(ShortMessage::note_on(channel, k, v).as_slice().to_vec());
        msgs.push(ShortMessage::note_off(channel, k, 0).as_slice().to_vec());
    }
    let timed: Vec<(u32, Vec<u8>)> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (if i == 0 { 0 } else { gap_ms }, m.clone()))
        .collect();
    jam_tests::smf::write(path, 500, 500_000, &timed);
    msgs
}

/// `jam peer` alice inviting `invite` and playing `song` for `secs`.
fn alice_playing(invite: &str, song: &Path, secs: &str) -> JamPeer {
    JamPeer::start(
        "alice",
        "127.0.0.1:0",
        &["--invite", invite, "--play", s(song), "--duration", secs],
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn jam_peer_capture_records_what_it_sends_and_receives() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bob.key");
    let other_key = dir.path().join("eve.key");
    let bob_pub = new_key(&key);
    new_key(&other_key);
    let alice_song = dir.path().join("alice.mid");
    let bob_song = dir.path().join("bob.mid");
    let alice_msgs = song(&alice_song, 0, 60, 12, 40);
    let bob_msgs = song(&bob_song, 1, 72, 10, 50);
    let capture: PathBuf = dir.path().join("bob.scp");

    let bob = JamPeer::start(
        "bob",
        "127.0.0.1:0",
        &[
            "--play",
            s(&bob_song),
            "--capture",
            s(&capture),
            "--to",
            &bob_pub,
            "--duration",
            "5",
        ],
    );
    let invite = bob.control().to_string();
    let alice = alice_playing(&invite, &alice_song, "4");
    let (status, alice_printed) = alice.wait(LIMIT);
    assert!(status.success(), "alice exited with {status}");
    let (status, bob_printed) = bob.wait(LIMIT);
    assert!(status.success(), "bob exited with {status}");
    // Both heard each other in full (the session itself worked).
    assert_eq!(jam_peer::played(&bob_printed, "alice"), alice_msgs);
    assert_eq!(jam_peer::played(&alice_printed, "bob"), bob_msgs);

    // Finished and authentic, for bob's key.
    let out = jam(&["capture", "verify", s(&capture), "--key", s(&key)]);
    assert!(out.status.success(), "verify: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("authentic and finished"));

    // Replay: bob's own notes out, alice's in, in order, with beats.
    let out = jam(&["capture", "replay", "--json", s(&capture), "--key", s(&key)]);
    assert!(out.status.success(), "replay: {}", text(&out.stderr));
    let records: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let start = &records[0];
    assert_eq!(start["kind"], "session-start", "{start}");
    assert_eq!(start["recorder_name"], "bob");
    let recorder = start["recorder"].as_str().unwrap().to_string();
    let names: BTreeMap<String, String> = records
        .iter()
        .filter(|r| r["kind"] == "metadata")
        .filter_map(|r| {
            let peer = r["key"].as_str()?.strip_prefix("name:")?;
            Some((peer.to_string(), r["value"].as_str()?.to_string()))
        })
        .collect();
    let midi: Vec<&Value> = records.iter().filter(|r| r["kind"] == "midi").collect();
    let sent: Vec<String> = midi
        .iter()
        .filter(|r| r["direction"] == "out")
        .inspect(|r| assert_eq!(r["participant"], recorder.as_str(), "{r}"))
        .map(|r| r["bytes"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = bob_msgs.iter().map(|m| hex(m)).collect();
    assert_eq!(sent, want, "bob's notes, sent");
    let received: Vec<&Value> = midi
        .iter()
        .copied()
        .filter(|r| r["direction"] == "in")
        .collect();
    for r in &received {
        let p = r["participant"].as_str().unwrap();
        assert_ne!(p, recorder, "{r}");
        assert_eq!(names.get(p).map(String::as_str), Some("alice"), "{r}");
    }
    let got: Vec<String> = received
        .iter()
        .filter(|r| r["recovered"] == false)
        .map(|r| r["bytes"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = alice_msgs.iter().map(|m| hex(m)).collect();
    assert_eq!(got, want, "alice's notes, received");
    // Beats follow the notes' times: 120 BPM session timeline, so beats
    // grow with the sender time, two per second.
    for pair in midi
        .windows(2)
        .filter(|w| w[0]["direction"] == w[1]["direction"])
    {
        assert!(
            pair[0]["beat"].as_f64() <= pair[1]["beat"].as_f64(),
            "{pair:?}"
        );
    }
    let first_out = midi.iter().find(|r| r["direction"] == "out").unwrap();
    let last_out = midi.iter().rev().find(|r| r["direction"] == "out").unwrap();
    let beats = last_out["beat"].as_f64().unwrap() - first_out["beat"].as_f64().unwrap();
    let secs = (last_out["sender_time_us"].as_f64().unwrap()
        - first_out["sender_time_us"].as_f64().unwrap())
        / 1e6;
    assert!(
        (beats - 2.0 * secs).abs() < 1e-3,
        "{beats} beats in {secs} s"
    );

    // Export: one track per participant with every note.
    let mid = dir.path().join("bob.mid.out");
    let out = jam(&[
        "capture",
        "export-midi",
        s(&capture),
        "-o",
        s(&mid),
        "--key",
        s(&key),
    ]);
    assert!(out.status.success(), "export: {}", text(&out.stderr));
    let bytes = std::fs::read(&mid).unwrap();
    let smf = midly::Smf::parse(&bytes).expect("a MIDI file");
    let mut per_track: Vec<usize> = smf
        .tracks
        .iter()
        .map(|t| {
            t.iter()
                .filter(|e| matches!(e.kind, midly::TrackEventKind::Midi { .. }))
                .count()
        })
        .filter(|&n| n > 0)
        .collect();
    per_track.sort();
    assert_eq!(
        per_track,
        vec![bob_msgs.len(), alice_msgs.len()],
        "{}",
        text(&out.stdout)
    );

    // Another key cannot open it.
    let out = jam(&["capture", "verify", s(&capture), "--key", s(&other_key)]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("jam: error:") && err.contains("bob.scp"),
        "{err}"
    );
}

#[test]
fn jam_peer_capture_is_finished_on_ctrl_c_and_refuses_to_replace_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let public = new_key(&key);
    let capture = dir.path().join("c.scp");

    // Sealed for the default key file's public key when --to is absent.
    let mut peer = JamPeer::start(
        "solo",
        "127.0.0.1:0",
        &["--capture", s(&capture), "--key", s(&key)],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let pid = peer.process().id().to_string();
    let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success());
    let (status, _) = peer.wait(LIMIT);
    assert!(status.success(), "jam peer exited with {status} on SIGINT");
    let out = jam(&["capture", "info", "--json", s(&capture), "--key", s(&key)]);
    assert!(out.status.success(), "info: {}", text(&out.stderr));
    let info: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(info["finished"], true, "{info}");
    assert!(info.to_string().contains(&public), "{info}");

    // An existing file is never replaced.
    let out = jam(&[
        "peer",
        "--name",
        "again",
        "--listen",
        "127.0.0.1:0",
        "--capture",
        s(&capture),
        "--to",
        &public,
        "--duration",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot create capture"),
        "{}",
        text(&out.stderr)
    );
}

/// `count` notes, keys 36 to 83 round and round, the velocity counting the
/// rounds, so that each note says where in the song it is.
fn long_notes(count: usize) -> impl Iterator<Item = (u8, u8)> {
    (0..count).map(|i| (36 + (i % 48) as u8, 1 + (i / 48 % 126) as u8))
}

/// The `bytes` of the replayed MIDI records in `direction` (not recovered
/// by the journal), checked to be `who`'s.
fn replayed(records: &[Value], direction: &str, who: impl Fn(&str) -> bool) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["kind"] == "midi" && r["direction"] == direction)
        .filter(|r| r["recovered"] == false)
        .inspect(|r| assert!(who(r["participant"].as_str().unwrap()), "{r}"))
        .map(|r| r["bytes"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_full_disk_stops_the_capture_not_the_session_and_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    // 8 KiB: a few seconds of this session's records.
    let Some(disk) = jam_tests::small_disk::SmallDisk::new(dir.path(), 8) else {
        return;
    };
    let key = dir.path().join("bob.key");
    new_key(&key);
    let alice_song = dir.path().join("alice.mid");
    let bob_song = dir.path().join("bob.mid");
    // 8 s of notes each way: far more than the disk holds.
    let alice_msgs = song_of(&alice_song, 0, long_notes(100), 40);
    let bob_msgs = song_of(&bob_song, 1, long_notes(200), 20);
    let capture = disk.mount().join("bob.scp");

    let bob = JamPeer::start_command(
        disk.command(&jam_tests::workspace_bin("jam-cli", "jam")),
        "bob",
        "127.0.0.1:0",
        &[
            "--play",
            s(&bob_song),
            "--capture",
            s(&capture),
            "--key",
            s(&key),
            "--duration",
            "13",
        ],
    );
    let invite = bob.control().to_string();
    let alice = alice_playing(&invite, &alice_song, "12");
    let (status, alice_printed) = alice.wait(LIMIT);
    assert!(status.success(), "alice exited with {status}");
    let bob = bob.finish(LIMIT);
    let stderr = bob.stderr.join("\n");

    // The session went on to the end both ways: bob's engine kept playing
    // and receiving after his capture stopped.
    assert_eq!(
        jam_peer::played(&bob.lines, "alice"),
        alice_msgs,
        "{stderr}"
    );
    assert_eq!(
        jam_peer::played(&alice_printed, "bob"),
        bob_msgs,
        "{stderr}"
    );
    // Said when it happened, and again as the exit status.
    assert!(
        stderr.contains("jam peer bob: capture ")
            && stderr.contains("stopped: ")
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert_eq!(bob.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("jam: error: the capture ended early"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // What was written before the disk filled reads back: replay gives
    // every complete chunk's records, then says where the file ends.
    let kept = disk.kept().join("bob.scp");
    let out = jam(&["capture", "replay", "--json", s(&kept), "--key", s(&key)]);
    assert!(!out.status.success(), "a cut file is not a whole one");
    let err = text(&out.stderr);
    assert!(err.contains("truncated after"), "{err}");
    let records: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(records[0]["kind"], "session-start", "{}", records[0]);
    let recorder = records[0]["recorder"].as_str().unwrap().to_string();
    let hexed = |m: &[Vec<u8>]| -> Vec<String> { m.iter().map(|m| hex(m)).collect() };
    // Bob's own notes: the first ones he played, in order, and not all.
    let sent = replayed(&records, "out", |p| p == recorder);
    let played = hexed(&bob_msgs);
    assert!(!sent.is_empty(), "nothing was kept: {err}");
    assert!(sent.len() < played.len(), "the disk never filled");
    assert_eq!(sent, played[..sent.len()], "bob's notes, as played");
    // Alice's: the first ones she played, in order.
    let received = replayed(&records, "in", |p| p != recorder);
    let played = hexed(&alice_msgs);
    assert!(received.len() < played.len(), "the disk never filled");
    assert_eq!(received, played[..received.len()], "alice's notes");

    // Repair closes it with the same records.
    let repaired = dir.path().join("repaired.scp");
    let out = jam(&[
        "capture",
        "repair",
        s(&kept),
        "-o",
        s(&repaired),
        "--key",
        s(&key),
    ]);
    assert!(out.status.success(), "repair: {}", text(&out.stderr));
    let out = jam(&[
        "capture",
        "replay",
        "--json",
        s(&repaired),
        "--key",
        s(&key),
    ]);
    assert!(out.status.success(), "replay: {}", text(&out.stderr));
    let again: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(replayed(&again, "out", |_| true), sent);
    assert_eq!(replayed(&again, "in", |_| true), received);
}
