//! Agents: models of one player that predict their next note.
//!
//! Every agent implements [`Agent`]: it is told a new line begins
//! ([`Agent::begin`], with the role and what is known of key and meter),
//! observes the notes as they are played ([`Agent::observe`]), and gives
//! the distribution of the next note ([`Agent::next_note`]): pitch, inter-onset
//! interval class, duration class and velocity bucket. [`Predictor`] wraps
//! any agent and turns that into a [`Prediction`], a small `Copy` value with
//! the likeliest pitches, their probabilities, and the expected onset,
//! duration and velocity.
//!
//! Three kinds ([`AgentKind`]):
//! - [`markov`]: the built-in statistical agent, a variable-order
//!   multiple-viewpoint model in the style of PPM and IDyOM (long- and
//!   short-term models, entropy-weighted combination);
//! - [`trigram`]: a fixed-order pitch trigram, the baseline;
//! - [`neural`]: a small neural network trained here, exported as a real
//!   ONNX file and run through `ort`.
//!
//! # Real-time boundary
//!
//! **Inference runs on the engine's worker thread, never in the audio
//! thread's `process()`.** [`Agent::next_note`] allocates and may take tens of
//! microseconds (hundreds for the neural agent); it is documented
//! "Realtime-safe: no". The worker calls [`Predictor::predict`] right after
//! each observed note, well before the predicted note's deadline, and hands
//! the [`Prediction`] (a fixed-size `Copy` value, no heap data) to the audio
//! thread through a fixed-capacity ring. [`Prediction::observed`] tells the
//! audio thread which note the prediction follows, so a stale one (the real
//! note already arrived) is discarded there without asking anyone.
//!
//! # Model bytes
//!
//! [`Agent::to_model_bytes`] writes, and [`decode_model`] reads, the bytes a
//! `.agent` file carries: a header
//!
//! ```text
//! "JAMM" | format version (u16 BE; per kind: markov 2, trigram 1, neural 1)
//!        | kind (u8) | flags (u8, 0)
//!        | body length (u32 BE) | CRC-32 of the body (u32 BE) | body
//! ```
//!
//! then a body whose layout belongs to the kind (each module documents its
//! own). Any damage is a [`ModelError`] that says what and where; nothing
//! in a model can make the decoder panic or allocate more than the bytes
//! justify (fuzzed: `fuzz/fuzz_targets/agent_model.rs`).

pub(crate) mod codec;
pub mod markov;
pub mod neural;
pub(crate) mod ppm;
pub mod trigram;

use crate::features::{
    Key, N_RHYTHM, N_VELOCITY, Note, NoteSeq, Role, rhythm_value, velocity_value,
};
use codec::{Dec, Enc};
use jam_core::Beats;

/// The model kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentKind {
    /// The multiple-viewpoint variable-order model ([`markov`]).
    Markov,
    /// The fixed-order pitch trigram ([`trigram`]).
    Trigram,
    /// The neural network ([`neural`]).
    Neural,
}

impl AgentKind {
    /// The byte in the model header.
    pub const fn code(self) -> u8 {
        match self {
            AgentKind::Markov => 1,
            AgentKind::Trigram => 2,
            AgentKind::Neural => 3,
        }
    }

    /// The kind with header byte `code`.
    pub const fn from_code(code: u8) -> Option<AgentKind> {
        match code {
            1 => Some(AgentKind::Markov),
            2 => Some(AgentKind::Trigram),
            3 => Some(AgentKind::Neural),
            _ => None,
        }
    }

