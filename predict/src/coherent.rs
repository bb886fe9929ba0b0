//! Coherent mode: every peer renders the same events, in the same order, on
//! the same beats.
//!
//! An event intended for beat `b` renders at `b + ahead`, where `ahead` is
//! one schedule-ahead shared by the whole session. If `ahead` is longer than
//! the time any event takes to reach any peer, every peer has every event
//! before its render beat, and since the render beat and the tie-break
//! ([`CoherentQueue`]: render beat, intended beat, sender, sender sequence)
//! depend only on the event, every peer renders the identical ordered
//! sequence. An event that still arrives after its render beat is dropped by
//! the [late-event policy](crate::late_policy) (counted), never rendered
//! late: that would make this peer hear something the others do not.
//!
//! # Tuning
//!
//! [`CoherentScheduler`] measures the ensemble's one-way delays
//! ([`CoherentScheduler::handle_delay_sample`], from every peer's jitter
//! buffers) and wants `ahead = p99 + margin`, in beats at the current tempo,
//! rounded up to [`CoherentConfig::step`]. It grows as soon as the p99 needs
//! it and shrinks only when the wanted value is a whole hysteresis below.
//!
//! # Changes only at bar boundaries
//!
//! A change is an [`AheadChange`]: from a bar boundary `S` on, the offset
//! becomes `ahead`. One peer proposes it ([`CoherentScheduler::poll_change`],
//! at least [`CoherentConfig::lead`] ahead of its current beat), the session
//! document carries it to everyone, and every peer
//! [`apply`](CoherentScheduler::apply)s the same set of changes, in any order,
//! to the same schedule. Over the bar that starts at `S` the offset moves
//! linearly from the old value to the new one, so the render beat is
//! continuous and never decreasing: nothing is reordered, nothing jumps, and
//! nothing is played twice. A change is limited to half that bar.
//!
//! ```
//! use jam_core::timeline::{Meter, Tempo, Timeline};
//! use jam_core::{Beats, SessionTime};
//! use jam_predict::coherent::{AheadChange, CoherentConfig, CoherentScheduler};
//!
//! let tl = Timeline::new(SessionTime(0), Tempo::from_bpm(120.0).unwrap(), Meter::FOUR_FOUR);
//! let mut s = CoherentScheduler::new(CoherentConfig::default(), Beats::from_f64(0.25));
//! assert_eq!(s.render_beat(Beats::from_beats(3)), Beats::from_f64(3.25));
//! s.apply(&tl, AheadChange { from: Beats::from_beats(8), ahead: Beats::from_f64(0.5) }).unwrap();
//! assert_eq!(s.render_beat(Beats::from_beats(7)), Beats::from_f64(7.25));
//! assert_eq!(s.render_beat(Beats::from_beats(10)), Beats::from_f64(10.375)); // half-way
//! assert_eq!(s.render_beat(Beats::from_beats(12)), Beats::from_f64(12.5));
//! ```

use jam_core::timeline::Timeline;
use jam_core::{Beats, Tempo};
use std::collections::{BTreeMap, BTreeSet};

/// Settings of a [`CoherentScheduler`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoherentConfig {
    /// The percentile of one-way delays to cover, in percent.
    pub percentile: f64,
    /// Added to the percentile, in µs (processing, clock error).
    pub margin_us: u64,
    /// The schedule-ahead is a multiple of this.
    pub step: Beats,
    /// Never below.
    pub min_ahead: Beats,
    /// Never above.
    pub max_ahead: Beats,
    /// Shrink only when the wanted value is at least this much smaller.
    pub hysteresis: Beats,
    /// How far ahead of the current beat a proposed change starts (at the
    /// first bar boundary after `now + lead`), so that every peer has it
    /// before it applies.
    pub lead: Beats,
    /// Delay samples kept.
    pub window: usize,
}

