//! Interval mode: every remote note exactly N beats after it was played.
//!
//! NINJAM's idea on MIDI: with an interval of one cycle (say 16 beats) every
//! player hears the others' previous cycle in time with their own, whatever
//! the distance. Because beats are integer micro-beats and the
//! [`Timeline`] maps them to session time with exact integer arithmetic, the
//! render beat is exactly `intended + N`, and at a constant tempo the render
//! sample is exactly `N × samples per beat` after the intended one
//! ([`sample_at`]).
//!
//! ```
//! use jam_core::timeline::{Meter, Tempo, Timeline};
//! use jam_core::{Beats, SessionTime};
//! use jam_predict::interval::{sample_at, IntervalScheduler};
//!
//! let tl = Timeline::new(SessionTime(0), Tempo::from_bpm(120.0).unwrap(), Meter::FOUR_FOUR);
//! let iv = IntervalScheduler::new(Beats::from_beats(16));
//! let at = iv.render_beat(Beats::from_f64(1.5));
//! assert_eq!(at, Beats::from_f64(17.5));
//! // 17.5 beats at 120 BPM = 8.75 s = 420 000 samples at 48 kHz.
//! assert_eq!(sample_at(&tl, at, SessionTime(0), 48_000), 420_000);
//! ```

use jam_core::timeline::Timeline;
use jam_core::{Beats, SessionTime};

/// Renders remote events exactly `interval` beats later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntervalScheduler {
    interval: Beats,
}

impl IntervalScheduler {
    /// A scheduler with an interval of `interval` (negative values count
    /// as zero).
    pub fn new(interval: Beats) -> IntervalScheduler {
        IntervalScheduler {
            interval: interval.max(Beats::ZERO),
        }
    }

    /// The interval.
    pub fn interval(&self) -> Beats {
        self.interval
    }

    /// The beat an event intended at `intended` renders at.
    pub fn render_beat(&self, intended: Beats) -> Beats {
        intended + self.interval
    }

    /// The session time it renders at.
    pub fn render_time(&self, timeline: &Timeline, intended: Beats) -> SessionTime {
        timeline.time_at(self.render_beat(intended))
    }
}

/// The first sample (at `sample_rate` Hz, counted from session time
/// `origin`) at which beat `b` has been reached: the sample a host block
/// renders the event on.
///
/// Exact: the time of `b` is taken as the exact rational from its tempo
/// segment's anchor (not the microsecond [`Timeline::time_at`] rounds to),
/// then rounded up to a whole sample once. So at a constant tempo whose
/// beat is a whole number of samples, N beats later is exactly N times that
/// many samples later.
pub fn sample_at(timeline: &Timeline, b: Beats, origin: SessionTime, sample_rate: u32) -> i64 {
    let anchors = timeline.anchors();
    let i = anchors.partition_point(|a| a.beat <= b).saturating_sub(1);
    let a = anchors[i];
    let tempo = i128::from(a.tempo.micro_bpm());
    let num = (i128::from(a.time.signed_diff(origin)) * tempo
        + i128::from((b - a.beat).0) * 60_000_000)
        * i128::from(sample_rate);
    let den = tempo * 1_000_000;
    let s = -((-num).div_euclid(den));
    s.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use jam_core::Tempo;
    use jam_core::timeline::{Meter, TempoChange};
    use proptest::prelude::*;

    fn tl(bpm: f64) -> Timeline {
        Timeline::new(
            SessionTime(123_457),
            Tempo::from_bpm(bpm).unwrap(),
            Meter::FOUR_FOUR,
        )
    }

    #[test]
    fn across_a_tempo_change_the_interval_is_still_n_beats() {
        let t = Timeline::build(
            SessionTime(0),
            Tempo::from_bpm(120.0).unwrap(),
            Meter::FOUR_FOUR,
            &[TempoChange {
                at: Beats::from_beats(8),
                tempo: Tempo::from_bpm(60.0).unwrap(),
                meter: Meter::FOUR_FOUR,
            }],
        );
        let iv = IntervalScheduler::new(Beats::from_beats(8));
        // Beat 4 (2 s) renders at beat 12: 4 s + 4 beats at 60 BPM = 8 s.
        assert_eq!(iv.render_beat(Beats::from_beats(4)), Beats::from_beats(12));
        assert_eq!(
            iv.render_time(&t, Beats::from_beats(4)),
            SessionTime(8_000_000)
        );
    }

    proptest! {
        /// Every note lands exactly N beats later, to the micro-beat, and at
        /// a constant tempo whose beat is a whole number of samples, exactly
        /// N beats' worth of samples later.
        #[test]
        fn exactly_n_beats_later_to_the_sample(
            intended in 0i64..1_000_000_000_000,
            n in 1i64..64,
            case in 0usize..4,
        ) {
            // (BPM, sample rate, samples per beat)
            let (bpm, rate, per_beat) = [(120.0, 48_000u32, 24_000i64), (60.0, 44_100, 44_100), (90.0, 48_000, 32_000), (150.0, 96_000, 38_400)][case];
            let t = tl(bpm);
            let iv = IntervalScheduler::new(Beats::from_beats(n));
            let at = iv.render_beat(Beats(intended));
            prop_assert_eq!(at.0 - intended, n * Beats::PER_BEAT);
            let origin = SessionTime(0);
            let s0 = sample_at(&t, Beats(intended), origin, rate);
            let s1 = sample_at(&t, at, origin, rate);
            prop_assert_eq!(s1 - s0, n * per_beat);
        }
    }
}
