//! The MIDI manager: where a block sits in time and on the timeline, and the
//! stamping of host events with sample-accurate local time and beat.
//!
//! The beat of a sample comes from the host transport while it plays (tempo
//! and beat position at the block's first sample), and from the session
//! [`Timeline`] otherwise. Local time comes from the block's start time (one
//! clock read per block, by the caller) plus the sample offset.
//!
//! Each block is checked against the previous one: when its first beat is not
//! where the previous block ended (a transport jump, a loop, the host starting
//! or stopping, a tempo change in the session timeline), the block is marked
//! as a discontinuity so the output manager can release hanging notes.

use crate::timeline::Timeline;
use crate::{HostEvent, StampedEvent};
use jam_core::{Beats, Micros, PeerId};

/// Largest difference, in micro-beats, between where a block starts and
/// where the previous one ended that still counts as continuous playback
/// (one hundredth of a beat: rounding and host jitter stay far below it).
pub const JUMP_TOLERANCE: Beats = Beats(10_000);

/// The host's transport at the first sample of a block.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HostTransport {
    /// True while the host plays.
    pub playing: bool,
    /// Host tempo in beats per minute, when the host reports it.
    pub tempo: Option<f64>,
    /// Host position in beats (quarter notes) at the block's first sample.
    pub beat: Option<f64>,
}

/// Where a block sits: local time and beat of its first sample, and how fast
/// both advance per sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockClock {
    /// Local time at the first sample.
    pub now: Micros,
    /// Samples per second.
    pub sample_rate: f64,
    /// Samples in the block.
    pub len: u32,
    /// Beat at the first sample (rounded to a micro-beat).
    pub start_beat: Beats,
    /// Beat at the first sample in micro-beats, unrounded, so positions
    /// inside the block are rounded once.
    pub start_ubeats: f64,
    /// Micro-beats per sample (the tempo at this block).
    pub ubeats_per_sample: f64,
    /// True when the beat came from the host transport.
    pub from_host: bool,
    /// True when this block does not continue the previous one.
    pub discontinuity: bool,
}

impl BlockClock {
    /// Local time of the sample at `offset`.
    pub fn time_at(&self, offset: u32) -> Micros {
        let us = (offset as f64 * 1e6 / self.sample_rate).round() as i64;
        self.now.offset_by(us)
    }

    /// Beat of the sample at `offset`.
    pub fn beat_at(&self, offset: u32) -> Beats {
        Beats((self.start_ubeats + offset as f64 * self.ubeats_per_sample).round() as i64)
    }

    /// Beat at local time `t` (before, inside or after the block), at this
    /// block's tempo.
    pub fn beat_of_time(&self, t: Micros) -> Beats {
        let samples = t.signed_diff(self.now) as f64 * self.sample_rate / 1e6;
        Beats((self.start_ubeats + samples * self.ubeats_per_sample).round() as i64)
    }

    /// Beat just after the last sample (where the next block should start).
    pub fn end_beat(&self) -> Beats {
        self.beat_at(self.len)
    }

    /// The sample offset (relative to the block start, possibly negative or
    /// past the end) nearest to beat `b`.
    pub fn offset_of_beat(&self, b: Beats) -> i64 {
        ((b.0 as f64 - self.start_ubeats) / self.ubeats_per_sample).round() as i64
    }

    /// The sample offset (relative to the block start) nearest to local time
    /// `t`.
    pub fn offset_of_time(&self, t: Micros) -> i64 {
        (t.signed_diff(self.now) as f64 * self.sample_rate / 1e6).round() as i64
    }
}

/// Stamps host events and tracks block continuity. Realtime-safe: yes.
#[derive(Debug, Clone)]
pub struct MidiManager {
    local: PeerId,
    timeline: Timeline,
    /// Where the previous block ended, if there was one since the last reset.
    expected_beat: Option<Beats>,
    expected_from_host: bool,
}

impl MidiManager {
    /// A manager stamping events as played by `local`.
    pub fn new(local: PeerId) -> Self {
        MidiManager {
            local,
            timeline: Timeline::default(),
            expected_beat: None,
            expected_from_host: false,
        }
    }

