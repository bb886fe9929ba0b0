//! `jam session show` and `jam session new`, run as the real binary on real
//! files; the text output is pinned.

use jam_core::{Beats, Meter, PeerId, SessionTime, Tempo};
use jam_session_crdt::{
    Confidence, ConnectionStats, LatencyMode, MusicalKey, PitchClass, Profile, Role,
    RoleAssignment, RoleSource, ScheduleAhead, SessionConfig, SessionDoc, SessionSettings, Swing,
};
use std::process::Command;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("jam-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn jam() -> Command {
    Command::new(jam_tests::workspace_bin("jam-cli", "jam"))
}

/// A session with three players, roles, two tempo changes (one meter
/// change), a marker and a chat line, built through the library.
fn sample_session() -> Vec<u8> {
    let p = |n: u8| PeerId([n; 16]);
    let profile = |name: &str, inst: &str| Profile {
        name: name.into(),
        public_key: [1; 32],
        instrument: inst.into(),
    };
    let config = SessionConfig {
        id: [0xAA; 16],
        name: "friday".into(),
        created_unix_ms: 1_700_000_000_000,
        origin: SessionTime(0),
        tempo: Tempo::from_bpm(120.0).unwrap(),
        meter: Meter::FOUR_FOUR,
        settings: SessionSettings {
            mode: LatencyMode::Coherent,
            grid: Beats::from_f64(0.5),
            swing: Swing::from_per_mille(667).unwrap(),
            schedule_ahead: ScheduleAhead::Fixed(80_000),
            key: Some(MusicalKey {
                tonic: PitchClass::parse("A").unwrap(),
                scale: "minor".into(),
            }),
            ..SessionSettings::default()
        },
    };
    let mut doc = SessionDoc::create(&config, p(0x11), &profile("ann", "drums"), 1).unwrap();
    for (n, name, inst) in [(0x22, "bob", "bass"), (0x33, "cy", "")] {
        let mut other = SessionDoc::load(&doc.save(), p(n), 2).unwrap();
        other
            .join(&profile(name, inst), SessionTime(i64::from(n) * 1_000_000))
            .unwrap();
        let c: Vec<Vec<u8>> = other
            .take_new_changes()
            .into_iter()
            .map(|c| c.bytes)
            .collect();
        let refs: Vec<&[u8]> = c.iter().map(|c| c.as_slice()).collect();
        doc.apply_changes(&refs).unwrap();
    }
    let role = |pm, source| {
        Some(RoleAssignment {
            confidence: Confidence::from_per_mille(pm),
            source,
        })
    };
    doc.set_role(p(0x11), Role::Rhythm, role(920, RoleSource::Auto))
        .unwrap();
    doc.set_role(p(0x22), Role::Rhythm, role(400, RoleSource::Auto))
        .unwrap();
    doc.set_role(p(0x22), Role::Harmony, role(1000, RoleSource::Manual))
        .unwrap();
    doc.set_connection(ConnectionStats {
        rtt_median_us: 42_500,
        rtt_p99_us: 91_000,
        loss_ppm: 3_000,
    })
    .unwrap();
    doc.change_tempo(
        Beats::from_beats(16),
        Tempo::from_bpm(96.5).unwrap(),
        Meter::FOUR_FOUR,
        SessionTime(5),
    )
    .unwrap();
    doc.change_tempo(
        Beats::from_beats(32),
        Tempo::from_bpm(96.5).unwrap(),
        Meter::new(7, 8).unwrap(),
        SessionTime(6),
    )
    .unwrap();
    doc.add_marker(Beats::from_beats(32), "bridge", SessionTime(7))
        .unwrap();
    doc.post_chat(SessionTime(8_000_000), "ready?").unwrap();
    doc.save()
}

const EXPECTED: &str = "\
session  friday (aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa)
schema   1.1   created 1700000000000 (unix ms)
mode     coherent (schedule-ahead 80.0 ms)
grid     1/8, swing 66.7%
key      A minor

participants (3 present, 3 total)
  11111111  ann [drums]  rhythm 0.92 auto  joined 0.000000s
            rtt 42.5 ms median, 91.0 ms p99, loss 0.30%
  22222222  bob [bass]  rhythm 0.40 auto, harmony 1.00 manual  joined 34.000000s
  33333333  cy  no role  joined 51.000000s

