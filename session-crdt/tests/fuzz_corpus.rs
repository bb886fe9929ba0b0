//! Replays the fuzz corpora (`fuzz/corpus/sync_message`, `session_load`)
//! and every input that ever crashed a fuzzer (`tests/fuzz-crashers/`)
//! through the same checks as the fuzz targets, on stable Rust.
//!
//! `JAM_WRITE_CORPUS=1 cargo test -p jam-session-crdt --test fuzz_corpus`
//! regenerates the seed corpus from real documents and messages.

use jam_core::{Beats, Meter, Micros, PeerId, SessionTime, Tempo};
use jam_session_crdt::{
    Confidence, Profile, Role, RoleAssignment, RoleSource, SessionConfig, SessionDoc,
    SessionSettings,
};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn config() -> SessionConfig {
    SessionConfig {
        id: [1; 16],
        name: "fuzz".into(),
        created_unix_ms: 0,
        origin: SessionTime(0),
        tempo: Tempo::from_bpm(120.0).unwrap(),
        meter: Meter::FOUR_FOUR,
        settings: SessionSettings::default(),
    }
}

fn profile(n: &str) -> Profile {
    Profile {
        name: n.into(),
        public_key: [0; 32],
        instrument: String::new(),
    }
}

/// The fuzz target's document (must match fuzz/fuzz_targets/sync_message.rs).
fn target_doc() -> SessionDoc {
    SessionDoc::create(&config(), PeerId([1; 16]), &profile("a"), 1).unwrap()
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    out.sort();
    out
}

/// The sync_message target: first byte picks the envelope.
fn check_sync_message(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::new();
    match kind % 4 {
        0 => {}
        1 => input.push(0x42),
        2 => input.push(0x43),
        _ => input.push(0x01),
    }
    input.extend_from_slice(rest);
    let mut d = target_doc();
    let before = d.save();
    if d.receive_sync_message(Micros(0), PeerId([2; 16]), &input)
        .is_err()
    {
        assert_eq!(d.save(), before);
    }
    let _ = d.generate_sync_message(Micros(1), PeerId([2; 16]));
}

fn check_session_load(data: &[u8]) {
    if let Ok(d) = SessionDoc::load(data, PeerId([1; 16]), 1) {
        let _ = d.snapshot();
        let again = SessionDoc::load(&d.save(), PeerId([1; 16]), 2).unwrap();
        assert_eq!(again.state(), d.state());
    }
}

fn write_corpus() {
    let sync_dir = root().join("fuzz/corpus/sync_message");
    let load_dir = root().join("fuzz/corpus/session_load");
    std::fs::create_dir_all(&sync_dir).unwrap();
    std::fs::create_dir_all(&load_dir).unwrap();
    // Messages a second peer sends to the target's document.
    let mut a = target_doc();
    let mut b = SessionDoc::new_replica(PeerId([2; 16]), 2);
    a.add_peer(PeerId([2; 16]));
    b.add_peer(PeerId([1; 16]));
    let mut n = 0;
    let save = |m: &[u8], n: &mut usize| {
        // The target prepends the envelope byte itself for kinds 1-3; a
        // kind-0 seed carries the message as is.
        let mut seed = vec![0u8];
        seed.extend_from_slice(m);
        std::fs::write(sync_dir.join(format!("seed-{n:02}")), seed).unwrap();
        *n += 1;
    };
    for round in 0..6 {
        while let Some(m) = a.generate_sync_message(Micros(0), PeerId([2; 16])) {
            b.receive_sync_message(Micros(0), PeerId([1; 16]), &m)
                .unwrap();
        }
        while let Some(m) = b.generate_sync_message(Micros(0), PeerId([1; 16])) {
            save(&m, &mut n);
            a.receive_sync_message(Micros(0), PeerId([2; 16]), &m)
                .unwrap();
        }
        if round == 1 {
            b.join(&profile("b"), SessionTime(5)).unwrap();
        }
        if round == 3 {
            b.set_role(
                PeerId([2; 16]),
                Role::Melody,
                Some(RoleAssignment {
                    confidence: Confidence::from_per_mille(700),
                    source: RoleSource::Manual,
                }),
            )
            .unwrap();
            b.change_tempo(
                Beats::from_beats(8),
                Tempo::from_bpm(90.0).unwrap(),
                Meter::FOUR_FOUR,
                SessionTime(6),
            )
            .unwrap();
        }
    }
    std::fs::write(load_dir.join("seed-session"), a.save()).unwrap();
    std::fs::write(load_dir.join("seed-empty-doc"), b.save()).unwrap();
}

#[test]
fn fuzz_corpus_and_crashers_replay_without_panics() {
    if std::env::var_os("JAM_WRITE_CORPUS").is_some() {
        write_corpus();
    }
    let sync = files(&root().join("fuzz/corpus/sync_message"));
    let load = files(&root().join("fuzz/corpus/session_load"));
    assert!(
        !sync.is_empty() && !load.is_empty(),
        "seed corpora are checked in"
    );
    for (_, data) in &sync {
        check_sync_message(data);
    }
    for (_, data) in &load {
        check_session_load(data);
    }
    let crashers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-crashers");
    for (path, data) in files(&crashers) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("sync_message") {
            check_sync_message(&data);
        } else {
            check_session_load(&data);
        }
    }
}
