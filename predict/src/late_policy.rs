//! The late-event policy: what to do with a remote event, given where the
//! latency mode wants it and when it actually became available.
//!
//! Every remote event knows its intended beat (the sender's position on the
//! shared timeline). The latency mode turns that into a **target** beat
//! (live: after the jitter buffer; coherent: plus the shared schedule-ahead;
//! interval: plus N beats). The event becomes available at beat **now**.
//! If `now <= target` the event plays at its target. Otherwise it is late,
//! and the policy decides, by message kind, mode and role:
//!
//! | event | mode | role | decision |
//! |---|---|---|---|
//! | any | any | any | in time: play at the target |
//! | note-off of a dropped note-on | any | any | drop (nothing sounds) |
//! | note-off, other messages | any | any | play now (never leave a note hanging or a controller stale) |
//! | note-on | coherent, interval | any | drop: playing it later would make peers hear different things, or break "exactly N beats" |
//! | note-on | live, predictive | any | later than the role's `max_late`: drop |
//! | note-on | predictive, prediction played and right | any | confirm: already sounding, play nothing |
//! | note-on | predictive, prediction played and wrong | any | correct: play the real note now (counted as a wrong prediction) |
//! | note-on | live, predictive | rhythm | snap to the next grid slot (if within `snap_window`, else play now) |
//! | note-on | live, predictive | melody | play now: expression matters more than the grid |
//! | note-on | live, predictive | harmony | join the chord being played if it has not started yet, else play now |
//!
//! A note-off never plays before the note-on it ends. Every decision is
//! counted in [`LateStats`]; nothing is dropped without being counted.

use crate::features::Role;
use crate::quantizer::{Quantizer, QuantizerConfig};
use jam_core::{Beats, LatencyMode};

/// What kind of event is being decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A note-on (velocity > 0) on `channel`, `key`.
    NoteOn {
        /// MIDI channel, 0-15.
        channel: u8,
        /// MIDI key.
        key: u8,
    },
    /// A note-off (or note-on with velocity 0).
    NoteOff {
        /// MIDI channel, 0-15.
        channel: u8,
        /// MIDI key.
        key: u8,
    },
    /// Anything else (controllers, pitch bend, program change...).
    Other,
}

/// Whether a prediction was already played for the note being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Predicted {
    /// No prediction covered this note.
    None,
    /// A prediction was played and its pitch was this note's.
    Right,
    /// A prediction was played with another pitch.
    Wrong,
}

/// One decision's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LateInput {
    /// The listener's mode.
    pub mode: LatencyMode,
    /// The sender's role.
    pub role: Role,
    /// The event.
    pub kind: EventKind,
    /// The sender's beat for the event.
    pub intended: Beats,
    /// Where the mode wants it rendered.
    pub target: Beats,
    /// The beat at which it became available here.
    pub now: Beats,
    /// Predictive mode: whether a prediction already covered it.
    pub predicted: Predicted,
}

/// Why an event was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Later than the mode or role allows.
    TooLate,
    /// The note-off of a note-on that was dropped.
    OrphanOff,
}

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Play at this beat (its target, or now when late).
    Play {
        /// Render beat.
        at: Beats,
    },
    /// Late, snapped forward to the next grid slot.
    Snap {
        /// Render beat (a grid slot).
        at: Beats,
    },
    /// Not played; counted.
    Drop(DropReason),
    /// A right prediction already sounds; play nothing more.
    Confirm,
    /// A wrong prediction sounded; play the real note at this beat.
    Correct {
        /// Render beat.
        at: Beats,
    },
}

/// Settings of a [`LatePolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LateConfig {
    /// Per role ([`Role::index`]): a late note-on later than this is
    /// dropped in live and predictive mode.
    pub max_late: [Beats; 3],
    /// Rhythm: snap only if the next slot is at most this far ahead.
    pub snap_window: Beats,
    /// Per role: the grid used for snapping and chord grouping.
    pub quantizer: [QuantizerConfig; 3],
}

