//! The built-in statistical agent: a multiple-viewpoint, variable-order
//! Markov model in the manner of IDyOM (Pearce 2005) and Conklin and
//! Witten (1995).
//!
//! # Model
//!
//! - **Viewpoints** for pitch ([`PitchView`]): the chromatic pitch itself
//!   (`cpitch`), the interval from the previous note (`cpint`), the pitch
//!   class relative to the tonic (`cpintfref`, when the key is known), the
//!   contour (down, same, up), and the links interval ⊗ degree, degree ⊗
//!   contour and pitch ⊗ duration. Each viewpoint is a sequence of small
//!   symbols with its own PPM model ([`PpmSettings`]: order bound, escape
//!   method C or AX, update exclusion, blending or back-off, and PPM*'s
//!   start at the shortest deterministic context).
//! - **Long-term model (LTM)**: learnt from the training lines, frozen
//!   afterwards; one per role present in the training data, plus one over
//!   every role (used for a role with no data of its own).
//! - **Short-term model (STM)**: learnt from the current line only, from
//!   [`Agent::begin`] on; it picks up the piece's own motifs.
//! - **From symbols back to pitches**: a viewpoint predicts symbols; each
//!   candidate pitch (the training range, two keys wider each side) stands
//!   for one symbol, and a symbol that stands for several candidate pitches
//!   (a degree in every octave, "up" for every higher key) has its
//!   probability shared evenly among them, not copied to each. A link with
//!   the next note's duration, unknown when the pitch is predicted, gives a
//!   pitch the sum over every duration. The result is renormalised over the
//!   range.
//! - **Combination** ([`Combination`]): weighted geometric or arithmetic
//!   means whose weights favour confident (low-entropy) distributions
//!   (`weight = relative entropy ^ -bias`, Pearce, Conklin and Wiggins
//!   2005), either viewpoints first (within the LTM and within the STM,
//!   then the two) or LTM with STM first (per viewpoint, then the
//!   viewpoints), with separate biases.
//! - Inter-onset interval class, duration class and velocity bucket each
//!   have an LTM and an STM of their own, combined the same way.
//!
//! The defaults ([`MarkovConfig::default`]) were chosen on a validation
//! split carved from the chorale training files by the quality benchmark
//! (`cargo bench -p jam-predict --bench quality`; figures in
//! BENCHMARKS.md). Not here: unbounded orders (PPM* proper; the
//! deterministic start works within the order bound of at most 9),
//! per-viewpoint PPM settings, and viewpoints that need the next note's
//! onset (IDyOM and Conklin and Witten condition pitch on the onset and
//! duration of the note being predicted; an agent predicting a note before
//! it is played cannot).
//!
//! Training is counting: deterministic, no seed needed, and well under a
//! second for hundreds of pieces.
//!
//! # Body format (model kind 1, format version 2)
//!
//! ```text
//! viewpoint mask (u8, bits in PitchView::ALL order) | combination (u8: 0 geometric, 1 arithmetic)
//! | views first (u8, 0/1) | use stm (u8, 0/1) | viewpoint bias (f32 LE) | ltm/stm bias (f32 LE)
//! | ltm settings | stm settings | lowest pitch (u8) | highest pitch (u8)
//! | model set count (LEB128) | per set: role (u8: 0-2, 255 = all roles)
//!     | one PPM per viewpoint in the mask, in bit order | ioi PPM | duration PPM | velocity PPM
//! ```
//!
//! Settings are `order (u8) | escape (u8: 0 C, 1 AX) | update exclusion
//! (u8) | smoothing (u8: 0 blended, 1 back-off) | deterministic start (u8)`.
//! A PPM is `order (u8) | alphabet (u16 BE) | escape (u8) | exclusion (u8) |
//! context count (LEB128) | per context, in increasing key order: key (u128 BE)
//! | symbol count | per symbol: symbol delta, count (LEB128)`; its escape
//! and exclusion must be the long-term settings'.

