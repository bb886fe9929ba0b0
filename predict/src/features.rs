//! Notes as the models see them, and the viewpoints derived from them.
//!
//! A [`Note`] is what a player played: onset and duration on the shared
//! timeline (integer micro-beats), pitch and velocity. A [`NoteSeq`] is one
//! player's line with what is known about it (role, key, bar length, tempo
//! for converting beats to milliseconds in reports).
//!
//! Viewpoints (Conklin and Witten's term, as used by IDyOM) are functions of
//! the sequence up to a note: the chromatic pitch (`cpitch`), the interval
//! from the previous note (`cpint`), the pitch class relative to the tonic
//! (`cpintfref`), the inter-onset interval and duration classes, and a
//! velocity bucket. They are small integers, so the models can count them
//! exactly.
//!
//! [`notes_from_events`] turns timed MIDI messages (from a capture or a
//! MIDI file) into notes by pairing note-ons with their note-offs.

use jam_core::{Beats, ShortMessage};

/// A musical role; mirrors the session document's roles (the engine maps
/// one to the other), so that this crate does not depend on the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Role {
    /// Drums, percussion, rhythmic comping: snapped tightly to the grid.
    Rhythm,
    /// A lead line: expression kept.
    #[default]
    Melody,
    /// Chords and pads: chord notes kept together.
    Harmony,
}

impl Role {
    /// Every role, in the order of [`Role::index`].
    pub const ALL: [Role; 3] = [Role::Rhythm, Role::Melody, Role::Harmony];

    /// Position in fixed-size per-role arrays.
    pub const fn index(self) -> usize {
        match self {
            Role::Rhythm => 0,
            Role::Melody => 1,
            Role::Harmony => 2,
        }
    }

    /// The role at `index` (see [`Role::index`]).
    pub const fn from_index(index: u8) -> Option<Role> {
        match index {
            0 => Some(Role::Rhythm),
            1 => Some(Role::Melody),
            2 => Some(Role::Harmony),
            _ => None,
        }
    }

    /// The name used on the command line and in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Rhythm => "rhythm",
            Role::Melody => "melody",
            Role::Harmony => "harmony",
        }
    }
}

/// One played note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Note {
    /// Where the note starts on the shared timeline.
    pub onset: Beats,
    /// How long it is held (zero for a note whose end is unknown).
    pub duration: Beats,
    /// MIDI key number, 0-127.
    pub pitch: u8,
    /// MIDI velocity, 1-127.
    pub velocity: u8,
}

/// A key: tonic pitch class (0 = C) and mode. Known from a MIDI file's key
/// signature; unknown (`None` in [`NoteSeq::key`]) for a live capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Tonic pitch class, 0-11.
    pub tonic: u8,
    /// True for minor.
    pub minor: bool,
}

impl Key {
    /// The key of a MIDI key signature: `sharps` (-7..=7, negative for flats)
    /// and the minor flag. `None` outside the range.
    pub fn from_signature(sharps: i8, minor: bool) -> Option<Key> {
        if !(-7..=7).contains(&sharps) {
            return None;
        }
        // Each sharp moves the major tonic up a fifth.
        let major = (i32::from(sharps) * 7).rem_euclid(12) as u8;
        let tonic = if minor { (major + 9) % 12 } else { major };
        Some(Key { tonic, minor })
    }
}

/// One player's line and what is known about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoteSeq {
    /// The notes, sorted by onset (ties: lower pitch first).
    pub notes: Vec<Note>,
    /// The role the line was played in.
    pub role: Role,
    /// The key, when known.
    pub key: Option<Key>,
    /// Bar length in beats (4 beats when unknown).
    pub bar_length: Beats,
    /// Microseconds per beat, for reporting onset errors in milliseconds.
    pub micros_per_beat: u32,
}

impl NoteSeq {
    /// A line in 4/4 at 120 BPM with no key, sorted.
    pub fn new(mut notes: Vec<Note>, role: Role) -> NoteSeq {
        notes.sort_by_key(|n| (n.onset, n.pitch));
        NoteSeq {
            notes,
            role,
            key: None,
            bar_length: Beats::from_beats(4),
            micros_per_beat: 500_000,
        }
    }
}

/// Pairs note-ons with note-offs (per channel and key, first in first out)
/// and returns the notes sorted by onset. Events must be in time order. A
/// note never released gets the duration up to the last event.
pub fn notes_from_events(events: &[(Beats, ShortMessage)]) -> Vec<Note> {
    // Per channel and key, the held notes, oldest first.
    let mut open: Vec<std::collections::VecDeque<(Beats, u8)>> =
        vec![std::collections::VecDeque::new(); 16 * 128];
    let mut notes = Vec::new();
    let end = events.last().map(|e| e.0).unwrap_or(Beats::ZERO);
    for &(at, m) in events {
        let Some(ch) = m.channel() else { continue };
        let slot = usize::from(ch) * 128 + usize::from(m.data1() & 0x7F);
        if m.is_note_on() {
            open[slot].push_back((at, m.data2()));
        } else if m.is_note_off()
            && let Some((on, vel)) = open[slot].pop_front()
        {
            notes.push(Note {
                onset: on,
                duration: Beats(at.0.saturating_sub(on.0)),
                pitch: m.data1(),
                velocity: vel,
            });
        }
    }
    for (slot, held) in open.iter().enumerate() {
        for &(on, vel) in held {
            notes.push(Note {
                onset: on,
                duration: Beats(end.0.saturating_sub(on.0)),
                pitch: (slot % 128) as u8,
                velocity: vel,
            });
        }
    }
    notes.sort_by_key(|n| (n.onset, n.pitch));
    notes
}

