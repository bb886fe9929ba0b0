//! The quantizer: grid, strength, swing, and role-sensitive presets.
//!
//! A grid of step `g` with swing `s` (percent, 50 = straight) has its slots
//! in pairs: the even slot of pair `k` at `2kg`, the odd one at
//! `2kg + 2g·s/100`. With `s = 66` an eighth-note grid swings as triplets.
//!
//! [`Quantizer::quantize`] moves an onset towards the nearest slot by
//! `strength` percent (100 = onto the slot, 0 = untouched), with exact
//! integer arithmetic on micro-beats (rounded to the nearest micro-beat,
//! ties away from zero). [`Quantizer::next_slot`] is the first slot at or
//! after a beat: where a late note is snapped to.
//!
//! Roles (see [`QuantizerConfig::for_role`]):
//! - **rhythm**: a sixteenth grid at full strength;
//! - **melody**: a sixteenth grid at 25 %: expression kept, sloppiness eased;
//! - **harmony**: a sixteenth grid at 50 %, and chord notes kept together:
//!   a note that starts within [`QuantizerConfig::chord_window`] of the first
//!   note of a chord takes that note's quantized onset
//!   ([`Quantizer::handle_onset`] keeps the state).
//!
//! ```
//! use jam_core::Beats;
//! use jam_predict::quantizer::{Quantizer, QuantizerConfig};
//! use jam_predict::Role;
//!
//! let q = Quantizer::new(QuantizerConfig::for_role(Role::Rhythm));
//! assert_eq!(q.quantize(Beats::from_f64(1.26)), Beats::from_f64(1.25));
//! assert_eq!(q.next_slot(Beats::from_f64(1.26)), Beats::from_f64(1.5));
//! ```

use crate::features::Role;
use jam_core::Beats;

/// Settings of a [`Quantizer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantizerConfig {
    /// Grid step (e.g. a sixteenth note = 0.25 beats). Zero or negative
    /// turns quantization off.
    pub grid: Beats,
    /// How far onsets move to the slot, in percent (0-100).
    pub strength: u8,
    /// Swing in percent (50-75; 50 = straight).
    pub swing: u8,
    /// Notes starting this close after a chord's first note belong to the
    /// chord (harmony). Zero turns grouping off.
    pub chord_window: Beats,
}

impl QuantizerConfig {
    /// The preset for a role (see the [module docs](self)).
    pub const fn for_role(role: Role) -> QuantizerConfig {
        let sixteenth = Beats(Beats::PER_BEAT / 4);
        match role {
            Role::Rhythm => QuantizerConfig {
                grid: sixteenth,
                strength: 100,
                swing: 50,
                chord_window: Beats::ZERO,
            },
            Role::Melody => QuantizerConfig {
                grid: sixteenth,
                strength: 25,
                swing: 50,
                chord_window: Beats::ZERO,
            },
            Role::Harmony => QuantizerConfig {
                grid: sixteenth,
                strength: 50,
                swing: 50,
                chord_window: Beats(Beats::PER_BEAT / 16),
            },
        }
    }
}

/// A quantizer; see the [module docs](self). Sans-IO and allocation-free:
/// the harmony state is two beats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantizer {
    config: QuantizerConfig,
    /// Raw and quantized onset of the current chord's first note.
    chord: Option<(Beats, Beats)>,
}

