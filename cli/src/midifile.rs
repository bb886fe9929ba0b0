//! Reading Standard MIDI Files for `jam peer --play`: every track merged
//! into one list of timed messages, with the file's tempo map applied.

use anyhow::{Context, Result, bail};
use jam_core::ShortMessage;
use midly::{MetaMessage, MidiMessage, Timing, TrackEventKind};
use std::path::Path;
use std::time::Duration;

/// One message to play, at an offset from the start of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timed {
    /// A channel or system message (not SysEx).
    Short(Duration, ShortMessage),
    /// A complete System Exclusive message, `F0 .. F7`.
    SysEx(Duration, Vec<u8>),
}

impl Timed {
    /// The offset from the start of the file.
    pub(crate) fn at(&self) -> Duration {
        match self {
            Timed::Short(t, _) | Timed::SysEx(t, _) => *t,
        }
    }
}

/// Reads `path` and returns its events in play order.
pub(crate) fn load(path: &Path) -> Result<Vec<Timed>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a usable MIDI file", path.display()))
}

/// Parses a Standard MIDI File (format 0, 1 or 2) held in memory.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Timed>> {
    let smf = jam_predict::midi::parse_smf(bytes)?;
    // (absolute tick, track, index within track, event) for a stable merge.
    let mut merged = Vec::new();
    for (track_no, track) in smf.tracks.iter().enumerate() {
        let mut tick: u64 = 0;
        for (i, ev) in track.iter().enumerate() {
            tick += u64::from(ev.delta.as_int());
            merged.push((tick, track_no, i, ev.kind));
        }
    }
    merged.sort_by_key(|&(tick, track, i, _)| (tick, track, i));

    let mut out = Vec::new();
    match smf.header.timing {
        Timing::Metrical(tpb) => {
            let tpb = u64::from(tpb.as_int());
            if tpb == 0 {
                bail!("the header says 0 ticks per beat");
            }
            // Tempo in µs per beat; 120 BPM until a Set Tempo event.
            let (mut us_per_beat, mut last_tick, mut elapsed_ns) = (500_000u64, 0u64, 0u128);
            for (tick, _, _, kind) in merged {
                elapsed_ns +=
                    u128::from(tick - last_tick) * u128::from(us_per_beat) * 1000 / u128::from(tpb);
                last_tick = tick;
                let at = Duration::from_nanos(u64::try_from(elapsed_ns).unwrap_or(u64::MAX));
                if let TrackEventKind::Meta(MetaMessage::Tempo(t)) = kind {
                    us_per_beat = u64::from(t.as_int()).max(1);
                }
                push_event(&mut out, at, kind);
            }
        }
        Timing::Timecode(fps, subframes) => {
            let ticks_per_second = f64::from(fps.as_f32()) * f64::from(subframes);
            if ticks_per_second <= 0.0 {
                bail!("the header gives a zero timecode rate");
            }
            for (tick, _, _, kind) in merged {
                let at = Duration::from_secs_f64(tick as f64 / ticks_per_second);
                push_event(&mut out, at, kind);
            }
        }
    }
    Ok(out)
}

fn push_event(out: &mut Vec<Timed>, at: Duration, kind: TrackEventKind<'_>) {
    match kind {
        TrackEventKind::Midi { channel, message } => {
            let ch = channel.as_int();
            let m = match message {
                MidiMessage::NoteOff { key, vel } => {
                    ShortMessage::note_off(ch, key.as_int(), vel.as_int())
                }
                MidiMessage::NoteOn { key, vel } => {
                    ShortMessage::note_on(ch, key.as_int(), vel.as_int())
                }
                MidiMessage::Aftertouch { key, vel } => {
                    ShortMessage::poly_pressure(ch, key.as_int(), vel.as_int())
                }
                MidiMessage::Controller { controller, value } => {
                    ShortMessage::control_change(ch, controller.as_int(), value.as_int())
                }
                MidiMessage::ProgramChange { program } => {
                    ShortMessage::program_change(ch, program.as_int())
                }
                MidiMessage::ChannelAftertouch { vel } => {
                    ShortMessage::channel_pressure(ch, vel.as_int())
                }
                MidiMessage::PitchBend { bend } => ShortMessage::pitch_bend(ch, bend.0.as_int()),
            };
            out.push(Timed::Short(at, m));
        }
        TrackEventKind::SysEx(data) => {
            // In a file the F0 is implied and the data ends with F7.
            let mut bytes = Vec::with_capacity(data.len() + 1);
            bytes.push(0xF0);
            bytes.extend_from_slice(data);
            if bytes.last() != Some(&0xF7) {
                bytes.push(0xF7);
            }
            out.push(Timed::SysEx(at, bytes));
        }
        // Escapes, meta events (tempo was applied above) are not played.
        TrackEventKind::Escape(_) | TrackEventKind::Meta(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midly::num::{u4, u7, u15, u24, u28};
    use midly::{Format, Header, Smf, TrackEvent};

    fn ev(delta: u32, kind: TrackEventKind<'static>) -> TrackEvent<'static> {
        TrackEvent {
            delta: u28::new(delta),
            kind,
        }
    }

    fn note_on(key: u8) -> TrackEventKind<'static> {
        TrackEventKind::Midi {
            channel: u4::new(1),
            message: MidiMessage::NoteOn {
                key: u7::new(key),
                vel: u7::new(100),
            },
        }
    }

    #[test]
    fn applies_the_tempo_map_and_merges_tracks_in_order() {
        let smf = Smf {
            header: Header::new(Format::Parallel, Timing::Metrical(u15::new(480))),
            tracks: vec![
                vec![
                    ev(
                        0,
                        TrackEventKind::Meta(MetaMessage::Tempo(u24::new(1_000_000))),
                    ),
                    ev(
                        480,
                        TrackEventKind::Meta(MetaMessage::Tempo(u24::new(250_000))),
                    ),
                    ev(0, TrackEventKind::Meta(MetaMessage::EndOfTrack)),
                ],
                vec![
                    ev(480, note_on(60)),
                    ev(480, note_on(62)),
                    ev(0, TrackEventKind::Meta(MetaMessage::EndOfTrack)),
                ],
            ],
        };
        let mut bytes = Vec::new();
        smf.write_std(&mut bytes).unwrap();
        let events = parse(&bytes).unwrap();
        assert_eq!(
            events,
            vec![
                Timed::Short(Duration::from_secs(1), ShortMessage::note_on(1, 60, 100)),
                Timed::Short(
                    Duration::from_millis(1250),
                    ShortMessage::note_on(1, 62, 100)
                ),
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(b"MThd garbage").is_err());
        assert!(parse(&[]).is_err());
        // A timecode division of -128 frames per second: an error, not
        // midly's overflowing negation.
        let mut bad = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01".to_vec();
        bad.extend_from_slice(&[0x80, 0x00]);
        assert!(parse(&bad).is_err());
    }
}
