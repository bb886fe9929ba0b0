//! Timing, quantization and prediction: what a listener hears of the other
//! players, and when.
//!
//! The network makes notes late and irregular. This crate holds the
//! decisions, as sans-IO, deterministic pieces the engine drives per remote
//! peer (time and measurements come in as arguments; seeds come from the
//! caller; nothing reads a clock, spawns, or touches a file):
//!
//! - [`jitter_buffer`]: per-peer adaptive playout delay from the recent
//!   one-way delays (a percentile; quick to grow, slow to shrink);
//! - [`late_policy`]: play, snap to the grid, drop, or reconcile with a
//!   prediction, by latency mode and role ([`LatencyMode`], [`Role`]);
//! - [`quantizer`]: grid, strength, swing, role presets, chord grouping;
//! - [`coherent`]: the shared schedule-ahead, tuned to the ensemble's p99
//!   one-way delay and changed only at bar boundaries, and the render queue
//!   whose order every peer agrees on;
//! - [`interval`]: exactly N beats later, to the sample;
//! - [`stuck_guard`]: ends notes held far longer than the agent expects;
//! - [`agent`]: the [`Agent`](agent::Agent) trait and three kinds: the
//!   statistical multiple-viewpoint model ([`agent::markov`]), the trigram
//!   baseline ([`agent::trigram`]) and the neural network exported to ONNX
//!   and run through `ort` ([`agent::neural`]); the versioned model bytes;
//! - [`features`]: notes, lines and the viewpoints derived from them;
//! - [`eval`]: bits per note, top-1, onset error, false-prediction rate;
//! - [`midi`]: note lines from Standard MIDI Files and timed messages;
//! - [`synth`]: seeded synthetic melodies for tests, benchmarks and demos.
//!
//! ```
//! use jam_core::Beats;
//! use jam_predict::agent::{markov, Predictor, Agent};
//! use jam_predict::{Note, NoteSeq, Role};
//!
//! // A scale played twice; the agent learns it in microseconds.
//! let notes: Vec<Note> = [60u8, 62, 64, 65, 67, 65, 64, 62]
//!     .iter()
//!     .cycle()
//!     .take(16)
//!     .enumerate()
//!     .map(|(i, &pitch)| Note { onset: Beats::from_f64(i as f64 * 0.5), duration: Beats::from_f64(0.5), pitch, velocity: 90 })
//!     .collect();
//! let line = NoteSeq::new(notes, Role::Melody);
//! let model = markov::train(&[line.clone()], &markov::MarkovConfig::default());
//! let mut p = Predictor::from_model_bytes(&model.to_model_bytes()).unwrap();
//! p.begin(line.context());
//! for n in &line.notes[..3] {
//!     p.observe(*n);
//! }
//! let next = p.predict().unwrap();
//! assert_eq!(next.best().pitch, 65);
//! assert_eq!(next.onset, Beats::from_f64(1.5));
//! ```
//!
//! **Inference never runs on the audio thread.** Agents are driven by the
//! engine's worker; the audio thread only receives
//! [`Prediction`](agent::Prediction)s, small `Copy` values, through a ring
//! (see [`agent`]).
//!
//! Not here: the engine that owns the per-peer state and the rings and
//! drives these pieces on its worker thread (`jam-engine`'s `timing`), sealed `.agent` files and reading captures (`jam-capture`,
//! driven by the `jam` CLI), the session document (`jam-session-crdt`).

pub mod agent;
pub mod coherent;
pub mod eval;
pub mod features;
#[doc(hidden)]
pub mod fuzzing;
pub mod interval;
pub mod jitter_buffer;
pub mod late_policy;
pub mod midi;
pub mod quantizer;
pub mod stuck_guard;
pub mod synth;

pub use features::{Note, NoteSeq, Role};
pub use jam_core::LatencyMode;
