//! Replays the fuzz corpora of jam-predict's targets (`agent_model`:
//! model bytes; `midi_lines`: Standard MIDI Files) and every saved crasher
//! (`tests/fuzz-crashers/<target>/`) through the same checks the targets
//! run (`jam_predict::fuzzing`), so a regression shows up in `cargo test`
//! without a fuzzer.
//!
//! `cargo test -p jam-predict --test fuzz_corpus -- --ignored` rewrites the
//! seeds (small real models, small MIDI files).

use jam_core::Beats;
use jam_predict::agent::neural::{self, NeuralConfig};
use jam_predict::agent::{AgentKind, frame_model, markov, trigram};
use jam_predict::{Note, NoteSeq, Role};
use midly::num::{u4, u7, u15, u24, u28};
use midly::{
    Format, Fps, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind,
};
use std::path::{Path, PathBuf};

fn replay(bytes: &[u8]) -> bool {
    jam_predict::fuzzing::agent_model_framed(bytes)
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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/agent_model")
}

fn midi_corpus_dir() -> PathBuf {
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
    let valid = inputs
        .iter()
        .filter(|p| replay(&std::fs::read(p).expect("read corpus file")))
        .count();
    assert!(valid >= 3, "the seeds include one real model of each kind");
}

#[test]
fn fuzz_crashers_replay_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-crashers/agent_model");
    for path in files(&dir) {
        replay(&std::fs::read(&path).expect("read crasher"));
    }
}

#[test]
#[ignore = "rewrites the checked-in seed corpus"]
fn write_seed_corpus() {
    let notes: Vec<Note> = [60u8, 62, 64, 60, 64, 65, 67]
        .iter()
        .enumerate()
        .map(|(i, &pitch)| Note {
            onset: Beats::from_f64(i as f64 * 0.5),
            duration: Beats::from_f64(0.5),
            pitch,
            velocity: 80,
        })
        .collect();
    let lines = vec![
        NoteSeq::new(notes.clone(), Role::Melody),
        NoteSeq::new(notes, Role::Rhythm),
    ];
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let base = markov::MarkovConfig::pitch_only();
    let small = markov::MarkovConfig {
        ltm: markov::PpmSettings {
            order: 2,
            ..base.ltm
        },
        stm: markov::PpmSettings {
            order: 2,
            ..base.stm
        },
        ..base
    };
    let neural = NeuralConfig {
        context: 1,
        hidden: 2,
        epochs: 1,
        ..NeuralConfig::default()
    };
    let seeds = [
        ("markov", markov::train(&lines, &small).to_model_bytes()),
        ("trigram", trigram::train(&lines).to_model_bytes()),
        ("neural", neural::train(&lines, &neural).to_model_bytes()),
        ("header-only", frame_model(AgentKind::Markov, b"")),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

#[test]
fn midi_fuzz_corpus_replays_cleanly() {
    let inputs = files(&midi_corpus_dir());
    assert!(
        inputs.len() >= 4,
        "the seed corpus is checked in ({} files)",
        inputs.len()
    );
    let parsed = inputs
        .iter()
        .filter(|p| jam_predict::fuzzing::midi_lines(&std::fs::read(p).expect("read corpus file")))
        .count();
    assert!(
        parsed >= 3,
        "the seeds include real files ({parsed} parsed)"
    );
    // Every prefix of every seed: an error or lines, never a panic.
    for p in &inputs {
        let bytes = std::fs::read(p).unwrap();
        for cut in 0..bytes.len() {
            jam_predict::fuzzing::midi_lines(&bytes[..cut]);
        }
    }
}

#[test]
fn midi_fuzz_crashers_replay_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-crashers/midi_lines");
    for path in files(&dir) {
        jam_predict::fuzzing::midi_lines(&std::fs::read(&path).expect("read crasher"));
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
    std::fs::write(midi_corpus_dir().join(format!("seed-{name}")), out).unwrap();
}

#[test]
#[ignore = "rewrites the checked-in seed corpus"]
fn write_midi_seed_corpus() {
    std::fs::create_dir_all(midi_corpus_dir()).unwrap();
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
        midi_corpus_dir().join("seed-header-only"),
        b"MThd\0\0\0\x06\0\0\0\x01\x01\xe0",
    )
    .unwrap();
}
