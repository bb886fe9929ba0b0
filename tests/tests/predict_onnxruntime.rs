//! The neural agent on ONNX Runtime (the `onnxruntime` wheel's shared
//! library, loaded by `ort` at run time): its outputs equal the trainer's
//! own forward pass, and a missing library is a clear error.
//!
//! ort has one backend per process, so everything that uses ONNX Runtime
//! lives in this one test function (its own process under nextest).

use jam_core::Beats;
use jam_predict::agent::neural::{self, Backend, NeuralConfig};
use jam_predict::agent::{DecodedModel, Predictor, decode_model};
use jam_predict::{Note, NoteSeq, Role};

fn lines(seed: u64) -> Vec<NoteSeq> {
    let mut x = seed | 1;
    (0..12)
        .map(|_| {
            let notes = (0..24)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    Note {
                        onset: Beats::from_f64(i as f64 * 0.5),
                        duration: Beats::from_f64(0.5),
                        pitch: 60 + (x % 12) as u8,
                        velocity: 64 + (x % 40) as u8,
                    }
                })
                .collect();
            NoteSeq::new(notes, Role::Melody)
        })
        .collect()
}

#[test]
fn onnxruntime_outputs_match_the_trainer_and_a_missing_library_is_an_error() {
    let Some(library) = jam_tests::onnxruntime_library() else {
        return;
    };
    // A wrong path first: a clear error, and nothing is started.
    let e = neural::init_backend(&Backend::OnnxRuntime {
        library: "/nonexistent/libonnxruntime.so.1.31.1".into(),
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("does not exist") && e.contains("pip install onnxruntime"),
        "{e}"
    );
    assert_eq!(neural::current_backend(), None);

    neural::init_backend(&Backend::OnnxRuntime { library }).unwrap();
    let model = neural::train(
        &lines(1),
        &NeuralConfig {
            hidden: 32,
            epochs: 8,
            ..NeuralConfig::default()
        },
    );
    let DecodedModel::Neural(decoded) = decode_model(&model.to_model_bytes()).unwrap() else {
        panic!("not neural")
    };
    let mut agent = neural::NeuralAgent::new(decoded).unwrap();
    let mut worst = 0.0f32;
    for line in lines(2) {
        for i in 0..line.notes.len() {
            let x = model.feature_vector(&line.context(), &line.notes[..i]);
            let want = model.forward(&x);
            let got = agent.run_features(&x).unwrap();
            for (w, g) in want.iter().zip(&got) {
                for (a, b) in w.iter().zip(g) {
                    worst = worst.max((a - b).abs());
                }
            }
        }
    }
    eprintln!("onnxruntime vs trainer: largest difference {worst:e}");
    assert!(worst <= 1e-5, "largest difference {worst}");

    // The whole agent runs on it too.
    let mut p = Predictor::from_model_bytes(&model.to_model_bytes()).unwrap();
    p.begin(lines(3)[0].context());
    p.observe(lines(3)[0].notes[0]);
    let pred = p.predict().unwrap();
    assert!(pred.best().probability > 0.0);
    assert_eq!(neural::current_backend().unwrap().name(), "onnxruntime");
}
