//! [`Timing`]: the worker's timing decisions for remote events, per latency
//! mode, built from `jam-predict`'s pieces. Sans-IO: time comes in as
//! arguments (the audio thread's block time, see [`crate::rt`]), nothing
//! here reads a clock, and every decision comes out as a [`Placed`] event
//! for the audio thread, which only puts it at its sample.
//!
//! Per remote participant (slot) it keeps:
//!
//! - an adaptive [`JitterBuffer`] of one-way delays: in live and predictive
//!   mode an event plays at `sent + playout delay` (the recent delay
//!   percentile plus a margin), so events keep the spacing they were played
//!   with as long as they arrive within it;
//! - a [`LatePolicy`]: a late event is played now, snapped to the grid
//!   (rhythm), joined to the chord being played (harmony) or dropped, per
//!   mode and the sender's role; in coherent mode a late note-on is dropped;
//! - a [`StuckGuard`]: a note held far longer than expected is ended (a
//!   note-off now) and counted;
//! - in predictive mode, a [`Predictor`] over the loaded agent: after each
//!   real note-on it predicts the next note; when the real one has not
//!   arrived [`PREDICTION_LEAD`] before its playout time, the predicted
//!   note is handed over to be played then, and the real note, when it
//!   comes, is reconciled by the late-event policy (confirmed, corrected or
//!   dropped; the predicted note ended) and counted right or wrong. Only
//!   the real note the prediction stood for judges it (intended within half
//!   the predicted gap of the predicted beat): when the next real note is
//!   intended later, the predicted one was lost or not played, and the
//!   prediction is counted unconfirmed, not wrong.
//!
//! Shared by all slots: the [`CoherentScheduler`] (coherent mode), fed with
//! every one-way delay; an event intended for beat `b` renders at
//! `render_beat(b)`, and the schedule-ahead follows the ensemble's p99
//! delay, changed only at bar boundaries by [`AheadChange`]s that every
//! engine of the session must apply alike. [`Timing::propose_ahead`] says
//! what this engine's measurements call for (nothing is applied);
//! [`Timing::apply_ahead`] takes a change. The worker writes proposals into
//! the session document and applies the document's resolved changes (its
//! own and everyone else's), or, with no document, applies its own.
//!
//! Interval mode is placed by the audio thread itself (exactly N beats
//! later); only the stuck-note guard runs here for it.
//!
//! Realtime-safe: no (allocates, runs models). Runs on the worker thread.

use crate::net::Role as NetRole;
use crate::stats::PeerTable;
use crate::timeline::Timeline;
use crate::{MAX_PEERS, RemoteEvent};
use jam_core::timeline::{Meter, Tempo};
use jam_core::{Beats, LatencyMode, Micros, PeerId, SessionTime, ShortMessage};
use jam_predict::Note;
use jam_predict::Role;
use jam_predict::agent::{ModelError, Predictor, SeqContext};
use jam_predict::coherent::{AheadChange, CoherentConfig, CoherentError, CoherentScheduler};
use jam_predict::jitter_buffer::{JitterBuffer, JitterConfig};
use jam_predict::late_policy::{Decision, EventKind, LateConfig, LateInput, LatePolicy, Predicted};
use jam_predict::stuck_guard::{StuckConfig, StuckGuard};
use std::time::Duration;

/// A predicted note is handed to the audio thread this long before its
/// playout time (the worker's tick plus a block must fit in it).
pub const PREDICTION_LEAD: Duration = Duration::from_millis(3);
/// A prediction whose best pitch is less likely than this is not played.
pub const MIN_CONFIDENCE: f32 = 0.2;
/// The schedule-ahead coherent mode starts with, before any measurement.
pub const INITIAL_AHEAD: Beats = Beats(Beats::PER_BEAT / 4);
/// Expected note length when the agent has not said (stuck-note guard).
pub const DEFAULT_EXPECTED: Beats = Beats::from_beats(2);

/// Where the audio thread puts an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// At the sample of this local time (or the block's first sample when
    /// already past).
    Time(Micros),
    /// At the sample where this beat falls on the host's timeline.
    Beat(Beats),
}

