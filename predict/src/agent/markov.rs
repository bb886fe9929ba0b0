//! The built-in statistical agent: a multiple-viewpoint, variable-order
//! Markov model in the manner of IDyOM (Pearce 2005) and Conklin and
//! Witten (1995).
//!
//! # Model
//!
//! - **Viewpoints** for pitch ([`PitchView`]): the chromatic pitch itself,
//!   the interval from the previous note, the pitch class relative to the
//!   tonic (when the key is known), and the link of the last two. Each
//!   viewpoint is a sequence of small symbols with its own [PPM model]
//!   (crate::agent): escape method C without update exclusion for the
//!   long-term model, method X with update exclusion for the short-term one,
//!   both blended over every order up to the bound.
//! - **Long-term model (LTM)**: learnt from the training lines, frozen
//!   afterwards; one per role present in the training data, plus one over
//!   every role (used for a role with no data of its own).
//! - **Short-term model (STM)**: learnt from the current line only, from
//!   [`Agent::begin`] on; it picks up the piece's own motifs.
//! - **Combination**: each viewpoint's prediction over its symbols is turned
//!   into a distribution over the pitch alphabet (a symbol's probability is
//!   shared by the pitches it stands for); the viewpoints' distributions are
//!   combined by a weighted geometric mean whose weights favour confident
//!   (low-entropy) viewpoints (`weight = relative entropy ^ -bias`), first
//!   within the LTM and within the STM, then the two together.
//! - Inter-onset interval class, duration class and velocity bucket each
//!   have an LTM and an STM of their own, combined the same way.
//!
//! Training is counting: deterministic, no seed needed, and a few seconds
//! for hundreds of pieces.
//!
//! # Body format (model kind 1)
//!
//! ```text
//! ltm order (u8) | stm order (u8) | viewpoint mask (u8) | combination bias (f32 LE)
//! | ltm/stm bias (f32 LE) | use stm (u8, 0/1) | lowest pitch (u8) | highest pitch (u8)
//! | model set count (LEB128) | per set: role (u8: 0-2, 255 = all roles)
//!     | one PPM per viewpoint in the mask, in bit order | ioi PPM | duration PPM | velocity PPM
//! ```
//!
//! A PPM is `order (u8) | alphabet (u16 BE) | escape (u8) | exclusion (u8) |
//! context count (LEB128) | per context, in increasing key order: key (u128 BE)
//! | symbol count | per symbol: symbol delta, count (LEB128)`.

use super::codec::{Dec, Enc};
use super::ppm::{Escape, Ppm};
use super::{
    Agent, AgentError, AgentKind, ModelError, NextNote, PITCH_FLOOR, SeqContext, frame_model,
    normalise_with_floor,
};
use crate::features::{
    Key, N_INTERVAL, N_RHYTHM, N_VELOCITY, Note, NoteSeq, Role, degree_symbol, interval_symbol,
    rhythm_class, velocity_bucket,
};
use std::sync::Arc;

/// A pitch viewpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PitchView {
    /// The MIDI key (`cpitch`).
    Pitch,
    /// The interval from the previous note (`cpint`).
    Interval,
    /// The pitch class relative to the tonic (`cpintfref`); needs the key.
    Degree,
    /// Interval and degree linked (`cpint ⊗ cpintfref`).
    IntervalDegree,
}

impl PitchView {
    /// Every viewpoint, in mask bit order.
    pub const ALL: [PitchView; 4] = [
        PitchView::Pitch,
        PitchView::Interval,
        PitchView::Degree,
        PitchView::IntervalDegree,
    ];

    const fn bit(self) -> u8 {
        match self {
            PitchView::Pitch => 1,
            PitchView::Interval => 2,
            PitchView::Degree => 4,
            PitchView::IntervalDegree => 8,
        }
    }

    const fn alphabet(self) -> u16 {
        match self {
            PitchView::Pitch => 128,
            PitchView::Interval => N_INTERVAL as u16,
            PitchView::Degree => 12,
            PitchView::IntervalDegree => N_INTERVAL as u16 * 12,
        }
    }