tempo map
  bar 1.1      beat 0.000        at 0.000000s        120 BPM 4/4
  bar 5.1      beat 16.000       at 8.000000s        96.5 BPM 4/4
  bar 9.1      beat 32.000       at 17.948187s       96.5 BPM 7/8

markers
  bar 9.1      bridge

chat (1 messages)
  8.000000s ann: ready?
";

#[test]
fn session_show_prints_participants_roles_tempo_map_and_mode() {
    let dir = temp_dir("show");
    let file = dir.join("friday.jam");
    std::fs::write(&file, sample_session()).unwrap();
    let out = jam().args(["session", "show"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), EXPECTED);

    let out = jam()
        .args(["session", "show", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let json = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "\"mode\": \"coherent\"",
        "\"micro_bpm\": 96500000",
        "\"meter\": \"7/8\"",
        "\"role\": \"harmony\"",
        "\"source\": \"manual\"",
        "\"schedule_ahead_us\": 80000",
    ] {
        assert!(json.contains(needle), "{needle} missing from {json}");
    }
}

#[test]
fn session_new_then_show_round_trips_and_refuses_to_overwrite() {
    let dir = temp_dir("new");
    let file = dir.join("new.jam");
    let args = [
        "session",
        "new",
        "--name",
        "tuesday",
        "--player",
        "dee",
        "--instrument",
        "keys",
        "--bpm",
        "128.25",
        "--meter",
        "6/8",
        "--mode",
        "interval",
        "--key",
        "Eb major",
        "--id",
        "000102030405060708090a0b0c0d0e0f",
        "--peer",
        "44444444444444444444444444444444",
        "--created-unix-ms",
        "5",
        "--public-key",
        "0101010101010101010101010101010101010101010101010101010101010101",
    ];
    let out = jam().args(args).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = jam().args(["session", "show"]).arg(&file).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        "\
session  tuesday (000102030405060708090a0b0c0d0e0f)
schema   1.1   created 5 (unix ms)
mode     interval (16 beats)
grid     1/16, swing straight
key      D# major

participants (1 present, 1 total)
  44444444  dee [keys]  no role  joined 0.000000s

tempo map
  bar 1.1      beat 0.000        at 0.000000s        128.25 BPM 6/8
"
    );
    let json = jam()
        .args(["session", "show", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    let json = String::from_utf8(json.stdout).unwrap();
    assert!(
        json.contains(&format!("\"public_key\": \"{}\"", "01".repeat(32))),
        "{json}"
    );
    let out = jam().args(args).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("jam: error: creating "), "{err}");
}

#[test]
fn session_show_reports_a_corrupt_file_clearly() {
    let dir = temp_dir("corrupt");
    let file = dir.join("broken.jam");
    let mut bytes = sample_session();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&file, &bytes).unwrap();
    let out = jam().args(["session", "show"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!(
            "jam: error: loading {}: not a valid session document",
            file.display()
        )),
        "{err}"
    );
    let out = jam()
        .args(["session", "show", "/nonexistent/x.jam"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("reading /nonexistent/x.jam"), "{err}");
}

#[test]
fn session_new_takes_the_public_key_jam_keys_prints() {
    let dir = temp_dir("jam1key");
    let key_file = dir.join("me.key");
    let public = jam_tests::keys::new_key(&jam_tests::workspace_bin("jam-cli", "jam"), &key_file);
    assert!(public.starts_with("jam1"), "{public}");
    let expected: [u8; 32] = public.parse::<jam_capture::Recipient>().unwrap().to_bytes();
    let file = dir.join("keyed.jam");
    let out = jam()
        .args(["session", "new", "--name", "k", "--player", "dee"])
        .args(["--public-key", &public])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = jam()
        .args(["session", "show", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    let json = String::from_utf8(json.stdout).unwrap();
    let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        json.contains(&format!("\"public_key\": \"{hex}\"")),
        "{json}"
    );

    // A mistyped key is refused with a clear message.
    let out = jam()
        .args(["session", "new", "--name", "k", "--player", "dee"])
        .args(["--public-key", "jam1notakey"])
        .arg(dir.join("bad.jam"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects the value");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("jam1notakey"), "{err}");
}