/// An event whose time the worker has decided. `Copy`, no heap data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The event (its message, slot and what the network delivered).
    pub ev: RemoteEvent,
    /// Where it plays.
    pub at: At,
    /// Tie-break among events at the same beat, the same on every engine:
    /// intended beat, sender key, sender's event number.
    pub order: (Beats, u64, u64),
    /// True for a note the agent predicted (nothing was delivered yet).
    pub predicted: bool,
}

/// A prediction made, not yet played.
#[derive(Debug, Clone, Copy)]
struct Pending {
    key: u8,
    velocity: u8,
    /// When the sender would have played it (local clock).
    sent: Micros,
    duration: Duration,
    /// The beat the sender would have played it on.
    beat: Beats,
    /// Half the predicted gap from the note before: a real note intended
    /// more than this after `beat` is a later note (see [`Fired::window`]).
    window: Beats,
}

/// A predicted note that was played and not yet reconciled.
#[derive(Debug, Clone, Copy)]
struct Fired {
    key: u8,
    off_at: Micros,
    ended: bool,
    /// The beat the prediction stood for.
    beat: Beats,
    /// A real note-on intended within `beat + window` is the note it stood
    /// for and judges it right or wrong; one intended later means that note
    /// never came (lost and not recovered, or not played), and the
    /// prediction is counted unconfirmed instead.
    window: Beats,
}

struct PeerTiming {
    key: u64,
    role: Role,
    jitter: JitterBuffer<()>,
    late: LatePolicy,
    stuck: StuckGuard,
    predictor: Option<Predictor>,
    /// Duration the agent expects for the next note.
    expected: Option<Beats>,
    pending: Option<Pending>,
    fired: Option<Fired>,
    seq: u64,
}

impl std::fmt::Debug for PeerTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTiming")
            .field("role", &self.role)
            .field("delay_us", &self.jitter.playout_delay_us())
            .field("predictor", &self.predictor)
            .finish_non_exhaustive()
    }
}

/// The timing decisions of one engine; see the [module docs](self).
#[derive(Debug)]
pub struct Timing {
    peers: [Option<PeerTiming>; MAX_PEERS],
    coherent: CoherentScheduler,
    model: Option<Vec<u8>>,
    last_mode: LatencyMode,
}

impl Default for Timing {
    fn default() -> Self {
        Timing::new()
    }
}

fn role_of(r: NetRole) -> Role {
    match r {
        NetRole::Rhythm => Role::Rhythm,
        NetRole::Harmony => Role::Harmony,
        // Not yet known: keep the expression (melody's policy).
        NetRole::Melody | NetRole::Auto => Role::Melody,
    }
}

fn kind_of(m: ShortMessage) -> EventKind {
    if m.is_note_on() {
        EventKind::NoteOn {
            channel: m.channel().unwrap_or(0),
            key: m.data1(),
        }
    } else if m.is_note_off() {
        EventKind::NoteOff {
            channel: m.channel().unwrap_or(0),
            key: m.data1(),
        }
    } else {
        EventKind::Other
    }
}

/// The core timeline the coherent scheduler needs (bars of four beats from
/// beat 0, the engine timeline's tempo).
fn bars(tl: &Timeline) -> jam_core::Timeline {
    let tempo = Tempo::from_bpm(tl.bpm()).unwrap_or(Tempo::from_bpm(120.0).expect("120 BPM"));
    jam_core::Timeline::new(SessionTime(0), tempo, Meter::FOUR_FOUR)
}

/// Local time span of `b` beats at the timeline's tempo.
fn span(tl: &Timeline, b: Beats) -> Duration {
    Duration::from_micros((b.0.max(0) as f64 * 60.0 / tl.bpm()) as u64)
}

impl Timing {
    /// No peers, no agent; coherent schedule-ahead [`INITIAL_AHEAD`].
    pub fn new() -> Timing {
        Timing {
            peers: std::array::from_fn(|_| None),
            coherent: CoherentScheduler::new(CoherentConfig::default(), INITIAL_AHEAD),
            model: None,
            last_mode: LatencyMode::Live,
        }
    }

