//! Built-in phrases for `jam demo`: four deterministic parts (drums, bass,
//! keys, lead) that exercise what the recovery journal protects: notes,
//! sustain pedal, continuous controllers, program and bank changes, pitch
//! wheel and channel pressure.
//!
//! A phrase is a list of `(offset from the start, message)` pairs sorted by
//! time. Every phrase ends with every note released and the sustain pedal
//! up, so after a clean end no receiver may hold a note; controllers and
//! the pitch wheel end at part-specific values so that wrong values after a
//! repair would show.

use jam_core::ShortMessage;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::Duration;

/// The part a demo player plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Kick, snare and hi-hat on MIDI channel 10.
    Drums,
    /// Eighth-note bass line with slides (pitch wheel).
    Bass,
    /// Sustained chords with the sustain pedal.
    Keys,
    /// A pentatonic melody with mod wheel, expression and pressure.
    Lead,
}

impl Part {
    /// The part for player number `i` (parts repeat after four players).
    pub(crate) fn for_player(i: usize) -> Part {
        [Part::Drums, Part::Bass, Part::Keys, Part::Lead][i % 4]
    }

    /// Lower-case name for reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Part::Drums => "drums",
            Part::Bass => "bass",
            Part::Keys => "keys",
            Part::Lead => "lead",
        }
    }
}

/// A timed MIDI message within a phrase.
pub(crate) type Timed = (Duration, ShortMessage);

/// Beat length at the demo tempo (120 BPM).
const BEAT: Duration = Duration::from_millis(500);
/// Chord roots of the progression Am F C G (MIDI note numbers, octave 2).
const ROOTS: [u8; 4] = [45, 41, 48, 43];
/// Chord qualities: minor for Am, major for the others.
const MINOR: [bool; 4] = [true, false, false, false];

fn at(beats: f64) -> Duration {
    BEAT.mul_f64(beats)
}

/// Builds the phrase for `part` lasting about `length`, on `channel`
/// (ignored for drums, which use channel 10), from `seed`.
pub(crate) fn phrase(part: Part, channel: u8, length: Duration, seed: u64) -> Vec<Timed> {
    let mut rng = StdRng::seed_from_u64(seed);
    let bars = ((length.as_secs_f64() / (BEAT.as_secs_f64() * 4.0)).floor() as usize).max(1);
    let mut out: Vec<Timed> = Vec::new();
    match part {
        Part::Drums => drums(&mut out, bars, &mut rng),
        Part::Bass => bass(&mut out, channel, bars, &mut rng),
        Part::Keys => keys(&mut out, channel, bars, &mut rng),
        Part::Lead => lead(&mut out, channel, bars, &mut rng),
    }
    // Stable sort keeps a note-off before a note-on at the same instant.
    out.sort_by_key(|(t, _)| *t);
    out
}

fn note(out: &mut Vec<Timed>, ch: u8, key: u8, vel: u8, start: f64, len: f64) {
    out.push((at(start), ShortMessage::note_on(ch, key, vel.max(1))));
    out.push((at(start + len), ShortMessage::note_off(ch, key, 64)));
}

fn drums(out: &mut Vec<Timed>, bars: usize, rng: &mut StdRng) {
    const CH: u8 = 9;
    out.push((at(0.0), ShortMessage::control_change(CH, 7, 110)));
    for bar in 0..bars {
        let b = bar as f64 * 4.0;
        for eighth in 0..8 {
            let t = b + eighth as f64 * 0.5;
            let accent = if eighth % 2 == 0 { 90 } else { 60 };
            note(out, CH, 42, accent + rng.random_range(0..20), t, 0.1);
        }
        note(out, CH, 36, 110, b, 0.2);
        note(out, CH, 36, 100, b + 2.0, 0.2);
        if rng.random_bool(0.3) {
            note(out, CH, 36, 80, b + 2.5, 0.2);
        }
        note(out, CH, 38, 105, b + 1.0, 0.2);
        note(out, CH, 38, 108, b + 3.0, 0.2);
    }
    out.push((
        at(bars as f64 * 4.0),
        ShortMessage::control_change(CH, 7, 100),
    ));
}

fn bass(out: &mut Vec<Timed>, ch: u8, bars: usize, rng: &mut StdRng) {
    out.push((at(0.0), ShortMessage::control_change(ch, 0, 1)));
    out.push((at(0.0), ShortMessage::control_change(ch, 32, 2)));
    out.push((at(0.0), ShortMessage::program_change(ch, 33)));
    for bar in 0..bars {
        let b = bar as f64 * 4.0;
        let root = ROOTS[bar % 4];
        for eighth in 0..8 {
            let key = match eighth {
                3 | 7 => root + 12,
                5 => root + 7,
                _ => root,
            };
            note(
                out,
                ch,
                key,
                85 + rng.random_range(0..25),
                b + eighth as f64 * 0.5,
                0.4,
            );
        }
        if bar % 2 == 1 {
            // A slide into the next bar: bend up, then back to centre.
            out.push((at(b + 3.6), ShortMessage::pitch_bend(ch, 8192 + 1500)));
            out.push((at(b + 3.8), ShortMessage::pitch_bend(ch, 8192 + 3000)));
            out.push((at(b + 4.0), ShortMessage::pitch_bend(ch, 8192)));
        }
    }
    out.push((
        at(bars as f64 * 4.0),
        ShortMessage::pitch_bend(ch, 8192 - 700),
    ));
}