use super::codec::{Dec, Enc};
use super::ppm::Ppm;
pub use super::ppm::{Escape, Smoothing};
use super::{
    Agent, AgentError, AgentKind, ModelError, NextNote, PITCH_FLOOR, SeqContext, frame_model,
    normalise_with_floor,
};
use crate::features::{
    Key, N_INTERVAL, N_RHYTHM, N_VELOCITY, Note, NoteSeq, Role, degree_symbol, interval_symbol,
    rhythm_class, velocity_bucket,
};
use std::sync::Arc;

/// A pitch viewpoint: a way of seeing a melody as a sequence of symbols,
/// each with its own PPM model, whose predictions are turned back into
/// pitch distributions.
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
    /// The direction from the previous note: down, same, up (`contour`).
    Contour,
    /// Degree and contour linked (`cpintfref ⊗ contour`).
    DegreeContour,
    /// Pitch and duration class linked (`cpitch ⊗ dur`). The next note's
    /// duration is not known when it is predicted, so a pitch gets the sum
    /// over every duration.
    PitchDuration,
}

impl PitchView {
    /// Every viewpoint, in mask bit order.
    pub const ALL: [PitchView; 7] = [
        PitchView::Pitch,
        PitchView::Interval,
        PitchView::Degree,
        PitchView::IntervalDegree,
        PitchView::Contour,
        PitchView::DegreeContour,
        PitchView::PitchDuration,
    ];

    const fn bit(self) -> u8 {
        match self {
            PitchView::Pitch => 1,
            PitchView::Interval => 2,
            PitchView::Degree => 4,
            PitchView::IntervalDegree => 8,
            PitchView::Contour => 16,
            PitchView::DegreeContour => 32,
            PitchView::PitchDuration => 64,
        }
    }

    const fn alphabet(self) -> u16 {
        match self {
            PitchView::Pitch => 128,
            PitchView::Interval => N_INTERVAL as u16,
            PitchView::Degree => 12,
            PitchView::IntervalDegree => N_INTERVAL as u16 * 12,
            PitchView::Contour => 3,
            PitchView::DegreeContour => 36,
            PitchView::PitchDuration => 128 * N_RHYTHM as u16,
        }
    }

    /// Whether the viewpoint is defined for the next note (the previous
    /// note and the key it needs are known).
    fn defined(self, prev: Option<u8>, key: Option<Key>) -> bool {
        match self {
            PitchView::Pitch | PitchView::PitchDuration => true,
            PitchView::Interval | PitchView::Contour => prev.is_some(),
            PitchView::Degree => key.is_some(),
            PitchView::IntervalDegree | PitchView::DegreeContour => prev.is_some() && key.is_some(),
        }
    }

    /// The symbol of `pitch` (held for duration class `dur`) after `prev`
    /// in `key`, or `None` where the viewpoint is undefined.
    fn symbol(self, prev: Option<u8>, key: Option<Key>, pitch: u8, dur: u8) -> Option<u16> {
        let contour = |p: u8| match pitch.cmp(&p) {
            std::cmp::Ordering::Less => 0,
            std::cmp::Ordering::Equal => 1,
            std::cmp::Ordering::Greater => 2,
        };
        match self {
            PitchView::Pitch => Some(u16::from(pitch & 0x7F)),
            PitchView::Interval => prev.map(|p| interval_symbol(p, pitch)),
            PitchView::Degree => key.map(|k| degree_symbol(k, pitch)),
            PitchView::IntervalDegree => {
                let i = prev.map(|p| interval_symbol(p, pitch))?;
                let d = key.map(|k| degree_symbol(k, pitch))?;
                Some(i * 12 + d)
            }
            PitchView::Contour => prev.map(contour),
            PitchView::DegreeContour => {
                let c = prev.map(contour)?;
                let d = key.map(|k| degree_symbol(k, pitch))?;
                Some(d * 3 + c)
            }
            PitchView::PitchDuration => {
                Some(u16::from(pitch & 0x7F) * N_RHYTHM as u16 + u16::from(dur).min(15))
            }
        }
    }

