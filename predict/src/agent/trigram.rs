//! The baseline: a fixed-order pitch trigram with Witten-Bell smoothing.
//!
//! `P(p | a b)` interpolates the trigram, bigram and unigram estimates and a
//! uniform distribution over the pitches seen in training:
//!
//! ```text
//! P(p | a b) = (c(a b p) + T(a b) · P(p | b)) / (c(a b) + T(a b))
//! ```
//!
//! where `T(ctx)` is the number of distinct pitches seen after `ctx`. Onset,
//! duration and velocity come from bigrams over their classes, smoothed the
//! same way. No short-term model, no viewpoints, one order: the yardstick
//! the statistical and neural agents are measured against.
//!
//! # Body format (model kind 2)
//!
//! `lowest pitch (u8) | highest pitch (u8) | pitch table | ioi table |
//! duration table | velocity table`, each table `order (u8) | alphabet
//! (u16 BE) | entry count (LEB128) | per entry in increasing order: context
//! length (u8) | context symbols (u16 BE each) | symbol (u16 BE) | count (LEB128)`.

use super::codec::{Dec, Enc};
use super::{
    Agent, AgentError, AgentKind, ModelError, NextNote, PITCH_FLOOR, SeqContext, frame_model,
    normalise_with_floor,
};
use crate::features::{N_RHYTHM, N_VELOCITY, Note, NoteSeq, rhythm_class, velocity_bucket};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Counts of a fixed-order model with its lower orders.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    order: usize,
    alphabet: u16,
    /// (context, symbol) -> count, for every context length 0..=order.
    counts: BTreeMap<(Vec<u16>, u16), u32>,
    /// context -> (total, distinct)
    totals: BTreeMap<Vec<u16>, (u32, u32)>,
}

impl Table {
    fn new(order: usize, alphabet: u16) -> Table {
        Table {
            order,
            alphabet,
            counts: BTreeMap::new(),
            totals: BTreeMap::new(),
        }
    }

    fn add_count(&mut self, ctx: &[u16], s: u16, c: u32) {
        let e = self.counts.entry((ctx.to_vec(), s)).or_insert(0);
        let t = self.totals.entry(ctx.to_vec()).or_insert((0, 0));
        if *e == 0 {
            t.1 += 1;
        }
        *e = e.saturating_add(c);
        t.0 = t.0.saturating_add(c);
    }

    fn add_sequence(&mut self, seq: &[u16]) {
        for i in 0..seq.len() {
            for k in 0..=self.order.min(i) {
                self.add_count(&seq[i - k..i], seq[i], 1);
            }
        }
    }

    fn prob(&self, history: &[u16], s: u16) -> f64 {
        let mut p = 1.0 / f64::from(self.alphabet);
        for k in 0..=self.order.min(history.len()) {
            let ctx = &history[history.len() - k..];
            let Some(&(total, distinct)) = self.totals.get(ctx) else {
                break;
            };
            let c = self.counts.get(&(ctx.to_vec(), s)).copied().unwrap_or(0);
            p = (f64::from(c) + f64::from(distinct) * p) / f64::from(total + distinct);
        }
        p
    }

    fn encode(&self, e: &mut Enc) {
        e.u8(self.order as u8)
            .u16(self.alphabet)
            .var(self.counts.len() as u64);
        for ((ctx, s), c) in &self.counts {
            e.u8(ctx.len() as u8);
            for &x in ctx {
                e.u16(x);
            }
            e.u16(*s).var(u64::from(*c));
        }
    }