    /// Replaces the session timeline (used while the host does not play).
    pub fn set_timeline(&mut self, timeline: Timeline) {
        self.timeline = timeline;
    }

    /// The session timeline in use.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Forgets the previous block (after a reset, nothing is continuous).
    pub fn reset(&mut self) {
        self.expected_beat = None;
    }

    /// Places a block of `len` samples starting at local time `now`.
    pub fn begin_block(
        &mut self,
        now: Micros,
        sample_rate: f32,
        len: u32,
        transport: HostTransport,
    ) -> BlockClock {
        let sr = if sample_rate.is_finite() && sample_rate >= 1000.0 {
            sample_rate as f64
        } else {
            48_000.0
        };
        let host = match (transport.playing, transport.tempo, transport.beat) {
            (true, Some(t), Some(b)) if t.is_finite() && t > 0.0 && b.is_finite() => Some((t, b)),
            _ => None,
        };
        let (start_ubeats, bpm) = match host {
            Some((tempo, beat)) => (beat * Beats::PER_BEAT as f64, tempo),
            None => (self.timeline.beat_at(now).0 as f64, self.timeline.bpm()),
        };
        let start_beat = Beats(start_ubeats.round() as i64);
        let ubeats_per_sample = bpm / 60.0 * Beats::PER_BEAT as f64 / sr;
        let discontinuity = match self.expected_beat {
            None => true,
            Some(e) => {
                self.expected_from_host != host.is_some()
                    || (start_beat - e).0.abs() > JUMP_TOLERANCE.0
            }
        };
        let clock = BlockClock {
            now,
            sample_rate: sr,
            len,
            start_beat,
            start_ubeats,
            ubeats_per_sample,
            from_host: host.is_some(),
            discontinuity,
        };
        self.expected_beat = Some(clock.end_beat());
        self.expected_from_host = host.is_some();
        clock
    }

    /// Stamps a host event with the local time and beat of its sample.
    pub fn stamp(&self, clock: &BlockClock, ev: &HostEvent) -> StampedEvent {
        let offset = ev.offset.min(clock.len.saturating_sub(1));
        StampedEvent {
            msg: ev.msg,
            sent_at: clock.time_at(offset),
            beat: clock.beat_at(offset),
            origin: self.local,
        }
    }
}

/// Largest gap between a block's clock reading and the start time the
/// sample count predicts before [`BlockTimer`] re-anchors on the clock.
pub const REANCHOR_AFTER: Micros = Micros(20_000);

/// Start times of host blocks from the sample count, anchored on the clock.
///
/// A host calls `process` when the audio device wants a block, with
/// scheduling jitter of its own; the samples themselves are evenly spaced.
/// This timer gives each block the time the sample count predicts since the
/// last anchor, so events inside blocks keep their exact spacing, and
/// re-anchors on the clock reading when the two drift apart by more than
/// [`REANCHOR_AFTER`] or one block period (a long stall, offline rendering
/// faster than real time, a sample-rate change, a device clock that has
/// drifted that far from the system clock) or after [`BlockTimer::reset`].
/// Ordinary callback jitter (a few milliseconds) never re-anchors.
/// Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockTimer {
    anchor: Option<(Micros, u64, f32)>,
    samples: u64,
}

impl BlockTimer {
    /// A timer that anchors on its first block.
    pub fn new() -> Self {
        BlockTimer::default()
    }

    /// Forgets the anchor (transport restart, reactivation).
    pub fn reset(&mut self) {
        self.anchor = None;
        self.samples = 0;
    }

