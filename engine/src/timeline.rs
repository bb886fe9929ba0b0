//! [`Timeline`]: the session's tempo timeline, as the engine needs it.
//!
//! **Seam.** The session document (`jam-session-crdt`) owns the shared tempo
//! timeline; `jam_core::timeline::Timeline` (tempo, beat origin, time origin,
//! with `beat_at`/`time_at`) is its shared form. Until that lands, this small
//! constant-tempo type has the same shape and the same two functions, and the
//! engine uses nothing else of it: replacing it is a change of import plus
//! the conversion in [`crate::EngineControl::set_timeline`].
//!
//! A timeline is three numbers (Ableton Link's model): a tempo, and one point
//! where a beat and a local time coincide. Everything else follows.

use jam_core::{Beats, Micros};

/// A constant-tempo mapping between local time and beats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    /// Tempo in beats per minute (finite and positive; see [`Timeline::new`]).
    bpm: f64,
    /// The beat at `time_origin`.
    beat_origin: Beats,
    /// The local time at which `beat_origin` falls.
    time_origin: Micros,
}

/// Slowest tempo a timeline accepts; slower values are raised to it.
pub const MIN_BPM: f64 = 10.0;
/// Fastest tempo a timeline accepts; faster values are lowered to it.
pub const MAX_BPM: f64 = 999.0;

impl Timeline {
    /// A timeline at `bpm` on which `beat_origin` falls at `time_origin`.
    /// The tempo is clamped to [`MIN_BPM`]..=[`MAX_BPM`]; NaN becomes 120.
    pub fn new(bpm: f64, beat_origin: Beats, time_origin: Micros) -> Self {
        let bpm = if bpm.is_nan() {
            120.0
        } else {
            bpm.clamp(MIN_BPM, MAX_BPM)
        };
        Timeline {
            bpm,
            beat_origin,
            time_origin,
        }
    }

    /// Tempo in beats per minute.
    pub fn bpm(&self) -> f64 {
        self.bpm
    }

    /// The beat at local time `t`. Realtime-safe: yes.
    pub fn beat_at(&self, t: Micros) -> Beats {
        let dt_us = t.signed_diff(self.time_origin) as f64;
        self.beat_origin + Beats::from_f64(dt_us * self.bpm / 60e6)
    }

    /// The local time at which beat `b` falls (saturating at the clock's
    /// origin). Realtime-safe: yes.
    pub fn time_at(&self, b: Beats) -> Micros {
        let db = (b - self.beat_origin).as_f64();
        let dt_us = (db * 60e6 / self.bpm).round();
        self.time_origin.offset_by(dt_us as i64)
    }
}

impl Default for Timeline {
    /// 120 BPM with beat zero at local time zero.
    fn default() -> Self {
        Timeline::new(120.0, Beats::ZERO, Micros::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_beat_at_120_bpm_is_half_a_second() {
        let t = Timeline::default();
        assert_eq!(t.beat_at(Micros::from_millis(500)), Beats::ONE);
        assert_eq!(t.time_at(Beats::from_beats(4)), Micros::from_secs(2));
    }

    #[test]
    fn tempo_is_clamped_and_nan_is_120() {
        assert_eq!(
            Timeline::new(f64::NAN, Beats::ZERO, Micros::ZERO).bpm(),
            120.0
        );
        assert_eq!(Timeline::new(0.0, Beats::ZERO, Micros::ZERO).bpm(), MIN_BPM);
        assert_eq!(Timeline::new(1e9, Beats::ZERO, Micros::ZERO).bpm(), MAX_BPM);
    }

    proptest! {
        #[test]
        fn time_to_beat_round_trips_within_a_microsecond(
            bpm in 20.0f64..300.0, t in 0u64..10_000_000_000, origin in -1_000_000_000i64..1_000_000_000
        ) {
            let tl = Timeline::new(bpm, Beats(origin), Micros::from_secs(1000));
            let back = tl.time_at(tl.beat_at(Micros(t)));
            // One micro-beat is at most 3 µs at 20 BPM; rounding adds one.
            prop_assert!(back.signed_diff(Micros(t)).abs() <= 4, "{t} -> {back:?}");
        }
    }
}
