//! Note lines from Standard MIDI Files and from timed MIDI messages: what
//! the agents train and are measured on.
//!
//! [`lines_from_smf`] reads a Standard MIDI File (format 0, 1 or 2) and
//! returns one [`NoteSeq`] per track and channel that has notes, on the
//! file's own beat grid (ticks divided by ticks per beat, so tempo changes
//! do not move notes off the beat), with the file's first key signature,
//! time signature and tempo. [`lines_from_events`] does the same for
//! messages already placed on the shared timeline (a capture's MIDI
//! events).
//!
//! Channel 10 (index 9) is the General MIDI drum channel: its lines get
//! [`Role::Rhythm`]; every other line gets the role the caller passes.
//!
//! A damaged file is a [`MidiFileError`], never a panic (fuzzed:
//! `fuzz/fuzz_targets/midi_lines.rs`).

use crate::features::{Key, NoteSeq, Role, notes_from_events};
use jam_core::{Beats, ShortMessage};
use midly::{MetaMessage, MidiMessage, Smf, Timing, TrackEventKind};

/// Why a MIDI file gave no lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MidiFileError {
    /// The bytes are not a Standard MIDI File.
    #[error("not a standard midi file: {0}")]
    Parse(String),
    /// The header's metrical timing says 0 ticks per beat.
    #[error("the midi header says 0 ticks per beat")]
    ZeroTicksPerBeat,
    /// The header's timecode timing has a zero rate.
    #[error("the midi header gives a zero timecode rate ({fps} fps, {subframes} ticks per frame)")]
    ZeroTimecodeRate {
        /// Frames per second.
        fps: u8,
        /// Ticks per frame.
        subframes: u8,
    },
}

/// Parses a Standard MIDI File with `midly`, refusing first what `midly`
/// 0.5 cannot read without panicking: a timecode division whose frame byte
/// is -128 makes it negate `i8::MIN` (a panic in builds with overflow
/// checks, a wrapped value otherwise). Both MIDI readers in the workspace
/// (this module and the CLI's `--play` reader) go through here.
pub fn parse_smf(bytes: &[u8]) -> Result<Smf<'_>, MidiFileError> {
    // The header chunk is the file's first (a bare SMF) or sits inside a
    // RIFF RMID wrapper: look for its tag where midly would.
    let header = if bytes.starts_with(b"RIFF") {
        bytes.windows(4).position(|w| w == b"MThd")
    } else {
        bytes.starts_with(b"MThd").then_some(0)
    };
    if let Some(at) = header
        && bytes.get(at + 12) == Some(&0x80)
    {
        return Err(MidiFileError::Parse(
            "timecode division with -128 frames per second".into(),
        ));
    }
    Smf::parse(bytes).map_err(|e| MidiFileError::Parse(e.to_string()))
}

/// The General MIDI drum channel (channel 10, index 9).
pub const DRUM_CHANNEL: u8 = 9;

/// Reads a Standard MIDI File; see the [module docs](self). Lines are in
/// track order, then channel order; `role` is given to every line not on
/// the drum channel.
pub fn lines_from_smf(bytes: &[u8], role: Role) -> Result<Vec<NoteSeq>, MidiFileError> {
    let smf = parse_smf(bytes)?;
    // Beats of one tick, as a fraction (numerator, denominator) of a beat.
    let (tick_num, tick_den): (i128, i128) = match smf.header.timing {
        Timing::Metrical(tpb) => match tpb.as_int() {
            0 => return Err(MidiFileError::ZeroTicksPerBeat),
            t => (Beats::PER_BEAT as i128, i128::from(t)),
        },
        Timing::Timecode(fps, subframes) => {
            let ticks_per_second = i128::from(fps.as_int()) * i128::from(subframes);
            if ticks_per_second == 0 {
                return Err(MidiFileError::ZeroTimecodeRate {
                    fps: fps.as_int(),
                    subframes,
                });
            }
            // No beat grid in the file: 120 BPM, two beats per second.
            (2 * Beats::PER_BEAT as i128, ticks_per_second)
        }
    };
    let mut key = None;
    let mut bar_length = None;
    let mut micros_per_beat = None;
    let mut per_track: Vec<Vec<(Beats, ShortMessage)>> = Vec::with_capacity(smf.tracks.len());
    for track in &smf.tracks {
        let mut tick: u64 = 0;
        let mut events = Vec::new();
        for ev in track {
            tick = tick.saturating_add(u64::from(ev.delta.as_int()));
            let at =
                Beats((i128::from(tick) * tick_num / tick_den).min(i128::from(i64::MAX)) as i64);
            match ev.kind {
                TrackEventKind::Midi { channel, message } => {
                    let ch = channel.as_int();
                    let m = match message {
                        MidiMessage::NoteOn { key, vel } => {
                            ShortMessage::note_on(ch, key.as_int(), vel.as_int())
                        }
                        MidiMessage::NoteOff { key, vel } => {
                            ShortMessage::note_off(ch, key.as_int(), vel.as_int())
                        }
                        _ => continue,
                    };
                    events.push((at, m));
                }
                TrackEventKind::Meta(MetaMessage::KeySignature(sharps, minor)) if key.is_none() => {
                    key = Key::from_signature(sharps, minor);
                }
                TrackEventKind::Meta(MetaMessage::TimeSignature(num, den_pow, _, _))
                    if bar_length.is_none() && num > 0 && den_pow <= 6 =>
                {
                    // A bar is `num` notes of 1/2^den_pow; a beat is a quarter.
                    bar_length = Some(Beats(
                        i64::from(num) * 4 * Beats::PER_BEAT / (1i64 << den_pow),
                    ));
                }
                TrackEventKind::Meta(MetaMessage::Tempo(t)) if micros_per_beat.is_none() => {
                    micros_per_beat = Some(t.as_int().max(1));
                }
                _ => {}
            }
        }
        per_track.push(events);
    }
    let mut lines = Vec::new();
    for events in per_track {
        for mut line in lines_from_events(&events, role, micros_per_beat.unwrap_or(500_000)) {
            line.key = key;
            if let Some(b) = bar_length.filter(|b| b.0 > 0) {
                line.bar_length = b;
            }
            lines.push(line);
        }
    }
    Ok(lines)
}