    /// The symbol of `pitch` after `prev` in `key`, or `None` where the
    /// viewpoint is undefined.
    fn symbol(self, prev: Option<u8>, key: Option<Key>, pitch: u8) -> Option<u16> {
        match self {
            PitchView::Pitch => Some(u16::from(pitch)),
            PitchView::Interval => prev.map(|p| interval_symbol(p, pitch)),
            PitchView::Degree => key.map(|k| degree_symbol(k, pitch)),
            PitchView::IntervalDegree => {
                let i = prev.map(|p| interval_symbol(p, pitch))?;
                let d = key.map(|k| degree_symbol(k, pitch))?;
                Some(i * 12 + d)
            }
        }
    }
}

/// Settings of the statistical agent.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkovConfig {
    /// Order bound of the long-term models.
    pub ltm_order: usize,
    /// Order bound of the short-term models.
    pub stm_order: usize,
    /// Which pitch viewpoints to use (at least one).
    pub views: Vec<PitchView>,
    /// Entropy bias when combining viewpoints.
    pub bias: f32,
    /// Entropy bias when combining the long- and short-term models.
    pub ltm_stm_bias: f32,
    /// Use the short-term models.
    pub use_stm: bool,
}

impl Default for MarkovConfig {
    fn default() -> Self {
        MarkovConfig {
            ltm_order: 6,
            stm_order: 6,
            views: PitchView::ALL.to_vec(),
            bias: 2.0,
            ltm_stm_bias: 2.0,
            use_stm: true,
        }
    }
}

impl MarkovConfig {
    /// Pitch alone (IDyOM's `cpitch` system), long- and short-term.
    pub fn pitch_only() -> MarkovConfig {
        MarkovConfig {
            views: vec![PitchView::Pitch],
            ..MarkovConfig::default()
        }
    }

    fn mask(&self) -> u8 {
        self.views.iter().fold(0, |m, v| m | v.bit())
    }
}

/// The models of one set (long-term for a role, or short-term).
#[derive(Debug, Clone)]
struct ModelSet {
    /// One per viewpoint of the config, in mask bit order.
    pitch: Vec<Ppm>,
    ioi: Ppm,
    duration: Ppm,
    velocity: Ppm,
}

impl ModelSet {
    fn new(views: &[PitchView], order: usize, escape: Escape, exclusion: bool) -> ModelSet {
        ModelSet {
            pitch: views
                .iter()
                .map(|v| Ppm::new(order, v.alphabet(), escape, exclusion))
                .collect(),
            ioi: Ppm::new(order, N_RHYTHM as u16, escape, exclusion),
            duration: Ppm::new(order, N_RHYTHM as u16, escape, exclusion),
            velocity: Ppm::new(order.min(3), N_VELOCITY as u16, escape, exclusion),
        }
    }
}

/// Symbol histories of one line.
#[derive(Debug, Clone, Default)]
struct Histories {
    pitch: Vec<Vec<u16>>,
    ioi: Vec<u16>,
    duration: Vec<u16>,
    velocity: Vec<u16>,
    last: Option<Note>,
}

impl Histories {
    fn new(n_views: usize) -> Histories {
        Histories {
            pitch: vec![Vec::new(); n_views],
            ..Histories::default()
        }
    }

    /// Appends `note`'s symbols; if `learn` is given, teaches it each one
    /// first (with the history before the note).
    fn push(
        &mut self,
        views: &[PitchView],
        key: Option<Key>,
        note: Note,
        mut learn: Option<&mut ModelSet>,
    ) {
        let prev = self.last.map(|n| n.pitch);
        for (i, v) in views.iter().enumerate() {
            if let Some(s) = v.symbol(prev, key, note.pitch) {
                if let Some(m) = learn.as_deref_mut() {
                    m.pitch[i].add(&self.pitch[i], s);
                }
                self.pitch[i].push(s);
            }
        }
        if let Some(last) = self.last {
            let s = u16::from(rhythm_class(note.onset - last.onset));
            if let Some(m) = learn.as_deref_mut() {
                m.ioi.add(&self.ioi, s);
            }
            self.ioi.push(s);
        }
        let d = u16::from(rhythm_class(note.duration));
        let v = u16::from(velocity_bucket(note.velocity));
        if let Some(m) = learn {
            m.duration.add(&self.duration, d);
            m.velocity.add(&self.velocity, v);
        }
        self.duration.push(d);
        self.velocity.push(v);
        self.last = Some(note);
    }
}

