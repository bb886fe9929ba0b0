//! [`Beats`]: positions and lengths on the shared musical timeline.

use std::fmt;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

/// A position or length on the musical timeline, in whole micro-beats
/// (one beat = 1 000 000).
///
/// Integers make sums, comparisons and serialization exact; floating point
/// appears only inside conversions (Ableton Link stores beats the same way).
/// Negative values are legal: a position before the timeline's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Beats(pub i64);

impl Beats {
    /// Micro-beats per beat.
    pub const PER_BEAT: i64 = 1_000_000;
    /// Zero beats: the origin of the timeline.
    pub const ZERO: Beats = Beats(0);
    /// One whole beat.
    pub const ONE: Beats = Beats(Self::PER_BEAT);

    /// Whole beats.
    pub const fn from_beats(b: i64) -> Self {
        Beats(b.saturating_mul(Self::PER_BEAT))
    }

    /// From a floating-point number of beats, rounded to the nearest
    /// micro-beat (saturating; NaN maps to zero).
    pub fn from_f64(b: f64) -> Self {
        Beats((b * Self::PER_BEAT as f64).round() as i64)
    }

    /// As a floating-point number of beats.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::PER_BEAT as f64
    }

    /// The raw micro-beat count.
    pub const fn as_micros_of_beat(self) -> i64 {
        self.0
    }

    /// The largest multiple of `quantum` that is `<= self` (floor towards
    /// negative infinity). A zero or negative quantum returns `self`.
    pub fn floor_to(self, quantum: Beats) -> Beats {
        if quantum.0 <= 0 {
            return self;
        }
        Beats(self.0.div_euclid(quantum.0) * quantum.0)
    }

    /// Phase of `self` within a cycle of length `quantum`, in `[0, quantum)`.
    /// A zero or negative quantum has phase zero.
    pub fn phase(self, quantum: Beats) -> Beats {
        if quantum.0 <= 0 {
            return Beats::ZERO;
        }
        Beats(self.0.rem_euclid(quantum.0))
    }
}

impl Add for Beats {
    type Output = Beats;
    fn add(self, rhs: Beats) -> Beats {
        Beats(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Beats {
    fn add_assign(&mut self, rhs: Beats) {
        *self = *self + rhs;
    }
}

impl Sub for Beats {
    type Output = Beats;
    fn sub(self, rhs: Beats) -> Beats {
        Beats(self.0.saturating_sub(rhs.0))
    }
}

impl SubAssign for Beats {
    fn sub_assign(&mut self, rhs: Beats) {
        *self = *self - rhs;
    }
}

impl Neg for Beats {
    type Output = Beats;
    fn neg(self) -> Beats {
        Beats(self.0.saturating_neg())
    }
}

impl fmt::Display for Beats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}b", self.as_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn phase_of_zero_quantum_is_zero() {
        assert_eq!(Beats::from_beats(3).phase(Beats::ZERO), Beats::ZERO);
    }

    #[test]
    fn negative_positions_floor_towards_minus_infinity() {
        let q = Beats::from_beats(4);
        assert_eq!(Beats::from_f64(-0.5).floor_to(q), Beats::from_beats(-4));
        assert_eq!(Beats::from_f64(-0.5).phase(q), Beats::from_f64(3.5));
    }

    proptest! {
        #[test]
        fn floor_plus_phase_is_identity(x in -1_000_000_000_000i64..1_000_000_000_000, q in 1i64..100_000_000) {
            let b = Beats(x);
            let q = Beats(q);
            prop_assert_eq!(b.floor_to(q) + b.phase(q), b);
            prop_assert!(b.phase(q) >= Beats::ZERO && b.phase(q) < q);
        }
    }
}