/// Splits timed messages (in time order) by channel and pairs note-ons
/// with note-offs ([`notes_from_events`]); one line per channel that has
/// notes, in channel order. Lines on [`DRUM_CHANNEL`] get
/// [`Role::Rhythm`], the others `role`.
pub fn lines_from_events(
    events: &[(Beats, ShortMessage)],
    role: Role,
    micros_per_beat: u32,
) -> Vec<NoteSeq> {
    let mut by_channel: [Vec<(Beats, ShortMessage)>; 16] = Default::default();
    for &(at, m) in events {
        if let Some(ch) = m.channel()
            && (m.is_note_on() || m.is_note_off())
        {
            by_channel[usize::from(ch & 0x0F)].push((at, m));
        }
    }
    let mut lines = Vec::new();
    for (ch, events) in by_channel.iter().enumerate() {
        let notes = notes_from_events(events);
        if notes.is_empty() {
            continue;
        }
        let role = if ch == usize::from(DRUM_CHANNEL) {
            Role::Rhythm
        } else {
            role
        };
        let mut line = NoteSeq::new(notes, role);
        line.micros_per_beat = micros_per_beat.max(1);
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use midly::num::{u4, u7, u15, u24, u28};
    use midly::{Format, Header, TrackEvent};

    fn ev(delta: u32, kind: TrackEventKind<'static>) -> TrackEvent<'static> {
        TrackEvent {
            delta: u28::new(delta),
            kind,
        }
    }

    fn note(channel: u8, key: u8, vel: u8) -> TrackEventKind<'static> {
        TrackEventKind::Midi {
            channel: u4::new(channel),
            message: MidiMessage::NoteOn {
                key: u7::new(key),
                vel: u7::new(vel),
            },
        }
    }

    fn file(tracks: Vec<Vec<TrackEvent<'static>>>) -> Vec<u8> {
        let smf = Smf {
            header: Header::new(Format::Parallel, Timing::Metrical(u15::new(480))),
            tracks,
        };
        let mut out = Vec::new();
        smf.write_std(&mut out).unwrap();
        out
    }

    #[test]
    fn tracks_and_channels_become_lines_on_the_beat_grid() {
        let bytes = file(vec![
            vec![
                ev(
                    0,
                    TrackEventKind::Meta(MetaMessage::Tempo(u24::new(600_000))),
                ),
                ev(
                    0,
                    TrackEventKind::Meta(MetaMessage::KeySignature(-1, false)),
                ),
                ev(
                    0,
                    TrackEventKind::Meta(MetaMessage::TimeSignature(3, 2, 24, 8)),
                ),
                // A tempo change does not move notes off the beat grid.
                ev(
                    0,
                    TrackEventKind::Meta(MetaMessage::Tempo(u24::new(300_000))),
                ),
            ],
            vec![
                ev(0, note(0, 65, 90)),
                ev(240, note(0, 65, 0)),
                ev(0, note(0, 67, 80)),
                ev(0, note(DRUM_CHANNEL, 36, 100)),
                ev(720, note(0, 67, 0)),
                ev(0, note(DRUM_CHANNEL, 36, 0)),
            ],
        ]);
        let lines = lines_from_smf(&bytes, Role::Harmony).unwrap();
        assert_eq!(lines.len(), 2);
        let (tune, drums) = (&lines[0], &lines[1]);
        assert_eq!(tune.role, Role::Harmony);
        assert_eq!(drums.role, Role::Rhythm);
        assert_eq!(tune.notes.len(), 2);
        assert_eq!(tune.notes[1].onset, Beats::from_f64(0.5));
        assert_eq!(tune.notes[1].duration, Beats::from_f64(1.5));
        assert_eq!(tune.notes[1].pitch, 67);
        assert_eq!(tune.key.map(|k| k.tonic), Some(5)); // F major
        assert_eq!(tune.bar_length, Beats::from_beats(3));
        assert_eq!(tune.micros_per_beat, 600_000);
        assert_eq!(drums.notes[0].pitch, 36);
    }

    #[test]
    fn damaged_files_are_errors() {
        let good = file(vec![vec![ev(0, note(0, 60, 90)), ev(480, note(0, 60, 0))]]);
        assert_eq!(lines_from_smf(&good, Role::Melody).unwrap().len(), 1);
        assert!(matches!(
            lines_from_smf(b"MThd", Role::Melody),
            Err(MidiFileError::Parse(_))
        ));
        let mut zero = good.clone();
        zero[12] = 0;
        zero[13] = 0;
        assert_eq!(
            lines_from_smf(&zero, Role::Melody),
            Err(MidiFileError::ZeroTicksPerBeat)
        );
        for cut in 0..good.len() {
            let _ = lines_from_smf(&good[..cut], Role::Melody);
        }
    }
}
