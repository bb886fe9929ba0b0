//! The shared musical clock: [`Tempo`], [`Meter`], and the piecewise-linear
//! [`Timeline`] that maps session time to beats and back.
//!
//! The model follows Ableton Link's: a segment of the timeline is three
//! numbers (a tempo, a beat and the session time at which that beat falls),
//! and everything else (phase, bars, the next boundary) is built on two
//! functions, [`Timeline::beat_at`] and [`Timeline::time_at`]. Unlike Link,
//! a session keeps its whole tempo history, so a timeline is a sorted list of
//! [`Anchor`]s, one per tempo or meter change.
//!
//! # Exactness
//!
//! Beats are integer micro-beats ([`Beats`]), session time is integer
//! microseconds ([`SessionTime`]), and a tempo is an integer number of
//! micro-BPM ([`Tempo`]). Conversions are exact rational arithmetic in
//! 128 bits with one rounding, so a segment never drifts however long it
//! is, and every replica that builds a timeline from the same changes gets
//! bit-identical answers (no floating point is involved).
//!
//! The rounding is chosen so that the two conversions form a Galois
//! connection, the law every other function relies on:
//!
//! > `time_at(b) <= t` if and only if `b <= beat_at(t)`
//!
//! that is, `beat_at` rounds down (the last micro-beat already reached at
//! `t`) and `time_at` rounds up (the first microsecond at which `b` has been
//! reached). Consequences: both are monotone, a beat anchored by a change
//! is reached exactly at its anchor time, and `time_at(beat_at(t))` is at
//! most one micro-beat's duration before `t` (under 1 µs at 60 BPM and above,
//! at most 1 µs from 30 BPM up).
//!
//! ```
//! use jam_core::timeline::{Meter, Tempo, Timeline, TempoChange};
//! use jam_core::{Beats, SessionTime};
//!
//! let t0 = SessionTime(1_000_000);
//! let tl = Timeline::build(t0, Tempo::from_bpm(120.0).unwrap(), Meter::FOUR_FOUR, &[
//!     TempoChange { at: Beats::from_beats(8), tempo: Tempo::from_bpm(60.0).unwrap(), meter: Meter::FOUR_FOUR },
//! ]);
//! // Eight beats at 120 BPM take four seconds; the ninth beat at 60 BPM one more.
//! assert_eq!(tl.time_at(Beats::from_beats(8)), SessionTime(5_000_000));
//! assert_eq!(tl.beat_at(SessionTime(6_000_000)), Beats::from_beats(9));
//! assert_eq!(tl.bar_at(Beats::from_beats(9)).bar, 2);
//! ```

use crate::{Beats, SessionTime};
use std::fmt;

/// A tempo in whole micro-BPM (beats per minute × 1 000 000).
///
/// Why micro-BPM and not microseconds per beat (Link's wire unit): people
/// type tempos in BPM, often with decimals (`128.5`), and every such tempo
/// is exact in micro-BPM, while `140 BPM` is not a whole number of
/// microseconds per beat. Equality, ordering and serialization are exact,
/// and converting micro-seconds to micro-beats is the small rational
/// `µs × µBPM / 60 000 000`.
///
/// Valid tempos lie in [`Tempo::MIN`]`..=`[`Tempo::MAX`] (Link's range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tempo(u64);

/// Microseconds per minute times micro-beats per beat divided by micro-BPM
/// per BPM: the denominator of every tempo conversion.
const MICROS_PER_MINUTE: i128 = 60_000_000;

impl Tempo {
    /// Micro-BPM per BPM.
    pub const MICRO_BPM_PER_BPM: u64 = 1_000_000;
    /// The slowest tempo: 20 BPM.
    pub const MIN: Tempo = Tempo(20 * Self::MICRO_BPM_PER_BPM);
    /// The fastest tempo: 999 BPM.
    pub const MAX: Tempo = Tempo(999 * Self::MICRO_BPM_PER_BPM);