impl Default for LateConfig {
    fn default() -> Self {
        LateConfig {
            // Rhythm: a quarter beat; melody: half a beat; harmony: a beat.
            max_late: [
                Beats(Beats::PER_BEAT / 4),
                Beats(Beats::PER_BEAT / 2),
                Beats::ONE,
            ],
            snap_window: Beats(Beats::PER_BEAT / 4),
            quantizer: [
                QuantizerConfig::for_role(Role::Rhythm),
                QuantizerConfig::for_role(Role::Melody),
                QuantizerConfig::for_role(Role::Harmony),
            ],
        }
    }
}

/// Counters of every decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LateStats {
    /// Played at the target.
    pub on_time: u64,
    /// Played late (now).
    pub late_played: u64,
    /// Snapped to the grid.
    pub snapped: u64,
    /// Dropped as too late.
    pub dropped_late: u64,
    /// Note-offs of dropped notes dropped.
    pub dropped_orphan_off: u64,
    /// Predictions confirmed.
    pub confirmed: u64,
    /// Wrong predictions corrected.
    pub corrected: u64,
}

/// The policy of one listener for one remote peer; keeps which notes it
/// dropped (so their note-offs go too) and where note-ons were rendered (so
/// a note-off never comes first). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct LatePolicy {
    config: LateConfig,
    /// Per channel × key: `Some(render beat)` of a sounding note-on, or the
    /// dropped marker.
    notes: Vec<Slot>,
    /// Harmony: the last chord's intended beat and render beat.
    chord: Option<(Beats, Beats)>,
    stats: LateStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Idle,
    Sounding(Beats),
    Dropped,
}

