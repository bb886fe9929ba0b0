//! [`MonitorSynth`]: a small polyphonic synth so remote players are heard
//! without routing MIDI to another instrument.
//!
//! Each participant slot gets its own simple timbre (sine, triangle, soft saw,
//! hollow square, two-operator bell, cycling through [`TIMBRES`]) and its own
//! place in the stereo field, so players can be told apart by ear.
//!
//! Click-free by construction: every change of level is a linear ramp. Notes
//! start with an attack ramp, stop with a release ramp, and a stolen voice
//! first ramps to silence over [`STEAL_RAMP_MS`] before it starts its new
//! note. The output level is smoothed over [`LEVEL_RAMP_MS`].
//!
//! Real-time: the voice pool is a fixed array of [`MAX_VOICES`]; rendering
//! never allocates, locks or calls the system.

use crate::{MAX_PEERS, OutEvent};
use jam_core::ShortMessage;
use multiversion::multiversion;
use multiversion::target::target_cfg_f;
use std::f32::consts::TAU;

/// Voices in the pool; the oldest is stolen (releasing ones first).
pub const MAX_VOICES: usize = 32;
/// Ramp time of a stolen voice down to silence, in milliseconds.
pub const STEAL_RAMP_MS: f32 = 3.0;
/// Ramp time of the output level (and of monitor on/off), in milliseconds.
pub const LEVEL_RAMP_MS: f32 = 20.0;
/// Gain of one voice at full velocity, leaving headroom for chords.
const VOICE_GAIN: f32 = 0.2;
/// The oscillator of a timbre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wave {
    /// Pure sine.
    Sine,
    /// Triangle (odd harmonics, soft).
    Triangle,
    /// Band-limited sawtooth (PolyBLEP).
    Saw,
    /// Band-limited square (PolyBLEP).
    Square,
    /// Two-operator FM, modulator at twice the carrier.
    Bell,
}

/// A simple timbre: an oscillator and a linear ADSR envelope.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timbre {
    /// Oscillator.
    pub wave: Wave,
    /// Attack time, ms.
    pub attack_ms: f32,
    /// Decay time to the sustain level, ms.
    pub decay_ms: f32,
    /// Sustain level, 0..=1.
    pub sustain: f32,
    /// Release time, ms.
    pub release_ms: f32,
}

/// The timbres, assigned to slots in turn (slot `s` gets `TIMBRES[s % 5]`).
pub const TIMBRES: [Timbre; 5] = [
    Timbre {
        wave: Wave::Sine,
        attack_ms: 4.0,
        decay_ms: 300.0,
        sustain: 0.7,
        release_ms: 120.0,
    },
    Timbre {
        wave: Wave::Triangle,
        attack_ms: 6.0,
        decay_ms: 200.0,
        sustain: 0.6,
        release_ms: 150.0,
    },
    Timbre {
        wave: Wave::Saw,
        attack_ms: 10.0,
        decay_ms: 400.0,
        sustain: 0.45,
        release_ms: 200.0,
    },
    Timbre {
        wave: Wave::Square,
        attack_ms: 5.0,
        decay_ms: 150.0,
        sustain: 0.4,
        release_ms: 100.0,
    },
    Timbre {
        wave: Wave::Bell,
        attack_ms: 2.0,
        decay_ms: 900.0,
        sustain: 0.0,
        release_ms: 300.0,
    },
];

/// The timbre of a participant slot.
pub fn timbre_for_slot(slot: u8) -> &'static Timbre {
    &TIMBRES[slot as usize % TIMBRES.len()]
}