    /// A tempo from whole micro-BPM; errors outside [`Tempo::MIN`]`..=`[`Tempo::MAX`].
    pub const fn from_micro_bpm(micro_bpm: u64) -> Result<Tempo, TimelineError> {
        if micro_bpm < Self::MIN.0 || micro_bpm > Self::MAX.0 {
            return Err(TimelineError::TempoOutOfRange(micro_bpm));
        }
        Ok(Tempo(micro_bpm))
    }

    /// A tempo from BPM, rounded to the nearest micro-BPM; errors outside
    /// the valid range or for NaN.
    pub fn from_bpm(bpm: f64) -> Result<Tempo, TimelineError> {
        let micro = (bpm * Self::MICRO_BPM_PER_BPM as f64).round();
        if !micro.is_finite() || micro < 0.0 || micro > u64::MAX as f64 {
            return Err(TimelineError::TempoOutOfRange(0));
        }
        Self::from_micro_bpm(micro as u64)
    }

    /// The tempo in micro-BPM.
    pub const fn micro_bpm(self) -> u64 {
        self.0
    }

    /// The tempo in BPM (for display and for hosts that speak floats).
    pub fn bpm(self) -> f64 {
        self.0 as f64 / Self::MICRO_BPM_PER_BPM as f64
    }

    /// The duration of one beat in microseconds (for display).
    pub fn micros_per_beat(self) -> f64 {
        MICROS_PER_MINUTE as f64 * Self::MICRO_BPM_PER_BPM as f64 / self.0 as f64
    }

    /// Micro-beats elapsed in `micros` microseconds at this tempo, rounded
    /// towards negative infinity.
    pub fn beats_in(self, micros: i64) -> Beats {
        let num = micros as i128 * self.0 as i128;
        Beats(saturate(num.div_euclid(MICROS_PER_MINUTE)))
    }

    /// Microseconds needed to advance `beats` at this tempo, rounded towards
    /// positive infinity.
    pub fn micros_for(self, beats: Beats) -> i64 {
        let num = beats.0 as i128 * MICROS_PER_MINUTE;
        let den = self.0 as i128;
        saturate(-((-num).div_euclid(den)))
    }
}

impl fmt::Display for Tempo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::MICRO_BPM_PER_BPM;
        let frac = self.0 % Self::MICRO_BPM_PER_BPM;
        if frac == 0 {
            write!(f, "{whole} BPM")
        } else {
            let s = format!("{frac:06}");
            write!(f, "{whole}.{} BPM", s.trim_end_matches('0'))
        }
    }
}

fn saturate(x: i128) -> i64 {
    x.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// A time signature: `numerator` notes of value `1/denominator` per bar.
///
/// Beats on the timeline are quarter notes (as in every DAW), so a bar lasts
/// `numerator × 4 / denominator` beats: 4/4 is four beats, 6/8 three, 7/8
/// three and a half. The denominator is a power of two up to 32, which keeps
/// every bar length a whole number of micro-beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Meter {
    numerator: u8,
    denominator: u8,
}

impl Meter {
    /// Common time.
    pub const FOUR_FOUR: Meter = Meter {
        numerator: 4,
        denominator: 4,
    };

    /// A meter; errors for a zero numerator, a numerator above 64, or a
    /// denominator that is not 1, 2, 4, 8, 16 or 32.
    pub const fn new(numerator: u8, denominator: u8) -> Result<Meter, TimelineError> {
        if numerator == 0 || numerator > 64 {
            return Err(TimelineError::MeterNumerator(numerator));
        }
        if !denominator.is_power_of_two() || denominator > 32 {
            return Err(TimelineError::MeterDenominator(denominator));
        }
        Ok(Meter {
            numerator,
            denominator,
        })
    }

    /// Notes per bar.
    pub const fn numerator(self) -> u8 {
        self.numerator
    }

    /// The note value that counts (4 = quarter).
    pub const fn denominator(self) -> u8 {
        self.denominator
    }

    /// The length of one bar in (quarter-note) beats.
    pub const fn bar_length(self) -> Beats {
        Beats(self.numerator as i64 * 4 * Beats::PER_BEAT / self.denominator as i64)
    }
}

impl fmt::Display for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