/// A trained statistical model (the long-term part; immutable, shared by
/// every agent that runs it).
#[derive(Debug, Clone)]
pub struct MarkovModel {
    config: MarkovConfig,
    lo: u8,
    hi: u8,
    /// `None` = every role.
    sets: Vec<(Option<Role>, ModelSet)>,
}

/// Learns a long-term model from `lines`.
pub fn train(lines: &[NoteSeq], config: &MarkovConfig) -> MarkovModel {
    let mut config = config.clone();
    let mask = config.mask();
    config.views = PitchView::ALL
        .into_iter()
        .filter(|v| mask & v.bit() != 0)
        .collect();
    if config.views.is_empty() {
        config.views = vec![PitchView::Pitch];
    }
    config.ltm_order = config.ltm_order.min(super::ppm::MAX_ORDER);
    config.stm_order = config.stm_order.min(super::ppm::MAX_ORDER);
    let pitches = lines.iter().flat_map(|l| l.notes.iter().map(|n| n.pitch));
    let (lo, hi) = pitches.fold((127u8, 0u8), |(lo, hi), p| (lo.min(p), hi.max(p)));
    let (lo, hi) = if lo > hi {
        (0, 127)
    } else {
        (lo.saturating_sub(2), hi.saturating_add(2).min(127))
    };
    let mut roles: Vec<Role> = lines.iter().map(|l| l.role).collect();
    roles.sort();
    roles.dedup();
    let mut groups: Vec<Option<Role>> = vec![None];
    if roles.len() > 1 {
        groups.extend(roles.into_iter().map(Some));
    }
    let sets = groups
        .into_iter()
        .map(|g| {
            let mut set = ModelSet::new(&config.views, config.ltm_order, Escape::C, false);
            for line in lines.iter().filter(|l| g.is_none_or(|r| r == l.role)) {
                let mut h = Histories::new(config.views.len());
                for &n in &line.notes {
                    h.push(&config.views, line.key, n, Some(&mut set));
                }
            }
            (g, set)
        })
        .collect();
    MarkovModel {
        config,
        lo,
        hi,
        sets,
    }
}

impl MarkovModel {
    /// The settings it was trained with.
    pub fn config(&self) -> &MarkovConfig {
        &self.config
    }

    /// The model bytes (with the header).
    pub fn to_model_bytes(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(self.config.ltm_order as u8)
            .u8(self.config.stm_order as u8)
            .u8(self.config.mask())
            .f32(self.config.bias)
            .f32(self.config.ltm_stm_bias)
            .u8(u8::from(self.config.use_stm))
            .u8(self.lo)
            .u8(self.hi)
            .var(self.sets.len() as u64);
        for (role, set) in &self.sets {
            e.u8(role.map_or(255, |r| r.index() as u8));
            for p in &set.pitch {
                p.encode(&mut e);
            }
            set.ioi.encode(&mut e);
            set.duration.encode(&mut e);
            set.velocity.encode(&mut e);
        }
        frame_model(AgentKind::Markov, &e.buf)
    }