    /// Uses these agent model bytes (see `jam_predict::agent`) for every
    /// remote participant from now on (each gets its own instance).
    pub fn set_model(&mut self, bytes: Vec<u8>) -> Result<(), ModelError> {
        Predictor::from_model_bytes(&bytes)?;
        for p in self.peers.iter_mut().flatten() {
            p.predictor = Predictor::from_model_bytes(&bytes).ok();
            p.pending = None;
        }
        self.model = Some(bytes);
        Ok(())
    }

    /// True when an agent is loaded.
    pub fn has_model(&self) -> bool {
        self.model.is_some()
    }

    /// The participant in `slot` is `peer` with `role` (new or changed).
    pub fn set_peer(&mut self, slot: u8, peer: PeerId, role: NetRole) {
        let Some(s) = self.peers.get_mut(slot as usize) else {
            return;
        };
        let key = u64::from_be_bytes(peer.0[..8].try_into().expect("8 bytes"));
        match s {
            Some(p) if p.key == key => {
                p.role = role_of(role);
                if let Some(pr) = &mut p.predictor {
                    pr.begin(SeqContext {
                        role: p.role,
                        ..SeqContext::default()
                    });
                }
            }
            _ => {
                let r = role_of(role);
                let mut predictor = self
                    .model
                    .as_ref()
                    .and_then(|m| Predictor::from_model_bytes(m).ok());
                if let Some(pr) = &mut predictor {
                    pr.begin(SeqContext {
                        role: r,
                        ..SeqContext::default()
                    });
                }
                *s = Some(PeerTiming {
                    key,
                    role: r,
                    jitter: JitterBuffer::new(JitterConfig::default()),
                    late: LatePolicy::new(LateConfig::default()),
                    stuck: StuckGuard::new(StuckConfig::default()),
                    predictor,
                    expected: None,
                    pending: None,
                    fired: None,
                    seq: 0,
                });
            }
        }
    }

    /// The participant in `slot` left.
    pub fn peer_gone(&mut self, slot: u8) {
        if let Some(s) = self.peers.get_mut(slot as usize) {
            *s = None;
        }
    }

    /// The current playout delay for `slot`, in µs.
    pub fn playout_delay_us(&self, slot: u8) -> Option<u64> {
        self.peers
            .get(slot as usize)?
            .as_ref()
            .map(|p| p.jitter.playout_delay_us())
    }

    /// The coherent schedule-ahead in force for events intended at `b`.
    pub fn schedule_ahead(&self, b: Beats) -> Beats {
        self.coherent.ahead_at(b)
    }

    /// Applies a schedule-ahead change (this engine's or another's, from
    /// the session). Every engine must apply the same set.
    pub fn apply_ahead(&mut self, tl: &Timeline, change: AheadChange) -> Result<(), CoherentError> {
        self.coherent.apply(&bars(tl), change)
    }

