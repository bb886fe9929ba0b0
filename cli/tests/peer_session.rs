//! The session document between two real `jam peer` processes on loopback:
//! a tempo proposed by one reaches the other, both engines' timelines take
//! it on at its bar, and a capture holds the document's changes.

use jam_capture::reader::CaptureReader;
use jam_core::{Beats, Micros};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn jam() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jam"))
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not json ({e}): {l}")))
        .collect()
}

fn session_lines(out: &[u8]) -> Vec<serde_json::Value> {
    json_lines(out)
        .into_iter()
        .filter_map(|l| l.get("session").cloned())
        .collect()
}

#[test]
fn a_proposed_tempo_reaches_the_other_peer_its_timeline_and_its_capture() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ann.key");
    jam_tests::keys::new_key(std::path::Path::new(env!("CARGO_BIN_EXE_jam")), &key);
    let capture = dir.path().join("ann.scp");

    let mut ann = jam()
        .args([
            "peer",
            "--name",
            "ann",
            "--listen",
            "127.0.0.1:0",
            "--print",
        ])
        .args(["--duration", "8", "--capture"])
        .arg(&capture)
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ann_err = BufReader::new(ann.stderr.take().unwrap());
    let mut line = String::new();
    ann_err.read_line(&mut line).unwrap();
    let control = line
        .split("listening on control ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();

    let bob = jam()
        .args([
            "peer",
            "--name",
            "bob",
            "--listen",
            "127.0.0.1:0",
            "--print",
        ])
        .args(["--invite", &control, "--tempo", "90", "--duration", "6"])
        .output()
        .unwrap();
    let bob_err = String::from_utf8_lossy(&bob.stderr);
    assert!(bob.status.success(), "{bob_err}");
    assert!(bob_err.contains("proposed 90 BPM from beat"), "{bob_err}");
    let ann_out = ann.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut ann_err, &mut rest).unwrap();
    assert!(ann_out.status.success(), "{rest}");
    assert!(rest.contains("session tempo 90 BPM"), "{rest}");

    // Both print the same change once, then their timelines take it on.
    let (a, b) = (session_lines(&ann_out.stdout), session_lines(&bob.stdout));
    let change = |lines: &[serde_json::Value]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|l| l.get("tempo").is_some())
            .cloned()
            .collect()
    };
    let (ca, cb) = (change(&a), change(&b));
    assert_eq!(ca.len(), 1, "{a:?}");
    assert_eq!(ca, cb);
    assert_eq!(ca[0]["tempo"], 90.0);
    let at_beat = ca[0]["at_beat"].as_f64().unwrap();
    assert!(
        at_beat > 0.0 && at_beat % 4.0 == 0.0,
        "on a bar line: {at_beat}"
    );
    for lines in [&a, &b] {
        let tempos: Vec<f64> = lines
            .iter()
            .filter_map(|l| l["timeline_tempo"].as_f64())
            .collect();
        assert_eq!(tempos, [90.0], "{lines:?}");
    }

    // Ann's capture holds the session document with the change in it.
    let identity =
        jam_capture::keys::decode_key_file(&std::fs::read_to_string(&key).unwrap(), None).unwrap();
    let file = std::fs::File::open(&capture).unwrap();
    let mut reader = CaptureReader::open(std::io::BufReader::new(file), &[identity]).unwrap();
    let doc = reader.state_at_linear(Micros(u64::MAX)).unwrap();
    let state = jam_session_crdt::schema::read_state(&doc).unwrap();
    assert_eq!(state.tempo_changes.len(), 1);
    assert_eq!(state.tempo_changes[0].change.tempo.bpm(), 90.0);
    assert_eq!(state.tempo_changes[0].change.at, Beats::from_f64(at_beat));
    let mut names: Vec<&str> = state
        .participants
        .values()
        .map(|p| p.profile.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["ann", "bob"]);
}