/// Why a tempo, meter or timeline is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimelineError {
    /// The tempo (in micro-BPM) is outside 20..=999 BPM or not a number.
    #[error("tempo {0} micro-bpm is outside 20..=999 bpm")]
    TempoOutOfRange(u64),
    /// The meter's numerator is zero or above 64.
    #[error("meter numerator {0} is outside 1..=64")]
    MeterNumerator(u8),
    /// The meter's denominator is not a power of two up to 32.
    #[error("meter denominator {0} is not one of 1, 2, 4, 8, 16, 32")]
    MeterDenominator(u8),
}

/// A requested tempo and/or meter change: from beat `at` on, the timeline
/// runs at `tempo` in `meter`.
///
/// Changes are positioned in beats, not in time, so that a change made for
/// "bar 17" lands on bar 17 whatever other changes before it do: concurrent
/// changes at different beats compose, and a change at a bar boundary keeps
/// the phase by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TempoChange {
    /// The beat from which the change applies.
    pub at: Beats,
    /// The tempo from `at` on.
    pub tempo: Tempo,
    /// The meter from `at` on.
    pub meter: Meter,
}

/// One resolved segment of a [`Timeline`]: from `beat` (reached at `time`)
/// until the next anchor, the timeline runs at `tempo` in `meter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Anchor {
    /// Session time at which `beat` is reached.
    pub time: SessionTime,
    /// The beat at which this segment starts.
    pub beat: Beats,
    /// Tempo of the segment.
    pub tempo: Tempo,
    /// Meter of the segment.
    pub meter: Meter,
    /// The beat at which the segment's bar grid starts (bar `first_bar`).
    /// A tempo-only change keeps the previous grid; a meter change starts a
    /// new grid at its own beat.
    pub grid_origin: Beats,
    /// The bar number at `grid_origin` (bar 0 starts at beat 0).
    pub first_bar: i64,
}

impl Anchor {
    fn beat_at(&self, t: SessionTime) -> Beats {
        self.beat + self.tempo.beats_in(t.0.saturating_sub(self.time.0))
    }

    fn time_at(&self, b: Beats) -> SessionTime {
        SessionTime(
            self.time
                .0
                .saturating_add(self.tempo.micros_for(b - self.beat)),
        )
    }
}

/// A position in bars: bar number and the offset into that bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarPosition {
    /// The bar number (bar 0 starts at beat 0; negative before it).
    pub bar: i64,
    /// Beats since the start of the bar, in `[0, bar length)`.
    pub offset: Beats,
    /// The meter in force.
    pub meter: Meter,
}

/// The session's tempo map: a sorted list of [`Anchor`]s.
///
/// Built once (on a worker thread) from the origin and the list of
/// [`TempoChange`]s; immutable afterwards, so reading it never allocates and
/// it can be shared with the audio thread inside a snapshot. Lookups are a
/// binary search over the anchors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timeline {
    /// Never empty; `anchors[0]` is the origin (beat 0); strictly increasing
    /// in `beat` and non-decreasing in `time`.
    anchors: Vec<Anchor>,
}

impl Timeline {
    /// A timeline with a single tempo: beat 0 falls at `origin`.
    pub fn new(origin: SessionTime, tempo: Tempo, meter: Meter) -> Timeline {
        Timeline {
            anchors: vec![Anchor {
                time: origin,
                beat: Beats::ZERO,
                tempo,
                meter,
                grid_origin: Beats::ZERO,
                first_bar: 0,
            }],
        }
    }

