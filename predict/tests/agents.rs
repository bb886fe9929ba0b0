//! Agents end to end: training, model bytes, loading, prediction, and the
//! neural agent's ONNX graph on `ort` (tract backend, this process).

use jam_predict::agent::neural::{self, Backend, NeuralConfig};
use jam_predict::agent::{
    AgentKind, DecodedModel, ModelError, Predictor, decode_model, markov, trigram,
};
use jam_predict::eval::{EvalConfig, evaluate};

use jam_predict::NoteSeq;

/// Folk-like tunes from shared motifs: enough structure for every agent
/// to learn; different seeds give different tunes.
fn corpus(seed: u64, lines: usize) -> Vec<NoteSeq> {
    jam_predict::synth::motif_tunes(seed, lines, 6)
}

fn small_neural() -> NeuralConfig {
    NeuralConfig {
        hidden: 24,
        epochs: 12,
        seed: 11,
        ..NeuralConfig::default()
    }
}

#[test]
fn every_agent_beats_chance_on_unseen_tunes_and_markov_beats_the_trigram() {
    let train = corpus(1, 40);
    let test = corpus(2, 10);
    let cfg = EvalConfig::default();
    let m = markov::train(&train, &markov::MarkovConfig::default());
    let t = trigram::train(&train);
    let n = neural::train(&train, &small_neural());
    let mut results = Vec::new();
    for bytes in [t.to_model_bytes(), m.to_model_bytes(), n.to_model_bytes()] {
        let mut p = Predictor::from_model_bytes(&bytes).unwrap();
        let r = evaluate(&mut p, &test, cfg).unwrap();
        assert_eq!(r.notes, 10 * 24);
        // Chance over 128 keys is 7 bits.
        assert!(r.bits_per_note < 4.0, "{:?}: {r:?}", p.agent().kind());
        assert!(r.top1 > 0.3, "{:?}: {r:?}", p.agent().kind());
        results.push(r);
    }
    assert!(
        results[1].bits_per_note < results[0].bits_per_note,
        "{results:#?}"
    );
    // The rhythm is regular: the onset is predicted within a fraction of a
    // beat (500 ms at 120 BPM) on average.
    assert!(results[1].onset_error_ms < 150.0, "{results:#?}");
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let train = corpus(3, 20);
    let a = markov::train(&train, &markov::MarkovConfig::default()).to_model_bytes();
    let b = markov::train(&train, &markov::MarkovConfig::default()).to_model_bytes();
    assert_eq!(a, b);
    let a = neural::train(&train, &small_neural()).to_model_bytes();
    let b = neural::train(&train, &small_neural()).to_model_bytes();
    assert_eq!(a, b);
    let c = neural::train(
        &train,
        &NeuralConfig {
            seed: 12,
            ..small_neural()
        },
    )
    .to_model_bytes();
    assert_ne!(a, c);
}

#[test]
fn model_bytes_round_trip_with_identical_predictions() {
    let train = corpus(4, 20);
    let test = &corpus(5, 1)[0];
    let m = markov::train(&train, &markov::MarkovConfig::default());
    for bytes in [
        m.to_model_bytes(),
        trigram::train(&train).to_model_bytes(),
        neural::train(&train, &small_neural()).to_model_bytes(),
    ] {
        let decoded = decode_model(&bytes).unwrap();
        let kind = decoded.kind();
        let mut a = Predictor::new(decoded.into_agent().unwrap());
        assert_eq!(
            a.agent().to_model_bytes(),
            bytes,
            "{kind:?} re-encodes identically"
        );
        let mut b = Predictor::from_model_bytes(&a.agent().to_model_bytes()).unwrap();
        a.begin(test.context());
        b.begin(test.context());
        for n in &test.notes {
            assert_eq!(a.predict().unwrap(), b.predict().unwrap());
            a.observe(*n);
            b.observe(*n);
        }
    }
}

#[test]
fn corrupt_models_give_clear_errors() {
    let train = corpus(6, 8);
    for bytes in [
        markov::train(&train, &markov::MarkovConfig::default()).to_model_bytes(),
        trigram::train(&train).to_model_bytes(),
        neural::train(&train, &small_neural()).to_model_bytes(),
    ] {
        // A flipped byte anywhere in the body fails the checksum.
        for at in [16, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            let e = decode_model(&bad).unwrap_err();
            assert!(matches!(e, ModelError::Checksum { .. }), "{e}");
            assert!(e.to_string().starts_with("agent model is corrupt"), "{e}");
        }
        // Truncation anywhere is an error, never a panic.
        for len in [0, 3, 15, 16, bytes.len() / 3, bytes.len() - 1] {
            assert!(decode_model(&bytes[..len]).is_err());
        }
    }
    let e = decode_model(b"MThd\0\0\0\x06").unwrap_err();
    assert_eq!(
        e.to_string(),
        "not an agent model: starts with [4d, 54, 68, 64] instead of \"JAMM\""
    );
}

#[test]
fn a_body_that_passes_the_checksum_but_lies_is_still_refused() {
    // Re-wrap a damaged body with a fresh checksum, as a buggy writer
    // would: the body decoder itself must catch it.
    let train = corpus(7, 8);
    let good = markov::train(&train, &markov::MarkovConfig::default()).to_model_bytes();
    let body = &good[16..];
    let mut bad = body.to_vec();
    bad[0] = 0x80; // unknown viewpoint bit
    let mut bytes = good[..16].to_vec();
    bytes[12..16].copy_from_slice(&crc32(&bad));
    bytes.extend_from_slice(&bad);
    let e = decode_model(&bytes).unwrap_err().to_string();
    assert_eq!(
        e,
        "agent model is invalid at byte 1: viewpoint mask 0x80 is empty or unknown"
    );
}

fn crc32(b: &[u8]) -> [u8; 4] {
    // Bitwise CRC-32 (IEEE), independent of the crate under test.
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    (!c).to_be_bytes()
}

#[test]
fn onnx_on_tract_matches_the_trainers_forward_pass() {
    neural::init_backend(&Backend::Tract).unwrap();
    let train = corpus(8, 20);
    let model = neural::train(&train, &small_neural());
    let DecodedModel::Neural(decoded) = decode_model(&model.to_model_bytes()).unwrap() else {
        panic!("not neural")
    };
    let mut agent = neural::NeuralAgent::new(decoded).unwrap();
    let mut worst = 0.0f32;
    for line in &corpus(9, 3) {
        for i in 0..line.notes.len() {
            let x = model.feature_vector(&line.context(), &line.notes[..i]);
            let want = model.forward(&x);
            let got = agent.run_features(&x).unwrap();
            for (w, g) in want.iter().zip(&got) {
                assert_eq!(w.len(), g.len());
                for (a, b) in w.iter().zip(g) {
                    worst = worst.max((a - b).abs());
                }
            }
        }
    }
    eprintln!("tract vs trainer: largest difference {worst:e}");
    assert!(worst <= 1e-5, "largest difference {worst}");
    assert_eq!(agent.model().onnx(), model.onnx());
    // Starting another backend in this process is refused clearly.
    let e = neural::init_backend(&Backend::OnnxRuntime {
        library: "/nonexistent/libonnxruntime.so.1.31.1".into(),
    })
    .unwrap_err();
    assert!(e.to_string().contains("already running"), "{e}");
}

#[test]
fn kinds_have_stable_names() {
    assert_eq!(AgentKind::Markov.name(), "markov-v1");
    assert_eq!(AgentKind::Neural.name(), "neural-v1");
    assert_eq!(AgentKind::from_code(2), Some(AgentKind::Trigram));
}