impl Quantizer {
    /// A quantizer with `config` (strength clamped to 100, swing to 50-75).
    pub fn new(mut config: QuantizerConfig) -> Quantizer {
        config.strength = config.strength.min(100);
        config.swing = config.swing.clamp(50, 75);
        Quantizer {
            config,
            chord: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &QuantizerConfig {
        &self.config
    }

    /// The slots around `b`: the one at or before it and the one after.
    fn slots_around(&self, b: Beats) -> (Beats, Beats) {
        let g = self.config.grid.0;
        let pair = 2 * g;
        let base = b.0.div_euclid(pair) * pair;
        let odd = base + pair * i64::from(self.config.swing) / 100;
        if b.0 < odd {
            (Beats(base), Beats(odd))
        } else {
            (Beats(odd), Beats(base + pair))
        }
    }

    /// The nearest grid slot (ties go to the later slot).
    pub fn nearest_slot(&self, b: Beats) -> Beats {
        if self.config.grid.0 <= 0 {
            return b;
        }
        let (lo, hi) = self.slots_around(b);
        if b - lo < hi - b { lo } else { hi }
    }

    /// The first grid slot at or after `b`.
    pub fn next_slot(&self, b: Beats) -> Beats {
        if self.config.grid.0 <= 0 {
            return b;
        }
        let (lo, hi) = self.slots_around(b);
        if lo == b { lo } else { hi }
    }

    /// `b` moved towards its nearest slot by the strength (stateless; no
    /// chord grouping).
    pub fn quantize(&self, b: Beats) -> Beats {
        let slot = self.nearest_slot(b);
        let d = i128::from(slot.0 - b.0) * i128::from(self.config.strength);
        // Round half away from zero.
        let step = if d >= 0 {
            (d + 50) / 100
        } else {
            (d - 50) / 100
        };
        b + Beats(step as i64)
    }

    /// Quantizes the onset of the next note in time order, keeping chord
    /// notes together (harmony): a note within the chord window of the
    /// current chord's first note gets that note's quantized onset.
    pub fn handle_onset(&mut self, b: Beats) -> Beats {
        if self.config.chord_window.0 > 0
            && let Some((raw, quantized)) = self.chord
            && b >= raw
            && b - raw <= self.config.chord_window
        {
            return quantized;
        }
        let q = self.quantize(b);
        self.chord = Some((b, q));
        q
    }

    /// Forgets the current chord (a new phrase or a reset transport).
    pub fn reset(&mut self) {
        self.chord = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(x: f64) -> Beats {
        Beats::from_f64(x)
    }

    fn cfg(grid: f64, strength: u8, swing: u8) -> QuantizerConfig {
        QuantizerConfig {
            grid: b(grid),
            strength,
            swing,
            chord_window: Beats::ZERO,
        }
    }

    /// One row of a hand-computed table: (grid, strength, swing, input) ->
    /// (quantized, next slot).
    fn check(grid: f64, strength: u8, swing: u8, input: f64, expected: (f64, f64)) {
        let q = Quantizer::new(cfg(grid, strength, swing));
        assert_eq!(
            (q.quantize(b(input)), q.next_slot(b(input))),
            (b(expected.0), b(expected.1)),
            "grid {grid} strength {strength} swing {swing} input {input}"
        );
    }

    #[test]
    fn hand_computed_cases() {
        check(0.25, 100, 50, 1.10, (1.0, 1.25));
        check(0.25, 100, 50, 1.125, (1.25, 1.25)); // tie goes later
        check(0.25, 100, 50, 1.0, (1.0, 1.0));
        check(0.25, 50, 50, 1.10, (1.05, 1.25));
        check(0.25, 0, 50, 1.10, (1.10, 1.25));
        check(0.25, 100, 50, -0.1, (0.0, 0.0));
        check(0.25, 100, 50, -0.2, (-0.25, 0.0));
        // Swung eighths (66 %): slots at 0, 0.66, 1, 1.66, ...
        check(0.5, 100, 66, 0.6, (0.66, 0.66));
        check(0.5, 100, 66, 0.4, (0.66, 0.66));
        check(0.5, 100, 66, 0.3, (0.0, 0.66));
        check(0.5, 100, 66, 0.9, (1.0, 1.0));
        check(0.5, 100, 66, 1.7, (1.66, 2.0));
        // Grid off.
        check(0.0, 100, 50, 1.234567, (1.234567, 1.234567));
    }

    #[test]
    fn strength_rounds_to_the_nearest_micro_beat() {
        let q = Quantizer::new(cfg(1.0, 33, 50));
        // 1 micro-beat before slot 1: moves 0.33 -> 0.
        assert_eq!(q.quantize(Beats(999_999)), Beats(999_999));
        // 3 micro-beats: 0.99 -> 1.
        assert_eq!(q.quantize(Beats(999_997)), Beats(999_998));
    }

    #[test]
    fn roles_have_their_presets() {
        let r = Quantizer::new(QuantizerConfig::for_role(Role::Rhythm));
        let m = Quantizer::new(QuantizerConfig::for_role(Role::Melody));
        assert_eq!(r.quantize(b(2.1)), b(2.0));
        assert_eq!(m.quantize(b(2.1)), b(2.075));
    }

    #[test]
    fn harmony_keeps_chord_notes_together() {
        let mut q = Quantizer::new(QuantizerConfig::for_role(Role::Harmony));
        let first = q.handle_onset(b(0.98)); // 50 % towards 1.0
        assert_eq!(first, b(0.99));
        assert_eq!(q.handle_onset(b(1.03)), b(0.99)); // within 1/16 beat
        assert_eq!(q.handle_onset(b(1.04)), b(0.99));
        // Beyond the window: a new chord, quantized on its own.
        assert_eq!(q.handle_onset(b(1.10)), b(1.05));
        q.reset();
        assert_eq!(q.handle_onset(b(1.11)), b(1.055));
    }

    proptest! {
        /// At full strength the quantizer is idempotent and lands on a slot.
        #[test]
        fn full_strength_is_idempotent(x in -100_000_000i64..100_000_000, grid in 1i64..2_000_000, swing in 50u8..=75) {
            let q = Quantizer::new(QuantizerConfig { grid: Beats(grid), strength: 100, swing, chord_window: Beats::ZERO });
            let y = q.quantize(Beats(x));
            prop_assert_eq!(q.quantize(y), y);
            prop_assert_eq!(q.next_slot(y), y);
        }

        /// Quantizing never moves a note past its nearest slot, and never
        /// further than half a swung pair.
        #[test]
        fn moves_towards_the_nearest_slot_only(x in -100_000_000i64..100_000_000, grid in 1i64..2_000_000, strength in 0u8..=100, swing in 50u8..=75) {
            let q = Quantizer::new(QuantizerConfig { grid: Beats(grid), strength, swing, chord_window: Beats::ZERO });
            let b = Beats(x);
            let slot = q.nearest_slot(b);
            let y = q.quantize(b);
            prop_assert!((y.0 - b.0).abs() <= (slot.0 - b.0).abs());
            prop_assert!((y.0 - b.0) * (slot.0 - b.0) >= 0);
            prop_assert!((slot.0 - b.0).abs() <= grid * 2);
            let next = q.next_slot(b);
            prop_assert!(next >= b && next.0 - b.0 <= grid * 2);
        }
    }
}