    /// Decides where one remote event plays, in `mode` with an interval of
    /// `interval` beats, and appends what the audio thread must do to `out`.
    /// Counts late, predicted, wrong and stuck events in `stats`. Interval
    /// mode events are left to the audio thread: this returns `false` for
    /// them (and for events of an unknown slot), and the caller passes the
    /// event on unchanged.
    #[allow(clippy::too_many_arguments, reason = "one decision's inputs")]
    pub fn handle_event(
        &mut self,
        mode: LatencyMode,
        interval: Beats,
        tl: &Timeline,
        ev: RemoteEvent,
        out: &mut Vec<Placed>,
        stats: &PeerTable,
    ) -> bool {
        self.note_mode(mode);
        let Some(p) = self
            .peers
            .get_mut(ev.slot as usize)
            .and_then(Option::as_mut)
        else {
            return false;
        };
        let delay_us = ev.arrival.0.saturating_sub(ev.sent_at.0);
        // Recovered events carry the sender's time of the lost packet, not a
        // fresh delay measurement.
        if !ev.recovered {
            p.jitter.handle_delay_sample(ev.arrival, ev.sent_at);
            self.coherent.handle_delay_sample(delay_us);
        }
        p.seq += 1;
        let intended = ev.beat.unwrap_or_else(|| tl.beat_at(ev.sent_at));
        let order = (intended, p.key, p.seq);
        let kind = kind_of(ev.msg);
        let now = tl.beat_at(ev.arrival);

        // The stuck-note guard, on the beat where the note starts sounding.
        let sounding_from = match mode {
            LatencyMode::Interval => intended + interval,
            LatencyMode::Coherent => now.max(self.coherent.render_beat(intended)),
            LatencyMode::Live | LatencyMode::Predictive => now,
        };
        match kind {
            EventKind::NoteOn { channel, key } => p.stuck.handle_note_on(
                channel,
                key,
                sounding_from,
                p.expected.unwrap_or(DEFAULT_EXPECTED),
            ),
            EventKind::NoteOff { channel, key } => p.stuck.handle_note_off(channel, key),
            EventKind::Other => {}
        }

        // Predictive: reconcile a played prediction, then predict the next.
        let mut predicted = Predicted::None;
        if let EventKind::NoteOn { key, .. } = kind
            && mode == LatencyMode::Predictive
        {
            p.pending = None;
            match p.fired.take() {
                None => {}
                Some(f) if intended > f.beat + f.window => {
                    // The note this prediction stood for never came: this real
                    // note is a later one and says nothing about it.
                    stats.add_prediction_unconfirmed(ev.slot);
                    if !f.ended {
                        out.push(Placed {
                            ev: RemoteEvent {
                                msg: ShortMessage::note_off(0, f.key, 0),
                                ..ev
                            },
                            at: At::Time(f.off_at),
                            order,
                            predicted: true,
                        });
                    }
                }
                Some(f) => {
                    let right = f.key == key;
                    stats.add_prediction_outcome(ev.slot, right);
                    if !f.ended {
                        predicted = if right {
                            Predicted::Right
                        } else {
                            Predicted::Wrong
                        };
                        if !right {
                            // End the wrong note whatever happens to the real one.
                            let off = ShortMessage::note_off(0, f.key, 0);
                            out.push(Placed {
                                ev: RemoteEvent { msg: off, ..ev },
                                at: At::Time(ev.arrival),
                                order,
                                predicted: true,
                            });
                        }
                    }
                }
            }
        }
        if let EventKind::NoteOn { key, .. } = kind
            && let Some(pr) = &mut p.predictor
        {
            let duration = p.expected.unwrap_or(Beats(Beats::PER_BEAT / 2));
            pr.observe(Note {
                onset: intended,
                duration,
                pitch: key,
                velocity: ev.msg.data2(),
            });
            if let Ok(next) = pr.predict() {
                p.expected = Some(next.duration.max(Beats(1)));
                let best = next.best();
                if mode == LatencyMode::Predictive
                    && best.probability >= MIN_CONFIDENCE
                    && next.onset > intended
                {
                    p.pending = Some(Pending {
                        key: best.pitch,
                        velocity: next.velocity.max(1),
                        sent: ev.sent_at + span(tl, next.onset - intended),
                        duration: span(tl, next.duration),
                        beat: next.onset,
                        window: Beats((next.onset - intended).0 / 2),
                    });
                }
            }
        }

        // The late-event policy for this event, aimed at `target`.
        let input = |target| LateInput {
            mode,
            role: p.role,
            kind,
            intended,
            target,
            now,
            predicted,
        };
        match mode {
            LatencyMode::Interval => return false,
            LatencyMode::Coherent => {
                let target = self.coherent.render_beat(intended);
                let d = p.late.decide(input(target));
                match d {
                    Decision::Play { at } | Decision::Snap { at } | Decision::Correct { at } => {
                        out.push(Placed {
                            ev,
                            at: At::Beat(at),
                            order,
                            predicted: false,
                        });
                    }
                    Decision::Drop(_) => stats.add_late(ev.slot),
                    Decision::Confirm => {}
                }
            }
            LatencyMode::Live | LatencyMode::Predictive => {
                let due = ev.sent_at + Duration::from_micros(p.jitter.playout_delay_us());
                let target = tl.beat_at(due);
                let d = p.late.decide(input(target));
                let at = |b: Beats| {
                    if b == target {
                        At::Time(due)
                    } else if b == now {
                        At::Time(ev.arrival)
                    } else {
                        At::Time(tl.time_at(b))
                    }
                };
                if ev.arrival > due {
                    stats.add_late(ev.slot);
                }
                match d {
                    Decision::Play { at: b }
                    | Decision::Snap { at: b }
                    | Decision::Correct { at: b } => out.push(Placed {
                        ev,
                        at: at(b),
                        order,
                        predicted: false,
                    }),
                    Decision::Drop(_) | Decision::Confirm => {}
                }
            }
        }
        true
    }

