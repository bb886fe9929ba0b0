//! Replays the `midi_lines` fuzz corpus (`fuzz/corpus/midi_lines/`) and
//! every saved crasher (`tests/fuzz-crashers/midi_lines/`) through
//! [`lines_from_smf`], as the fuzz target does, so a regression shows up in
//! `cargo test` without a fuzzer.
//!
//! `cargo test -p jam-predict --test midi_fuzz_corpus -- --ignored` rewrites
//! the seeds.

use jam_predict::Role;
use jam_predict::agent::{Predictor, trigram};
use jam_predict::midi::lines_from_smf;
use midly::num::{u4, u7, u15, u24, u28};
use midly::{
    Format, Fps, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind,
};
use std::path::{Path, PathBuf};

/// What the fuzz target checks; true when the input parsed.
fn check(bytes: &[u8]) -> bool {
    let Ok(lines) = lines_from_smf(bytes, Role::Melody) else {
        return false;
    };
    for line in &lines {
        assert!(!line.notes.is_empty());
        assert!(line.notes.windows(2).all(|w| w[0].onset <= w[1].onset));
        assert!(line.notes.iter().all(|n| n.duration.0 >= 0));
    }
    let model = trigram::train(&lines);
    let mut p = Predictor::from_model_bytes(&model.to_model_bytes()).expect("own model loads");
    for line in lines.iter().take(2) {
        p.begin(line.context());
        for n in line.notes.iter().take(64) {
            let _ = p.predict().expect("trigram predicts");
            p.observe(*n);
        }
    }
    true
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p.is_file()
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    });
    v.sort();
    v
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/midi_lines")
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let inputs = files(&corpus_dir());
    assert!(
        inputs.len() >= 4,
        "the seed corpus is checked in ({} files)",
        inputs.len()
    );
    let parsed = inputs
        .iter()
        .filter(|p| check(&std::fs::read(p).expect("read corpus file")))
        .count();
    assert!(
        parsed >= 3,
        "the seeds include real files ({parsed} parsed)"
    );
    // Every prefix of every seed: an error or lines, never a panic.
    for p in &inputs {
        let bytes = std::fs::read(p).unwrap();
        for cut in 0..bytes.len() {
            check(&bytes[..cut]);
        }
    }
}

#[test]
fn fuzz_crashers_replay_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-crashers/midi_lines");
    for path in files(&dir) {
        check(&std::fs::read(&path).expect("read crasher"));
    }
}

fn ev(delta: u32, kind: TrackEventKind<'static>) -> TrackEvent<'static> {
    TrackEvent {
        delta: u28::new(delta),
        kind,
    }
}

fn on(channel: u8, key: u8, vel: u8) -> TrackEventKind<'static> {
    TrackEventKind::Midi {
        channel: u4::new(channel),
        message: MidiMessage::NoteOn {
            key: u7::new(key),
            vel: u7::new(vel),
        },
    }
}

fn save(name: &str, format: Format, timing: Timing, tracks: Vec<Vec<TrackEvent<'static>>>) {
    let smf = Smf {
        header: Header::new(format, timing),
        tracks,
    };
    let mut out = Vec::new();
    smf.write_std(&mut out).unwrap();
    std::fs::write(corpus_dir().join(format!("seed-{name}")), out).unwrap();
}

#[test]
#[ignore = "rewrites the checked-in seed corpus"]
fn write_seed_corpus() {
    std::fs::create_dir_all(corpus_dir()).unwrap();
    let tune: Vec<TrackEvent<'static>> = [60u8, 62, 64, 60, 64, 65, 67]
        .iter()
        .flat_map(|&k| [ev(0, on(0, k, 90)), ev(240, on(0, k, 0))])
        .collect();
    let conductor = vec![
        ev(
            0,
            TrackEventKind::Meta(MetaMessage::Tempo(u24::new(500_000))),
        ),
        ev(0, TrackEventKind::Meta(MetaMessage::KeySignature(2, false))),
        ev(
            0,
            TrackEventKind::Meta(MetaMessage::TimeSignature(3, 2, 24, 8)),
        ),
        ev(0, TrackEventKind::Meta(MetaMessage::EndOfTrack)),
    ];
    save(
        "format1-tune",
        Format::Parallel,
        Timing::Metrical(u15::new(480)),
        vec![conductor, tune.clone()],
    );
    let mut mixed = tune.clone();
    mixed.insert(1, ev(0, on(9, 36, 100)));
    mixed.push(ev(0, on(9, 36, 0)));
    mixed.push(ev(0, on(1, 48, 70))); // never released
    save(
        "format0-drums-held",
        Format::SingleTrack,
        Timing::Metrical(u15::new(96)),
        vec![mixed],
    );
    save(
        "timecode",
        Format::SingleTrack,
        Timing::Timecode(Fps::Fps25, 40),
        vec![tune],
    );
    std::fs::write(
        corpus_dir().join("seed-header-only"),
        b"MThd\0\0\0\x06\0\0\0\x01\x01\xe0",
    )
    .unwrap();
}