    /// The kind's short lowercase name, for messages.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            AgentKind::Markov => "markov",
            AgentKind::Trigram => "trigram",
            AgentKind::Neural => "neural",
        }
    }

    /// The body format version this build writes and reads. Markov
    /// models are at version 2 (the PPM and combination settings joined
    /// the body, and the viewpoint set grew); version 1 is refused.
    pub const fn format_version(self) -> u16 {
        match self {
            AgentKind::Markov => 2,
            AgentKind::Trigram | AgentKind::Neural => 1,
        }
    }

    /// The name stored in `.agent` metadata and shown to people
    /// (`markov-v1`, `trigram-v1`, `neural-v1`).
    pub const fn name(self) -> &'static str {
        match self {
            AgentKind::Markov => "markov-v1",
            AgentKind::Trigram => "trigram-v1",
            AgentKind::Neural => "neural-v1",
        }
    }
}

/// Why model bytes cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The bytes do not start with `JAMM`.
    #[error("not an agent model: starts with {0:02x?} instead of \"JAMM\"")]
    BadMagic([u8; 4]),
    /// A format version this build does not read (an older or newer
    /// layout of the kind's body).
    #[error(
        "{} agent model format version {version} is not supported (this build reads \
         version {supported}; train the model again)",
        .kind.label()
    )]
    UnsupportedVersion {
        /// The kind in the header.
        kind: AgentKind,
        /// The version in the header.
        version: u16,
        /// The version this build reads for that kind.
        supported: u16,
    },
    /// An unknown model kind.
    #[error("unknown agent model kind {0}")]
    UnknownKind(u8),
    /// The bytes end too early.
    #[error("agent model truncated at byte {offset}: needs {needed} more bytes, {available} left")]
    Truncated {
        /// Where.
        offset: usize,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// The body does not match its checksum.
    #[error("agent model is corrupt: body checksum {actual:08x} does not match {expected:08x}")]
    Checksum {
        /// From the header.
        expected: u32,
        /// Of the body.
        actual: u32,
    },
    /// A field holds a value the format does not allow.
    #[error("agent model is invalid at byte {offset}: {what}")]
    Invalid {
        /// Where (in the body for body fields).
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// The embedded ONNX graph is not the one this crate exports.
    #[error("agent model's onnx graph is invalid: {0}")]
    Onnx(String),
    /// The inference runtime refused the model.
    #[error("the onnx runtime could not load the agent model: {0}")]
    Runtime(String),
}

/// Why a prediction could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The inference runtime failed.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// What is known about a line before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqContext {
    /// The player's role.
    pub role: Role,
    /// The key, if known.
    pub key: Option<Key>,
    /// Bar length in beats.
    pub bar_length: Beats,
}

impl Default for SeqContext {
    fn default() -> Self {
        SeqContext {
            role: Role::Melody,
            key: None,
            bar_length: Beats::from_beats(4),
        }
    }
}

impl NoteSeq {
    /// The context to [`Agent::begin`] this line with.
    pub fn context(&self) -> SeqContext {
        SeqContext {
            role: self.role,
            key: self.key,
            bar_length: if self.bar_length.0 > 0 {
                self.bar_length
            } else {
                Beats::from_beats(4)
            },
        }
    }
}

/// The distribution of the next note.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NextNote {
    /// Probability of each MIDI key; sums to 1.
    pub pitch: [f32; 128],
    /// Probability of each inter-onset class ([`crate::features::RHYTHM_CLASSES`]).
    pub ioi: [f32; N_RHYTHM],
    /// Probability of each duration class.
    pub duration: [f32; N_RHYTHM],
    /// Probability of each velocity bucket.
    pub velocity: [f32; N_VELOCITY],
}

impl Default for NextNote {
    fn default() -> Self {
        NextNote {
            pitch: [1.0 / 128.0; 128],
            ioi: [1.0 / N_RHYTHM as f32; N_RHYTHM],
            duration: [1.0 / N_RHYTHM as f32; N_RHYTHM],
            velocity: [1.0 / N_VELOCITY as f32; N_VELOCITY],
        }
    }
}

/// Share of probability every agent's pitch distribution gives to all 128
/// keys evenly, so that no note is ever impossible (a note outside what the
/// agent has seen costs at most about 17 bits instead of infinitely many).
pub const PITCH_FLOOR: f64 = 1e-3;