    /// Forgets every per-peer timing decision in flight when the mode
    /// changes (the audio thread releases every note then).
    fn note_mode(&mut self, mode: LatencyMode) {
        if mode != self.last_mode {
            self.last_mode = mode;
            for p in self.peers.iter_mut().flatten() {
                p.pending = None;
                p.fired = None;
                p.stuck.clear();
                p.late = LatePolicy::new(LateConfig::default());
            }
        }
    }

    /// The schedule-ahead change this engine's measurements call for at
    /// local time `now`, if any: from the first bar boundary at least the
    /// scheduler's lead ahead (and after every change applied), the p99
    /// one-way delay plus margin. Nothing is applied: the caller carries it
    /// to every engine (the session document) and each applies it with
    /// [`Timing::apply_ahead`]. Until then it is proposed again.
    pub fn propose_ahead(&mut self, tl: &Timeline, now: Micros) -> Option<AheadChange> {
        self.coherent.poll_change(&bars(tl), tl.beat_at(now))
    }

    /// Without a session document to carry changes: applies this engine's
    /// own proposal at `now`, if any, and returns it. The engine is then
    /// coherent with itself only.
    pub fn apply_own_ahead(&mut self, tl: &Timeline, now: Micros) -> Option<AheadChange> {
        let c = self.propose_ahead(tl, now)?;
        self.apply_ahead(tl, c).ok()?;
        Some(c)
    }