fn keys(out: &mut Vec<Timed>, ch: u8, bars: usize, rng: &mut StdRng) {
    out.push((at(0.0), ShortMessage::program_change(ch, 4)));
    out.push((at(0.0), ShortMessage::control_change(ch, 7, 96)));
    for bar in 0..bars {
        let b = bar as f64 * 4.0;
        let root = ROOTS[bar % 4] + 12;
        let third = if MINOR[bar % 4] { 3 } else { 4 };
        let chord = [root, root + third, root + 7, root + 12];
        out.push((at(b), ShortMessage::control_change(ch, 64, 127)));
        for (i, &k) in chord.iter().enumerate() {
            let vel = 70 + rng.random_range(0..20);
            note(out, ch, k, vel, b + i as f64 * 0.02, 1.5);
            note(out, ch, k, vel - 10, b + 2.0, 1.0);
        }
        out.push((at(b + 3.9), ShortMessage::control_change(ch, 64, 0)));
        out.push((
            at(b + 2.0),
            ShortMessage::control_change(ch, 1, rng.random_range(0..64)),
        ));
    }
    out.push((
        at(bars as f64 * 4.0),
        ShortMessage::control_change(ch, 7, 90),
    ));
}

fn lead(out: &mut Vec<Timed>, ch: u8, bars: usize, rng: &mut StdRng) {
    const SCALE: [u8; 5] = [0, 3, 5, 7, 10];
    out.push((at(0.0), ShortMessage::program_change(ch, 81)));
    out.push((at(0.0), ShortMessage::control_change(ch, 11, 100)));
    let mut degree: i32 = 5;
    for bar in 0..bars {
        let b = bar as f64 * 4.0;
        let mut t = 0.0;
        while t < 4.0 {
            let len: f64 = [0.25, 0.5, 0.5, 1.0][rng.random_range(0..4)];
            let len = len.min(4.0 - t);
            degree = (degree + rng.random_range(-2..=2)).clamp(0, 12);
            let key = 69 + 12 * (degree / 5) as u8 + SCALE[(degree % 5) as usize] - 12;
            if rng.random_bool(0.85) {
                note(out, ch, key, 80 + rng.random_range(0..40), b + t, len * 0.9);
                out.push((
                    at(b + t + 0.1),
                    ShortMessage::channel_pressure(ch, rng.random_range(20..100)),
                ));
            }
            t += len;
        }
        out.push((
            at(b + 1.0),
            ShortMessage::control_change(ch, 1, rng.random_range(0..127)),
        ));
        let bend = 8192u16.wrapping_add_signed(rng.random_range(-800i16..800));
        out.push((at(b + 2.5), ShortMessage::pitch_bend(ch, bend)));
        out.push((at(b + 3.5), ShortMessage::pitch_bend(ch, 8192)));
    }
    out.push((at(bars as f64 * 4.0), ShortMessage::channel_pressure(ch, 0)));
    out.push((
        at(bars as f64 * 4.0),
        ShortMessage::control_change(ch, 11, 77),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_phrase_is_sorted_and_releases_every_note() {
        for (i, part) in [Part::Drums, Part::Bass, Part::Keys, Part::Lead]
            .into_iter()
            .enumerate()
        {
            let p = phrase(part, i as u8, Duration::from_secs(16), 7);
            assert!(p.windows(2).all(|w| w[0].0 <= w[1].0), "{part:?} unsorted");
            let mut held: HashSet<(u8, u8)> = HashSet::new();
            let mut sustain = false;
            for (_, m) in &p {
                let ch = m.channel().unwrap();
                if m.is_note_on() {
                    held.insert((ch, m.data1()));
                } else if m.is_note_off() {
                    held.remove(&(ch, m.data1()));
                } else if m.status() & 0xF0 == 0xB0 && m.data1() == 64 {
                    sustain = m.data2() >= 64;
                }
            }
            assert!(held.is_empty(), "{part:?} leaves {held:?} held");
            assert!(!sustain, "{part:?} leaves the pedal down");
            assert!(p.len() > 20, "{part:?} too short");
        }
    }

    #[test]
    fn phrases_depend_on_the_seed_only() {
        let a = phrase(Part::Lead, 2, Duration::from_secs(8), 1);
        assert_eq!(a, phrase(Part::Lead, 2, Duration::from_secs(8), 1));
        assert_ne!(a, phrase(Part::Lead, 2, Duration::from_secs(8), 2));
    }
}