/// Mixes `p` (a distribution over `out`'s length, any scale) with the
/// uniform floor and writes it normalised into `out`.
pub(crate) fn normalise_with_floor(p: &[f64], out: &mut [f32], floor: f64) {
    let sum: f64 = p.iter().filter(|x| x.is_finite() && **x > 0.0).sum();
    let n = out.len() as f64;
    for (o, &x) in out.iter_mut().zip(p) {
        let x = if x.is_finite() && x > 0.0 && sum > 0.0 {
            x / sum
        } else {
            0.0
        };
        let v = if sum > 0.0 {
            (1.0 - floor) * x + floor / n
        } else {
            1.0 / n
        };
        *o = v as f32;
    }
}

/// A model of one player. See the [module docs](self).
///
/// Realtime-safe: no (every method may allocate); run on the worker thread.
pub trait Agent: Send {
    /// The model kind.
    fn kind(&self) -> AgentKind;
    /// A new line begins (a new piece, or after a long pause): forget the
    /// short-term context.
    fn begin(&mut self, context: SeqContext);
    /// The player played `note` (notes in onset order).
    fn observe(&mut self, note: Note);
    /// The distribution of the next note given everything observed since
    /// [`Agent::begin`].
    fn next_note(&mut self) -> Result<NextNote, AgentError>;
    /// The model bytes (with the header), for a `.agent` file.
    fn to_model_bytes(&self) -> Vec<u8>;
}

/// One candidate pitch of a [`Prediction`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Candidate {
    /// MIDI key.
    pub pitch: u8,
    /// Its probability (0 for an empty slot).
    pub probability: f32,
}

/// Candidates kept in a [`Prediction`].
pub const MAX_CANDIDATES: usize = 4;

/// A prediction of the next note, ready for the audio thread: fixed size,
/// `Copy`, no heap data.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prediction {
    /// How many notes had been observed when it was made; the note it
    /// predicts is number `observed` (0-based). Lets the audio thread drop a
    /// prediction the real note has overtaken.
    pub observed: u32,
    /// Likeliest pitches, best first.
    pub candidates: [Candidate; MAX_CANDIDATES],
    /// Expected onset of the next note.
    pub onset: Beats,
    /// Expected duration.
    pub duration: Beats,
    /// Expected velocity.
    pub velocity: u8,
}

impl Prediction {
    /// The likeliest candidate.
    pub fn best(&self) -> Candidate {
        self.candidates[0]
    }

    /// Builds a prediction from a distribution: the top pitches, and the
    /// likeliest rhythm classes and velocity bucket after `last`.
    pub fn from_next(next: &NextNote, last: Option<Note>, observed: u32) -> Prediction {
        let mut candidates = [Candidate::default(); MAX_CANDIDATES];
        for (pitch, &p) in next.pitch.iter().enumerate() {
            // Insert into the sorted top list (ties: lower pitch first).
            let mut c = Candidate {
                pitch: pitch as u8,
                probability: p,
            };
            for slot in candidates.iter_mut() {
                if c.probability > slot.probability {
                    std::mem::swap(slot, &mut c);
                }
            }
        }
        let argmax = |xs: &[f32]| {
            let mut best = 0;
            for (i, &x) in xs.iter().enumerate() {
                if x > xs[best] {
                    best = i;
                }
            }
            best as u8
        };
        let ioi = rhythm_value(argmax(&next.ioi));
        let onset = last.map_or(Beats::ZERO, |n| n.onset + ioi);
        Prediction {
            observed,
            candidates,
            onset,
            duration: rhythm_value(argmax(&next.duration)),
            velocity: velocity_value(argmax(&next.velocity)),
        }
    }
}