impl LatePolicy {
    /// A policy with `config`.
    pub fn new(config: LateConfig) -> LatePolicy {
        LatePolicy {
            config,
            notes: vec![Slot::Idle; 16 * 128],
            chord: None,
            stats: LateStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> LateStats {
        self.stats
    }

    fn slot(channel: u8, key: u8) -> usize {
        usize::from(channel & 0x0F) * 128 + usize::from(key & 0x7F)
    }

    /// Decides on one event. Call in arrival order.
    pub fn decide(&mut self, input: LateInput) -> Decision {
        let d = self.decide_inner(input);
        match d {
            Decision::Play { .. } if input.now <= input.target => self.stats.on_time += 1,
            Decision::Play { .. } => self.stats.late_played += 1,
            Decision::Snap { .. } => self.stats.snapped += 1,
            Decision::Drop(DropReason::TooLate) => self.stats.dropped_late += 1,
            Decision::Drop(DropReason::OrphanOff) => self.stats.dropped_orphan_off += 1,
            Decision::Confirm => self.stats.confirmed += 1,
            Decision::Correct { .. } => self.stats.corrected += 1,
        }
        if let EventKind::NoteOn { channel, key } = input.kind {
            let s = Self::slot(channel, key);
            self.notes[s] = match d {
                Decision::Play { at } | Decision::Snap { at } | Decision::Correct { at } => {
                    Slot::Sounding(at)
                }
                Decision::Confirm => Slot::Sounding(input.now.min(input.target)),
                Decision::Drop(_) => Slot::Dropped,
            };
            if let Decision::Play { at } | Decision::Snap { at } = d {
                self.chord = Some((input.intended, at));
            }
        }
        d
    }

    fn decide_inner(&mut self, i: LateInput) -> Decision {
        let in_time = i.now <= i.target;
        match i.kind {
            EventKind::NoteOff { channel, key } => {
                let s = Self::slot(channel, key);
                let prev = std::mem::replace(&mut self.notes[s], Slot::Idle);
                match prev {
                    Slot::Dropped => Decision::Drop(DropReason::OrphanOff),
                    Slot::Sounding(on) => {
                        let at = if in_time { i.target } else { i.now };
                        Decision::Play { at: at.max(on) }
                    }
                    Slot::Idle => Decision::Play {
                        at: if in_time { i.target } else { i.now },
                    },
                }
            }
            EventKind::Other => Decision::Play {
                at: if in_time { i.target } else { i.now },
            },
            EventKind::NoteOn { .. } => {
                if i.mode == LatencyMode::Predictive {
                    match i.predicted {
                        Predicted::Right => return Decision::Confirm,
                        Predicted::Wrong => {
                            return if i.now - i.target > self.config.max_late[i.role.index()] {
                                Decision::Drop(DropReason::TooLate)
                            } else {
                                Decision::Correct {
                                    at: if in_time { i.target } else { i.now },
                                }
                            };
                        }
                        Predicted::None => {}
                    }
                }
                if in_time {
                    return Decision::Play { at: i.target };
                }
                let late = i.now - i.target;
                match i.mode {
                    LatencyMode::Coherent | LatencyMode::Interval => {
                        Decision::Drop(DropReason::TooLate)
                    }
                    LatencyMode::Live | LatencyMode::Predictive => {
                        if late > self.config.max_late[i.role.index()] {
                            return Decision::Drop(DropReason::TooLate);
                        }
                        let q = Quantizer::new(self.config.quantizer[i.role.index()]);
                        match i.role {
                            Role::Rhythm => {
                                let slot = q.next_slot(i.now);
                                if slot - i.now <= self.config.snap_window {
                                    Decision::Snap { at: slot }
                                } else {
                                    Decision::Play { at: i.now }
                                }
                            }
                            Role::Melody => Decision::Play { at: i.now },
                            Role::Harmony => match self.chord {
                                Some((intended, at))
                                    if i.intended >= intended
                                        && i.intended - intended <= q.config().chord_window
                                        && at >= i.now =>
                                {
                                    Decision::Play { at }
                                }
                                _ => Decision::Play { at: i.now },
                            },
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: f64) -> Beats {
        Beats::from_f64(x)
    }

    const ON: EventKind = EventKind::NoteOn {
        channel: 0,
        key: 60,
    };
    const OFF: EventKind = EventKind::NoteOff {
        channel: 0,
        key: 60,
    };

    fn input(mode: LatencyMode, role: Role, kind: EventKind, target: f64, now: f64) -> LateInput {
        LateInput {
            mode,
            role,
            kind,
            intended: b(target),
            target: b(target),
            now: b(now),
            predicted: Predicted::None,
        }
    }

    /// Runs the inputs through a fresh policy and compares every decision.
    fn check(inputs: &[LateInput], expected: &[Decision]) {
        let mut p = LatePolicy::new(LateConfig::default());
        let got: Vec<Decision> = inputs.iter().map(|i| p.decide(*i)).collect();
        assert_eq!(got, expected, "inputs: {inputs:#?}");
    }

    use Decision::*;
    use LatencyMode::*;

    #[test]
    fn in_time_events_play_at_their_target_in_every_mode() {
        for mode in LatencyMode::ALL {
            for role in Role::ALL {
                check(
                    &[
                        input(mode, role, ON, 2.0, 1.5),
                        input(mode, role, OFF, 3.0, 2.9),
                    ],
                    &[Play { at: b(2.0) }, Play { at: b(3.0) }],
                );
            }
        }
    }

    #[test]
    fn late_note_ons_by_mode_and_role() {
        // 0.1 beat late.
        check(
            &[input(Coherent, Role::Melody, ON, 2.0, 2.1)],
            &[Drop(DropReason::TooLate)],
        );
        check(
            &[input(Interval, Role::Rhythm, ON, 2.0, 2.1)],
            &[Drop(DropReason::TooLate)],
        );
        check(
            &[input(Live, Role::Melody, ON, 2.0, 2.1)],
            &[Play { at: b(2.1) }],
        );
        check(
            &[input(Live, Role::Rhythm, ON, 2.0, 2.1)],
            &[Snap { at: b(2.25) }],
        );
        check(
            &[input(Predictive, Role::Rhythm, ON, 2.0, 2.1)],
            &[Snap { at: b(2.25) }],
        );
        check(
            &[input(Live, Role::Harmony, ON, 2.0, 2.1)],
            &[Play { at: b(2.1) }],
        );
        // Past the role's limit: rhythm 0.25, melody 0.5, harmony 1 beat.
        check(
            &[input(Live, Role::Rhythm, ON, 2.0, 2.3)],
            &[Drop(DropReason::TooLate)],
        );
        check(
            &[input(Live, Role::Melody, ON, 2.0, 2.4)],
            &[Play { at: b(2.4) }],
        );
        check(
            &[input(Live, Role::Melody, ON, 2.0, 2.6)],
            &[Drop(DropReason::TooLate)],
        );
        check(
            &[input(Live, Role::Harmony, ON, 2.0, 2.9)],
            &[Play { at: b(2.9) }],
        );
    }

    #[test]
    fn snapping_needs_a_slot_within_the_window() {
        let mut p = LatePolicy::new(LateConfig {
            snap_window: b(0.1),
            ..LateConfig::default()
        });
        assert_eq!(
            p.decide(input(Live, Role::Rhythm, ON, 2.0, 2.1)),
            Play { at: b(2.1) }
        );
        assert_eq!(
            p.decide(input(Live, Role::Rhythm, OFF, 2.0, 2.2)),
            Play { at: b(2.2) }
        );
        assert_eq!(
            p.decide(input(Live, Role::Rhythm, ON, 3.0, 3.2)),
            Snap { at: b(3.25) }
        );
    }

    #[test]
    fn the_note_off_of_a_dropped_note_is_dropped_too() {
        check(
            &[
                input(Coherent, Role::Melody, ON, 2.0, 2.1),
                input(Coherent, Role::Melody, OFF, 3.0, 2.2),
                // The next note on the same key is unaffected.
                input(Coherent, Role::Melody, ON, 4.0, 3.0),
                input(Coherent, Role::Melody, OFF, 5.0, 3.1),
            ],
            &[
                Drop(DropReason::TooLate),
                Drop(DropReason::OrphanOff),
                Play { at: b(4.0) },
                Play { at: b(5.0) },
            ],
        );
    }

    #[test]
    fn late_note_offs_and_controllers_play_now_but_never_before_their_note_on() {
        check(
            &[
                input(Live, Role::Rhythm, ON, 2.0, 2.2),   // snapped to 2.25
                input(Live, Role::Rhythm, OFF, 2.1, 2.21), // late, but not before 2.25
                input(Live, Role::Melody, EventKind::Other, 3.0, 3.5),
            ],
            &[
                Snap { at: b(2.25) },
                Play { at: b(2.25) },
                Play { at: b(3.5) },
            ],
        );
    }

    #[test]
    fn predictions_are_confirmed_or_corrected() {
        let mut right = input(Predictive, Role::Melody, ON, 2.0, 2.2);
        right.predicted = Predicted::Right;
        let mut wrong = input(Predictive, Role::Melody, ON, 3.0, 3.2);
        wrong.predicted = Predicted::Wrong;
        let mut very_late_wrong = input(Predictive, Role::Melody, ON, 4.0, 4.9);
        very_late_wrong.predicted = Predicted::Wrong;
        let mut p = LatePolicy::new(LateConfig::default());
        assert_eq!(p.decide(right), Confirm);
        assert_eq!(
            p.decide(input(Predictive, Role::Melody, OFF, 2.5, 2.6)),
            Play { at: b(2.6) }
        );
        assert_eq!(p.decide(wrong), Correct { at: b(3.2) });
        assert_eq!(p.decide(very_late_wrong), Drop(DropReason::TooLate));
        let s = p.stats();
        assert_eq!(
            (s.confirmed, s.corrected, s.dropped_late, s.late_played),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn late_harmony_notes_join_a_chord_that_has_not_started() {
        let mut first = input(Live, Role::Harmony, ON, 2.0, 1.0);
        first.target = b(2.5); // in time, rendered at 2.5
        let mut second = input(
            Live,
            Role::Harmony,
            EventKind::NoteOn {
                channel: 0,
                key: 64,
            },
            2.03,
            2.2,
        );
        second.intended = b(2.03);
        second.target = b(2.03);
        let mut third = input(
            Live,
            Role::Harmony,
            EventKind::NoteOn {
                channel: 0,
                key: 67,
            },
            2.04,
            2.6,
        );
        third.intended = b(2.04);
        check(
            &[first, second, third],
            &[
                Play { at: b(2.5) },
                Play { at: b(2.5) },
                Play { at: b(2.6) },
            ],
        );
    }
}