impl Default for CoherentConfig {
    fn default() -> Self {
        CoherentConfig {
            percentile: 99.0,
            margin_us: 5_000,
            step: Beats(Beats::PER_BEAT / 32),
            min_ahead: Beats(Beats::PER_BEAT / 32),
            max_ahead: Beats::from_beats(4),
            hysteresis: Beats(Beats::PER_BEAT / 16),
            lead: Beats::from_beats(4),
            window: 1024,
        }
    }
}

/// From bar boundary `from` on, the schedule-ahead is `ahead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AheadChange {
    /// A bar boundary.
    pub from: Beats,
    /// The new schedule-ahead.
    pub ahead: Beats,
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoherentError {
    /// The change does not start on a bar boundary.
    #[error("schedule-ahead change at {0} is not on a bar boundary")]
    NotOnBar(Beats),
    /// The new schedule-ahead is negative.
    #[error("schedule-ahead {0} is negative")]
    Negative(Beats),
}

/// One resolved transition: over `[from, from + len)` the offset moves
/// from `before` to `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transition {
    from: Beats,
    len: Beats,
    before: Beats,
    after: Beats,
}

/// The shared schedule-ahead and its tuning; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct CoherentScheduler {
    config: CoherentConfig,
    initial: Beats,
    /// Every applied change, by boundary (the same set on every peer).
    changes: BTreeMap<Beats, Beats>,
    /// Bar lengths at each change, from the timeline at apply time.
    bar_len: BTreeMap<Beats, Beats>,
    transitions: Vec<Transition>,
    delays: Vec<u64>,
    next_slot: usize,
    scratch: Vec<u64>,
}