    /// Resolves `changes` into a timeline whose beat 0 falls at `origin`
    /// at `tempo` in `meter`.
    ///
    /// Deterministic resolution (every replica that passes the same list
    /// gets the identical timeline):
    /// - changes apply in order of their beat `at`; among changes at the same
    ///   beat, the one that comes **last in `changes`** wins (callers sort by
    ///   their tie-breaker first; the session document sorts by the session
    ///   time the change was made, then by peer id, then by id);
    /// - a change at beat 0 replaces the origin tempo and meter; changes at
    ///   negative beats are ignored (the origin defines everything before
    ///   beat 0);
    /// - a change that alters neither tempo nor meter adds no anchor.
    pub fn build(
        origin: SessionTime,
        tempo: Tempo,
        meter: Meter,
        changes: &[TempoChange],
    ) -> Timeline {
        let mut sorted: Vec<&TempoChange> = changes.iter().filter(|c| c.at.0 >= 0).collect();
        // Stable: equal beats keep the caller's order, so the last one wins.
        sorted.sort_by_key(|c| c.at);
        let mut tl = Timeline::new(origin, tempo, meter);
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i;
            while j + 1 < sorted.len() && sorted[j + 1].at == sorted[i].at {
                j += 1;
            }
            tl.push(*sorted[j]);
            i = j + 1;
        }
        tl
    }

    fn push(&mut self, c: TempoChange) {
        let prev = *self
            .anchors
            .last()
            .expect("a timeline always has an origin");
        if c.at == prev.beat {
            // Only possible at beat 0: the change replaces the origin.
            let origin = &mut self.anchors[0];
            origin.tempo = c.tempo;
            origin.meter = c.meter;
            return;
        }
        if c.tempo == prev.tempo && c.meter == prev.meter {
            return;
        }
        let (grid_origin, first_bar) = if c.meter == prev.meter {
            (prev.grid_origin, prev.first_bar)
        } else {
            // The bar running at `c.at` is cut short (counted as a bar) and a
            // new grid starts at the change.
            let len = prev.meter.bar_length().0;
            let since = c.at.0 - prev.grid_origin.0;
            let bars = since.div_euclid(len) + i64::from(since.rem_euclid(len) != 0);
            (c.at, prev.first_bar.saturating_add(bars))
        };
        self.anchors.push(Anchor {
            time: prev.time_at(c.at),
            beat: c.at,
            tempo: c.tempo,
            meter: c.meter,
            grid_origin,
            first_bar,
        });
    }

    /// The anchors, origin first.
    pub fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }

    /// The session time at which beat 0 falls.
    pub fn origin(&self) -> SessionTime {
        self.anchors[0].time
    }

    fn segment_for_time(&self, t: SessionTime) -> &Anchor {
        let i = self.anchors.partition_point(|a| a.time <= t);
        // Anchors can share a time only if a segment lasted zero time, which
        // integer rounding rules out for changes at distinct beats; taking
        // the last anchor at or before `t` is right either way.
        &self.anchors[i.saturating_sub(1)]
    }

    fn segment_for_beat(&self, b: Beats) -> &Anchor {
        let i = self.anchors.partition_point(|a| a.beat <= b);
        &self.anchors[i.saturating_sub(1)]
    }

    /// The last micro-beat reached at session time `t` (rounds down).
    ///
    /// Realtime-safe: yes (no allocation, a binary search).
    pub fn beat_at(&self, t: SessionTime) -> Beats {
        self.segment_for_time(t).beat_at(t)
    }

    /// The first session time at which beat `b` has been reached (rounds up).
    ///
    /// Realtime-safe: yes.
    pub fn time_at(&self, b: Beats) -> SessionTime {
        self.segment_for_beat(b).time_at(b)
    }

    /// The tempo in force at beat `b`.
    pub fn tempo_at(&self, b: Beats) -> Tempo {
        self.segment_for_beat(b).tempo
    }

    /// The meter in force at beat `b`.
    pub fn meter_at(&self, b: Beats) -> Meter {
        self.segment_for_beat(b).meter
    }

    /// Bar number and offset into the bar at beat `b`, following meter
    /// changes.
    pub fn bar_at(&self, b: Beats) -> BarPosition {
        let a = self.segment_for_beat(b);
        let len = a.meter.bar_length().0;
        let since = b.0 - a.grid_origin.0;
        BarPosition {
            bar: a.first_bar.saturating_add(since.div_euclid(len)),
            offset: Beats(since.rem_euclid(len)),
            meter: a.meter,
        }
    }

    /// The first bar boundary strictly after beat `b`, following meter
    /// changes (a meter change's own beat is always a boundary).
    pub fn next_bar(&self, b: Beats) -> Beats {
        let a = self.segment_for_beat(b);
        let len = a.meter.bar_length().0;
        let since = b.0 - a.grid_origin.0;
        let next = a.grid_origin + Beats((since.div_euclid(len) + 1) * len);
        // A later anchor that starts a new grid before `next` cuts the bar.
        match self.anchors.iter().find(|x| x.beat > b) {
            Some(x) if x.grid_origin == x.beat && x.beat < next => x.beat,
            _ => next,
        }
    }

    /// The first multiple of `quantum` strictly after the beat at time `t`,
    /// and the session time at which it falls. With a zero or negative
    /// quantum, the beat at `t` itself.
    pub fn next_boundary(&self, t: SessionTime, quantum: Beats) -> (Beats, SessionTime) {
        let b = self.beat_at(t);
        let next = if quantum.0 <= 0 {
            b
        } else {
            b.floor_to(quantum) + quantum
        };
        (next, self.time_at(next))
    }
}