/// Stereo position of a slot, -1 (left) to 1 (right): spread over ±0.6 so
/// nobody is hard-panned.
fn pan_for_slot(slot: u8) -> f32 {
    const PATTERN: [f32; 8] = [0.0, -0.4, 0.4, -0.2, 0.2, -0.6, 0.6, 0.0];
    PATTERN[slot as usize % PATTERN.len()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    Attack,
    Decay,
    Sustain,
    Release,
    /// Ramping to silence before starting the pending note.
    Steal,
}

#[derive(Debug, Clone, Copy)]
struct Voice {
    stage: Stage,
    slot: u8,
    key: u8,
    /// Gain from velocity (times [`VOICE_GAIN`]).
    gain: f32,
    /// Oscillator phase, a 32-bit accumulator (2³² = one cycle): it wraps
    /// by itself, exactly, with no `fract` per sample.
    phase: u32,
    /// Phase increment per sample (same unit).
    inc: u32,
    /// Modulator phase (bell), same unit.
    mod_phase: u32,
    /// Envelope level and its per-sample step.
    env: f32,
    step: f32,
    /// Samples left in the current ramp.
    remaining: u32,
    /// Start order, for stealing the oldest.
    age: u64,
    /// Equal-power pan gains.
    pan_l: f32,
    pan_r: f32,
    /// Note to start when a steal ramp ends: (slot, key, velocity).
    pending: Option<(u8, u8, u8)>,
}

impl Voice {
    const IDLE: Voice = Voice {
        stage: Stage::Idle,
        slot: 0,
        key: 0,
        gain: 0.0,
        phase: 0,
        inc: 0,
        mod_phase: 0,
        env: 0.0,
        step: 0.0,
        remaining: 0,
        age: 0,
        pan_l: 0.0,
        pan_r: 0.0,
        pending: None,
    };
}

/// The monitor synth. Realtime-safe: every method but `new`.
#[derive(Debug, Clone)]
pub struct MonitorSynth {
    voices: [Voice; MAX_VOICES],
    sample_rate: f32,
    next_age: u64,
    /// Smoothed output level and its target.
    level: f32,
    level_target: f32,
    level_step: f32,
    level_remaining: u32,
}

fn ms_to_samples(ms: f32, sr: f32) -> u32 {
    ((ms * 0.001 * sr).round() as u32).max(1)
}

/// Phase increment per sample of a 32-bit accumulator for `hz` at `sr`
/// (capped below Nyquist).
fn phase_inc(hz: f32, sr: f32) -> u32 {
    let cycles = (hz as f64 / sr as f64).clamp(0.0, 0.49);
    (cycles * 4_294_967_296.0) as u32
}

fn key_to_hz(key: u8) -> f32 {
    440.0 * ((key as f32 - 69.0) / 12.0).exp2()
}

/// PolyBLEP residual for a discontinuity at phase 0 (`t` in cycles,
/// `dt` = increment, `inv_dt` = 1/dt), which band-limits saw and square
/// edges.
#[inline(always)]
fn poly_blep(fma: bool, t: f32, dt: f32, inv_dt: f32) -> f32 {
    // Both branches computed, one selected: no jump in the hot loop.
    let a = t * inv_dt;
    let b = (t - 1.0) * inv_dt;
    // a(2 - a) - 1 and b(b + 2) + 1.
    let after = madd(fma, a, 2.0 - a, -1.0);
    let before = madd(fma, b, b + 2.0, 1.0);
    let r = if t > 1.0 - dt { before } else { 0.0 };
    if t < dt { after } else { r }
}

impl MonitorSynth {
    /// A silent synth at `sample_rate` with output level `level` (0..=1).
    pub fn new(sample_rate: f32, level: f32) -> Self {
        MonitorSynth {
            voices: [Voice::IDLE; MAX_VOICES],
            sample_rate: sanitize_rate(sample_rate),
            next_age: 0,
            level,
            level_target: level,
            level_step: 0.0,
            level_remaining: 0,
        }
    }

    /// Changes the sample rate; sounding notes keep their pitch.
    /// Realtime-safe: yes.
    pub fn set_sample_rate(&mut self, sample_rate: f32) {
        let sr = sanitize_rate(sample_rate);
        if sr == self.sample_rate {
            return;
        }
        let ratio = self.sample_rate / sr;
        for v in &mut self.voices {
            v.inc = (v.inc as f64 * ratio as f64).round() as u32;
            v.step *= ratio;
            v.remaining = (v.remaining as f32 / ratio).round() as u32;
        }
        self.sample_rate = sr;
    }

    /// Silences every voice at once (for `reset`, when the host has stopped
    /// the audio anyway). Realtime-safe: yes.
    pub fn reset(&mut self) {
        self.voices = [Voice::IDLE; MAX_VOICES];
        self.level = self.level_target;
        self.level_remaining = 0;
    }

    /// Number of voices making sound.
    pub fn active_voices(&self) -> usize {
        self.voices
            .iter()
            .filter(|v| v.stage != Stage::Idle)
            .count()
    }

    fn set_level_target(&mut self, target: f32) {
        let target = if target.is_finite() {
            target.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if target != self.level_target {
            self.level_target = target;
            self.level_remaining = ms_to_samples(LEVEL_RAMP_MS, self.sample_rate);
            self.level_step = (target - self.level) / self.level_remaining as f32;
        }
    }

    /// Plays `events` (sorted by offset) into `left`/`right`, overwriting
    /// them, at output level `level` (smoothed). Events past the end of the
    /// buffers are played at its last sample. Realtime-safe: yes.
    pub fn render(&mut self, events: &[OutEvent], level: f32, left: &mut [f32], right: &mut [f32]) {
        self.set_level_target(level);
        let n = left.len().min(right.len());
        if self.level_target == 0.0 && self.level_remaining == 0 {
            // Muted (monitor off, or level 0) and the fade-out is over:
            // nothing can be heard, so nothing is computed. Sounding voices
            // are dropped, which cannot click at zero output level; notes
            // that arrive while muted stay silent when the monitor returns.
            if self.voices.iter().any(|v| v.stage != Stage::Idle) {
                self.voices = [Voice::IDLE; MAX_VOICES];
            }
            left[..n].fill(0.0);
            right[..n].fill(0.0);
            return;
        }
        let mut pos = 0usize;
        let mut ev = events.iter().peekable();
        while pos < n {
            while let Some(e) = ev.next_if(|e| (e.offset as usize).min(n - 1) <= pos) {
                self.handle(e.slot, e.msg);
            }
            let end = ev
                .peek()
                .map_or(n, |e| (e.offset as usize).min(n - 1).max(pos + 1));
            self.render_span(&mut left[pos..end], &mut right[pos..end]);
            pos = end;
        }
        for e in ev {
            self.handle(e.slot, e.msg);
        }
    }

    fn handle(&mut self, slot: u8, msg: ShortMessage) {
        if slot as usize >= MAX_PEERS {
            return;
        }
        if msg.is_note_on() {
            self.note_on(slot, msg.data1(), msg.data2());
        } else if msg.is_note_off() {
            self.note_off(slot, msg.data1());
        } else if msg.status() & 0xF0 == 0xB0 && matches!(msg.data1(), 120 | 123) {
            // All sound off / all notes off for this participant.
            for i in 0..MAX_VOICES {
                if self.voices[i].slot == slot {
                    self.release(i);
                }
            }
        }
    }

    fn note_on(&mut self, slot: u8, key: u8, velocity: u8) {
        let idx = match self.voices.iter().position(|v| v.stage == Stage::Idle) {
            Some(i) => i,
            None => {
                // Steal: the oldest releasing voice, else the oldest voice.
                let oldest = |want_release: bool| {
                    self.voices
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| !want_release || v.stage == Stage::Release)
                        .min_by_key(|(_, v)| v.age)
                        .map(|(i, _)| i)
                };
                let Some(i) = oldest(true).or_else(|| oldest(false)) else {
                    return;
                };
                let sr = self.sample_rate;
                let v = &mut self.voices[i];
                v.remaining = ms_to_samples(STEAL_RAMP_MS, sr);
                v.step = -v.env / v.remaining as f32;
                v.stage = Stage::Steal;
                v.pending = Some((slot, key, velocity));
                v.age = self.next_age;
                self.next_age += 1;
                return;
            }
        };
        let age = self.next_age;
        self.next_age += 1;
        self.start(idx, slot, key, velocity, age);
    }

    /// Starts a note on voice `i`. `age` is the note-on's place in the
    /// order of note-ons (what "oldest" means when stealing): a stolen
    /// voice keeps the age its note-on got, so the order does not depend on
    /// where the host's blocks split the steal ramps.
    fn start(&mut self, i: usize, slot: u8, key: u8, velocity: u8, age: u64) {
        let t = timbre_for_slot(slot);
        let sr = self.sample_rate;
        let pan = pan_for_slot(slot);
        let angle = (pan + 1.0) * std::f32::consts::FRAC_PI_4;
        let v = &mut self.voices[i];
        *v = Voice {
            stage: Stage::Attack,
            slot,
            key,
            gain: VOICE_GAIN * velocity as f32 / 127.0,
            phase: 0,
            inc: phase_inc(key_to_hz(key), sr),
            mod_phase: 0,
            env: 0.0,
            step: 0.0,
            remaining: ms_to_samples(t.attack_ms, sr),
            age,
            pan_l: angle.cos(),
            pan_r: angle.sin(),
            pending: None,
        };
        v.step = 1.0 / v.remaining as f32;
    }

    fn note_off(&mut self, slot: u8, key: u8) {
        for i in 0..MAX_VOICES {
            let v = &self.voices[i];
            if v.slot == slot
                && v.key == key
                && matches!(v.stage, Stage::Attack | Stage::Decay | Stage::Sustain)
            {
                self.release(i);
            }
            // A stolen voice waiting to start this very note starts it and
            // lets it go at once (a zero-length note still sounds briefly).
            let v = &mut self.voices[i];
            if v.stage == Stage::Steal && v.pending.is_some_and(|(s, k, _)| s == slot && k == key) {
                v.pending = None;
            }
        }
    }

    fn release(&mut self, i: usize) {
        let sr = self.sample_rate;
        let v = &mut self.voices[i];
        if matches!(v.stage, Stage::Idle | Stage::Release | Stage::Steal) {
            return;
        }
        let t = timbre_for_slot(v.slot);
        v.stage = Stage::Release;
        v.remaining = ms_to_samples(t.release_ms, sr);
        v.step = -v.env / v.remaining as f32;
    }

    /// Renders every voice into `left`/`right` (overwritten), then applies
    /// the output level.
    ///
    /// Each voice is rendered in runs during which its envelope is one
    /// linear segment (`env + k·step`): the stage logic runs once per run,
    /// not per sample, and the inner loops (one per waveform) have no
    /// branch but the PolyBLEP edges. Idle voices cost nothing.
    fn render_span(&mut self, left: &mut [f32], right: &mut [f32]) {
        left.fill(0.0);
        right.fill(0.0);
        let n = left.len();
        for i in 0..MAX_VOICES {
            let mut s = 0usize;
            while s < n && self.voices[i].stage != Stage::Idle {
                let v = &mut self.voices[i];
                let run = (v.remaining as usize).min(n - s);
                let wave = timbre_for_slot(v.slot).wave;
                render_run(v, wave, &mut left[s..s + run], &mut right[s..s + run]);
                s += run;
                v.remaining -= run as u32;
                if v.remaining == 0 {
                    self.next_stage(i);
                }
            }
        }
        // Output level: a ramp while it changes, then a constant gain.
        let mut s = 0usize;
        if self.level_remaining > 0 {
            let ramp = (self.level_remaining as usize).min(n);
            for (l, r) in left[..ramp].iter_mut().zip(&mut right[..ramp]) {
                self.level += self.level_step;
                *l *= self.level;
                *r *= self.level;
            }
            self.level_remaining -= ramp as u32;
            if self.level_remaining == 0 {
                self.level = self.level_target;
            }
            s = ramp;
        }
        let g = self.level;
        for (l, r) in left[s..].iter_mut().zip(&mut right[s..]) {
            *l *= g;
            *r *= g;
        }
    }

    /// Moves voice `i` to its next envelope stage at the end of a segment.
    fn next_stage(&mut self, i: usize) {
        let sr = self.sample_rate;
        let v = &mut self.voices[i];
        let t = timbre_for_slot(v.slot);
        match v.stage {
            Stage::Attack => {
                v.env = 1.0;
                v.stage = Stage::Decay;
                v.remaining = ms_to_samples(t.decay_ms, sr);
                v.step = (t.sustain - 1.0) / v.remaining as f32;
            }
            Stage::Decay => {
                v.env = t.sustain;
                v.step = 0.0;
                if t.sustain <= 0.0 {
                    v.stage = Stage::Idle;
                } else {
                    v.stage = Stage::Sustain;
                    v.remaining = u32::MAX;
                }
            }
            Stage::Sustain => v.remaining = u32::MAX,
            Stage::Release => {
                v.env = 0.0;
                v.stage = Stage::Idle;
            }
            Stage::Steal => {
                v.env = 0.0;
                v.stage = Stage::Idle;
                if let Some((slot, key, vel)) = v.pending.take() {
                    let age = v.age;
                    self.start(i, slot, key, vel, age);
                }
            }
            Stage::Idle => {}
        }
    }
}

/// Renders one envelope segment of a voice (`left.len()` samples, all in
/// the same stage) and adds it into the buffers; advances the voice's
/// phases and envelope. One loop per waveform, so the choice is made once;
/// each loop computes sample `k` from `k` alone (phase `p0 + k·inc`,
/// envelope `e0 + k·step`) with branch-free arithmetic, so the compiler
/// can vectorise it.
///
/// Compiled twice: for the baseline CPU and with AVX2 + FMA, chosen at run
/// time (`multiversion`: one cached CPU check, no allocation); the AVX2 clone
/// does eight samples per instruction instead of four, and fuses each
/// multiply-add into one instruction (`fma` below is a compile-time
/// constant in each clone).
#[multiversion(targets("x86_64+avx2+fma"))]
fn render_run(v: &mut Voice, wave: Wave, left: &mut [f32], right: &mut [f32]) {
    let fma = target_cfg_f!(target_feature = "fma");
    let (gl, gr) = (v.gain * v.pan_l, v.gain * v.pan_r);
    let (p0, inc, e0, step) = (v.phase, v.inc, v.env, v.step);
    let dt = inc as f32 * SCALE;
    let inv_dt = if dt > 0.0 { 1.0 / dt } else { 0.0 };
    let len = left.len();
    match wave {
        Wave::Sine => run(fma, left, right, p0, inc, e0, step, gl, gr, |p, _| {
            sine(fma, p)
        }),
        Wave::Triangle => run(fma, left, right, p0, inc, e0, step, gl, gr, |p, _| {
            madd(fma, -4.0, signed_cycles(p).abs(), 1.0)
        }),
        Wave::Saw => run(fma, left, right, p0, inc, e0, step, gl, gr, |p, _| {
            // Edge at half a cycle: 2u runs from -1 up to 1.
            let u = signed_cycles(p);
            2.0 * u - poly_blep(fma, u + 0.5, dt, inv_dt)
        }),
        Wave::Square => run(fma, left, right, p0, inc, e0, step, gl, gr, |p, _| {
            let u = signed_cycles(p);
            let sq = if u < 0.0 { -1.0 } else { 1.0 };
            // Edges at 0 (rising) and half a cycle (falling).
            let t_rise = if u < 0.0 { u + 1.0 } else { u };
            sq + poly_blep(fma, t_rise, dt, inv_dt) - poly_blep(fma, u + 0.5, dt, inv_dt)
        }),
        Wave::Bell => {
            // Modulator at twice the carrier; index 1.5 rad scaled by the
            // envelope, in phase units.
            const INDEX: f32 = 1.5 / TAU * 4_294_967_296.0;
            let m0 = v.mod_phase;
            let minc = inc.wrapping_mul(2);
            let mut k = 0u32;
            run(fma, left, right, p0, inc, e0, step, gl, gr, |p, env| {
                let mp = m0.wrapping_add(minc.wrapping_mul(k));
                k += 1;
                let m = sine(fma, mp) * INDEX * env;
                sine(fma, p.wrapping_add(m as i32 as u32))
            });
            v.mod_phase = m0.wrapping_add(minc.wrapping_mul(len as u32));
        }
    }
    v.phase = p0.wrapping_add(inc.wrapping_mul(len as u32));
    v.env = e0 + step * len as f32;
}

/// The loop every waveform shares: `osc(phase, envelope)` for each sample,
/// times the envelope, added into both channels with the pan gains.
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "the hot loop's state, kept in registers"
)]
fn run(
    fma: bool,
    left: &mut [f32],
    right: &mut [f32],
    p0: u32,
    inc: u32,
    e0: f32,
    step: f32,
    gl: f32,
    gr: f32,
    mut osc: impl FnMut(u32, f32) -> f32,
) {
    // Blocks are far shorter than 2³¹ samples: `k` fits an i32, whose
    // conversion to float is one instruction per lane.
    for (k, (l, r)) in (0i32..).zip(left.iter_mut().zip(right.iter_mut())) {
        let p = p0.wrapping_add(inc.wrapping_mul(k as u32));
        let env = madd(fma, step, k as f32, e0);
        let x = osc(p, env) * env;
        *l = madd(fma, x, gl, *l);
        *r = madd(fma, x, gr, *r);
    }
}

