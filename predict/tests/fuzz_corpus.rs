//! Replays the `agent_model` fuzz corpus (`fuzz/corpus/agent_model/`) and
//! every saved crasher (`tests/fuzz-crashers/agent_model/`) through the
//! model decoder, as the fuzz target does, so a regression shows up in
//! `cargo test` without a fuzzer.
//!
//! `cargo test -p jam-predict --test fuzz_corpus -- --ignored` rewrites the
//! seeds from small real models.

use jam_core::Beats;
use jam_predict::agent::neural::{self, NeuralConfig};
use jam_predict::agent::{
    AgentKind, DecodedModel, Predictor, SeqContext, decode_model, frame_model, markov, trigram,
};
use jam_predict::{Note, NoteSeq, Role};
use std::path::{Path, PathBuf};

fn check(bytes: &[u8]) -> bool {
    let Ok(model) = decode_model(bytes) else {
        return false;
    };
    let again = match &model {
        DecodedModel::Markov(m) => m.to_model_bytes(),
        DecodedModel::Trigram(m) => m.to_model_bytes(),
        DecodedModel::Neural(m) => m.to_model_bytes(),
    };
    assert_eq!(again, bytes, "decoding then encoding changes the model");
    if matches!(model, DecodedModel::Neural(_)) {
        return true;
    }
    let mut p = Predictor::new(model.into_agent().expect("statistical models always load"));
    p.begin(SeqContext {
        role: Role::Harmony,
        ..SeqContext::default()
    });
    for (i, pitch) in [0u8, 127, 60, 61, 200, 60].into_iter().enumerate() {
        let _ = p.predict().expect("statistical models always predict");
        p.observe(Note {
            onset: Beats(i as i64 * 250_000),
            duration: Beats(i as i64 * 1_000_000 - 1),
            pitch,
            velocity: pitch,
        });
    }
    true
}

fn replay(bytes: &[u8]) -> bool {
    let ok = check(bytes);
    for kind in [AgentKind::Markov, AgentKind::Trigram, AgentKind::Neural] {
        check(&frame_model(kind, bytes));
    }
    ok
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
    let small = markov::MarkovConfig {
        ltm_order: 2,
        stm_order: 2,
        ..markov::MarkovConfig::pitch_only()
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