/// Any agent plus the bookkeeping a prediction needs (the last note and
/// how many were observed).
pub struct Predictor {
    agent: Box<dyn Agent>,
    last: Option<Note>,
    observed: u32,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("kind", &self.agent.kind())
            .field("observed", &self.observed)
            .finish()
    }
}

impl Predictor {
    /// Wraps `agent`.
    pub fn new(agent: Box<dyn Agent>) -> Predictor {
        Predictor {
            agent,
            last: None,
            observed: 0,
        }
    }

    /// Loads model bytes (see [`decode_model`]) into a predictor.
    pub fn from_model_bytes(bytes: &[u8]) -> Result<Predictor, ModelError> {
        Ok(Predictor::new(decode_model(bytes)?.into_agent()?))
    }

    /// The agent.
    pub fn agent(&self) -> &dyn Agent {
        &*self.agent
    }

    /// A new line begins.
    pub fn begin(&mut self, context: SeqContext) {
        self.agent.begin(context);
        self.last = None;
        self.observed = 0;
    }

    /// The player played `note`.
    pub fn observe(&mut self, note: Note) {
        self.agent.observe(note);
        self.last = Some(note);
        self.observed = self.observed.saturating_add(1);
    }

    /// The distribution of the next note.
    pub fn next_note(&mut self) -> Result<NextNote, AgentError> {
        self.agent.next_note()
    }

    /// The prediction of the next note. Realtime-safe: no.
    pub fn predict(&mut self) -> Result<Prediction, AgentError> {
        let next = self.agent.next_note()?;
        Ok(Prediction::from_next(&next, self.last, self.observed))
    }
}

const MAGIC: &[u8; 4] = b"JAMM";
const HEADER_LEN: usize = 16;

/// Wraps a model body in the header (kind, version, length, checksum).
/// Each model's `to_model_bytes` uses it; tools and the fuzzer use it to
/// build model bytes around a body of their own.
pub fn frame_model(kind: AgentKind, body: &[u8]) -> Vec<u8> {
    let mut e = Enc::default();
    e.buf.extend_from_slice(MAGIC);
    e.u16(kind.format_version())
        .u8(kind.code())
        .u8(0)
        .u32(body.len() as u32)
        .u32(crc32fast::hash(body));
    e.buf.extend_from_slice(body);
    e.buf
}

/// Checks the header and checksum; returns the kind and the body.
pub fn unframe_model(bytes: &[u8]) -> Result<(AgentKind, &[u8]), ModelError> {
    let mut d = Dec::new(bytes);
    let magic = d.take(4)?;
    if magic != MAGIC {
        let mut m = [0u8; 4];
        m.copy_from_slice(magic);
        return Err(ModelError::BadMagic(m));
    }
    let version = d.u16()?;
    let code = d.u8()?;
    let kind = AgentKind::from_code(code).ok_or(ModelError::UnknownKind(code))?;
    if version != kind.format_version() {
        return Err(ModelError::UnsupportedVersion {
            kind,
            version,
            supported: kind.format_version(),
        });
    }
    let flags = d.u8()?;
    if flags != 0 {
        return Err(d.invalid(format!("unknown flags {flags:#04x}")));
    }
    let len = d.u32()? as usize;
    let expected = d.u32()?;
    let body = d.take(len)?;
    if !d.is_empty() {
        return Err(d.invalid(format!("{} bytes after the model body", d.remaining())));
    }
    let actual = crc32fast::hash(body);
    if actual != expected {
        return Err(ModelError::Checksum { expected, actual });
    }
    debug_assert_eq!(bytes.len(), HEADER_LEN + len);
    Ok((kind, body))
}

/// A decoded model, not yet running.
#[derive(Debug, Clone)]
pub enum DecodedModel {
    /// A [`markov`] model.
    Markov(markov::MarkovModel),
    /// A [`trigram`] model.
    Trigram(trigram::TrigramModel),
    /// A [`neural`] model (its ONNX graph checked, not yet loaded into a
    /// runtime).
    Neural(neural::NeuralModel),
}