impl CoherentScheduler {
    /// A scheduler whose offset is `initial` until the first change.
    pub fn new(config: CoherentConfig, initial: Beats) -> CoherentScheduler {
        let mut config = config;
        config.window = config.window.max(1);
        CoherentScheduler {
            initial: initial.max(Beats::ZERO),
            changes: BTreeMap::new(),
            bar_len: BTreeMap::new(),
            transitions: Vec::new(),
            delays: Vec::with_capacity(config.window),
            scratch: Vec::with_capacity(config.window),
            next_slot: 0,
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &CoherentConfig {
        &self.config
    }

    /// Every applied change, in beat order.
    pub fn changes(&self) -> impl Iterator<Item = AheadChange> + '_ {
        self.changes
            .iter()
            .map(|(&from, &ahead)| AheadChange { from, ahead })
    }

    /// Takes one measured one-way delay (any peer to any peer), in µs.
    pub fn handle_delay_sample(&mut self, delay_us: u64) {
        if self.delays.len() < self.config.window {
            self.delays.push(delay_us);
        } else {
            self.delays[self.next_slot] = delay_us;
        }
        self.next_slot = (self.next_slot + 1) % self.config.window;
    }

    /// The configured percentile of the measured delays (nearest rank).
    pub fn delay_percentile_us(&mut self) -> Option<u64> {
        if self.delays.is_empty() {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.delays);
        let n = self.scratch.len();
        let rank = ((self.config.percentile / 100.0) * n as f64).ceil() as usize;
        let (_, v, _) = self.scratch.select_nth_unstable(rank.clamp(1, n) - 1);
        Some(*v)
    }

    /// The schedule-ahead the measurements call for at `tempo`: percentile
    /// plus margin, in beats, rounded up to the step, clamped.
    pub fn wanted_ahead(&mut self, tempo: Tempo) -> Option<Beats> {
        let us = self
            .delay_percentile_us()?
            .saturating_add(self.config.margin_us);
        // Round up so the offset always covers the delay.
        let us = i64::try_from(us).unwrap_or(i64::MAX);
        let mut beats = tempo.beats_in(us);
        if tempo.micros_for(beats) < us {
            beats += Beats(1);
        }
        let step = self.config.step.0.max(1);
        let stepped =
            Beats(beats.0.div_euclid(step) * step + step * i64::from(beats.0 % step != 0));
        Some(stepped.clamp(self.config.min_ahead, self.config.max_ahead))
    }

    /// The offset in force for events intended at beat `b`, once every
    /// transition before it is done (the target of the last change at or
    /// before `b`).
    pub fn ahead_at(&self, b: Beats) -> Beats {
        let i = self.transitions.partition_point(|t| t.from <= b);
        if i == 0 {
            self.initial
        } else {
            self.transitions[i - 1].after
        }
    }

    /// Where an event intended for beat `b` renders. Continuous and never
    /// decreasing in `b`.
    pub fn render_beat(&self, b: Beats) -> Beats {
        let i = self.transitions.partition_point(|t| t.from <= b);
        if i == 0 {
            return b + self.initial;
        }
        let t = self.transitions[i - 1];
        let into = b - t.from;
        if into >= t.len || t.len.0 <= 0 {
            return b + t.after;
        }
        let delta = i128::from(t.after.0 - t.before.0) * i128::from(into.0);
        let ramp = delta.div_euclid(i128::from(t.len.0)) as i64;
        b + t.before + Beats(ramp)
    }

    /// Applies a change (own or from the session). Applying the same set of
    /// changes in any order gives the same schedule; a second change at the
    /// same boundary replaces the first only if its offset is larger (so
    /// concurrent proposals converge on the safer one).
    pub fn apply(&mut self, timeline: &Timeline, change: AheadChange) -> Result<(), CoherentError> {
        if change.ahead < Beats::ZERO {
            return Err(CoherentError::Negative(change.ahead));
        }
        if timeline.bar_at(change.from).offset != Beats::ZERO {
            return Err(CoherentError::NotOnBar(change.from));
        }
        let len = timeline.next_bar(change.from) - change.from;
        let entry = self.changes.entry(change.from).or_insert(change.ahead);
        *entry = (*entry).max(change.ahead);
        self.bar_len.insert(change.from, len);
        self.resolve();
        Ok(())
    }

    fn resolve(&mut self) {
        self.transitions.clear();
        let mut before = self.initial;
        for (&from, &wanted) in &self.changes {
            let len = self.bar_len.get(&from).copied().unwrap_or(Beats::ONE);
            // Limit each change to half its bar, so rendering stays ordered.
            let half = Beats(len.0 / 2);
            let after = wanted.clamp(before - half, before + half).max(Beats::ZERO);
            self.transitions.push(Transition {
                from,
                len,
                before,
                after,
            });
            before = after;
        }
    }

    /// A change this peer should propose at beat `now`, if the measurements
    /// call for one: it starts at the first bar boundary after `now + lead`
    /// (and after every change already applied). Nothing is proposed while
    /// an applied change has not started yet: peers whose measurements
    /// differ would otherwise answer each other's changes at once, one bar
    /// after another, raising and lowering the offset far into the future.
    pub fn poll_change(&mut self, timeline: &Timeline, now: Beats) -> Option<AheadChange> {
        let last = self.changes.iter().next_back().map(|(&at, &a)| (at, a));
        if last.is_some_and(|(at, _)| at > now) {
            return None;
        }
        let tempo = timeline.tempo_at(now);
        let wanted = self.wanted_ahead(tempo)?;
        let current = last.map(|(_, a)| a).unwrap_or(self.initial);
        let grow = wanted > current;
        let shrink = current - wanted >= self.config.hysteresis;
        if !grow && !shrink {
            return None;
        }
        let mut from = timeline.next_bar(now + self.config.lead);
        if let Some((at, _)) = last {
            while from <= at {
                from = timeline.next_bar(from);
            }
        }
        Some(AheadChange {
            from,
            ahead: wanted,
        })
    }
}

/// The render queue of coherent mode: events come out in the order every
/// peer agrees on (render beat, intended beat, sender, sender sequence).
#[derive(Debug, Clone)]
pub struct CoherentQueue<T> {
    queue: BTreeMap<(Beats, Beats, u128, u64), T>,
    /// Keys already taken, to refuse a duplicate (same sender and sequence).
    seen: BTreeSet<(u128, u64)>,
}

impl<T> Default for CoherentQueue<T> {
    fn default() -> Self {
        CoherentQueue {
            queue: BTreeMap::new(),
            seen: BTreeSet::new(),
        }
    }
}

impl<T> CoherentQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an event for beat `render`; `sender` and `seq` identify it
    /// (the sender's id and its own event counter). Returns false, and
    /// keeps nothing, for a duplicate.
    pub fn push(
        &mut self,
        render: Beats,
        intended: Beats,
        sender: u128,
        seq: u64,
        event: T,
    ) -> bool {
        if !self.seen.insert((sender, seq)) {
            return false;
        }
        self.queue.insert((render, intended, sender, seq), event);
        true
    }