    /// How many symbols stand for one pitch (a linked viewpoint with an
    /// attribute of the next note that is not known yet).
    const fn per_pitch(self) -> u16 {
        match self {
            PitchView::PitchDuration => N_RHYTHM as u16,
            _ => 1,
        }
    }
}

/// How distributions from several models are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Combination {
    /// Weighted geometric mean, renormalised (Pearce, Conklin and Wiggins
    /// 2005 found it the better one).
    Geometric,
    /// Weighted arithmetic mean.
    Arithmetic,
}

/// Settings of one kind of PPM model (long- or short-term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PpmSettings {
    /// Order bound (at most 9).
    pub order: usize,
    /// Escape method.
    pub escape: Escape,
    /// Update exclusion while counting.
    pub update_exclusion: bool,
    /// Blending or back-off.
    pub smoothing: Smoothing,
    /// Start at the shortest deterministic context, as PPM* does (within
    /// the order bound).
    pub deterministic_start: bool,
}

/// Settings of the statistical agent.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkovConfig {
    /// The long-term models (learnt from the training lines).
    pub ltm: PpmSettings,
    /// The short-term models (learnt from the current line).
    pub stm: PpmSettings,
    /// Which pitch viewpoints to use (at least one).
    pub views: Vec<PitchView>,
    /// How distributions are combined.
    pub combination: Combination,
    /// Entropy bias when combining viewpoints: a distribution's weight is
    /// its relative entropy to the power `-bias` (0 = equal weights).
    pub bias: f32,
    /// Entropy bias when combining the long- and short-term models.
    pub ltm_stm_bias: f32,
    /// Combine the viewpoints within the long-term models and within the
    /// short-term ones first, then the two results; if false, combine the
    /// long- and short-term model of each viewpoint first, then the
    /// viewpoints.
    pub views_first: bool,
    /// Use the short-term models.
    pub use_stm: bool,
}