impl DecodedModel {
    /// The kind.
    pub fn kind(&self) -> AgentKind {
        match self {
            DecodedModel::Markov(_) => AgentKind::Markov,
            DecodedModel::Trigram(_) => AgentKind::Trigram,
            DecodedModel::Neural(_) => AgentKind::Neural,
        }
    }

    /// A running agent (the neural one through `ort` on the backend
    /// chosen with [`neural::init_backend`], tract by default).
    pub fn into_agent(self) -> Result<Box<dyn Agent>, ModelError> {
        Ok(match self {
            DecodedModel::Markov(m) => Box::new(markov::MarkovAgent::new(std::sync::Arc::new(m))),
            DecodedModel::Trigram(m) => {
                Box::new(trigram::TrigramAgent::new(std::sync::Arc::new(m)))
            }
            DecodedModel::Neural(m) => Box::new(neural::NeuralAgent::new(m)?),
        })
    }
}

/// Reads model bytes: header, checksum, and the whole body, validated.
/// Never panics; never touches an inference runtime.
pub fn decode_model(bytes: &[u8]) -> Result<DecodedModel, ModelError> {
    let (kind, body) = unframe_model(bytes)?;
    Ok(match kind {
        AgentKind::Markov => DecodedModel::Markov(markov::MarkovModel::decode_body(body)?),
        AgentKind::Trigram => DecodedModel::Trigram(trigram::TrigramModel::decode_body(body)?),
        AgentKind::Neural => DecodedModel::Neural(neural::NeuralModel::decode_body(body)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_damage_gives_clear_errors() {
        let good = frame_model(AgentKind::Trigram, b"body");
        assert_eq!(
            unframe_model(&good).unwrap(),
            (AgentKind::Trigram, &b"body"[..])
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(unframe_model(&bad), Err(ModelError::BadMagic(_))));
        let mut bad = good.clone();
        bad[5] = 9;
        assert_eq!(
            unframe_model(&bad),
            Err(ModelError::UnsupportedVersion {
                kind: AgentKind::Trigram,
                version: 9,
                supported: 1
            })
        );
        // A markov model of the first layout is refused by its version.
        let mut old = frame_model(AgentKind::Markov, b"body");
        old[5] = 1;
        assert_eq!(
            unframe_model(&old).unwrap_err().to_string(),
            "markov agent model format version 1 is not supported (this build reads version 2; \
             train the model again)"
        );
        let mut bad = good.clone();
        bad[6] = 77;
        assert_eq!(unframe_model(&bad), Err(ModelError::UnknownKind(77)));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            unframe_model(&bad),
            Err(ModelError::Checksum { .. })
        ));
        assert!(matches!(
            unframe_model(&good[..10]),
            Err(ModelError::Truncated { .. })
        ));
        let msg = unframe_model(&good[..18]).unwrap_err().to_string();
        assert_eq!(
            msg,
            "agent model truncated at byte 16: needs 4 more bytes, 2 left"
        );
    }

    #[test]
    fn predictions_rank_candidates_and_place_the_onset() {
        let mut next = NextNote {
            pitch: [0.0; 128],
            ioi: [0.0; N_RHYTHM],
            ..NextNote::default()
        };
        next.pitch[60] = 0.5;
        next.pitch[62] = 0.3;
        next.pitch[64] = 0.1;
        next.pitch[65] = 0.05;
        next.pitch[67] = 0.05;
        next.ioi[6] = 1.0; // half a beat
        let last = Note {
            onset: Beats::from_beats(3),
            duration: Beats::ONE,
            pitch: 60,
            velocity: 80,
        };
        let p = Prediction::from_next(&next, Some(last), 7);
        assert_eq!(p.candidates.map(|c| c.pitch), [60, 62, 64, 65]);
        assert_eq!(p.onset, Beats::from_f64(3.5));
        assert_eq!(p.observed, 7);
    }
}