    /// The next event whose render beat is at or before `now`.
    pub fn poll(&mut self, now: Beats) -> Option<(Beats, T)> {
        let (&key, _) = self.queue.iter().next()?;
        if key.0 > now {
            return None;
        }
        let ev = self.queue.remove(&key)?;
        Some((key.0, ev))
    }

    /// The render beat of the next event.
    pub fn next_beat(&self) -> Option<Beats> {
        self.queue.keys().next().map(|k| k.0)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jam_core::SessionTime;
    use jam_core::timeline::{Meter, TempoChange};
    use proptest::prelude::*;

    fn b(x: f64) -> Beats {
        Beats::from_f64(x)
    }

    fn tl() -> Timeline {
        Timeline::new(
            SessionTime(0),
            Tempo::from_bpm(120.0).unwrap(),
            Meter::FOUR_FOUR,
        )
    }

    #[test]
    fn wanted_ahead_is_the_p99_plus_margin_rounded_up_to_the_step() {
        let mut s = CoherentScheduler::new(CoherentConfig::default(), b(0.25));
        for d in 1..=100u64 {
            s.handle_delay_sample(d * 1_000); // 1..100 ms
        }
        // p99 = 99 ms, + 5 ms = 104 ms = 0.208 beats at 120 BPM; in 1/32
        // steps: 7/32 = 0.21875.
        assert_eq!(s.delay_percentile_us(), Some(99_000));
        assert_eq!(
            s.wanted_ahead(Tempo::from_bpm(120.0).unwrap()),
            Some(b(0.21875))
        );
    }

    #[test]
    fn changes_only_at_bar_boundaries() {
        let mut s = CoherentScheduler::new(CoherentConfig::default(), b(0.25));
        assert_eq!(
            s.apply(
                &tl(),
                AheadChange {
                    from: b(6.0),
                    ahead: b(0.5)
                }
            ),
            Err(CoherentError::NotOnBar(b(6.0)))
        );
        for d in [150_000u64; 10] {
            s.handle_delay_sample(d);
        }
        // At beat 5.5 with a lead of 4 beats: first bar after 9.5 is 12.
        let c = s.poll_change(&tl(), b(5.5)).unwrap();
        assert_eq!(c.from, b(12.0));
        // 155 ms = 0.31 beats -> 10/32.
        assert_eq!(c.ahead, b(0.3125));
        s.apply(&tl(), c).unwrap();
        // The offset is constant within every bar before the change.
        for x in 0..12 * 8 {
            assert_eq!(s.ahead_at(b(x as f64 / 8.0)), b(0.25));
        }
        assert_eq!(s.ahead_at(b(12.0)), b(0.3125));
        // Asking again proposes nothing: the change covers the need.
        assert_eq!(s.poll_change(&tl(), b(6.0)), None);
        // Nor does a higher need while that change is still ahead; once it
        // has started, the next change goes to the first bar after the lead.
        for d in [300_000u64; 40] {
            s.handle_delay_sample(d);
        }
        assert_eq!(s.poll_change(&tl(), b(11.9)), None);
        let c = s.poll_change(&tl(), b(12.5)).unwrap();
        assert_eq!(c.from, b(20.0));
        assert!(c.ahead > b(0.3125));
    }

    #[test]
    fn a_change_ramps_over_one_bar_and_is_capped_at_half_a_bar() {
        let mut s = CoherentScheduler::new(CoherentConfig::default(), b(0.5));
        s.apply(
            &tl(),
            AheadChange {
                from: b(4.0),
                ahead: b(0.0),
            },
        )
        .unwrap();
        assert_eq!(s.render_beat(b(3.9)), b(4.4));
        assert_eq!(s.render_beat(b(4.0)), b(4.5));
        assert_eq!(s.render_beat(b(6.0)), b(6.25));
        assert_eq!(s.render_beat(b(8.0)), b(8.0));
        s.apply(
            &tl(),
            AheadChange {
                from: b(8.0),
                ahead: b(100.0),
            },
        )
        .unwrap();
        assert_eq!(s.ahead_at(b(12.0)), b(2.0));
    }

    #[test]
    fn the_larger_of_two_concurrent_proposals_wins_in_any_order() {
        let c1 = AheadChange {
            from: b(8.0),
            ahead: b(0.5),
        };
        let c2 = AheadChange {
            from: b(8.0),
            ahead: b(0.75),
        };
        let c3 = AheadChange {
            from: b(16.0),
            ahead: b(0.25),
        };
        let mut a = CoherentScheduler::new(CoherentConfig::default(), b(0.25));
        let mut z = CoherentScheduler::new(CoherentConfig::default(), b(0.25));
        for c in [c1, c2, c3] {
            a.apply(&tl(), c).unwrap();
        }
        for c in [c3, c2, c1] {
            z.apply(&tl(), c).unwrap();
        }
        for x in 0..200 {
            assert_eq!(
                a.render_beat(b(x as f64 / 10.0)),
                z.render_beat(b(x as f64 / 10.0))
            );
        }
        assert_eq!(a.ahead_at(b(9.0)), b(0.75));
    }

    #[test]
    fn a_meter_change_gives_the_ramp_its_bar() {
        let three = Meter::new(3, 4).unwrap();
        let t = Timeline::build(
            SessionTime(0),
            Tempo::from_bpm(120.0).unwrap(),
            Meter::FOUR_FOUR,
            &[TempoChange {
                at: b(8.0),
                tempo: Tempo::from_bpm(120.0).unwrap(),
                meter: three,
            }],
        );
        let mut s = CoherentScheduler::new(CoherentConfig::default(), b(0.0));
        s.apply(
            &t,
            AheadChange {
                from: b(11.0),
                ahead: b(0.3),
            },
        )
        .unwrap();
        assert_eq!(s.render_beat(b(12.5)), b(12.65));
        assert_eq!(s.render_beat(b(14.0)), b(14.3));
    }

    #[test]
    fn the_queue_orders_by_render_beat_then_the_agreed_tie_break() {
        let mut q = CoherentQueue::new();
        assert!(q.push(b(2.0), b(1.0), 7, 1, 'c'));
        assert!(q.push(b(2.0), b(1.0), 3, 9, 'b'));
        assert!(q.push(b(1.5), b(0.5), 9, 2, 'a'));
        assert!(!q.push(b(9.0), b(9.0), 3, 9, 'x'));
        assert_eq!(q.poll(b(1.0)), None);
        let out: Vec<char> = std::iter::from_fn(|| q.poll(b(3.0)).map(|x| x.1)).collect();
        assert_eq!(out, vec!['a', 'b', 'c']);
    }

    proptest! {
        /// Whatever changes are applied, rendering never goes backwards, and
        /// it is exact outside transition bars.
        #[test]
        fn render_is_monotone(
            initial in 0i64..2_000_000,
            changes in proptest::collection::vec((0i64..20, 0i64..3_000_000), 0..6),
            xs in proptest::collection::vec(0i64..100_000_000, 2..50),
        ) {
            let t = tl();
            let mut s = CoherentScheduler::new(CoherentConfig::default(), Beats(initial));
            for (bar, ahead) in changes {
                s.apply(&t, AheadChange { from: Beats::from_beats(bar * 4), ahead: Beats(ahead) }).unwrap();
            }
            let mut xs = xs;
            xs.sort();
            let mut prev = None;
            for x in xs {
                let r = s.render_beat(Beats(x));
                if let Some(p) = prev { prop_assert!(r >= p); }
                prev = Some(r);
                prop_assert!(r >= Beats(x));
            }
        }
    }
}