    /// Reads a body written by [`MarkovModel::to_model_bytes`].
    pub fn decode_body(body: &[u8]) -> Result<MarkovModel, ModelError> {
        let mut d = Dec::new(body);
        let ltm_order = usize::from(d.u8()?);
        let stm_order = usize::from(d.u8()?);
        if ltm_order > super::ppm::MAX_ORDER || stm_order > super::ppm::MAX_ORDER {
            return Err(d.invalid(format!(
                "model orders {ltm_order}/{stm_order} above the maximum"
            )));
        }
        let mask = d.u8()?;
        if mask == 0 || mask & !0x0F != 0 {
            return Err(d.invalid(format!("viewpoint mask {mask:#04x} is empty or unknown")));
        }
        let views: Vec<PitchView> = PitchView::ALL
            .into_iter()
            .filter(|v| mask & v.bit() != 0)
            .collect();
        let bias = d.f32()?;
        let ltm_stm_bias = d.f32()?;
        if !(0.0..=64.0).contains(&bias) || !(0.0..=64.0).contains(&ltm_stm_bias) {
            return Err(d.invalid(format!(
                "combination biases {bias}/{ltm_stm_bias} outside 0..=64"
            )));
        }
        let use_stm = match d.u8()? {
            0 => false,
            1 => true,
            x => return Err(d.invalid(format!("use-stm flag {x} is not 0 or 1"))),
        };
        let lo = d.u8()?;
        let hi = d.u8()?;
        if lo > hi || hi > 127 {
            return Err(d.invalid(format!("pitch range {lo}..={hi} is not within 0..=127")));
        }
        let n = d.count(1, "model set")?;
        if n == 0 || n > 4 {
            return Err(d.invalid(format!("{n} model sets (1 to 4 expected)")));
        }
        let mut sets = Vec::with_capacity(n);
        for i in 0..n {
            let role = match d.u8()? {
                255 => None,
                r => Some(
                    Role::from_index(r).ok_or_else(|| d.invalid(format!("unknown role {r}")))?,
                ),
            };
            if (i == 0) != role.is_none() {
                return Err(d.invalid("the first model set must cover every role, and only it"));
            }
            let mut pitch = Vec::with_capacity(views.len());
            for v in &views {
                let p = Ppm::decode(&mut d)?;
                if p.alphabet() != v.alphabet() {
                    return Err(
                        d.invalid(format!("{v:?} model has an alphabet of {}", p.alphabet()))
                    );
                }
                pitch.push(p);
            }
            let ioi = Ppm::decode(&mut d)?;
            let duration = Ppm::decode(&mut d)?;
            let velocity = Ppm::decode(&mut d)?;
            if ioi.alphabet() != N_RHYTHM as u16
                || duration.alphabet() != N_RHYTHM as u16
                || velocity.alphabet() != N_VELOCITY as u16
            {
                return Err(d.invalid("rhythm or velocity model has the wrong alphabet"));
            }
            sets.push((
                role,
                ModelSet {
                    pitch,
                    ioi,
                    duration,
                    velocity,
                },
            ));
        }
        if !d.is_empty() {
            return Err(d.invalid(format!("{} bytes after the last model", d.remaining())));
        }
        Ok(MarkovModel {
            config: MarkovConfig {
                ltm_order,
                stm_order,
                views,
                bias,
                ltm_stm_bias,
                use_stm,
            },
            lo,
            hi,
            sets,
        })
    }

    fn set_for(&self, role: Role) -> &ModelSet {
        self.sets
            .iter()
            .find(|(r, _)| *r == Some(role))
            .or_else(|| self.sets.first())
            .map(|(_, s)| s)
            .expect("a model always has its every-role set")
    }
}

/// Relative entropy of a distribution over `n` outcomes, in (0, 1].
fn relative_entropy(p: &[f64]) -> f64 {
    let n = p.len();
    if n < 2 {
        return 1.0;
    }
    let h: f64 = p.iter().filter(|&&x| x > 0.0).map(|&x| -x * x.log2()).sum();
    (h / (n as f64).log2()).clamp(1e-6, 1.0)
}

/// Weighted geometric combination of distributions (each normalised, same
/// length) into `out`, weights `relative entropy ^ -bias`.
fn combine(dists: &[&[f64]], bias: f64, out: &mut Vec<f64>) {
    out.clear();
    let Some(first) = dists.first() else { return };
    let n = first.len();
    if dists.len() == 1 {
        out.extend_from_slice(first);
        return;
    }
    let weights: Vec<f64> = dists
        .iter()
        .map(|d| relative_entropy(d).powf(-bias))
        .collect();
    let total: f64 = weights.iter().sum();
    out.resize(n, 0.0);
    let mut sum = 0.0;
    for (i, o) in out.iter_mut().enumerate() {
        let mut log = 0.0;
        for (d, w) in dists.iter().zip(&weights) {
            log += w * d[i].max(1e-300).ln();
        }
        *o = (log / total).exp();
        sum += *o;
    }
    if sum > 0.0 {
        out.iter_mut().for_each(|x| *x /= sum);
    }
}

/// Probabilities of the next symbol of one PPM over its whole alphabet.
fn symbol_dist(m: &Ppm, history: &[u16], out: &mut Vec<f64>) {
    let mut nodes = Vec::new();
    m.contexts(history, &mut nodes);
    out.clear();
    out.extend((0..m.alphabet()).map(|s| m.prob(&nodes, s)));
}

/// The statistical agent: a shared [`MarkovModel`] plus this line's
/// short-term models and histories.
#[derive(Debug, Clone)]
pub struct MarkovAgent {
    model: Arc<MarkovModel>,
    context: SeqContext,
    stm: ModelSet,
    hist: Histories,
}