/// `a·b + c`: one fused instruction where `fma` (a constant in each
/// compiled clone of [`render_run`]), else a multiply and an add. Never the
/// library's software `fmaf`, which a plain `mul_add` becomes on a CPU
/// without FMA.
#[inline(always)]
fn madd(fma: bool, a: f32, b: f32, c: f32) -> f32 {
    if fma { a.mul_add(b, c) } else { a * b + c }
}

/// A phase accumulator value as a signed fraction of a cycle, -0.5..0.5.
#[inline(always)]
fn signed_cycles(p: u32) -> f32 {
    p as i32 as f32 * SCALE
}

/// `sin(2π·p/2³²)`: folded onto a quarter cycle and an odd polynomial of
/// degree 9 (Taylor series of `sin(πz/2)`, |error| < 7e-6 — about the
/// accuracy of a 1024-entry interpolated table, with no memory access and no
/// branch).
#[inline(always)]
fn sine(fma: bool, p: u32) -> f32 {
    // z in -2..2 stands for -π..π in units of π/2.
    let z = 4.0 * signed_cycles(p);
    let a = z.abs();
    // Fold |z| > 1 onto 2 - |z| (sin(π - x) = sin x), keeping the sign.
    let z = if a > 1.0 { (2.0 - a).copysign(z) } else { z };
    let z2 = z * z;
    const C1: f32 = std::f32::consts::FRAC_PI_2;
    const C3: f32 = -0.645_964_1;
    const C5: f32 = 0.079_692_63;
    const C7: f32 = -0.004_681_754;
    const C9: f32 = 0.000_160_441_2;
    let h = madd(fma, z2, C9, C7);
    let h = madd(fma, z2, h, C5);
    let h = madd(fma, z2, h, C3);
    z * madd(fma, z2, h, C1)
}

