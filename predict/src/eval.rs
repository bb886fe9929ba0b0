//! Measuring an agent on lines it has not seen.
//!
//! Each line is replayed note by note: before every note the agent predicts,
//! then observes the real note. Reported:
//!
//! - **bits per note**: mean of `-log2 P(actual pitch)` (the cross-entropy
//!   IDyOM and Conklin and Witten report; lower is better), over all 128
//!   keys as the agent gives them (with its floor, so nothing is
//!   impossible);
//! - **bits per note over a pitch alphabet** (when
//!   [`EvalConfig::alphabet`] is given): the same with the distribution
//!   restricted to the alphabet's keys and renormalised, as the published
//!   figures are computed (IDyOM's alphabet is the pitches of the corpus);
//! - **top-1**: share of notes whose pitch was the agent's first choice;
//! - **onset error**: mean `|predicted onset - actual onset|` in
//!   milliseconds (at the line's tempo) over every predicted note (every
//!   note after the first of its line);
//! - **false-prediction rate**: among the predictions the engine would
//!   play (best candidate at least [`EvalConfig::confidence`]), the share
//!   whose pitch was wrong.

use crate::agent::{AgentError, Predictor};
use crate::features::NoteSeq;

/// Settings of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalConfig {
    /// A prediction is played when its best candidate is at least this
    /// likely.
    pub confidence: f32,
    /// A pitch alphabet (bit `k` set = key `k` is in it) for
    /// [`EvalReport::bits_per_note_alphabet`]; it must hold every pitch of
    /// the lines measured.
    pub alphabet: Option<u128>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            confidence: 0.5,
            alphabet: None,
        }
    }
}

/// The alphabet of every pitch in `lines`, for [`EvalConfig::alphabet`].
pub fn pitch_alphabet<'a>(lines: impl IntoIterator<Item = &'a NoteSeq>) -> u128 {
    lines
        .into_iter()
        .flat_map(|l| &l.notes)
        .fold(0u128, |a, n| a | 1u128 << (n.pitch & 0x7F))
}

/// What [`evaluate`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalReport {
    /// Notes predicted.
    pub notes: u64,
    /// Mean bits per note (pitch), over all 128 keys.
    pub bits_per_note: f64,
    /// Mean bits per note over [`EvalConfig::alphabet`], when given.
    pub bits_per_note_alphabet: Option<f64>,
    /// Share of notes whose pitch was the first choice.
    pub top1: f64,
    /// Mean absolute onset error of predicted notes, in ms.
    pub onset_error_ms: f64,
    /// Among confident predictions, the share with the wrong pitch.
    pub false_prediction_rate: f64,
    /// Predictions confident enough to play.
    pub confident: u64,
}

/// Replays `lines` through `predictor`; see the [module docs](self).
pub fn evaluate(
    predictor: &mut Predictor,
    lines: &[NoteSeq],
    config: EvalConfig,
) -> Result<EvalReport, AgentError> {
    let mut r = EvalReport::default();
    let (mut bits, mut top1, mut onset_ms, mut onset_n, mut wrong) =
        (0.0f64, 0u64, 0.0f64, 0u64, 0u64);
    let mut bits_alphabet = 0.0f64;
    for line in lines {
        predictor.begin(line.context());
        for (i, note) in line.notes.iter().enumerate() {
            let next = predictor.next_note()?;
            let pred = crate::agent::Prediction::from_next(
                &next,
                i.checked_sub(1).map(|j| line.notes[j]),
                i as u32,
            );
            let p = f64::from(next.pitch[usize::from(note.pitch & 0x7F)]).max(1e-12);
            bits -= p.log2();
            if let Some(a) = config.alphabet {
                let mass: f64 = (0..128)
                    .filter(|k| a >> k & 1 == 1)
                    .map(|k| f64::from(next.pitch[k]))
                    .sum();
                bits_alphabet -= (p / mass.max(1e-12)).min(1.0).log2();
            }
            let best = pred.best();
            if best.pitch == note.pitch {
                top1 += 1;
            }
            if best.probability >= config.confidence {
                r.confident += 1;
                if best.pitch != note.pitch {
                    wrong += 1;
                }
            }
            if i > 0 {
                let err_beats = (i128::from(pred.onset.0) - i128::from(note.onset.0)).unsigned_abs()
                    as f64
                    / 1e6;
                onset_ms += err_beats * f64::from(line.micros_per_beat) / 1000.0;
                onset_n += 1;
            }
            r.notes += 1;
            predictor.observe(*note);
        }
    }
    if r.notes > 0 {
        r.bits_per_note = bits / r.notes as f64;
        r.top1 = top1 as f64 / r.notes as f64;
        if config.alphabet.is_some() {
            r.bits_per_note_alphabet = Some(bits_alphabet / r.notes as f64);
        }
    }
    if onset_n > 0 {
        r.onset_error_ms = onset_ms / onset_n as f64;
    }
    if r.confident > 0 {
        r.false_prediction_rate = wrong as f64 / r.confident as f64;
    }
    Ok(r)
}