/// Phase of beat `x` within a cycle of length `quantum`, in `[0, quantum)`
/// (Link's `phase`). `phase(x, 0) == 0`; negative beats wrap correctly.
pub fn phase(x: Beats, quantum: Beats) -> Beats {
    x.phase(quantum)
}

/// The smallest beat `>= x` whose phase in `quantum` equals the phase of
/// `target` (Link's `nextPhaseMatch`). With a zero quantum, `x`.
pub fn next_phase_match(x: Beats, target: Beats, quantum: Beats) -> Beats {
    if quantum.0 <= 0 {
        return x;
    }
    let want = phase(target, quantum);
    let have = phase(x, quantum);
    let ahead = Beats((want.0 - have.0).rem_euclid(quantum.0));
    x + ahead
}

/// The beat nearest to `x` whose phase in `quantum` equals the phase of
/// `target` (Link's `closestPhaseMatch`); a tie between the match half a
/// quantum behind and the one half a quantum ahead goes to the later one.
/// This is how a joining peer lines its own beat up with the session:
/// `closest_phase_match(local_beat, session_beat, quantum)`.
pub fn closest_phase_match(x: Beats, target: Beats, quantum: Beats) -> Beats {
    if quantum.0 <= 0 {
        return x;
    }
    let next = next_phase_match(x, target, quantum);
    let prev = next - quantum;
    if (next - x) <= (x - prev) { next } else { prev }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bpm(x: f64) -> Tempo {
        Tempo::from_bpm(x).unwrap()
    }

    fn change(at: f64, t: f64, meter: Meter) -> TempoChange {
        TempoChange {
            at: Beats::from_f64(at),
            tempo: bpm(t),
            meter,
        }
    }

    #[test]
    fn tempo_range_and_display() {
        assert!(Tempo::from_bpm(19.99).is_err());
        assert!(Tempo::from_bpm(f64::NAN).is_err());
        assert_eq!(
            Tempo::from_micro_bpm(1_000_000_000),
            Err(TimelineError::TempoOutOfRange(1_000_000_000))
        );
        assert_eq!(bpm(128.5).to_string(), "128.5 BPM");
        assert_eq!(bpm(120.0).to_string(), "120 BPM");
        assert_eq!(bpm(120.0).micros_per_beat(), 500_000.0);
    }

    #[test]
    fn meters_have_whole_bar_lengths() {
        assert_eq!(Meter::FOUR_FOUR.bar_length(), Beats::from_beats(4));
        assert_eq!(Meter::new(6, 8).unwrap().bar_length(), Beats::from_beats(3));
        assert_eq!(Meter::new(7, 8).unwrap().bar_length(), Beats::from_f64(3.5));
        assert_eq!(Meter::new(5, 3), Err(TimelineError::MeterDenominator(3)));
        assert_eq!(Meter::new(0, 4), Err(TimelineError::MeterNumerator(0)));
    }

    #[test]
    fn single_tempo_maps_time_to_beats_exactly() {
        let tl = Timeline::new(SessionTime(0), bpm(120.0), Meter::FOUR_FOUR);
        assert_eq!(tl.beat_at(SessionTime(500_000)), Beats::ONE);
        assert_eq!(tl.time_at(Beats::from_beats(3)), SessionTime(1_500_000));
        // Before the origin the first segment extends backwards.
        assert_eq!(tl.beat_at(SessionTime(-500_000)), -Beats::ONE);
        assert_eq!(tl.bar_at(-Beats::ONE).bar, -1);
    }

    #[test]
    fn no_drift_over_a_day_at_an_awkward_tempo() {
        // 140 BPM is not a whole number of microseconds per beat; integer
        // arithmetic still lands exactly on the rational answer after 24 h.
        let tl = Timeline::new(SessionTime(7), bpm(140.0), Meter::FOUR_FOUR);
        let day = 86_400_000_000i64;
        // 24 h at 140 BPM = 201 600 beats exactly.
        assert_eq!(tl.beat_at(SessionTime(7 + day)), Beats::from_beats(201_600));
        assert_eq!(tl.time_at(Beats::from_beats(201_600)), SessionTime(7 + day));
    }

    #[test]
    fn same_beat_conflict_last_in_order_wins() {
        let a = change(16.0, 90.0, Meter::FOUR_FOUR);
        let b = change(16.0, 150.0, Meter::FOUR_FOUR);
        let tl = Timeline::build(SessionTime(0), bpm(120.0), Meter::FOUR_FOUR, &[a, b]);
        assert_eq!(tl.anchors().len(), 2);
        assert_eq!(tl.tempo_at(Beats::from_beats(16)), bpm(150.0));
        let tl2 = Timeline::build(SessionTime(0), bpm(120.0), Meter::FOUR_FOUR, &[b, a]);
        assert_eq!(tl2.tempo_at(Beats::from_beats(16)), bpm(90.0));
    }

    #[test]
    fn changes_at_zero_replace_the_origin_and_negative_ones_are_ignored() {
        let tl = Timeline::build(
            SessionTime(0),
            bpm(120.0),
            Meter::FOUR_FOUR,
            &[
                change(0.0, 60.0, Meter::FOUR_FOUR),
                change(-4.0, 200.0, Meter::FOUR_FOUR),
            ],
        );
        assert_eq!(tl.anchors().len(), 1);
        assert_eq!(tl.tempo_at(Beats::ZERO), bpm(60.0));
        assert_eq!(tl.time_at(Beats::ONE), SessionTime(1_000_000));
    }

    #[test]
    fn meter_change_mid_bar_starts_a_new_grid_after_a_short_bar() {
        let three = Meter::new(3, 4).unwrap();
        let tl = Timeline::build(
            SessionTime(0),
            bpm(120.0),
            Meter::FOUR_FOUR,
            &[change(6.0, 120.0, three)],
        );
        // Bars 0 (beats 0-4) and 1 (4-6, cut short), then 3/4 from beat 6.
        assert_eq!(tl.bar_at(Beats::from_beats(5)).bar, 1);
        assert_eq!(tl.bar_at(Beats::from_beats(6)).bar, 2);
        assert_eq!(tl.bar_at(Beats::from_beats(9)).bar, 3);
        assert_eq!(tl.bar_at(Beats::from_beats(10)).offset, Beats::ONE);
        assert_eq!(tl.next_bar(Beats::from_beats(4)), Beats::from_beats(6));
        assert_eq!(tl.next_bar(Beats::from_beats(6)), Beats::from_beats(9));
        assert_eq!(tl.meter_at(Beats::from_beats(7)), three);
    }

    #[test]
    fn next_boundary_is_strictly_after_and_on_the_grid() {
        let tl = Timeline::new(SessionTime(0), bpm(120.0), Meter::FOUR_FOUR);
        let q = Beats::from_beats(4);
        assert_eq!(
            tl.next_boundary(SessionTime(0), q),
            (Beats::from_beats(4), SessionTime(2_000_000))
        );
        assert_eq!(
            tl.next_boundary(SessionTime(2_100_000), q),
            (Beats::from_beats(8), SessionTime(4_000_000))
        );
        assert_eq!(tl.next_boundary(SessionTime(10), Beats::ZERO).0, Beats(20));
    }

    #[test]
    fn phase_laws_from_link() {
        let q = Beats::from_beats(4);
        // phase(x, 0) == 0
        assert_eq!(phase(Beats::from_beats(3), Beats::ZERO), Beats::ZERO);
        // negative beats wrap
        assert_eq!(phase(Beats::from_f64(-1.0), q), Beats::from_beats(3));
        assert_eq!(
            next_phase_match(Beats::from_f64(1.5), Beats::from_f64(0.5), q),
            Beats::from_f64(4.5)
        );
        assert_eq!(
            closest_phase_match(Beats::from_f64(1.5), Beats::from_f64(0.5), q),
            Beats::from_f64(0.5)
        );
        assert_eq!(
            closest_phase_match(Beats::from_f64(3.0), Beats::from_f64(0.5), q),
            Beats::from_f64(4.5)
        );
    }

    prop_compose! {
        fn any_tempo()(micro in Tempo::MIN.0..=Tempo::MAX.0) -> Tempo { Tempo(micro) }
    }

    prop_compose! {
        fn any_meter()(num in 1u8..=13, den_pow in 0u32..=5) -> Meter {
            Meter::new(num, 1 << den_pow).unwrap()
        }
    }

    prop_compose! {
        /// A timeline with up to 12 changes anywhere in the first 2000 beats.
        fn any_timeline()(
            origin in -1_000_000_000_000i64..1_000_000_000_000,
            tempo in any_tempo(),
            meter in any_meter(),
            changes in proptest::collection::vec(
                (0i64..2_000_000_000, any_tempo(), any_meter()), 0..12),
        ) -> Timeline {
            let changes: Vec<TempoChange> = changes
                .into_iter()
                .map(|(at, tempo, meter)| TempoChange { at: Beats(at), tempo, meter })
                .collect();
            Timeline::build(SessionTime(origin), tempo, meter, &changes)
        }
    }

    /// Time values within a 24-hour session around the origin.
    fn day_offset() -> impl Strategy<Value = i64> {
        -86_400_000_000i64..86_400_000_000 * 2
    }

    proptest! {
        #[test]
        fn galois_law_time_at_b_le_t_iff_b_le_beat_at_t(
            tl in any_timeline(), dt in day_offset(), db in -1_000_000_000i64..400_000_000_000,
        ) {
            let t = SessionTime(tl.origin().0 + dt);
            let b = Beats(db);
            prop_assert_eq!(tl.time_at(b) <= t, b <= tl.beat_at(t));
        }

        #[test]
        fn time_beat_time_round_trips_within_one_micro_beat(tl in any_timeline(), dt in day_offset()) {
            let t = SessionTime(tl.origin().0 + dt);
            let back = tl.time_at(tl.beat_at(t));
            prop_assert!(back <= t);
            // One micro-beat lasts 60/bpm µs: under 1 µs from 60 BPM up.
            let slowest = tl.anchors().iter().map(|a| a.tempo).min().unwrap();
            let bound = (60_000_000 / slowest.micro_bpm() as i64).max(1);
            prop_assert!(t.0 - back.0 <= bound, "t {} back {} bound {}", t.0, back.0, bound);
        }

        #[test]
        fn time_beat_time_within_1us_from_30_bpm(
            origin in -1_000_000_000i64..1_000_000_000,
            micro in 30_000_000u64..=Tempo::MAX.0,
            changes in proptest::collection::vec((0i64..100_000_000_000, 30_000_000u64..=Tempo::MAX.0), 0..8),
            dt in day_offset(),
        ) {
            let changes: Vec<TempoChange> = changes.into_iter()
                .map(|(at, m)| TempoChange { at: Beats(at), tempo: Tempo(m), meter: Meter::FOUR_FOUR })
                .collect();
            let tl = Timeline::build(SessionTime(origin), Tempo(micro), Meter::FOUR_FOUR, &changes);
            let t = SessionTime(origin + dt);
            let back = tl.time_at(tl.beat_at(t));
            prop_assert!((t.0 - back.0).abs() <= 1, "t {} back {}", t.0, back.0);
        }

        #[test]
        fn time_at_is_the_first_microsecond_reaching_the_beat(
            tl in any_timeline(), db in -1_000_000_000i64..400_000_000_000,
        ) {
            let b = Beats(db);
            let t = tl.time_at(b);
            prop_assert!(tl.beat_at(t) >= b);
            prop_assert!(tl.beat_at(SessionTime(t.0 - 1)) < b);
        }

        #[test]
        fn beat_at_is_monotone(tl in any_timeline(), a in day_offset(), d in 0i64..10_000_000) {
            let t = SessionTime(tl.origin().0 + a);
            prop_assert!(tl.beat_at(t) <= tl.beat_at(SessionTime(t.0 + d)));
        }

        #[test]
        fn changes_at_bar_boundaries_keep_the_phase(
            tempo in any_tempo(),
            changes in proptest::collection::vec((1i64..500, any_tempo()), 0..10),
            bar in 0i64..600,
        ) {
            let q = Meter::FOUR_FOUR.bar_length();
            let changes: Vec<TempoChange> = changes.into_iter()
                .map(|(b, t)| TempoChange { at: Beats(b * q.0), tempo: t, meter: Meter::FOUR_FOUR })
                .collect();
            let tl = Timeline::build(SessionTime(0), tempo, Meter::FOUR_FOUR, &changes);
            // At the first microsecond of every bar the phase is zero up to
            // the beats one microsecond holds; at every change it is exact.
            let boundary = Beats(bar * q.0);
            let t = tl.time_at(boundary);
            let reached = tl.beat_at(t);
            let per_us = tl.tempo_at(boundary).beats_in(1) + Beats(1);
            prop_assert!(reached >= boundary && reached - boundary <= per_us);
            prop_assert_eq!(phase(reached, q), reached - boundary);
            for a in tl.anchors() {
                prop_assert_eq!(tl.beat_at(a.time), a.beat);
                prop_assert_eq!(phase(a.beat, q), Beats::ZERO);
            }
            prop_assert_eq!(tl.bar_at(boundary).bar, bar);
            prop_assert_eq!(tl.bar_at(boundary).offset, Beats::ZERO);
        }

        #[test]
        fn resolution_ignores_input_order_of_distinct_beats(
            changes in proptest::collection::vec((0i64..1_000_000_000, any_tempo()), 0..10),
            seed in any::<u64>(),
        ) {
            let mut cs: Vec<TempoChange> = changes.into_iter()
                .map(|(b, t)| TempoChange { at: Beats(b), tempo: t, meter: Meter::FOUR_FOUR })
                .collect();
            cs.sort_by_key(|c| c.at);
            cs.dedup_by_key(|c| c.at);
            let a = Timeline::build(SessionTime(0), Tempo(120_000_000), Meter::FOUR_FOUR, &cs);
            // Shuffle deterministically from the seed.
            let mut shuffled = cs.clone();
            let n = shuffled.len();
            for i in (1..n).rev() {
                let j = (seed.wrapping_mul(i as u64 + 1).rotate_left(17) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            let b = Timeline::build(SessionTime(0), Tempo(120_000_000), Meter::FOUR_FOUR, &shuffled);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn phase_is_in_range_and_zero_quantum_gives_zero(x in any::<i64>(), q in 0i64..100_000_000) {
            let p = phase(Beats(x), Beats(q));
            if q == 0 {
                prop_assert_eq!(p, Beats::ZERO);
            } else {
                prop_assert!(p >= Beats::ZERO && p < Beats(q));
            }
        }

        #[test]
        fn next_phase_match_is_the_first_match_at_or_after_x(
            x in -1_000_000_000_000i64..1_000_000_000_000,
            target in -1_000_000_000_000i64..1_000_000_000_000,
            q in 1i64..100_000_000,
        ) {
            let (x, target, q) = (Beats(x), Beats(target), Beats(q));
            let m = next_phase_match(x, target, q);
            prop_assert!(m >= x && m - x < q);
            prop_assert_eq!(phase(m, q), phase(target, q));
            let c = closest_phase_match(x, target, q);
            prop_assert_eq!(phase(c, q), phase(target, q));
            prop_assert!((c - x).0.abs() * 2 <= q.0);
        }
    }
}
