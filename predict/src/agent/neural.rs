//! The neural agent: a small network trained here in Rust, exported as a
//! real ONNX file and run through `ort`.
//!
//! - **Inputs** (binary features, [`feature_count`] of them): for each of the
//!   last [`NeuralConfig::context`] notes, the interval to the note before
//!   it, its inter-onset class and its duration class; the last pitch; its
//!   degree in the key (when known) and the mode; the last note's position
//!   in the bar (sixteenths); the role; how many notes are known so far.
//! - **Network** ([`mlp`]): one hidden ReLU layer, four softmax heads (next
//!   pitch, inter-onset class, duration class, velocity bucket); trained
//!   with backpropagation and Adam, mini-batches shuffled by a seeded
//!   generator, early stopping on a held-out tenth of the lines. The same
//!   seed and data give bit-identical weights.
//! - **Export** ([`onnx`]): a fixed-shape ONNX graph (`features [1, D]`).
//! - **Inference** ([`runtime`]): `ort` on tract by default, or on ONNX
//!   Runtime from the PyPI wheel with the `onnxruntime` feature.
//!
//! # Body format (model kind 3)
//!
//! `context (u8) | hidden size (u16 BE) | ONNX file (LEB128 length + bytes)`.
//! The ONNX file is checked with [`onnx`]'s import before any runtime sees it.

pub(crate) mod mlp;
pub(crate) mod onnx;
pub mod runtime;

use super::codec::{Dec, Enc};
use super::{
    Agent, AgentError, AgentKind, ModelError, NextNote, PITCH_FLOOR, SeqContext, frame_model,
    normalise_with_floor,
};
use crate::features::{
    N_INTERVAL, N_RHYTHM, N_VELOCITY, Note, NoteSeq, degree_symbol, interval_symbol, rhythm_class,
    velocity_bucket,
};
use mlp::{HEADS, Mlp, NO_TARGET, Sample, TrainSettings};
pub use runtime::{Backend, current_backend, init_backend};

/// Training settings of the neural agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeuralConfig {
    /// Notes of context the network sees (1..=32).
    pub context: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Most passes over the data.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Adam's step size.
    pub learning_rate: f32,
    /// L2 penalty on the weight matrices.
    pub weight_decay: f32,
    /// Stop after this many passes without improvement on held-out lines.
    pub patience: usize,
    /// Seed of initial weights and shuffling.
    pub seed: u64,
}

impl Default for NeuralConfig {
    fn default() -> Self {
        NeuralConfig {
            context: 8,
            hidden: 128,
            epochs: 40,
            batch: 32,
            learning_rate: 2e-3,
            weight_decay: 1e-5,
            patience: 4,
            seed: 1,
        }
    }
}

const PER_NOTE: usize = N_INTERVAL + 2 * N_RHYTHM;
const POSITIONS: usize = 16;

/// Number of input features for a context of `context` notes.
pub fn feature_count(context: usize) -> usize {
    context * PER_NOTE + 128 + 12 + 2 + POSITIONS + 3 + (context + 1)
}

/// The indices of the features that are 1 before the next note, given the
/// notes so far (only the last `k` matter).
fn features(ctx: &SeqContext, notes: &[Note], k: usize, out: &mut Vec<u16>) {
    out.clear();
    let n = notes.len();
    for j in 0..k.min(n) {
        let i = n - 1 - j;
        let base = j * PER_NOTE;
        let note = notes[i];
        if i > 0 {
            let prev = notes[i - 1];
            out.push((base + usize::from(interval_symbol(prev.pitch, note.pitch))) as u16);
            out.push(
                (base + N_INTERVAL + usize::from(rhythm_class(note.onset - prev.onset))) as u16,
            );
        }
        out.push((base + N_INTERVAL + N_RHYTHM + usize::from(rhythm_class(note.duration))) as u16);
    }
    let mut off = k * PER_NOTE;
    if let Some(last) = notes.last() {
        out.push((off + usize::from(last.pitch & 0x7F)) as u16);
    }
    off += 128;
    if let (Some(key), Some(last)) = (ctx.key, notes.last()) {
        out.push((off + usize::from(degree_symbol(key, last.pitch))) as u16);
    }
    off += 12;
    if let Some(key) = ctx.key {
        out.push((off + usize::from(key.minor)) as u16);
    }
    off += 2;
    if let Some(last) = notes.last() {
        let bar = ctx.bar_length.0.max(1);
        let pos = last.onset.0.rem_euclid(bar) as i128 * POSITIONS as i128 / i128::from(bar);
        out.push((off + pos.clamp(0, POSITIONS as i128 - 1) as usize) as u16);
    }
    off += POSITIONS;
    out.push((off + ctx.role.index()) as u16);
    off += 3;
    out.push((off + n.min(k)) as u16);
}

fn samples(lines: &[NoteSeq], k: usize) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in lines {
        let ctx = line.context();
        for (i, note) in line.notes.iter().enumerate() {
            let mut active = Vec::new();
            features(&ctx, &line.notes[..i], k, &mut active);
            let ioi = if i > 0 {
                rhythm_class(note.onset - line.notes[i - 1].onset)
            } else {
                NO_TARGET
            };
            out.push(Sample {
                active,
                targets: [
                    note.pitch & 0x7F,
                    ioi,
                    rhythm_class(note.duration),
                    velocity_bucket(note.velocity),
                ],
            });
        }
    }
    out
}

/// A trained network with its ONNX file.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuralModel {
    context: usize,
    net: Mlp,
    onnx: Vec<u8>,
}