    fn decode(d: &mut Dec<'_>, alphabet: u16) -> Result<Table, ModelError> {
        let order = usize::from(d.u8()?);
        if order > 2 {
            return Err(d.invalid(format!("trigram table of order {order}")));
        }
        let a = d.u16()?;
        if a != alphabet {
            return Err(d.invalid(format!("table alphabet {a}, expected {alphabet}")));
        }
        let mut t = Table::new(order, alphabet);
        let n = d.count(4, "table entry")?;
        let mut prev: Option<(Vec<u16>, u16)> = None;
        for _ in 0..n {
            let len = usize::from(d.u8()?);
            if len > order {
                return Err(d.invalid(format!(
                    "context of {len} symbols in an order-{order} table"
                )));
            }
            let mut ctx = Vec::with_capacity(len);
            for _ in 0..len {
                let x = d.u16()?;
                if x >= alphabet {
                    return Err(d.invalid(format!("symbol {x} outside the alphabet of {alphabet}")));
                }
                ctx.push(x);
            }
            let s = d.u16()?;
            if s >= alphabet {
                return Err(d.invalid(format!("symbol {s} outside the alphabet of {alphabet}")));
            }
            let c = d.var_max(u64::from(u32::MAX), "count")? as u32;
            if c == 0 {
                return Err(d.invalid("zero count"));
            }
            let entry = (ctx, s);
            if prev.as_ref().is_some_and(|p| *p >= entry) {
                return Err(d.invalid("table entries are not in increasing order"));
            }
            t.add_count(&entry.0, entry.1, c);
            prev = Some(entry);
        }
        Ok(t)
    }
}

/// A trained trigram model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrigramModel {
    lo: u8,
    hi: u8,
    pitch: Table,
    ioi: Table,
    duration: Table,
    velocity: Table,
}

/// Learns the baseline from `lines`.
pub fn train(lines: &[NoteSeq]) -> TrigramModel {
    let (lo, hi) = lines
        .iter()
        .flat_map(|l| l.notes.iter().map(|n| n.pitch))
        .fold((127u8, 0u8), |(lo, hi), p| (lo.min(p), hi.max(p)));
    let (lo, hi) = if lo > hi { (0, 127) } else { (lo, hi) };
    let mut m = TrigramModel {
        lo,
        hi,
        pitch: Table::new(2, u16::from(hi - lo) + 1),
        ioi: Table::new(1, N_RHYTHM as u16),
        duration: Table::new(1, N_RHYTHM as u16),
        velocity: Table::new(1, N_VELOCITY as u16),
    };
    for l in lines {
        let pitches: Vec<u16> = l.notes.iter().map(|n| u16::from(n.pitch - lo)).collect();
        m.pitch.add_sequence(&pitches);
        let iois: Vec<u16> = l
            .notes
            .windows(2)
            .map(|w| u16::from(rhythm_class(w[1].onset - w[0].onset)))
            .collect();
        m.ioi.add_sequence(&iois);
        let durs: Vec<u16> = l
            .notes
            .iter()
            .map(|n| u16::from(rhythm_class(n.duration)))
            .collect();
        m.duration.add_sequence(&durs);
        let vels: Vec<u16> = l
            .notes
            .iter()
            .map(|n| u16::from(velocity_bucket(n.velocity)))
            .collect();
        m.velocity.add_sequence(&vels);
    }
    m
}

impl TrigramModel {
    /// The model bytes (with the header).
    pub fn to_model_bytes(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(self.lo).u8(self.hi);
        self.pitch.encode(&mut e);
        self.ioi.encode(&mut e);
        self.duration.encode(&mut e);
        self.velocity.encode(&mut e);
        frame_model(AgentKind::Trigram, &e.buf)
    }

    /// Reads a body written by [`TrigramModel::to_model_bytes`].
    pub fn decode_body(body: &[u8]) -> Result<TrigramModel, ModelError> {
        let mut d = Dec::new(body);
        let lo = d.u8()?;
        let hi = d.u8()?;
        if lo > hi || hi > 127 {
            return Err(d.invalid(format!("pitch range {lo}..={hi} is not within 0..=127")));
        }
        let m = TrigramModel {
            lo,
            hi,
            pitch: Table::decode(&mut d, u16::from(hi - lo) + 1)?,
            ioi: Table::decode(&mut d, N_RHYTHM as u16)?,
            duration: Table::decode(&mut d, N_RHYTHM as u16)?,
            velocity: Table::decode(&mut d, N_VELOCITY as u16)?,
        };
        if !d.is_empty() {
            return Err(d.invalid(format!("{} bytes after the last table", d.remaining())));
        }
        Ok(m)
    }
}