impl MarkovAgent {
    /// An agent running `model`.
    pub fn new(model: Arc<MarkovModel>) -> MarkovAgent {
        let c = &model.config;
        MarkovAgent {
            stm: ModelSet::new(&c.views, c.stm_order, Escape::X, true),
            hist: Histories::new(c.views.len()),
            context: SeqContext::default(),
            model,
        }
    }

    /// The pitch distribution over the model's pitch range from one set.
    fn pitch_dist(&self, set: &ModelSet, out: &mut Vec<f64>) {
        let (lo, hi) = (self.model.lo, self.model.hi);
        let n = usize::from(hi - lo) + 1;
        let prev = self.hist.last.map(|n| n.pitch);
        let mut per_view: Vec<Vec<f64>> = Vec::new();
        let mut nodes = Vec::new();
        for (i, v) in self.model.config.views.iter().enumerate() {
            if v.symbol(prev, self.context.key, 60).is_none() {
                continue;
            }
            let m = &set.pitch[i];
            m.contexts(&self.hist.pitch[i], &mut nodes);
            let syms: Vec<u16> = (lo..=hi)
                .map(|p| v.symbol(prev, self.context.key, p).unwrap_or(0))
                .collect();
            let mut mult = vec![0u16; usize::from(v.alphabet())];
            for &s in &syms {
                mult[usize::from(s)] += 1;
            }
            let mut d: Vec<f64> = syms
                .iter()
                .map(|&s| m.prob(&nodes, s) / f64::from(mult[usize::from(s)]))
                .collect();
            let sum: f64 = d.iter().sum();
            if sum > 0.0 {
                d.iter_mut().for_each(|x| *x /= sum);
            } else {
                d = vec![1.0 / n as f64; n];
            }
            per_view.push(d);
        }
        let refs: Vec<&[f64]> = per_view.iter().map(|v| v.as_slice()).collect();
        combine(&refs, f64::from(self.model.config.bias), out);
    }
}

impl Agent for MarkovAgent {
    fn kind(&self) -> AgentKind {
        AgentKind::Markov
    }

    fn begin(&mut self, context: SeqContext) {
        let c = &self.model.config;
        self.context = context;
        self.stm = ModelSet::new(&c.views, c.stm_order, Escape::X, true);
        self.hist = Histories::new(c.views.len());
    }

    fn observe(&mut self, note: Note) {
        let learn = if self.model.config.use_stm {
            Some(&mut self.stm)
        } else {
            None
        };
        self.hist
            .push(&self.model.config.views, self.context.key, note, learn);
    }

    fn next_note(&mut self) -> Result<NextNote, AgentError> {
        let ltm = self.model.set_for(self.context.role);
        let use_stm = self.model.config.use_stm;
        let ls_bias = f64::from(self.model.config.ltm_stm_bias);
        let mut next = NextNote::default();

        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        self.pitch_dist(ltm, &mut a);
        let pitch = if use_stm {
            self.pitch_dist(&self.stm, &mut b);
            combine(&[&a, &b], ls_bias, &mut c);
            &c
        } else {
            &a
        };
        let mut full = [0.0f64; 128];
        if !pitch.is_empty() {
            let lo = usize::from(self.model.lo);
            full[lo..lo + pitch.len()].copy_from_slice(pitch);
        }
        normalise_with_floor(&full, &mut next.pitch, PITCH_FLOOR);

        let one = |l: &Ppm, s: &Ppm, hist: &[u16], out: &mut [f32]| {
            let (mut x, mut y, mut z) = (Vec::new(), Vec::new(), Vec::new());
            symbol_dist(l, hist, &mut x);
            let d = if use_stm {
                symbol_dist(s, hist, &mut y);
                combine(&[&x, &y], ls_bias, &mut z);
                &z
            } else {
                &x
            };
            normalise_with_floor(d, out, 0.0);
        };
        one(&ltm.ioi, &self.stm.ioi, &self.hist.ioi, &mut next.ioi);
        one(
            &ltm.duration,
            &self.stm.duration,
            &self.hist.duration,
            &mut next.duration,
        );
        one(
            &ltm.velocity,
            &self.stm.velocity,
            &self.hist.velocity,
            &mut next.velocity,
        );
        Ok(next)
    }

    fn to_model_bytes(&self) -> Vec<u8> {
        self.model.to_model_bytes()
    }
}