/// Trains the neural agent on `lines` (every tenth line is held out for
/// early stopping). Deterministic for a seed.
pub fn train(lines: &[NoteSeq], config: &NeuralConfig) -> NeuralModel {
    let k = config.context.clamp(1, 32);
    let (mut fit, mut held) = (Vec::new(), Vec::new());
    for (i, l) in lines.iter().enumerate() {
        if lines.len() >= 10 && i % 10 == 9 {
            held.push(l.clone());
        } else {
            fit.push(l.clone());
        }
    }
    let net = mlp::train(
        feature_count(k),
        &samples(&fit, k),
        &samples(&held, k),
        TrainSettings {
            hidden: config.hidden.clamp(1, 4096),
            epochs: config.epochs,
            batch: config.batch,
            learning_rate: config.learning_rate,
            weight_decay: config.weight_decay,
            patience: config.patience,
            seed: config.seed,
        },
    );
    NeuralModel {
        context: k,
        onnx: onnx::export(&net),
        net,
    }
}

impl NeuralModel {
    /// The ONNX file (a real one: `onnx.load` and ONNX Runtime read it).
    pub fn onnx(&self) -> &[u8] {
        &self.onnx
    }

    /// Notes of context.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Number of input features.
    pub fn feature_count(&self) -> usize {
        self.net.d
    }

    /// The trainer's own forward pass on a dense feature vector: the four
    /// heads' probabilities (pitch, ioi, duration, velocity). What the ONNX
    /// runtimes are checked against.
    pub fn forward(&self, features: &[f32]) -> [Vec<f32>; HEADS] {
        self.net.forward(features)
    }

    /// The dense feature vector before the next note of a line in `ctx`
    /// after `notes`.
    pub fn feature_vector(&self, ctx: &SeqContext, notes: &[Note]) -> Vec<f32> {
        let mut active = Vec::new();
        features(ctx, notes, self.context, &mut active);
        let mut x = vec![0.0f32; self.net.d];
        for i in active {
            if let Some(v) = x.get_mut(usize::from(i)) {
                *v = 1.0;
            }
        }
        x
    }

    /// The model bytes (with the header).
    pub fn to_model_bytes(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(self.context as u8)
            .u16(self.net.h as u16)
            .bytes(&self.onnx);
        frame_model(AgentKind::Neural, &e.buf)
    }

    /// Reads a body written by [`NeuralModel::to_model_bytes`], checking
    /// the ONNX graph.
    pub fn decode_body(body: &[u8]) -> Result<NeuralModel, ModelError> {
        let mut d = Dec::new(body);
        let context = usize::from(d.u8()?);
        if !(1..=32).contains(&context) {
            return Err(d.invalid(format!("context of {context} notes (1 to 32)")));
        }
        let hidden = usize::from(d.u16()?);
        let onnx = d.bytes()?.to_vec();
        if !d.is_empty() {
            return Err(d.invalid(format!("{} bytes after the onnx file", d.remaining())));
        }
        let net = onnx::import(&onnx)?;
        if net.d != feature_count(context) || net.h != hidden {
            return Err(ModelError::Onnx(format!(
                "graph is {} × {}, the header says {} × {hidden}",
                net.d,
                net.h,
                feature_count(context)
            )));
        }
        Ok(NeuralModel { context, net, onnx })
    }
}

/// The neural agent: the model running in an `ort` session.
#[derive(Debug)]
pub struct NeuralAgent {
    model: NeuralModel,
    runner: runtime::OrtRunner,
    context: SeqContext,
    notes: Vec<Note>,
    x: Vec<f32>,
    active: Vec<u16>,
}

impl NeuralAgent {
    /// Loads `model` into a session on the running backend (tract if none
    /// was started).
    pub fn new(model: NeuralModel) -> Result<NeuralAgent, ModelError> {
        let runner = runtime::OrtRunner::new(&model.onnx, model.net.d)?;
        Ok(NeuralAgent {
            x: vec![0.0; model.net.d],
            model,
            runner,
            context: SeqContext::default(),
            notes: Vec::new(),
            active: Vec::new(),
        })
    }

    /// The model.
    pub fn model(&self) -> &NeuralModel {
        &self.model
    }

    /// Runs the session on a dense feature vector (for the parity checks).
    pub fn run_features(&mut self, x: &[f32]) -> Result<[Vec<f32>; HEADS], AgentError> {
        self.runner.run(x).map_err(AgentError::Inference)
    }
}

impl Agent for NeuralAgent {
    fn kind(&self) -> AgentKind {
        AgentKind::Neural
    }

    fn begin(&mut self, context: SeqContext) {
        self.context = context;
        self.notes.clear();
    }

    fn observe(&mut self, note: Note) {
        self.notes.push(note);
        // Only the last `context` notes matter; keep the buffer short.
        let k = self.model.context;
        if self.notes.len() > 4 * k + 16 {
            self.notes.drain(..self.notes.len() - k - 1);
        }
    }

    fn next_note(&mut self) -> Result<NextNote, AgentError> {
        features(
            &self.context,
            &self.notes,
            self.model.context,
            &mut self.active,
        );
        self.x.iter_mut().for_each(|v| *v = 0.0);
        for &i in &self.active {
            if let Some(v) = self.x.get_mut(usize::from(i)) {
                *v = 1.0;
            }
        }
        let out = self.runner.run(&self.x).map_err(AgentError::Inference)?;
        let mut next = NextNote::default();
        let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        normalise_with_floor(&widen(&out[0]), &mut next.pitch, PITCH_FLOOR);
        normalise_with_floor(&widen(&out[1]), &mut next.ioi[..N_RHYTHM], 0.0);
        normalise_with_floor(&widen(&out[2]), &mut next.duration[..N_RHYTHM], 0.0);
        normalise_with_floor(&widen(&out[3]), &mut next.velocity[..N_VELOCITY], 0.0);
        Ok(next)
    }

    fn to_model_bytes(&self) -> Vec<u8> {
        self.model.to_model_bytes()
    }
}
