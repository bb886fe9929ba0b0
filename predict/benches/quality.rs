//! Prediction quality on melodies the agents have not seen: bits per note
//! (pitch) and top-1 next-pitch accuracy of every agent, in one run, on the
//! Bach chorale sopranos (music21's core corpus; split in
//! `predict/corpus/chorales.txt` by melody, so no harmonisation of a test
//! melody is trained on).
//!
//! `cargo bench -p jam-predict --bench quality`
//!
//! Agents: the statistical multiple-viewpoint model (`markov`, default
//! settings: pitch, interval, scale degree and interval x degree, long- and
//! short-term models), the same with pitch alone (IDyOM's `cpitch`), the
//! fixed-order pitch trigram baseline, and the neural agent (default
//! settings, seed 1, on tract). Also: training time, onset error of
//! predicted notes and false-prediction rate. Test mode (`cargo test
//! --benches`) uses a small synthetic corpus.

mod common;

use jam_predict::agent::neural::{self, NeuralConfig};
use jam_predict::agent::{Predictor, markov, trigram};
use jam_predict::eval::{EvalConfig, evaluate};
use std::time::Instant;

/// Trains one agent; returns its model bytes.
type Trainer<'a> = Box<dyn Fn() -> Vec<u8> + 'a>;

fn main() {
    if jam_tests::bench::listing() {
        // Test runners (nextest) list targets first: this binary holds no
        // tests, and anything printed here would break their listing.
        return;
    }
    let (train, test, corpus) = match jam_tests::bench::measuring()
        .then(common::chorales)
        .flatten()
    {
        Some((train, test)) => (train, test, "Bach chorale sopranos"),
        None => (
            common::synthetic(1, 40),
            common::synthetic(2, 8),
            "synthetic tunes (test mode)",
        ),
    };
    let count = |l: &[jam_predict::NoteSeq]| l.iter().map(|l| l.notes.len()).sum::<usize>();
    println!(
        "{corpus}: train {} lines / {} notes, test {} lines / {} notes",
        train.len(),
        count(&train),
        test.len(),
        count(&test)
    );
    let agents: [(&str, Trainer<'_>); 4] = [
        (
            "markov (multiple viewpoints)",
            Box::new(|| markov::train(&train, &markov::MarkovConfig::default()).to_model_bytes()),
        ),
        (
            "markov (pitch only)",
            Box::new(|| {
                markov::train(&train, &markov::MarkovConfig::pitch_only()).to_model_bytes()
            }),
        ),
        (
            "trigram baseline",
            Box::new(|| trigram::train(&train).to_model_bytes()),
        ),
        (
            "neural (tract)",
            Box::new(|| neural::train(&train, &NeuralConfig::default()).to_model_bytes()),
        ),
    ];
    println!(
        "{:<30} {:>9} {:>7} {:>10} {:>7} {:>7} {:>8}",
        "agent", "bits/note", "top-1", "onset ms", "false", "notes", "train s"
    );
    for (name, train_it) in agents {
        let t0 = Instant::now();
        let bytes = train_it();
        let secs = t0.elapsed().as_secs_f64();
        let mut p = Predictor::from_model_bytes(&bytes).expect("model loads");
        let r = evaluate(&mut p, &test, EvalConfig::default()).expect("evaluation");
        println!(
            "{name:<30} {:>9.3} {:>6.1}% {:>10.1} {:>6.1}% {:>7} {:>8.2}",
            r.bits_per_note,
            100.0 * r.top1,
            r.onset_error_ms,
            100.0 * r.false_prediction_rate,
            r.notes,
            secs
        );
    }
}
