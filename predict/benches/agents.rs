//! Prediction time per event: what the engine's worker does after each
//! note a player plays (`Predictor::observe` then `Predictor::predict`),
//! for the statistical agent, the trigram baseline and the neural agent on
//! tract and, in the same run, on ONNX Runtime.
//!
//! `cargo bench -p jam-predict --features onnxruntime --bench agents`
//!
//! The agents are trained on the chorale training split (see
//! `common::chorales`) and replay the test split note by note, cycling.
//! `ort` has one backend per process, so the ONNX Runtime case runs in a
//! child process (this same executable, `JAM_BENCH_BACKEND=onnxruntime`)
//! started after the others; the parent then prints the ratio tract / ONNX
//! Runtime from criterion's estimates. Without the `onnxruntime` feature
//! only the tract case runs. Test mode (`cargo test --benches`) trains on a
//! small synthetic corpus and runs each case once.

mod common;

use criterion::Criterion;
use jam_predict::agent::neural::{self, Backend, NeuralConfig};
use jam_predict::agent::{Predictor, markov, trigram};
use jam_predict::{Note, NoteSeq};
use std::hint::black_box;
use std::path::PathBuf;

const GROUP: &str = "predict_per_event";

fn corpus() -> (Vec<NoteSeq>, Vec<NoteSeq>) {
    if jam_tests::bench::measuring()
        && let Some(c) = common::chorales()
    {
        return c;
    }
    (common::synthetic(1, 40), common::synthetic(2, 8))
}

/// One event: observe the next note of the test lines, predict the one
/// after it. Starts a new line at the end of one.
struct Replay {
    lines: Vec<NoteSeq>,
    line: usize,
    note: usize,
}

impl Replay {
    fn step(&mut self, p: &mut Predictor) {
        if self.note == 0 {
            p.begin(self.lines[self.line].context());
        }
        let n: Note = self.lines[self.line].notes[self.note];
        p.observe(n);
        black_box(p.predict().expect("prediction"));
        self.note += 1;
        if self.note == self.lines[self.line].notes.len() {
            self.note = 0;
            self.line = (self.line + 1) % self.lines.len();
        }
    }
}

fn bench(c: &mut Criterion, id: &str, model: &[u8], test: &[NoteSeq]) {
    let mut p = Predictor::from_model_bytes(model).expect("model loads");
    let mut r = Replay {
        lines: test.to_vec(),
        line: 0,
        note: 0,
    };
    c.benchmark_group(GROUP)
        .bench_function(id, |b| b.iter(|| r.step(&mut p)));
}

fn neural_model(train: &[NoteSeq]) -> Vec<u8> {
    // Seeded: the parent and the child train the very same network.
    neural::train(train, &NeuralConfig::default()).to_model_bytes()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let (train, test) = corpus();
    if std::env::var("JAM_BENCH_BACKEND").as_deref() == Ok("onnxruntime") {
        let library = PathBuf::from(std::env::var_os("JAM_ONNXRUNTIME").expect("set by parent"));
        neural::init_backend(&Backend::OnnxRuntime { library }).expect("onnx runtime starts");
        bench(&mut c, "neural-onnxruntime", &neural_model(&train), &test);
        c.final_summary();
        return;
    }
    neural::init_backend(&Backend::Tract).expect("tract starts");
    bench(
        &mut c,
        "markov",
        &markov::train(&train, &markov::MarkovConfig::default()).to_model_bytes(),
        &test,
    );
    bench(
        &mut c,
        "trigram",
        &trigram::train(&train).to_model_bytes(),
        &test,
    );
    bench(&mut c, "neural-tract", &neural_model(&train), &test);
    c.final_summary();
    onnxruntime_in_a_child();
}

#[cfg(not(feature = "onnxruntime"))]
fn onnxruntime_in_a_child() {
    eprintln!("(neural-onnxruntime needs --features onnxruntime)");
}

#[cfg(feature = "onnxruntime")]
fn onnxruntime_in_a_child() {
    let Some(library) = jam_tests::onnxruntime_library() else {
        return;
    };
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(std::env::args_os().skip(1))
        .env("JAM_BENCH_BACKEND", "onnxruntime")
        .env("JAM_ONNXRUNTIME", &library)
        .status()
        .expect("start the onnx runtime case");
    assert!(status.success(), "the onnx runtime case failed: {status}");
    if !jam_tests::bench::measuring() {
        return;
    }
    let mean = |id: &str| -> Option<f64> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| jam_tests::workspace_root().join("target"));
        let path = target
            .join("criterion")
            .join(GROUP)
            .join(id)
            .join("new/estimates.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    if let (Some(t), Some(o)) = (mean("neural-tract"), mean("neural-onnxruntime")) {
        println!(
            "neural per event: tract {:.1} µs, onnx runtime {:.1} µs, ratio tract / onnx runtime {:.2}",
            t / 1e3,
            o / 1e3,
            t / o
        );
    }
}
