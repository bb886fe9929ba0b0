//! The session document between two real `jam peer` processes on loopback:
//! a tempo proposed by one reaches the other, both engines' timelines take
//! it on at its bar, and a capture holds the document's changes; the same
//! through a real `jamd`, with both peers joined by `--server`.

use jam_capture::reader::CaptureReader;
use jam_core::{Beats, Micros};
use jam_tests::jam_peer::JamPeer;
use jam_tests::jamd::JamdProcess;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn jam() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jam"))
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not json ({e}): {l}")))
        .collect()
}

fn session_lines(lines: &[serde_json::Value]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| l.get("session").cloned())
        .collect()
}

/// Checks what two peers' `--print` lines say of a proposed tempo: both
/// print the same single change to `bpm`, on a bar line, and both
/// timelines then take on `bpm` (and no other tempo). Returns its beat.
fn agreed_tempo_change(a: &[serde_json::Value], b: &[serde_json::Value], bpm: f64) -> f64 {
    let (a, b) = (session_lines(a), session_lines(b));
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
    assert_eq!(ca[0]["tempo"], bpm);
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
        assert_eq!(tempos, [bpm], "{lines:?}");
    }
    at_beat
}

#[test]
fn a_proposed_tempo_reaches_the_other_peer_its_timeline_and_its_capture() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ann.key");
    jam_tests::keys::new_key(Path::new(env!("CARGO_BIN_EXE_jam")), &key);
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

    let at_beat = agreed_tempo_change(&json_lines(&ann_out.stdout), &json_lines(&bob.stdout), 90.0);

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

/// `jam peer --server` for `name` in session `session` of `jamd`, with a
/// fresh key and its password in a file, as [`JamPeer`].
fn server_peer(jamd: &JamdProcess, dir: &Path, name: &str, extra: &[&str]) -> JamPeer {
    let key = dir.join(format!("{name}.key"));
    jam_tests::keys::new_key(Path::new(env!("CARGO_BIN_EXE_jam")), &key);
    let pass = dir.join(format!("{name}.pass"));
    std::fs::write(&pass, format!("password of {name}\n")).unwrap();
    let mut args = vec![
        "--server".to_string(),
        jamd.base(),
        "--session".into(),
        "tempo".into(),
        "--register".into(),
        "--create".into(),
        "--key".into(),
        key.to_string_lossy().into_owned(),
        "--password-file".into(),
        pass.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    JamPeer::start_bin(
        Path::new(env!("CARGO_BIN_EXE_jam")),
        name,
        "127.0.0.1:0",
        &args,
    )
}

#[test]
fn a_proposed_tempo_reaches_the_other_peer_through_jamd() {
    let dir = tempfile::tempdir().unwrap();
    let jamd = JamdProcess::start(&dir.path().join("jamd"));
    // Ann waits (and creates the session); Bob joins and proposes 90 BPM.
    // Ann's run leaves room for Bob's registration, log-in and join on a
    // slow machine before his proposal has to reach her.
    let mut ann = server_peer(&jamd, dir.path(), "ann", &["--duration", "30"]);
    ann.process()
        .expect_stderr("ann on the relay", Duration::from_secs(30), |l| {
            l.contains("relay accepted us")
        });
    let bob = server_peer(
        &jamd,
        dir.path(),
        "bob",
        &["--tempo", "90", "--duration", "12"],
    );
    let bob = bob.finish(Duration::from_secs(60));
    let bob_err = bob.stderr.join("\n");
    assert!(bob.status.success(), "{bob_err}");
    assert!(bob_err.contains("proposed 90 BPM from beat"), "{bob_err}");
    let ann = ann.finish(Duration::from_secs(60));
    let ann_err = ann.stderr.join("\n");
    assert!(ann.status.success(), "{ann_err}");
    assert!(ann_err.contains("session tempo 90 BPM"), "{ann_err}");
    agreed_tempo_change(&ann.lines, &bob.lines, 90.0);
    // Both founded the document (nobody invites through jamd), with the
    // same genesis: each lists both participants.
    for err in [&ann_err, &bob_err] {
        let last = err
            .lines()
            .filter_map(|l| l.split(": participants: ").nth(1))
            .next_back()
            .unwrap_or_default();
        let mut names: Vec<&str> = last.split(", ").collect();
        names.sort_unstable();
        assert_eq!(names, ["ann", "bob"], "{err}");
    }
}