    /// The start time of a block of `len` samples whose clock reading was
    /// `read`, and advances past it.
    pub fn block_start(&mut self, read: Micros, len: u32, sample_rate: f32) -> Micros {
        let period_us = (len as f64 * 1e6 / sample_rate.max(1.0) as f64) as u64;
        let tolerance = REANCHOR_AFTER.0.max(period_us) as i64;
        let predicted = match self.anchor {
            Some((t, s, sr)) if sr == sample_rate => {
                let us = ((self.samples - s) as f64 * 1e6 / sr as f64).round() as i64;
                let p = t.offset_by(us);
                (read.signed_diff(p).abs() <= tolerance).then_some(p)
            }
            _ => None,
        };
        let start = predicted.unwrap_or_else(|| {
            self.anchor = Some((read, self.samples, sample_rate));
            read
        });
        self.samples += len as u64;
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jam_core::ShortMessage;

    fn playing(tempo: f64, beat: f64) -> HostTransport {
        HostTransport {
            playing: true,
            tempo: Some(tempo),
            beat: Some(beat),
        }
    }

    #[test]
    fn block_starts_follow_the_sample_count_and_reanchor_on_drift() {
        let mut t = BlockTimer::new();
        assert_eq!(
            t.block_start(Micros(1_000_000), 480, 48_000.0),
            Micros(1_000_000)
        );
        // Jittery readings: the start times stay 10 ms apart.
        assert_eq!(
            t.block_start(Micros(1_010_700), 480, 48_000.0),
            Micros(1_010_000)
        );
        assert_eq!(
            t.block_start(Micros(1_019_600), 480, 48_000.0),
            Micros(1_020_000)
        );
        // A stall of 50 ms: re-anchor on the clock.
        assert_eq!(
            t.block_start(Micros(1_080_000), 480, 48_000.0),
            Micros(1_080_000)
        );
        // A sample-rate change re-anchors too.
        assert_eq!(
            t.block_start(Micros(1_090_100), 441, 44_100.0),
            Micros(1_090_100)
        );
        t.reset();
        assert_eq!(t.block_start(Micros(5), 1, 48_000.0), Micros(5));
    }

    #[test]
    fn host_events_get_the_time_and_beat_of_their_sample() {
        let mut m = MidiManager::new(PeerId([7; 16]));
        // 120 BPM at 48 kHz: 24 000 samples per beat.
        let c = m.begin_block(Micros::from_secs(10), 48_000.0, 256, playing(120.0, 4.0));
        let e = m.stamp(
            &c,
            &HostEvent {
                offset: 240,
                msg: ShortMessage::note_on(0, 60, 90),
            },
        );
        assert_eq!(e.sent_at, Micros::from_micros(10_005_000));
        assert_eq!(e.beat, Beats(4_010_000));
        assert_eq!(e.origin, PeerId([7; 16]));
        assert_eq!(c.offset_of_beat(Beats(4_010_000)), 240);
    }

    #[test]
    fn stopped_hosts_use_the_session_timeline() {
        let mut m = MidiManager::new(PeerId::default());
        m.set_timeline(Timeline::new(60.0, Beats::ZERO, Micros::ZERO));
        let stopped = HostTransport {
            playing: false,
            tempo: Some(200.0),
            beat: Some(99.0),
        };
        let c = m.begin_block(Micros::from_secs(3), 44_100.0, 64, stopped);
        assert!(!c.from_host);
        assert_eq!(c.start_beat, Beats::from_beats(3));
    }

    #[test]
    fn jumps_loops_and_play_state_changes_are_discontinuities() {
        let mut m = MidiManager::new(PeerId::default());
        let sr = 48_000.0;
        let spb = 24_000.0; // samples per beat at 120 BPM
        let c = m.begin_block(Micros::ZERO, sr, 480, playing(120.0, 0.0));
        assert!(c.discontinuity, "the first block follows nothing");
        let c = m.begin_block(Micros::ZERO, sr, 480, playing(120.0, 480.0 / spb));
        assert!(!c.discontinuity);
        let c = m.begin_block(Micros::ZERO, sr, 480, playing(120.0, 0.0));
        assert!(c.discontinuity, "a loop back to bar 1");
        let c = m.begin_block(Micros::ZERO, sr, 480, playing(120.0, 480.0 / spb));
        assert!(!c.discontinuity);
        let c = m.begin_block(Micros::from_secs(1), sr, 480, HostTransport::default());
        assert!(c.discontinuity, "the host stopped");
        m.reset();
        let c = m.begin_block(Micros::from_secs(1), sr, 480, HostTransport::default());
        assert!(c.discontinuity, "after a reset");
    }
}
