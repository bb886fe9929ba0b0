//! The `jam` binary: keys, captures and agents (trained, measured, shared),
//! with the exact error texts and exit codes, and a capture writer killed
//! with SIGKILL mid-session.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use jam_capture::record::{Record, SCHEMA_VERSION, SessionStart};
use jam_capture::writer::{CaptureConfig, CaptureWriter};
use jam_capture::{CaptureError, Header, Identity, OpenError};
use jam_core::{Beats, Micros, PeerId};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("jam-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn jam(dir: &Dir, args: &[&str]) -> Output {
    Command::new(jam_tests::workspace_bin("jam-cli", "jam"))
        .args(args)
        .current_dir(&dir.0)
        .env("XDG_CONFIG_HOME", dir.path("config"))
        .env_remove("JAM_KEY")
        .env_remove("JAM_PASSPHRASE")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn fails(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected failure, got {o:?}");
    let e = String::from_utf8(o.stderr.clone()).unwrap();
    assert!(e.starts_with("jam: error: "), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

fn new_key(dir: &Dir, name: &str) -> (PathBuf, String) {
    let path = dir.path(name);
    let out = ok(&jam(dir, &["keys", "new", "-o", path.to_str().unwrap()]));
    (path, out.trim().to_string())
}

fn read_identity(path: &Path) -> Identity {
    jam_capture::keys::decode_key_file(&std::fs::read_to_string(path).unwrap(), None).unwrap()
}

/// A capture recorded by "Ada" into `path`, sealed for `to`, starting at
/// `tempo_bpm`.
fn capture_writer(path: &Path, to: &Identity, tempo_bpm: f64) -> CaptureWriter<std::fs::File> {
    let start = SessionStart {
        schema_version: SCHEMA_VERSION,
        session_schema: 1,
        recorder: PeerId([1; 16]),
        recorder_name: "Ada".into(),
        wall_clock_unix_micros: 0,
        at: Micros::ZERO,
        tempo_bpm,
    };
    let f = std::fs::File::create(path).unwrap();
    CaptureWriter::create(
        f,
        &[to.to_public()],
        start,
        CaptureConfig::default(),
        &mut rand::rng(),
    )
    .unwrap()
}

/// A capture with exactly 5 chunks and the count recorded: session start,
/// three flushed markers, the index.
fn five_chunk_capture(path: &Path, to: &Identity) {
    let mut w = capture_writer(path, to, 100.0);
    for i in 0..3 {
        w.append_marker(
            Micros(i * 1000),
            Beats::from_beats(i as i64),
            &format!("m{i}"),
        )
        .unwrap();
        w.flush().unwrap();
    }
    w.finish_and_record_count().unwrap();
}

fn frames(file: &[u8]) -> Vec<std::ops::Range<usize>> {
    let (_, mut at) = Header::decode(file).unwrap();
    let mut out = Vec::new();
    while at + 4 <= file.len() {
        let word = u32::from_be_bytes(file[at..at + 4].try_into().unwrap());
        let len = (word & ((1 << 17) - 1)) as usize;
        let end = at + 4 + len + 16 + if word >> 31 == 1 { 16 } else { 0 };
        out.push(at..end);
        at = end;
    }
    out
}

#[test]
fn keys_new_writes_a_private_default_key_and_pub_prints_it() {
    let d = Dir::new("keys");
    let o = jam(&d, &["keys", "new"]);
    let public = ok(&o).trim().to_string();
    assert!(public.starts_with("jam1"));
    let default = d.path("config/jam/identity.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&default).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(ok(&jam(&d, &["keys", "pub"])).trim(), public);
    assert_eq!(
        ok(&jam(&d, &["keys", "pub", default.to_str().unwrap()])).trim(),
        public
    );
    let e = fails(&jam(&d, &["keys", "new"]));
    assert!(e.contains("cannot create key file"), "{e}");
    assert_eq!(
        ok(&jam(&d, &["keys", "pub"])).trim(),
        public,
        "the key was not replaced"
    );
    let e = fails(&jam(&d, &["keys", "pub", "missing.key"]));
    assert!(e.contains("missing.key"), "{e}");
    // Without --key every command uses the default key file.
    ok(&jam(
        &d,
        &["capture", "demo", "-o", "s.scp", "--seconds", "3"],
    ));
    assert!(ok(&jam(&d, &["capture", "verify", "s.scp"])).contains("authentic and finished"));
    std::fs::remove_file(&default).unwrap();
    let e = fails(&jam(&d, &["capture", "verify", "s.scp"]));
    assert!(
        e.contains("cannot read key file") && e.contains("identity.key"),
        "{e}"
    );
}

#[test]
fn passphrase_protected_keys() {
    let d = Dir::new("pass");
    let run = |args: &[&str], pass: &str| {
        Command::new(jam_tests::workspace_bin("jam-cli", "jam"))
            .args(args)
            .current_dir(&d.0)
            .env("JAM_PASSPHRASE", pass)
            .output()
            .unwrap()
    };
    let public = ok(&run(
        &["keys", "new", "--passphrase", "-o", "p.key"],
        "s3cret",
    ));
    let text = std::fs::read_to_string(d.path("p.key")).unwrap();
    assert!(text.contains("JAM-ENCRYPTED-KEY-1") && !text.contains("JAM-SECRET-KEY"));
    assert_eq!(ok(&run(&["keys", "pub", "p.key"], "s3cret")), public);
    let e = fails(&run(&["keys", "pub", "p.key"], "wrong"));
    assert!(e.contains("p.key") && e.contains("wrong passphrase"), "{e}");
}

#[test]
fn capture_commands_and_their_error_texts() {
    let d = Dir::new("capture");
    let (key, _) = new_key(&d, "me.key");
    let (other, _) = new_key(&d, "other.key");
    let k = key.to_str().unwrap();
    let out = ok(&jam(
        &d,
        &[
            "capture",
            "demo",
            "-o",
            "s.scp",
            "--seconds",
            "40",
            "--key",
            k,
        ],
    ));
    assert!(out.contains("wrote s.scp"), "{out}");
    let info = ok(&jam(&d, &["capture", "info", "s.scp", "--key", k]));
    assert!(
        info.contains("participants: 4") && info.contains("state:        finished"),
        "{info}"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&jam(
        &d,
        &["capture", "info", "s.scp", "--json", "--key", k],
    )))
    .unwrap();
    assert_eq!(v["participants"].as_array().unwrap().len(), 4);
    assert!(
        ok(&jam(&d, &["capture", "verify", "s.scp", "--key", k]))
            .contains("authentic and finished")
    );
    let lines = ok(&jam(
        &d,
        &["capture", "replay", "s.scp", "--json", "--key", k],
    ));
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "session-start");
    assert!(
        lines
            .lines()
            .filter(|l| l.contains("\"kind\":\"midi\""))
            .count()
            > 100
    );
    ok(&jam(
        &d,
        &["capture", "export-midi", "s.scp", "-o", "s.mid", "--key", k],
    ));
    let smf_bytes = std::fs::read(d.path("s.mid")).unwrap();
    assert_eq!(midly::Smf::parse(&smf_bytes).unwrap().tracks.len(), 5);

    // Not a recipient.
    let e = fails(&jam(
        &d,
        &[
            "capture",
            "verify",
            "s.scp",
            "--key",
            other.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        e.trim(),
        "jam: error: s.scp: you are not a recipient of this file"
    );

    // Truncated after 3 of 5 chunks, then repaired.
    let me = read_identity(&key);
    five_chunk_capture(&d.path("five.scp"), &me);
    let bytes = std::fs::read(d.path("five.scp")).unwrap();
    let fr = frames(&bytes);
    assert_eq!(fr.len(), 5);
    std::fs::write(d.path("cut.scp"), &bytes[..fr[2].end]).unwrap();
    let e = fails(&jam(&d, &["capture", "verify", "cut.scp", "--key", k]));
    assert!(
        e.starts_with("jam: error: cut.scp: file truncated after 3 of 5 chunks"),
        "{e}"
    );
    let out = ok(&jam(
        &d,
        &[
            "capture",
            "repair",
            "cut.scp",
            "-o",
            "fixed.scp",
            "--key",
            k,
        ],
    ));
    assert!(out.contains("kept 3 chunks"), "{out}");
    ok(&jam(&d, &["capture", "verify", "fixed.scp", "--key", k]));
    let e = fails(&jam(
        &d,
        &[
            "capture",
            "repair",
            "cut.scp",
            "-o",
            "fixed.scp",
            "--key",
            k,
        ],
    ));
    assert!(e.contains("already exists"), "{e}");
    let e = fails(&jam(
        &d,
        &[
            "capture",
            "repair",
            "five.scp",
            "-o",
            "nothing.scp",
            "--key",
            k,
        ],
    ));
    assert!(e.contains("nothing to repair"), "{e}");
    assert!(
        !d.path("nothing.scp").exists(),
        "a failed repair leaves no output"
    );

    // A modified chunk.
    let mut m = bytes.clone();
    m[fr[1].start + 6] ^= 0x20;
    std::fs::write(d.path("mod.scp"), &m).unwrap();
    let e = fails(&jam(&d, &["capture", "verify", "mod.scp", "--key", k]));
    assert_eq!(
        e.trim(),
        "jam: error: mod.scp: authentication failed in chunk 2: the file was modified"
    );

    // Corrupt header, unknown version, not a sealed file.
    let mut v = bytes.clone();
    v[8] = 7;
    std::fs::write(d.path("v7.scp"), &v).unwrap();
    let e = fails(&jam(&d, &["capture", "info", "v7.scp", "--key", k]));
    assert!(e.contains("v7.scp: unsupported format version 7"), "{e}");
    std::fs::write(d.path("text.scp"), b"just some text, not a capture").unwrap();
    let e = fails(&jam(&d, &["capture", "replay", "text.scp", "--key", k]));
    assert!(e.contains("text.scp: not a jam sealed file"), "{e}");
    let e = fails(&jam(&d, &["capture", "verify", "absent.scp", "--key", k]));
    assert!(e.contains("absent.scp"), "{e}");
    std::fs::write(d.path("bad.key"), "not a key").unwrap();
    let e = fails(&jam(
        &d,
        &["capture", "verify", "s.scp", "--key", "bad.key"],
    ));
    assert!(e.contains("bad.key is not a jam secret key file"), "{e}");
}

#[test]
fn agents_are_shared_and_revoked() {
    let d = Dir::new("agent");
    let (owner_key, _) = new_key(&d, "owner.key");
    let (friend_key, friend_pub) = new_key(&d, "friend.key");
    let (o, f) = (owner_key.to_str().unwrap(), friend_key.to_str().unwrap());
    let owner = read_identity(&owner_key);
    let meta = jam_capture::agent::AgentMeta {
        owner: owner.to_public(),
        owner_name: "Ada".into(),
        kind: "markov-v1".into(),
        version: 2,
        created_unix_micros: 0,
        training: Default::default(),
    };
    let model = vec![7u8; 100_000];
    let file = jam_capture::agent::write_agent(
        Vec::new(),
        &meta,
        &mut &model[..],
        &[owner.to_public()],
        &mut rand::rng(),
    )
    .unwrap();
    std::fs::write(d.path("a.agent"), &file).unwrap();
    let info = ok(&jam(&d, &["agent", "info", "a.agent", "--key", o]));
    assert!(
        info.contains("markov-v1")
            && info.contains("100000 bytes")
            && info.contains("generation:  1"),
        "{info}"
    );
    let e = fails(&jam(&d, &["agent", "info", "a.agent", "--key", f]));
    assert_eq!(
        e.trim(),
        "jam: error: a.agent: you are not a recipient of this file"
    );

    ok(&jam(
        &d,
        &["agent", "share", "a.agent", "--to", &friend_pub, "--key", o],
    ));
    let shared = std::fs::read(d.path("a.agent")).unwrap();
    let (_, l0) = Header::decode(&file).unwrap();
    let (_, l1) = Header::decode(&shared).unwrap();
    assert_eq!(
        &file[l0..],
        &shared[l1..],
        "share must not touch the payload"
    );
    assert!(ok(&jam(&d, &["agent", "info", "a.agent", "--key", f])).contains("markov-v1"));

    std::fs::copy(d.path("a.agent"), d.path("old.agent")).unwrap();
    let out = ok(&jam(
        &d,
        &[
            "agent",
            "revoke",
            "a.agent",
            "--remove",
            &friend_pub,
            "--key",
            o,
        ],
    ));
    assert!(out.contains("generation 2"), "{out}");
    let e = fails(&jam(&d, &["agent", "info", "a.agent", "--key", f]));
    assert_eq!(
        e.trim(),
        "jam: error: a.agent: you are not a recipient of this file"
    );
    assert!(ok(&jam(&d, &["agent", "info", "a.agent", "--key", o])).contains("generation:  2"));
    // What revoke cannot do: the old copy still opens for the friend.
    ok(&jam(&d, &["agent", "info", "old.agent", "--key", f]));
    let help = ok(&jam(&d, &["agent", "revoke", "--help"]));
    assert!(help.contains("cannot recall copies"), "{help}");
    let e = fails(&jam(
        &d,
        &[
            "agent",
            "share",
            "a.agent",
            "--to",
            "jam1notakey",
            "--key",
            o,
        ],
    ));
    assert!(e.contains("`jam1notakey` is not a jam public key"), "{e}");
}

/// A `jam capture demo --realtime` process is killed with SIGKILL while it
/// records: every complete chunk reads back, and repair makes a valid file.
#[test]
fn a_capture_writer_killed_mid_session_loses_nothing_sealed() {
    let d = Dir::new("sigkill");
    let (key, _) = new_key(&d, "me.key");
    let mut child = Command::new(jam_tests::workspace_bin("jam-cli", "jam"))
        .args([
            "capture",
            "demo",
            "--realtime",
            "--seconds",
            "120",
            "-o",
            "live.scp",
            "--key",
        ])
        .arg(&key)
        .current_dir(&d.0)
        .spawn()
        .unwrap();
    let path = d.path("live.scp");
    let me = read_identity(&key);
    // Wait until at least four chunks are on disk (about four seconds).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let chunks = std::fs::read(&path)
            .ok()
            .filter(|b| Header::decode(b).is_ok())
            .map(|b| frames(&b).len());
        if chunks.unwrap_or(0) >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the writer produced no chunks");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let complete = frames(&bytes)
        .iter()
        .filter(|r| r.end <= bytes.len())
        .count() as u64;
    let mut r =
        jam_capture::reader::CaptureReader::open(&bytes[..], std::slice::from_ref(&me)).unwrap();
    let mut records = 0;
    let err = loop {
        match r.next_record() {
            Ok(Some((_, rec))) => {
                assert!(!matches!(rec, Record::Index(_)));
                records += 1;
            }
            Ok(None) => panic!("a killed writer cannot have finished"),
            Err(e) => break e,
        }
    };
    match err {
        CaptureError::Open(OpenError::Truncated { complete: c, .. }) => assert_eq!(c, complete),
        e => panic!("{e}"),
    }
    assert!(records > 10, "{records} records");
    let e = fails(&jam(
        &d,
        &[
            "capture",
            "verify",
            "live.scp",
            "--key",
            key.to_str().unwrap(),
        ],
    ));
    assert!(
        e.contains(&format!("file truncated after {complete} chunks")),
        "{e}"
    );
    let out = ok(&jam(
        &d,
        &[
            "capture",
            "repair",
            "live.scp",
            "-o",
            "fixed.scp",
            "--key",
            key.to_str().unwrap(),
        ],
    ));
    assert!(out.contains(&format!("kept {complete} chunks")), "{out}");
    ok(&jam(
        &d,
        &[
            "capture",
            "verify",
            "fixed.scp",
            "--key",
            key.to_str().unwrap(),
        ],
    ));
    let fixed = std::fs::read(d.path("fixed.scp")).unwrap();
    let keep = frames(&bytes)[complete as usize - 1].end;
    let (_, hl) = Header::decode(&bytes).unwrap();
    assert_eq!(
        &fixed[hl..keep],
        &bytes[hl..keep],
        "complete chunks are kept byte for byte"
    );
}

/// A folk-like tune of `phrases` four-motif phrases (jam-predict's
/// seeded synthetic melodies) as (pitch, length in ticks at 480 per beat),
/// one note after the other. Different seeds, different tunes; the same
/// motifs, so an agent trained on one seed predicts another.
fn tune(seed: u64, phrases: usize) -> Vec<(u8, u32)> {
    let line = &jam_predict::synth::motif_tunes(seed, 1, 4 * phrases)[0];
    line.notes
        .iter()
        .map(|n| (n.pitch, (n.duration.0 * 480 / Beats::PER_BEAT) as u32))
        .collect()
}

/// Writes `notes` (pitch, length in ticks at 480 per beat) as a MIDI file.
fn write_tune(path: &Path, notes: &[(u8, u32)]) {
    let mut events = Vec::new();
    for &(pitch, ticks) in notes {
        events.push((0, vec![0x90, pitch, 90]));
        events.push((ticks, vec![0x80, pitch, 0]));
    }
    jam_tests::smf::write(path, 480, 500_000, &events);
}

/// Records `notes` as one player's MIDI in a capture sealed for `to`, at
/// 120 BPM, one note after the other.
fn write_tune_capture(path: &Path, to: &Identity, notes: &[(u8, u32)]) {
    let mut w = capture_writer(path, to, 120.0);
    let mut beat = 0i64;
    for &(pitch, ticks) in notes {
        let len = i64::from(ticks) * Beats::PER_BEAT / 480;
        for (b, bytes) in [(beat, [0x90, pitch, 90]), (beat + len, [0x80, pitch, 0])] {
            w.append_midi(jam_capture::record::MidiEvent {
                at: Micros((b / 2) as u64), // 120 BPM: half a second per beat
                participant: PeerId([2; 16]),
                direction: jam_capture::record::Direction::In,
                sender_time: Micros((b / 2) as u64),
                beat: Beats(b),
                bytes: bytes.to_vec(),
                recovered: false,
            })
            .unwrap();
        }
        beat += len;
    }
    w.finish_and_record_count().unwrap();
}

fn eval_json(out: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for k in [
        "bits_per_note",
        "top1",
        "onset_error_ms",
        "false_prediction_rate",
        "notes",
    ] {
        assert!(v.get(k).is_some(), "{k} missing from {out}");
    }
    assert_eq!(v.as_object().unwrap().len(), 5, "{out}");
    v
}

fn model_of(agent: &Path, id: &Identity) -> Vec<u8> {
    jam_capture::agent::open_agent(
        std::fs::File::open(agent).unwrap(),
        std::slice::from_ref(id),
    )
    .unwrap()
    .read_model()
    .unwrap()
}

#[test]
fn agents_train_from_midi_files_and_captures_and_are_measured() {
    let d = Dir::new("agent-train");
    let (owner_key, _) = new_key(&d, "owner.key");
    let (friend_key, friend_pub) = new_key(&d, "friend.key");
    let (o, f) = (owner_key.to_str().unwrap(), friend_key.to_str().unwrap());
    let owner = read_identity(&owner_key);
    write_tune(&d.path("a.mid"), &tune(1, 12));
    write_tune_capture(&d.path("b.scp"), &owner, &tune(2, 12));
    write_tune(&d.path("held.mid"), &tune(3, 4));

    let out = ok(&jam(
        &d,
        &[
            "agent",
            "train",
            "--from",
            "a.mid",
            "b.scp",
            "--kind",
            "markov",
            "-o",
            "me.agent",
            "--to",
            &friend_pub,
            "--key",
            o,
            "--name",
            "Ada",
        ],
    ));
    assert!(
        out.contains("markov-v1 trained on 384 notes in 2 lines") && out.contains("2 recipients"),
        "{out}"
    );
    // The friend opens it; the metadata says what it learned from.
    let info = ok(&jam(&d, &["agent", "info", "me.agent", "--key", f]));
    assert!(
        info.contains("Ada")
            && info.contains("1 captures, 768 events")
            && info.contains("1 participants"),
        "{info}"
    );

    // The sealed model is exactly what jam-predict trains from those lines.
    let mut lines = jam_predict::midi::lines_from_smf(
        &std::fs::read(d.path("a.mid")).unwrap(),
        jam_predict::Role::Melody,
    )
    .unwrap();
    let expected_b = jam_predict::midi::lines_from_smf(
        &{
            write_tune(&d.path("b.mid"), &tune(2, 12));
            std::fs::read(d.path("b.mid")).unwrap()
        },
        jam_predict::Role::Melody,
    )
    .unwrap();
    lines.extend(expected_b.iter().cloned().map(|mut l| {
        l.key = None; // a capture carries no key signature
        l
    }));
    let want = jam_predict::agent::markov::train(
        &lines,
        &jam_predict::agent::markov::MarkovConfig::default(),
    )
    .to_model_bytes();
    assert_eq!(model_of(&d.path("me.agent"), &owner), want);

    // Measured on a tune it has not seen, from a file and from a capture.
    let v = eval_json(&ok(&jam(
        &d,
        &[
            "agent", "eval", "me.agent", "--on", "held.mid", "--key", o, "--json",
        ],
    )));
    assert_eq!(v["notes"], 64);
    let bits = v["bits_per_note"].as_f64().unwrap();
    let top1 = v["top1"].as_f64().unwrap();
    // Chance over 128 keys is 7 bits; the motifs make the next note likely.
    assert!(bits > 0.0 && bits < 3.0, "{v}");
    assert!(top1 > 0.5 && top1 <= 1.0, "{v}");
    let onset = v["onset_error_ms"].as_f64().unwrap();
    assert!((0.0..250.0).contains(&onset), "{v}");
    let fpr = v["false_prediction_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&fpr), "{v}");
    write_tune_capture(&d.path("held.scp"), &owner, &tune(3, 4));
    let c = eval_json(&ok(&jam(
        &d,
        &[
            "agent", "eval", "me.agent", "--on", "held.scp", "--key", o, "--json",
        ],
    )));
    assert_eq!(c["notes"], 64);
    assert_eq!(
        c["top1"], v["top1"],
        "the same tune, from a capture: {c} vs {v}"
    );
    let text = ok(&jam(
        &d,
        &["agent", "eval", "me.agent", "--on", "held.mid", "--key", f],
    ));
    assert!(
        text.contains("bits per note (pitch):") && text.contains("notes:                 64"),
        "{text}"
    );

    // A capture the key cannot open is an error naming the file.
    write_tune_capture(
        &d.path("theirs.scp"),
        &read_identity(&friend_key),
        &tune(4, 2),
    );
    let e = fails(&jam(
        &d,
        &[
            "agent",
            "train",
            "--from",
            "theirs.scp",
            "-o",
            "x.agent",
            "--key",
            o,
        ],
    ));
    assert_eq!(
        e.trim(),
        "jam: error: theirs.scp: you are not a recipient of this file"
    );
    assert!(!d.path("x.agent").exists());
}

#[test]
fn neural_agent_training_is_deterministic_for_a_seed() {
    let d = Dir::new("agent-neural");
    let (owner_key, owner_pub) = new_key(&d, "owner.key");
    let o = owner_key.to_str().unwrap();
    let owner = read_identity(&owner_key);
    write_tune(&d.path("a.mid"), &tune(1, 10));
    write_tune(&d.path("held.mid"), &tune(3, 4));
    let train = |out: &str, seed: &str| {
        // No --key: the owner is the first recipient, no key file is read.
        ok(&jam(
            &d,
            &[
                "agent", "train", "--from", "a.mid", "--kind", "neural", "-o", out, "--to",
                &owner_pub, "--seed", seed,
            ],
        ))
    };
    assert!(train("n1.agent", "7").contains("neural-v1"));
    train("n2.agent", "7");
    train("n3.agent", "8");
    let (m1, m2, m3) = (
        model_of(&d.path("n1.agent"), &owner),
        model_of(&d.path("n2.agent"), &owner),
        model_of(&d.path("n3.agent"), &owner),
    );
    assert_eq!(m1, m2, "same seed, same inputs: same model bytes");
    assert_ne!(m1, m3, "another seed starts from other weights");
    // Sealed files differ (fresh keys), the models inside do not.
    assert_ne!(
        std::fs::read(d.path("n1.agent")).unwrap(),
        std::fs::read(d.path("n2.agent")).unwrap()
    );
    let v = eval_json(&ok(&jam(
        &d,
        &[
            "agent", "eval", "n1.agent", "--on", "held.mid", "--key", o, "--json",
        ],
    )));
    assert_eq!(v["notes"], 64);
    assert!(v["bits_per_note"].as_f64().unwrap() < 4.0, "{v}");
}

#[test]
fn damaged_agents_models_and_inputs_are_clear_errors() {
    let d = Dir::new("agent-damage");
    let (owner_key, _) = new_key(&d, "owner.key");
    let o = owner_key.to_str().unwrap();
    let owner = read_identity(&owner_key);
    write_tune(&d.path("a.mid"), &tune(1, 4));
    ok(&jam(
        &d,
        &[
            "agent",
            "train",
            "--from",
            "a.mid",
            "-o",
            "good.agent",
            "--key",
            o,
        ],
    ));
    let good_model = model_of(&d.path("good.agent"), &owner);
    let eval = |file: &str| {
        fails(&jam(
            &d,
            &["agent", "eval", file, "--on", "a.mid", "--key", o],
        ))
    };

    // A modified sealed file: authentication fails.
    let mut file = std::fs::read(d.path("good.agent")).unwrap();
    let n = file.len();
    file[n - 40] ^= 0x01;
    std::fs::write(d.path("flipped.agent"), &file).unwrap();
    let e = eval("flipped.agent");
    assert!(e.contains("flipped.agent"), "{e}");
    // Cut short.
    std::fs::write(d.path("short.agent"), &file[..n / 2]).unwrap();
    let e = eval("short.agent");
    assert!(e.contains("short.agent"), "{e}");

    // Sealed correctly around model bytes that are damaged.
    let seal = |name: &str, kind: &str, model: &[u8]| {
        let meta = jam_capture::agent::AgentMeta {
            owner: owner.to_public(),
            owner_name: String::new(),
            kind: kind.into(),
            version: 1,
            created_unix_micros: 0,
            training: Default::default(),
        };
        let f = jam_capture::agent::write_agent(
            Vec::new(),
            &meta,
            &mut &model[..],
            &[owner.to_public()],
            &mut rand::rng(),
        )
        .unwrap();
        std::fs::write(d.path(name), f).unwrap();
    };
    seal("garbage.agent", "markov-v1", b"not a model at all");
    assert_eq!(
        eval("garbage.agent").trim(),
        "jam: error: garbage.agent: the model inside cannot be used: not an agent model: starts with [6e, 6f, 74, 20] instead of \"JAMM\""
    );
    let mut bad = good_model.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x10;
    seal("checksum.agent", "markov-v1", &bad);
    let e = eval("checksum.agent");
    assert!(
        e.contains(
            "checksum.agent: the model inside cannot be used: agent model is corrupt: body checksum"
        ),
        "{e}"
    );
    seal(
        "truncated.agent",
        "markov-v1",
        &good_model[..good_model.len() - 3],
    );
    let e = eval("truncated.agent");
    assert!(e.contains("agent model truncated at byte"), "{e}");
    seal("kind.agent", "neural-v1", &good_model);
    assert_eq!(
        eval("kind.agent").trim(),
        "jam: error: kind.agent: the metadata says neural-v1 but the model inside is markov-v1"
    );

    // Inputs.
    std::fs::write(d.path("bad.mid"), b"MThd\0\0\0\x06junk").unwrap();
    let e = fails(&jam(
        &d,
        &[
            "agent", "train", "--from", "bad.mid", "-o", "x.agent", "--key", o,
        ],
    ));
    assert!(
        e.starts_with("jam: error: bad.mid: not a standard midi file"),
        "{e}"
    );
    std::fs::write(d.path("notes.txt"), b"C D E").unwrap();
    let e = fails(&jam(
        &d,
        &[
            "agent",
            "eval",
            "good.agent",
            "--on",
            "notes.txt",
            "--key",
            o,
        ],
    ));
    assert_eq!(
        e.trim(),
        "jam: error: notes.txt: unknown input type (expected a .mid or .midi file or a .scp capture)"
    );
    assert!(!d.path("x.agent").exists());
}

#[test]
fn bench_modes_reports_each_mode_over_the_emulated_network() {
    let d = Dir::new("bench-modes");
    for (i, seed) in [1u64, 2, 3].into_iter().enumerate() {
        write_tune(&d.path(&format!("p{i}.mid")), &tune(seed, 3));
    }
    let out = ok(&jam(
        &d,
        &[
            "bench",
            "modes",
            "p0.mid",
            "p1.mid",
            "p2.mid",
            "--players",
            "3",
            "--preset",
            "continental",
            "--coherent-margin",
            "80",
            "--json",
        ],
    ));
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    let row = |mode: &str| rows.iter().find(|r| r["mode"] == mode).unwrap().clone();
    let (live, coherent, interval, predictive) = (
        row("live"),
        row("coherent"),
        row("interval"),
        row("predictive"),
    );
    // 3 players x 48 notes, each heard by the 2 others.
    for r in &rows {
        assert_eq!(r["notes"], 288, "{r}");
        assert_eq!(r["preset"], "continental");
    }
    // Live: at least the 80 ms one-way delay after the beat.
    assert!(
        live["onset_error_p50_ms"].as_f64().unwrap() >= 80.0,
        "{live}"
    );
    // Coherent with the offset above the tail: one sequence for everyone,
    // every note at the same offset after its beat.
    assert_eq!(coherent["dropped"], 0, "{coherent}");
    assert_eq!(coherent["coherence"], 1.0, "{coherent}");
    assert_eq!(
        coherent["onset_error_p50_ms"], coherent["onset_error_p95_ms"],
        "{coherent}"
    );
    // Interval: exactly 4 beats later, for everyone.
    assert_eq!(interval["onset_error_p95_ms"], 0.0, "{interval}");
    assert_eq!(interval["coherence"], 1.0, "{interval}");
    // Predictive: the agent stands in for late notes, and is sometimes wrong.
    let predicted = predictive["predicted"].as_u64().unwrap();
    assert!(predicted > 0, "{predictive}");
    assert!(predictive["wrongly_predicted"].as_u64().unwrap() <= predicted);
    assert!(
        predictive["onset_error_p50_ms"].as_f64().unwrap()
            < live["onset_error_p50_ms"].as_f64().unwrap(),
        "{predictive} vs {live}"
    );
    let e = fails(&jam(&d, &["bench", "modes", "p0.mid", "--players", "1"]));
    assert!(e.contains("--players must be 2 to 64, not 1"), "{e}");
}
