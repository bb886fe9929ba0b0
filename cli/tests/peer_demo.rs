//! `jam peer` and `jam demo` as a user runs them: real processes, real
//! sockets on loopback, real MIDI files.

use jam_tests::jam_peer::JamPeer;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn jam() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jam"))
}

/// A format-0 MIDI file: a five-note scale, then a volume change; returns
/// the messages in order.
fn write_scale(path: &Path) -> Vec<Vec<u8>> {
    let mut events = jam_tests::smf::scale();
    events.push((0, vec![0xB0, 7, 99]));
    jam_tests::smf::write(path, 480, 500_000, &events);
    events.into_iter().map(|(_, m)| m).collect()
}

/// A listening `jam peer` of this build on a free port pair.
fn listening_peer(name: &str, extra: &[&str]) -> JamPeer {
    let jam = Path::new(env!("CARGO_BIN_EXE_jam"));
    JamPeer::start_bin(jam, name, "127.0.0.1:0", extra)
}

/// How long a peer with a `--duration` of a few seconds may take to end.
const EXIT_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn two_peers_exchange_a_midi_file_and_end_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let song = dir.path().join("scale.mid");
    let expected = write_scale(&song);
    let bob = listening_peer("bob", &["--duration", "6"]);
    let control = bob.control().to_string();
    let alice = jam()
        .args([
            "peer",
            "--name",
            "alice",
            "--listen",
            "127.0.0.1:0",
            "--print",
        ])
        .args(["--invite", &control, "--duration", "4"])
        .arg("--play")
        .arg(&song)
        .output()
        .unwrap();
    assert!(
        alice.status.success(),
        "{}",
        String::from_utf8_lossy(&alice.stderr)
    );
    let bob = bob.finish(EXIT_LIMIT);
    assert!(bob.status.success());
    assert!(bob.not_json.is_empty(), "not json: {:?}", bob.not_json);
    let lines = bob.lines;
    let got: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["from"], "alice");
            assert_eq!(l["recovered"], false);
            assert!(l["t_us"].as_u64().unwrap() > 1_600_000_000_000_000);
            serde_json::from_value(l["midi"].clone()).unwrap()
        })
        .collect();
    assert_eq!(got, expected);
    // Notes arrive as they were played: 125 ms apart at 120 BPM, 480 PPQ.
    let t: Vec<u64> = lines.iter().map(|l| l["t_us"].as_u64().unwrap()).collect();
    let span = Duration::from_micros(t[9] - t[0]);
    assert!(span >= Duration::from_millis(1100), "{span:?}");
    let stderr = String::from_utf8_lossy(&alice.stderr);
    assert!(stderr.contains("joined bob"), "{stderr}");
}

#[test]
fn a_peer_that_is_told_to_stop_ends_its_sessions() {
    let bob = listening_peer("bob", &["--duration", "3"]);
    let control = bob.control().to_string();
    let mut alice = jam()
        .args(["peer", "--name", "alice", "--listen", "127.0.0.1:0"])
        .args(["--invite", &control, "--duration", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(alice.wait().unwrap().success());
    let bob = bob.finish(EXIT_LIMIT);
    assert!(bob.status.success());
    let log = bob.stderr.join("\n");
    assert!(log.contains("joined alice"), "{log}");
    assert!(log.contains("alice left (ByeReceived)"), "{log}");
}

#[test]
fn peer_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.mid");
    std::fs::write(&bad, b"not a midi file").unwrap();
    let out = jam()
        .args(["peer", "--name", "x", "--listen", "127.0.0.1:0", "--play"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.mid is not a usable MIDI file"), "{err}");

    let out = jam()
        .args(["peer", "--name", "x", "--duration=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration must be a positive"));
}

fn demo_json(args: &[&str]) -> serde_json::Value {
    let out = jam().arg("demo").args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn demo_at_ten_percent_loss_recovers_events_and_leaves_no_stuck_note() {
    let report = demo_json(&["--loss", "0.1", "--jitter-ms", "0"]);
    let players = report["players"].as_array().unwrap();
    assert_eq!(players.len(), 4);
    for p in players {
        assert_eq!(p["stuck_notes"], 0, "{p}");
        assert_eq!(p["wrong_values"], 0, "{p}");
        assert!(p["recovered_events"].as_u64().unwrap() > 0, "{p}");
        assert!(p["lost_packets"].as_u64().unwrap() > 0, "{p}");
        let p50 = p["latency_us"]["p50"].as_i64().unwrap();
        let p99 = p["latency_us"]["p99"].as_i64().unwrap();
        // The default one-way delay is 20 ms; clock sync maps sender times
        // onto the receiver's clock within a tick.
        assert!((19_800..=20_200).contains(&p50), "{p}");
        assert!(p99 >= p50);
    }
}

#[test]
fn demo_without_loss_delivers_everything_without_repairs() {
    let report = demo_json(&[
        "--players",
        "3",
        "--seconds",
        "8",
        "--loss",
        "0",
        "--jitter-ms",
        "0",
    ]);
    let players = report["players"].as_array().unwrap();
    let sent: u64 = players
        .iter()
        .map(|p| p["events_sent"].as_u64().unwrap())
        .sum();
    for p in players {
        assert_eq!(p["recovered_events"], 0);
        assert_eq!(p["lost_packets"], 0);
        let own = p["events_sent"].as_u64().unwrap();
        assert_eq!(p["events_received"].as_u64().unwrap(), sent - own, "{p}");
    }
}

#[test]
fn the_default_demo_is_lossy_and_still_leaves_nothing_stuck() {
    let report = demo_json(&[]);
    assert_eq!(report["network"]["loss"], 0.02);
    for p in report["players"].as_array().unwrap() {
        assert_eq!(p["stuck_notes"], 0, "{p}");
        assert_eq!(p["wrong_values"], 0, "{p}");
    }
}

#[test]
fn demo_rejects_out_of_range_settings() {
    for args in [
        ["--players", "1"],
        ["--loss", "1.5"],
        ["--seconds", "0"],
        ["--reorder", "0.9"],
    ] {
        let out = jam().arg("demo").args(args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{} must be", args[0])), "{err}");
    }
}