impl Default for MarkovConfig {
    /// The settings `cargo bench -p jam-predict --bench quality` chose on
    /// the validation part of the chorale training split (BENCHMARKS.md).
    fn default() -> Self {
        MarkovConfig {
            ltm: PpmSettings {
                order: 9,
                escape: Escape::C,
                update_exclusion: false,
                smoothing: Smoothing::Blended,
                deterministic_start: false,
            },
            stm: PpmSettings {
                order: 8,
                escape: Escape::Ax,
                update_exclusion: true,
                smoothing: Smoothing::Backoff,
                deterministic_start: false,
            },
            views: vec![
                PitchView::Interval,
                PitchView::IntervalDegree,
                PitchView::PitchDuration,
            ],
            combination: Combination::Arithmetic,
            bias: 0.5,
            ltm_stm_bias: 1.5,
            views_first: true,
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
    fn new(views: &[PitchView], s: &PpmSettings) -> ModelSet {
        let ppm =
            |order: usize, alphabet: u16| Ppm::new(order, alphabet, s.escape, s.update_exclusion);
        ModelSet {
            pitch: views.iter().map(|v| ppm(s.order, v.alphabet())).collect(),
            ioi: ppm(s.order, N_RHYTHM as u16),
            duration: ppm(s.order, N_RHYTHM as u16),
            velocity: ppm(s.order.min(3), N_VELOCITY as u16),
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
        let dur = rhythm_class(note.duration);
        for (i, v) in views.iter().enumerate() {
            if let Some(s) = v.symbol(prev, key, note.pitch, dur) {
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
        let d = u16::from(dur);
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
    config.ltm.order = config.ltm.order.min(super::ppm::MAX_ORDER);
    config.stm.order = config.stm.order.min(super::ppm::MAX_ORDER);
    config.bias = config.bias.clamp(0.0, MAX_BIAS);
    config.ltm_stm_bias = config.ltm_stm_bias.clamp(0.0, MAX_BIAS);
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
            let mut set = ModelSet::new(&config.views, &config.ltm);
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
        let c = &self.config;
        let mut e = Enc::default();
        e.u8(c.mask())
            .u8(match c.combination {
                Combination::Geometric => 0,
                Combination::Arithmetic => 1,
            })
            .u8(u8::from(c.views_first))
            .u8(u8::from(c.use_stm))
            .f32_le(c.bias)
            .f32_le(c.ltm_stm_bias);
        for p in [&c.ltm, &c.stm] {
            e.u8(p.order as u8)
                .u8(match p.escape {
                    Escape::C => 0,
                    Escape::Ax => 1,
                })
                .u8(u8::from(p.update_exclusion))
                .u8(match p.smoothing {
                    Smoothing::Blended => 0,
                    Smoothing::Backoff => 1,
                })
                .u8(u8::from(p.deterministic_start));
        }
        e.u8(self.lo).u8(self.hi).var(self.sets.len() as u64);
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
        let mask = d.u8()?;
        if mask == 0 || mask & !ALL_VIEWS != 0 {
            return Err(d.invalid(format!("viewpoint mask {mask:#04x} is empty or unknown")));
        }
        let views: Vec<PitchView> = PitchView::ALL
            .into_iter()
            .filter(|v| mask & v.bit() != 0)
            .collect();
        let combination = match d.u8()? {
            0 => Combination::Geometric,
            1 => Combination::Arithmetic,
            x => return Err(d.invalid(format!("unknown combination method {x}"))),
        };
        let views_first = flag(&mut d, "views-first")?;
        let use_stm = flag(&mut d, "use-stm")?;
        let bias = d.f32()?;
        let ltm_stm_bias = d.f32()?;
        if !(0.0..=MAX_BIAS).contains(&bias) || !(0.0..=MAX_BIAS).contains(&ltm_stm_bias) {
            return Err(d.invalid(format!(
                "combination biases {bias}/{ltm_stm_bias} outside 0..={MAX_BIAS}"
            )));
        }
        let ltm = read_settings(&mut d)?;
        let stm = read_settings(&mut d)?;
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
            let mut read = |alphabet: u16, what: &str| {
                let p = Ppm::decode(&mut d)?;
                if p.alphabet() != alphabet {
                    return Err(d.invalid(format!(
                        "{what} model has an alphabet of {} instead of {alphabet}",
                        p.alphabet()
                    )));
                }
                if p.escape() != ltm.escape
                    || p.update_exclusion() != ltm.update_exclusion
                    || p.max_order() > ltm.order
                {
                    return Err(d.invalid(format!(
                        "{what} model's settings differ from the long-term settings"
                    )));
                }
                Ok(p)
            };
            let mut pitch = Vec::with_capacity(views.len());
            for v in &views {
                pitch.push(read(v.alphabet(), &format!("{v:?}"))?);
            }
            let ioi = read(N_RHYTHM as u16, "inter-onset")?;
            let duration = read(N_RHYTHM as u16, "duration")?;
            let velocity = read(N_VELOCITY as u16, "velocity")?;
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
                ltm,
                stm,
                views,
                combination,
                bias,
                ltm_stm_bias,
                views_first,
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

/// Largest entropy bias a model may carry.
const MAX_BIAS: f32 = 64.0;

/// Every viewpoint bit.
const ALL_VIEWS: u8 = 0x7F;

/// Reads one [`PpmSettings`] (5 bytes).
fn read_settings(d: &mut Dec<'_>) -> Result<PpmSettings, ModelError> {
    let order = usize::from(d.u8()?);
    if order > super::ppm::MAX_ORDER {
        return Err(d.invalid(format!(
            "model order {order} is above {}",
            super::ppm::MAX_ORDER
        )));
    }
    let escape = match d.u8()? {
        0 => Escape::C,
        1 => Escape::Ax,
        x => return Err(d.invalid(format!("unknown escape method {x}"))),
    };
    let update_exclusion = flag(d, "update exclusion")?;
    let smoothing = match d.u8()? {
        0 => Smoothing::Blended,
        1 => Smoothing::Backoff,
        x => return Err(d.invalid(format!("unknown smoothing {x}"))),
    };
    let deterministic_start = flag(d, "deterministic start")?;
    Ok(PpmSettings {
        order,
        escape,
        update_exclusion,
        smoothing,
        deterministic_start,
    })
}

fn flag(d: &mut Dec<'_>, what: &str) -> Result<bool, ModelError> {
    match d.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        x => Err(d.invalid(format!("{what} flag {x} is not 0 or 1"))),
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

/// Combines distributions (each normalised, same length) into `out`, each
/// weighted by its relative entropy to the power `-bias` (Pearce, Conklin
/// and Wiggins 2005): a confident model counts for more.
fn combine(dists: &[&[f64]], how: Combination, bias: f64, out: &mut Vec<f64>) {
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
        *o = match how {
            Combination::Geometric => {
                let mut log = 0.0;
                for (d, w) in dists.iter().zip(weights.iter()) {
                    log += w * d[i].max(1e-300).ln();
                }
                (log / total).exp()
            }
            Combination::Arithmetic => {
                dists
                    .iter()
                    .zip(weights.iter())
                    .map(|(d, w)| w * d[i])
                    .sum::<f64>()
                    / total
            }
        };
        sum += *o;
    }
    if sum > 0.0 {
        out.iter_mut().for_each(|x| *x /= sum);
    }
}

/// The slices of `v`, for [`combine`].
fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
    v.iter().map(Vec::as_slice).collect()
}

/// Probabilities of the next symbols `window` of one PPM.
fn symbol_dist(
    m: &Ppm,
    s: &PpmSettings,
    history: &[u16],
    window: std::ops::Range<u16>,
    out: &mut Vec<f64>,
) {
    let mut nodes = Vec::new();
    m.contexts(history, s.deterministic_start, &mut nodes);
    m.dist(&nodes, s.smoothing, window, out);
}

/// The statistical agent: a shared [`MarkovModel`] plus this line's
/// short-term models and histories.
#[derive(Debug, Clone)]
pub struct MarkovAgent {
    model: Arc<MarkovModel>,
    context: SeqContext,
    stm: ModelSet,
    hist: Histories,
    /// Scratch space (symbol distribution, nodes), kept between calls.
    scratch: Vec<f64>,
}

impl MarkovAgent {
    /// An agent running `model`.
    pub fn new(model: Arc<MarkovModel>) -> MarkovAgent {
        let c = &model.config;
        MarkovAgent {
            stm: ModelSet::new(&c.views, &c.stm),
            hist: Histories::new(c.views.len()),
            context: SeqContext::default(),
            scratch: Vec::new(),
            model,
        }
    }

    /// The pitch distribution over the model's pitch range from viewpoint
    /// `i` of `set`, or `None` where the viewpoint is undefined.
    ///
    /// A viewpoint predicts symbols; each candidate pitch stands for one
    /// symbol (several for a linked viewpoint with the next duration, whose
    /// probabilities are summed), and a symbol may stand for several
    /// candidate pitches (a degree for every octave, an up-contour for every
    /// higher pitch): its probability is shared evenly among them, then the
    /// result is renormalised over the range.
    fn view_dist(
        &self,
        set: &ModelSet,
        s: &PpmSettings,
        i: usize,
        sd: &mut Vec<f64>,
    ) -> Option<Vec<f64>> {
        let (lo, hi) = (self.model.lo, self.model.hi);
        let prev = self.hist.last.map(|n| n.pitch);
        let key = self.context.key;
        let v = self.model.config.views[i];
        if !v.defined(prev, key) {
            return None;
        }
        let per = v.per_pitch();
        // Symbol of each candidate pitch (the first of its group), and the
        // window of symbols they span: only those are computed.
        let syms: Vec<u16> = (lo..=hi)
            .map(|p| v.symbol(prev, key, p, 0).unwrap_or(0))
            .collect();
        let first = syms.iter().copied().min().unwrap_or(0);
        let end = syms.iter().copied().max().unwrap_or(0) + per;
        symbol_dist(&set.pitch[i], s, &self.hist.pitch[i], first..end, sd);
        let mut mult = vec![0u16; usize::from(end - first)];
        for &x in &syms {
            mult[usize::from(x - first)] += 1;
        }
        let mut d: Vec<f64> = syms
            .iter()
            .map(|&x| {
                let x = usize::from(x - first);
                let p: f64 = sd[x..x + usize::from(per)].iter().sum();
                p / f64::from(mult[x])
            })
            .collect();
        let sum: f64 = d.iter().sum();
        if sum > 0.0 {
            d.iter_mut().for_each(|x| *x /= sum);
        } else {
            let n = d.len() as f64;
            d.iter_mut().for_each(|x| *x = 1.0 / n);
        }
        Some(d)
    }

    /// The next pitch's distribution over the model's pitch range.
    fn pitch_dist(&mut self, ltm: &ModelSet, out: &mut Vec<f64>) {
        let c = &self.model.config;
        let (how, bias, ls_bias) = (c.combination, f64::from(c.bias), f64::from(c.ltm_stm_bias));
        let mut sd = std::mem::take(&mut self.scratch);
        let mut l = Vec::new();
        let mut st = Vec::new();
        for i in 0..c.views.len() {
            if let Some(d) = self.view_dist(ltm, &c.ltm, i, &mut sd) {
                l.push(d);
                if c.use_stm {
                    st.push(
                        self.view_dist(&self.stm, &c.stm, i, &mut sd)
                            .expect("defined for both models"),
                    );
                }
            }
        }
        self.scratch = sd;
        if !c.use_stm {
            combine(&refs(&l), how, bias, out);
        } else if c.views_first {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            combine(&refs(&l), how, bias, &mut a);
            combine(&refs(&st), how, bias, &mut b);
            combine(&[&a, &b], how, ls_bias, out);
        } else {
            let per_view: Vec<Vec<f64>> = l
                .iter()
                .zip(&st)
                .map(|(a, b)| {
                    let mut x = Vec::new();
                    combine(&[a, b], how, ls_bias, &mut x);
                    x
                })
                .collect();
            combine(&refs(&per_view), how, bias, out);
        }
    }
}

impl Agent for MarkovAgent {
    fn kind(&self) -> AgentKind {
        AgentKind::Markov
    }

    fn begin(&mut self, context: SeqContext) {
        let c = &self.model.config;
        self.context = context;
        self.stm = ModelSet::new(&c.views, &c.stm);
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
        let model = Arc::clone(&self.model);
        let ltm = model.set_for(self.context.role);
        let c = &model.config;
        let mut next = NextNote::default();

        let mut pitch = Vec::new();
        self.pitch_dist(ltm, &mut pitch);
        let mut full = [0.0f64; 128];
        if !pitch.is_empty() {
            let lo = usize::from(model.lo);
            full[lo..lo + pitch.len()].copy_from_slice(&pitch);
        }
        normalise_with_floor(&full, &mut next.pitch, PITCH_FLOOR);

        let one = |l: &Ppm, s: &Ppm, hist: &[u16], out: &mut [f32]| {
            let (mut x, mut y, mut z) = (Vec::new(), Vec::new(), Vec::new());
            symbol_dist(l, &c.ltm, hist, 0..l.alphabet(), &mut x);
            let d = if c.use_stm {
                symbol_dist(s, &c.stm, hist, 0..s.alphabet(), &mut y);
                combine(&[&x, &y], c.combination, f64::from(c.ltm_stm_bias), &mut z);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Key;

    fn tunes(seed: u64) -> Vec<NoteSeq> {
        let mut lines = crate::synth::motif_tunes(seed, 12, 6);
        for l in &mut lines {
            l.key = Some(Key {
                tonic: 0,
                minor: false,
            });
        }
        lines
    }

    fn agent(config: &MarkovConfig, lines: &[NoteSeq]) -> MarkovAgent {
        let mut a = MarkovAgent::new(Arc::new(train(lines, config)));
        a.begin(lines[0].context());
        for &n in &lines[0].notes[..5] {
            a.observe(n);
        }
        a
    }

    #[test]
    fn a_degree_is_shared_evenly_by_the_pitches_it_stands_for() {
        let lines = tunes(1);
        let config = MarkovConfig {
            views: vec![PitchView::Degree],
            use_stm: false,
            ..MarkovConfig::default()
        };
        let mut a = agent(&config, &lines);
        let model = Arc::clone(&a.model);
        let set = model.set_for(Role::Melody);
        let mut sd = Vec::new();
        let d = a.view_dist(set, &config.ltm, 0, &mut sd).unwrap();
        let (lo, hi) = (model.lo, model.hi);
        // The window is all twelve degrees.
        assert_eq!(sd.len(), 12);
        // Every pitch gets its degree's probability divided by the number
        // of candidate pitches with that degree (then the whole is
        // renormalised over the degrees the range holds: all twelve here).
        assert!(hi - lo >= 12, "range {lo}..={hi}");
        for p in lo..=hi {
            let deg = usize::from(p % 12);
            let copies = (lo..=hi).filter(|q| q % 12 == p % 12).count() as f64;
            let want = sd[deg] / copies;
            let got = d[usize::from(p - lo)];
            assert!((want - got).abs() < 1e-12, "pitch {p}: {got} vs {want}");
        }
        // And the agent's pitch distribution is that one (with the floor).
        let next = a.next_note().unwrap();
        let p = usize::from(lo) + 3;
        let want = (1.0 - PITCH_FLOOR) * d[3] + PITCH_FLOOR / 128.0;
        assert!((f64::from(next.pitch[p]) - want).abs() < 1e-6);
    }

    #[test]
    fn a_pitch_duration_link_sums_over_the_durations_not_yet_known() {
        let lines = tunes(2);
        let config = MarkovConfig {
            views: vec![PitchView::PitchDuration],
            use_stm: false,
            ..MarkovConfig::default()
        };
        let a = agent(&config, &lines);
        let model = Arc::clone(&a.model);
        let set = model.set_for(Role::Melody);
        let mut sd = Vec::new();
        let d = a.view_dist(set, &config.ltm, 0, &mut sd).unwrap();
        let (lo, hi) = (usize::from(model.lo), usize::from(model.hi));
        // The window is the range's pitches times every duration.
        assert_eq!(sd.len(), (hi - lo + 1) * N_RHYTHM);
        let range: f64 = sd.iter().sum();
        for p in lo..=hi {
            let q = p - lo;
            let want: f64 = sd[q * N_RHYTHM..(q + 1) * N_RHYTHM].iter().sum::<f64>() / range;
            assert!((d[p - lo] - want).abs() < 1e-12, "pitch {p}");
        }
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn every_setting_round_trips_through_the_model_bytes() {
        let lines = tunes(3);
        let config = MarkovConfig {
            ltm: PpmSettings {
                order: 4,
                escape: Escape::Ax,
                update_exclusion: true,
                smoothing: Smoothing::Backoff,
                deterministic_start: true,
            },
            stm: PpmSettings {
                order: 9,
                escape: Escape::C,
                update_exclusion: false,
                smoothing: Smoothing::Blended,
                deterministic_start: true,
            },
            views: PitchView::ALL.to_vec(),
            combination: Combination::Arithmetic,
            bias: 0.5,
            ltm_stm_bias: 7.0,
            views_first: false,
            use_stm: true,
        };
        let m = train(&lines, &config);
        assert_eq!(m.config(), &config);
        let bytes = m.to_model_bytes();
        let (_, body) = super::super::unframe_model(&bytes).unwrap();
        let back = MarkovModel::decode_body(body).unwrap();
        assert_eq!(back.config(), &config);
        assert_eq!(back.to_model_bytes(), bytes);
        // Every combination of the choices predicts a proper distribution.
        for views_first in [true, false] {
            for combination in [Combination::Geometric, Combination::Arithmetic] {
                let c = MarkovConfig {
                    views_first,
                    combination,
                    ..config.clone()
                };
                let mut a = agent(&c, &lines);
                let next = a.next_note().unwrap();
                let sum: f32 = next.pitch.iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "{c:?}: {sum}");
            }
        }
    }
}