    /// Every schedule-ahead change applied, in beat order.
    pub fn ahead_changes(&self) -> impl Iterator<Item = AheadChange> + '_ {
        self.coherent.changes()
    }

    /// Time-driven work at local time `now` (the audio thread's latest
    /// block): plays due predictions and ends stuck notes.
    pub fn handle_tick(
        &mut self,
        mode: LatencyMode,
        tl: &Timeline,
        now: Micros,
        out: &mut Vec<Placed>,
        stats: &PeerTable,
    ) {
        self.note_mode(mode);
        let beat = tl.beat_at(now);
        for (slot, p) in self.peers.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            let blank = |msg: ShortMessage| RemoteEvent {
                slot: slot as u8,
                msg,
                beat: None,
                sent_at: now,
                arrival: now,
                recovered: false,
            };
            while let Some(s) = p.stuck.poll_stuck(beat) {
                stats.add_stuck(slot as u8);
                out.push(Placed {
                    ev: blank(s.note_off()),
                    at: At::Time(now),
                    order: (beat, p.key, p.seq),
                    predicted: false,
                });
            }
            if mode != LatencyMode::Predictive {
                continue;
            }
            if let Some(f) = &mut p.fired
                && !f.ended
                && now >= f.off_at
            {
                f.ended = true;
                out.push(Placed {
                    ev: blank(ShortMessage::note_off(0, f.key, 0)),
                    at: At::Time(f.off_at),
                    order: (beat, p.key, p.seq),
                    predicted: true,
                });
            }
            if let Some(pe) = p.pending {
                let due = pe.sent + Duration::from_micros(p.jitter.playout_delay_us());
                if now + PREDICTION_LEAD >= due {
                    p.pending = None;
                    stats.add_predicted(slot as u8);
                    let at = due.max(now);
                    let mut ev = blank(ShortMessage::note_on(0, pe.key, pe.velocity));
                    ev.sent_at = pe.sent;
                    out.push(Placed {
                        ev,
                        at: At::Time(at),
                        order: (tl.beat_at(pe.sent), p.key, p.seq),
                        predicted: true,
                    });
                    p.fired = Some(Fired {
                        key: pe.key,
                        off_at: at + pe.duration.max(Duration::from_millis(20)),
                        ended: false,
                        beat: pe.beat,
                        window: pe.window,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(slot: u8, msg: ShortMessage, sent_ms: u64, arrival_ms: u64) -> RemoteEvent {
        RemoteEvent {
            slot,
            msg,
            beat: None,
            sent_at: Micros::from_millis(sent_ms),
            arrival: Micros::from_millis(arrival_ms),
            recovered: false,
        }
    }

    #[test]
    fn live_events_play_at_sent_plus_the_adaptive_playout_delay() {
        let mut t = Timing::new();
        let stats = PeerTable::default();
        let slot = stats.join(PeerId([1; 16]), "a", NetRole::Melody).unwrap();
        t.set_peer(slot, PeerId([1; 16]), NetRole::Melody);
        let tl = Timeline::default();
        let mut out = Vec::new();
        let on = ShortMessage::note_on(0, 60, 90);
        // 20 ms of delay: the first sample sets the delay (p95 + 2 ms margin).
        t.handle_event(
            LatencyMode::Live,
            Beats::ONE,
            &tl,
            ev(slot, on, 1000, 1020),
            &mut out,
            &stats,
        );
        assert_eq!(out[0].at, At::Time(Micros::from_millis(1022)));
        // A 60 ms straggler grows the delay at once: it is played at its own
        // arrival-based due time, never before it arrived.
        out.clear();
        t.handle_event(
            LatencyMode::Live,
            Beats::ONE,
            &tl,
            ev(slot, on, 1100, 1160),
            &mut out,
            &stats,
        );
        let At::Time(at) = out[0].at else { panic!() };
        assert!(at >= Micros::from_millis(1160), "{at:?}");
        assert_eq!(t.playout_delay_us(slot), Some(62_000));
    }

    #[test]
    fn coherent_events_render_at_their_beat_plus_the_schedule_ahead_and_late_ones_drop() {
        let mut t = Timing::new();
        let stats = PeerTable::default();
        let slot = stats.join(PeerId([2; 16]), "b", NetRole::Rhythm).unwrap();
        t.set_peer(slot, PeerId([2; 16]), NetRole::Rhythm);
        let tl = Timeline::default(); // 120 BPM: a quarter beat is 125 ms
        let mut out = Vec::new();
        let on = ShortMessage::note_on(0, 36, 100);
        let mut e = ev(slot, on, 0, 20);
        e.beat = Some(Beats::ZERO);
        t.handle_event(LatencyMode::Coherent, Beats::ONE, &tl, e, &mut out, &stats);
        assert_eq!(out[0].at, At::Beat(INITIAL_AHEAD));
        // 200 ms late: past its render beat, dropped and counted.
        let mut e = ev(slot, ShortMessage::note_on(0, 38, 100), 500, 700);
        e.beat = Some(Beats::ONE);
        t.handle_event(LatencyMode::Coherent, Beats::ONE, &tl, e, &mut out, &stats);
        assert_eq!(out.len(), 1);
        assert_eq!(stats.snapshot()[0].late, 1);
    }

    #[test]
    fn a_note_held_far_too_long_is_ended_and_counted() {
        let mut t = Timing::new();
        let stats = PeerTable::default();
        let slot = stats.join(PeerId([3; 16]), "c", NetRole::Harmony).unwrap();
        t.set_peer(slot, PeerId([3; 16]), NetRole::Harmony);
        let tl = Timeline::default();
        let mut out = Vec::new();
        t.handle_event(
            LatencyMode::Live,
            Beats::ONE,
            &tl,
            ev(slot, ShortMessage::note_on(0, 64, 80), 0, 10),
            &mut out,
            &stats,
        );
        out.clear();
        // Expected 2 beats × 8 = 16 beats = 8 s at 120 BPM.
        t.handle_tick(
            LatencyMode::Live,
            &tl,
            Micros::from_millis(7_000),
            &mut out,
            &stats,
        );
        assert!(out.is_empty());
        t.handle_tick(
            LatencyMode::Live,
            &tl,
            Micros::from_millis(8_100),
            &mut out,
            &stats,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ev.msg, ShortMessage::note_off(0, 64, 0));
        assert_eq!(stats.snapshot()[0].stuck_ended, 1);
    }
}