/// 2⁻³²: phase accumulator units to cycles.
const SCALE: f32 = 1.0 / 4_294_967_296.0;

fn sanitize_rate(sr: f32) -> f32 {
    if sr.is_finite() && sr >= 1000.0 {
        sr
    } else {
        48_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(offset: u32, slot: u8, msg: ShortMessage) -> OutEvent {
        OutEvent {
            offset,
            msg,
            slot,
            source: None,
        }
    }

    fn render(s: &mut MonitorSynth, events: &[OutEvent], n: usize) -> Vec<f32> {
        let mut l = vec![0.0; n];
        let mut r = vec![0.0; n];
        s.render(events, 1.0, &mut l, &mut r);
        l.iter().zip(&r).map(|(a, b)| a + b).collect()
    }

    fn max_step(x: &[f32]) -> f32 {
        x.windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn the_polynomial_sine_matches_sin_over_the_whole_cycle() {
        // Both ways of evaluating it: fused (the AVX2 + FMA clone) and not.
        for fma in [false, true] {
            let mut worst = 0.0f64;
            for i in 0..100_003u64 {
                let p = (i * 42_949) as u32; // walks the cycle, both halves
                let want = (std::f64::consts::TAU * p as f64 / 4_294_967_296.0).sin();
                worst = worst.max((sine(fma, p) as f64 - want).abs());
            }
            assert!(worst < 1e-5, "fma {fma}: worst error {worst}");
            assert_eq!(sine(fma, 0), 0.0);
            assert!((sine(fma, 1 << 30) - 1.0).abs() < 1e-5);
            assert!((sine(fma, 3 << 30) + 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn silence_until_the_note_starts_at_its_sample() {
        let mut s = MonitorSynth::new(48_000.0, 1.0);
        let out = render(
            &mut s,
            &[ev(100, 0, ShortMessage::note_on(0, 69, 127))],
            512,
        );
        assert!(out[..=100].iter().all(|&x| x == 0.0));
        assert!(out[101..].iter().any(|&x| x != 0.0));
    }

    #[test]
    fn note_on_off_and_steals_are_click_free() {
        // A low sine moves at most 2π·f/sr·amplitude per sample; anything far
        // above that is a click. Fill the pool, then steal and release at
        // arbitrary sample positions.
        let sr = 48_000.0;
        let mut s = MonitorSynth::new(sr, 1.0);
        let mut all = Vec::new();
        let mut events = Vec::new();
        for k in 0..MAX_VOICES as u8 {
            events.push(ev(
                k as u32 * 7,
                0,
                ShortMessage::note_on(0, 30 + (k % 4), 127),
            ));
        }
        all.extend(render(&mut s, &events, 4096));
        let steal = [
            ev(13, 0, ShortMessage::note_on(0, 33, 127)),
            ev(2000, 0, ShortMessage::note_off(0, 30, 0)),
            ev(2001, 0, ShortMessage::note_off(0, 31, 0)),
        ];
        all.extend(render(&mut s, &steal, 4096));
        all.extend(render(&mut s, &[], 16_384));
        let peak = all.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        let natural = TAU * key_to_hz(33) / sr * peak;
        assert!(peak > 0.1, "peak {peak}");
        assert!(
            max_step(&all) < 4.0 * natural,
            "step {} vs {natural}",
            max_step(&all)
        );
    }

    #[test]
    fn level_changes_are_ramped() {
        let mut s = MonitorSynth::new(48_000.0, 1.0);
        render(&mut s, &[ev(0, 0, ShortMessage::note_on(0, 40, 127))], 4800);
        let mut l = vec![0.0; 4800];
        let mut r = vec![0.0; 4800];
        s.render(&[], 0.0, &mut l, &mut r);
        let f = key_to_hz(40);
        let natural = TAU * f / 48_000.0 * 0.2;
        assert!(max_step(&l) < 2.0 * natural);
        // After the ramp the output is silent.
        assert!(l[1000..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn each_slot_has_its_own_timbre_and_place() {
        assert_ne!(timbre_for_slot(0).wave, timbre_for_slot(1).wave);
        assert_ne!(pan_for_slot(1), pan_for_slot(2));
        let mut s = MonitorSynth::new(48_000.0, 1.0);
        let mut l = vec![0.0; 2048];
        let mut r = vec![0.0; 2048];
        s.render(
            &[ev(0, 1, ShortMessage::note_on(1, 60, 100))],
            1.0,
            &mut l,
            &mut r,
        );
        let (el, er): (f32, f32) = (l.iter().map(|x| x * x).sum(), r.iter().map(|x| x * x).sum());
        assert!(el > er, "slot 1 sits left of centre");
    }

    #[test]
    fn releases_end_in_silence_and_free_the_voice() {
        let mut s = MonitorSynth::new(44_100.0, 1.0);
        render(&mut s, &[ev(0, 2, ShortMessage::note_on(2, 60, 100))], 1000);
        render(
            &mut s,
            &[ev(0, 2, ShortMessage::note_off(2, 60, 0))],
            44_100,
        );
        assert_eq!(s.active_voices(), 0);
    }

    /// Long enough for steals, attacks and decays, and the shorter releases,
    /// to end inside the rendering.
    const LEN: usize = 6144;

    /// Renders `events` (absolute sample, slot, message) over `len` samples
    /// in blocks of `block` samples; mono sum.
    fn render_blocks(events: &[(usize, u8, ShortMessage)], len: usize, block: usize) -> Vec<f32> {
        let mut s = MonitorSynth::new(48_000.0, 1.0);
        let mut out = Vec::with_capacity(len);
        for start in (0..len).step_by(block) {
            let n = block.min(len - start);
            let evs: Vec<OutEvent> = events
                .iter()
                .filter(|(at, _, _)| (start..start + n).contains(at))
                .map(|&(at, slot, msg)| ev((at - start) as u32, slot, msg))
                .collect();
            out.extend(render(&mut s, &evs, n));
        }
        out
    }

    /// Cases for the block-versus-sample property: 64 by default, more
    /// with `JAM_SYNTH_CASES` for a deeper local run.
    fn cases() -> u32 {
        std::env::var("JAM_SYNTH_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(64)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases()))]
        /// A block renders each voice in as few runs as it can; the result
        /// must be what rendering one sample at a time (every event seeing
        /// every voice exactly at its sample) gives: same voice choices,
        /// steals, releases and ramps, up to float rounding.
        #[test]
        fn a_block_sounds_like_rendering_sample_by_sample(
            raw in proptest::collection::vec((0usize..LEN, 0u8..6, 0u8..4, 40u8..52), 0..160),
            block in proptest::prop_oneof![proptest::strategy::Just(LEN), 1usize..700],
        ) {
            let mut events: Vec<(usize, u8, ShortMessage)> = raw
                .iter()
                .map(|&(at, slot, kind, key)| {
                    let msg = match kind {
                        0 | 1 => ShortMessage::note_on(slot, key, 100),
                        2 => ShortMessage::note_off(slot, key, 0),
                        _ => ShortMessage::control_change(slot, 123, 0),
                    };
                    (at, slot, msg)
                })
                .collect();
            events.sort_by_key(|e| e.0);
            let whole = render_blocks(&events, LEN, block);
            let each = render_blocks(&events, LEN, 1);
            let worst = whole.iter().zip(&each).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            proptest::prop_assert!(worst < 1e-3, "worst difference {}", worst);
        }
    }
}