/// Representative lengths (in micro-beats) of the rhythm classes: the
/// inter-onset interval and the duration of a note are each mapped to the
/// nearest of these (on a log scale). Class 0 is "together" (a chord).
pub const RHYTHM_CLASSES: [i64; 16] = [
    0, 125_000, 166_667, 250_000, 333_333, 375_000, 500_000, 666_667, 750_000, 1_000_000,
    1_500_000, 2_000_000, 3_000_000, 4_000_000, 6_000_000, 8_000_000,
];

/// Number of rhythm classes.
pub const N_RHYTHM: usize = RHYTHM_CLASSES.len();

/// The rhythm class of a length: 0 under a 1/16 beat, else the nearest
/// class on a log scale.
pub fn rhythm_class(len: Beats) -> u8 {
    let x = len.0;
    if x < 62_500 {
        return 0;
    }
    let lx = (x as f64).ln();
    let mut best = 1usize;
    let mut best_d = f64::INFINITY;
    for (i, &c) in RHYTHM_CLASSES.iter().enumerate().skip(1) {
        let d = ((c as f64).ln() - lx).abs();
        if d < best_d {
            best_d = d;
            best = i;
        }
    }
    best as u8
}

/// The length a rhythm class stands for.
pub fn rhythm_value(class: u8) -> Beats {
    Beats(RHYTHM_CLASSES[usize::from(class).min(N_RHYTHM - 1)])
}

/// Number of velocity buckets.
pub const N_VELOCITY: usize = 8;

/// A velocity bucket, 0-7 (16 velocity steps each).
pub fn velocity_bucket(v: u8) -> u8 {
    (v.min(127) / 16).min(N_VELOCITY as u8 - 1)
}

/// The velocity a bucket stands for (its middle).
pub fn velocity_value(bucket: u8) -> u8 {
    (bucket.min(N_VELOCITY as u8 - 1) * 16 + 8).min(127)
}

/// Interval from the previous pitch, clamped to two octaves each way and
/// offset to be non-negative (0..=48; 24 = unison).
pub fn interval_symbol(prev: u8, pitch: u8) -> u16 {
    ((i32::from(pitch) - i32::from(prev)).clamp(-24, 24) + 24) as u16
}

/// Number of interval symbols.
pub const N_INTERVAL: usize = 49;

/// Pitch class relative to the tonic, 0-11.
pub fn degree_symbol(key: Key, pitch: u8) -> u16 {
    (u16::from(pitch) + 12 - u16::from(key.tonic % 12)) % 12
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_signatures_name_their_tonics() {
        assert_eq!(
            Key::from_signature(0, false),
            Some(Key {
                tonic: 0,
                minor: false
            })
        );
        assert_eq!(Key::from_signature(2, false).unwrap().tonic, 2); // D major
        assert_eq!(Key::from_signature(-3, true).unwrap().tonic, 0); // C minor
        assert_eq!(Key::from_signature(1, true).unwrap().tonic, 4); // E minor
        assert_eq!(Key::from_signature(9, false), None);
    }

    #[test]
    fn rhythm_classes_round_to_the_nearest_on_a_log_scale() {
        assert_eq!(rhythm_class(Beats::ZERO), 0);
        assert_eq!(rhythm_class(Beats::from_f64(0.5)), 6);
        assert_eq!(rhythm_class(Beats::from_f64(0.49)), 6);
        assert_eq!(rhythm_class(Beats::ONE), 9);
        assert_eq!(rhythm_class(Beats::from_beats(100)), 15);
        for c in 0..N_RHYTHM as u8 {
            assert_eq!(rhythm_class(rhythm_value(c)), c);
        }
    }

    #[test]
    fn notes_pair_on_and_off_first_in_first_out() {
        let b = Beats::from_f64;
        let ev = [
            (b(0.0), ShortMessage::note_on(0, 60, 90)),
            (b(0.5), ShortMessage::note_on(0, 60, 80)),
            (b(1.0), ShortMessage::note_off(0, 60, 0)),
            (b(1.0), ShortMessage::note_on(1, 64, 70)),
            (b(2.0), ShortMessage::note_on(0, 60, 0)),
        ];
        let notes = notes_from_events(&ev);
        assert_eq!(notes.len(), 3);
        assert_eq!((notes[0].onset, notes[0].duration), (b(0.0), b(1.0)));
        assert_eq!(notes[0].velocity, 90);
        assert_eq!((notes[1].onset, notes[1].duration), (b(0.5), b(1.5)));
        // Never released: held to the last event.
        assert_eq!((notes[2].pitch, notes[2].duration), (64, b(1.0)));
    }
}
