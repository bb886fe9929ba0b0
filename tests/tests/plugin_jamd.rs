//! The plugin's `.clap` bundle joining a session by name through a real
//! `jamd` process, as a producer does from a saved project: a
//! `jam-clap-host` process (real time, 256-sample blocks at 48 kHz) whose
//! state names the server, the session and the user, with the password in
//! `JAM_PASSWORD`, and a real `jam peer --server ... --session ...` in the
//! same session. Everything goes through the relay (or a direct path on
//! loopback), end-to-end encrypted.

use jam_tests::clap_host::{assert_play_spacing, play_messages, report_notes};
use jam_tests::jam_peer::{JamPeer, played};
use jam_tests::jamd::JamdProcess;
use jam_tests::keys::new_key;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The bundle, the host and `jam`, built before any process starts.
fn paths() -> (PathBuf, PathBuf, PathBuf) {
    (
        jam_tests::plugin_bundles("jam-plugin", "jam-togthr").0,
        jam_tests::workspace_bin("jam-tests", "jam-clap-host"),
        jam_tests::workspace_bin("jam-cli", "jam"),
    )
}

/// Creates an account on `jamd` through its HTTP API.
fn register(base: &str, user: &str, password: &str) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(jam_join::Jamd::new(base).register(user, password))
        .unwrap();
}

#[test]
fn the_plugin_joins_a_session_by_name_through_jamd_and_plays_with_a_jam_peer() {
    let (bundle, host, jam) = paths();
    let dir = tempfile::tempdir().unwrap();
    let jamd = JamdProcess::start(&dir.path().join("jamd"));
    let base = jamd.base();
    let (bob_key, ana_key) = (dir.path().join("bob.key"), dir.path().join("ana.key"));
    new_key(&jam, &bob_key);
    new_key(&jam, &ana_key);
    let bob_password = dir.path().join("bob.password");
    std::fs::write(&bob_password, "bob's long password\n").unwrap();
    let ana_password = "ana's secret words";
    register(&base, "ana", ana_password);

    // Bob creates the session and plays the scale (one event every 62.5 ms,
    // 3000 samples) once someone is there.
    let song = dir.path().join("scale.mid");
    let scale = jam_tests::smf::scale();
    jam_tests::smf::write(&song, 480, 500_000, &scale);
    let (bob_key, bob_password, song) = (
        bob_key.to_str().unwrap(),
        bob_password.to_str().unwrap(),
        song.to_str().unwrap(),
    );
    let mut bob = JamPeer::start_bin(
        &jam,
        "bob",
        "127.0.0.1:0",
        &[
            "--duration",
            "16",
            "--play",
            song,
            "--server",
            &base,
            "--session",
            "friday",
            "--register",
            "--create",
            "--key",
            bob_key,
            "--password-file",
            bob_password,
        ],
    );
    // The listening line comes after the join: the session exists now.
    let field = |k: &str, v: &str| format!("{k}={v}");
    let out = Command::new(&host)
        .arg(&bundle)
        .args(["--seconds", "9", "--name", "ana", "--latency", "live"])
        .args(["--play", "60,62,64", "--play-at", "5"])
        .args(["--field", &field("server", &base)])
        .args(["--field", &field("server-session", "friday")])
        .args(["--field", &field("server-user", "ana")])
        .args(["--field", &field("key-file", ana_key.to_str().unwrap())])
        .env("JAM_PASSWORD", ana_password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jam-clap-host failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Bob's notes came out of the plugin on his channel, in order, spaced
    // as he played them within arrival jitter (live mode: ±25 ms).
    let got = report_notes(&report);
    let keys: Vec<(i64, u8, bool)> = got.iter().map(|&(_, c, k, on)| (c, k, on)).collect();
    let want: Vec<(i64, u8, bool)> = scale.iter().map(|(_, m)| (0, m[1], m[0] == 0x90)).collect();
    assert_eq!(keys, want, "bob is the first participant: channel 1 (0)");
    for pair in got.windows(2) {
        let gap = pair[1].0 as i64 - pair[0].0 as i64;
        assert!(
            (gap - 6000).abs() <= 1200,
            "spacing {gap} samples, played 6000 (125 ms at 48 kHz): {got:?}"
        );
    }

    // The saved state names the server and session, never the password.
    let state = report["state"].to_string();
    assert!(state.contains("friday") && state.contains(&base), "{state}");
    assert!(
        !state.contains(ana_password),
        "the password was saved: {state}"
    );

    // Ana's notes reached bob, and dropping the plugin left the session:
    // bob's relay peer saw a member leave and rotated its key.
    let left = bob
        .process()
        .expect_stderr("a member leaving", Duration::from_secs(20), |l| {
            l.contains("a member left")
        });
    assert!(left.contains("new sender key"), "{left}");
    let exited = bob.finish(Duration::from_secs(60));
    assert!(exited.status.success(), "{:?}", exited.stderr);
    assert_eq!(played(&exited.lines, "ana"), play_messages(&[60, 62, 64]));
    let t: Vec<i64> = exited
        .lines
        .iter()
        .filter(|l| l["from"] == "ana")
        .map(|l| l["t_us"].as_i64().unwrap())
        .collect();
    assert_play_spacing(&t);
}
