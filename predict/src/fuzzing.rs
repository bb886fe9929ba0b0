//! What the fuzz targets run, shared with the tests that replay their
//! corpora (`tests/fuzz_corpus.rs`, `tests/midi_fuzz_corpus.rs`), so both
//! check exactly the same properties. Not part of the API.

use crate::agent::{AgentKind, DecodedModel, Predictor, SeqContext, decode_model, frame_model};
use crate::features::{Note, Role};
use crate::midi::lines_from_smf;
use jam_core::Beats;

/// Model bytes: decoding never panics; a decoded model encodes back to the
/// same bytes; a decoded statistical model predicts without panicking.
/// True when the bytes decoded.
pub fn agent_model(bytes: &[u8]) -> bool {
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
        // Checked graph; running it needs a runtime, which the fuzzer skips.
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

/// [`agent_model`] on the input as it is and, to get past the checksum, as
/// the body of each model kind with a valid header.
pub fn agent_model_framed(bytes: &[u8]) -> bool {
    let ok = agent_model(bytes);
    for kind in [AgentKind::Markov, AgentKind::Trigram, AgentKind::Neural] {
        agent_model(&frame_model(kind, bytes));
    }
    ok
}

/// A Standard MIDI File into note lines: never panics; every line has
/// notes in onset order with no negative duration; a trigram model trains
/// on them and predicts. True when the file parsed.
pub fn midi_lines(bytes: &[u8]) -> bool {
    let Ok(lines) = lines_from_smf(bytes, Role::Melody) else {
        return false;
    };
    for line in &lines {
        assert!(!line.notes.is_empty());
        assert!(line.notes.windows(2).all(|w| w[0].onset <= w[1].onset));
        assert!(line.notes.iter().all(|n| n.duration.0 >= 0));
    }
    let model = crate::agent::trigram::train(&lines);
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
