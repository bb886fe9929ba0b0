//! Export of a capture's MIDI events to a Standard MIDI File.
//!
//! Format 1 with 960 ticks per quarter note: track 0 holds the tempo map
//! (the session start's tempo, then every `tempo_bpm` metadata change at its
//! beat), then one track per participant, in participant-id order, named
//! from the `name:<peer id>` metadata (else the id's short form). Events are
//! placed by their beat on the shared timeline (one beat = one quarter note),
//! so the file plays back the performance as the ensemble heard it; events
//! before beat 0 are moved to 0. Messages that cannot be stored in a MIDI
//! file (real-time bytes, malformed messages) are skipped and counted.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use jam_core::{Beats, PeerId};
use midly::num::{u15, u24, u28};
use midly::{Format, Header, MetaMessage, Smf, Timing, TrackEvent, TrackEventKind};

use crate::error::CaptureError;
use crate::keys::Identity;
use crate::reader::CaptureReader;
use crate::record::Record;

/// Ticks per quarter note (= per beat) in exported files.
pub const TICKS_PER_BEAT: u16 = 960;

/// What [`export_midi`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportSummary {
    /// One entry per participant track: id and number of events.
    pub tracks: Vec<(PeerId, usize)>,
    /// Tempo changes in the tempo track (the initial tempo included).
    pub tempo_changes: usize,
    /// Messages that could not be stored and were skipped.
    pub skipped: usize,
}

fn ticks(b: Beats) -> u64 {
    (b.0.max(0) as u128 * u128::from(TICKS_PER_BEAT) / Beats::PER_BEAT as u128) as u64
}

fn tempo_us_per_beat(bpm: f64) -> u32 {
    if bpm.is_finite() && bpm > 0.0 {
        (60e6 / bpm).round().clamp(1.0, 16_777_215.0) as u32
    } else {
        500_000
    }
}

/// Reads every MIDI event of the capture from `input` and writes a Standard
/// MIDI File to `out`. A truncated capture is an error (nothing is
/// written); repair it first.
pub fn export_midi<R: Read, W: Write>(
    input: R,
    identities: &[Identity],
    out: W,
) -> Result<ExportSummary, CaptureError> {
    let mut r = CaptureReader::open(input, identities)?;
    let start_bpm = r.session_start().tempo_bpm;
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    names.insert(
        r.session_start().recorder.to_string(),
        r.session_start().recorder_name.clone(),
    );
    let mut tempos: Vec<(Beats, f64)> = vec![(Beats::ZERO, start_bpm)];
    let mut events: BTreeMap<PeerId, Vec<(Beats, Vec<u8>)>> = BTreeMap::new();
    while let Some((_, rec)) = r.next_record()? {
        match rec {
            Record::Midi(m) => events
                .entry(m.participant)
                .or_default()
                .push((m.beat, m.bytes)),
            Record::Metadata(m) if m.key == "tempo_bpm" => {
                if let Ok(bpm) = m.value.trim().parse::<f64>() {
                    tempos.push((m.beat, bpm));
                }
            }
            Record::Metadata(m) => {
                if let Some(id) = m.key.strip_prefix("name:") {
                    names.insert(id.to_string(), m.value);
                }
            }
            _ => {}
        }
    }
    let mut summary = ExportSummary::default();
    let arena = midly::Arena::new();
    let mut tracks = Vec::new();
    tempos.sort_by_key(|t| t.0);
    let mut conductor = Vec::new();
    let mut last = 0u64;
    for (b, bpm) in &tempos {
        let t = ticks(*b);
        conductor.push(TrackEvent {
            delta: u28::new((t - last).min(u64::from(u28::max_value().as_int())) as u32),
            kind: TrackEventKind::Meta(MetaMessage::Tempo(u24::new(tempo_us_per_beat(*bpm)))),
        });
        last = t;
    }
    summary.tempo_changes = tempos.len();
    conductor.push(TrackEvent {
        delta: u28::new(0),
        kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
    });
    tracks.push(conductor);
    let name_bytes: Vec<(PeerId, String)> = events
        .keys()
        .map(|p| {
            (
                *p,
                names
                    .get(&p.to_string())
                    .cloned()
                    .unwrap_or_else(|| p.short()),
            )
        })
        .collect();
    for ((peer, evs), (_, name)) in events.iter_mut().zip(&name_bytes) {
        evs.sort_by_key(|e| e.0);
        let mut track = vec![TrackEvent {
            delta: u28::new(0),
            kind: TrackEventKind::Meta(MetaMessage::TrackName(name.as_bytes())),
        }];
        let mut last = 0u64;
        let mut n = 0;
        for (b, bytes) in evs.iter() {
            let kind = match midly::live::LiveEvent::parse(bytes) {
                Ok(
                    ev @ (midly::live::LiveEvent::Midi { .. }
                    | midly::live::LiveEvent::Common(midly::live::SystemCommon::SysEx(_))),
                ) => ev.as_track_event(&arena),
                _ => {
                    summary.skipped += 1;
                    continue;
                }
            };
            let t = ticks(*b);
            track.push(TrackEvent {
                delta: u28::new((t - last).min(u64::from(u28::max_value().as_int())) as u32),
                kind,
            });
            last = t;
            n += 1;
        }
        track.push(TrackEvent {
            delta: u28::new(0),
            kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
        });
        tracks.push(track);
        summary.tracks.push((*peer, n));
    }
    let mut smf = Smf::new(Header::new(
        Format::Parallel,
        Timing::Metrical(u15::new(TICKS_PER_BEAT)),
    ));
    smf.tracks = tracks;
    smf.write_std(out)
        .map_err(|e| CaptureError::Midi(e.to_string()))?;
    Ok(summary)
}