/// The baseline agent.
#[derive(Debug, Clone)]
pub struct TrigramAgent {
    model: Arc<TrigramModel>,
    pitch: Vec<u16>,
    ioi: Vec<u16>,
    duration: Vec<u16>,
    velocity: Vec<u16>,
    last: Option<Note>,
}

impl TrigramAgent {
    /// An agent running `model`.
    pub fn new(model: Arc<TrigramModel>) -> TrigramAgent {
        TrigramAgent {
            model,
            pitch: Vec::new(),
            ioi: Vec::new(),
            duration: Vec::new(),
            velocity: Vec::new(),
            last: None,
        }
    }
}

fn tail(v: &[u16], n: usize) -> &[u16] {
    &v[v.len().saturating_sub(n)..]
}

impl Agent for TrigramAgent {
    fn kind(&self) -> AgentKind {
        AgentKind::Trigram
    }

    fn begin(&mut self, _context: SeqContext) {
        self.pitch.clear();
        self.ioi.clear();
        self.duration.clear();
        self.velocity.clear();
        self.last = None;
    }

    fn observe(&mut self, note: Note) {
        let m = &self.model;
        if (m.lo..=m.hi).contains(&note.pitch) {
            self.pitch.push(u16::from(note.pitch - m.lo));
        } else {
            // Outside the trained range: the context is unknown.
            self.pitch.clear();
        }
        if let Some(last) = self.last {
            self.ioi
                .push(u16::from(rhythm_class(note.onset - last.onset)));
        }
        self.duration.push(u16::from(rhythm_class(note.duration)));
        self.velocity
            .push(u16::from(velocity_bucket(note.velocity)));
        self.last = Some(note);
    }

    fn next_note(&mut self) -> Result<NextNote, AgentError> {
        let m = &self.model;
        let mut next = NextNote::default();
        let mut full = [0.0f64; 128];
        let h = tail(&self.pitch, 2);
        for p in m.lo..=m.hi {
            full[usize::from(p)] = m.pitch.prob(h, u16::from(p - m.lo));
        }
        normalise_with_floor(&full, &mut next.pitch, PITCH_FLOOR);
        let dist = |t: &Table, h: &[u16], out: &mut [f32]| {
            let p: Vec<f64> = (0..t.alphabet).map(|s| t.prob(tail(h, 1), s)).collect();
            normalise_with_floor(&p, out, 0.0);
        };
        dist(&m.ioi, &self.ioi, &mut next.ioi);
        dist(&m.duration, &self.duration, &mut next.duration);
        dist(&m.velocity, &self.velocity, &mut next.velocity);
        Ok(next)
    }

    fn to_model_bytes(&self) -> Vec<u8> {
        self.model.to_model_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witten_bell_matches_a_hand_computation() {
        // Pitches 0 1 0 1 0 over an alphabet of 2 (order 2).
        let mut t = Table::new(2, 2);
        t.add_sequence(&[0, 1, 0, 1, 0]);
        // Unigram: 0:3 1:2 (T=5, D=2): P(1) = (2 + 2·½)/7 = 3/7.
        // Bigram after 0: 1:2 (T=2, D=1): (2 + 3/7)/3 = 17/21.
        // Trigram after 1 0: 1:1 (T=1, D=1): (1 + 17/21)/2 = 19/21.
        let p = t.prob(&[1, 0], 1);
        assert!((p - 19.0 / 21.0).abs() < 1e-12, "{p}");
    }
}
