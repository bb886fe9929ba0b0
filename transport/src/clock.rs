//! The AppleMIDI session clock and remote-to-local time mapping.
//!
//! AppleMIDI timestamps (RTP timestamps, `CK` stamps, command delta times)
//! count 100 µs ticks of a free-running 64-bit clock with an arbitrary origin
//! (`rtp-midi.md` §0, §6.3). We run that clock off the local [`Micros`]
//! clock, so converting is a division, and a remote peer's clock maps onto
//! ours with the signed offset that clock synchronisation estimates.

use jam_core::Micros;
use std::collections::VecDeque;
use std::time::Duration;

/// Microseconds per AppleMIDI tick (the session clock runs at 10 kHz).
pub const MICROS_PER_TICK: u64 = 100;

/// A point on an AppleMIDI session clock: 100 µs ticks since its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ticks(pub u64);

impl Ticks {
    /// The local session clock reading at local time `t` (truncating).
    pub const fn from_local(t: Micros) -> Ticks {
        Ticks(t.0 / MICROS_PER_TICK)
    }

    /// The local time at which the local session clock reads `self`.
    pub const fn to_local(self) -> Micros {
        Micros(self.0.saturating_mul(MICROS_PER_TICK))
    }

    /// The low 32 bits, as carried in an RTP timestamp.
    pub const fn rtp(self) -> u32 {
        self.0 as u32
    }

    /// Unwraps a 32-bit RTP timestamp against a 64-bit reference close to it
    /// (RFC 3550 style): the 64-bit value within ±2^31 ticks of `reference`
    /// whose low 32 bits are `ts`.
    pub const fn unwrap_rtp(ts: u32, reference: Ticks) -> Ticks {
        let delta = ts.wrapping_sub(reference.0 as u32) as i32 as i64;
        Ticks(reference.0.saturating_add_signed(delta))
    }
}

/// Maps a remote peer's session clock onto the local clock.
///
/// `offset_ticks = local_ticks - remote_ticks`, as estimated by clock
/// synchronisation (`CK` exchanges, `rtp-midi.md` §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockMap {
    /// Local clock minus remote clock, in ticks.
    pub offset_ticks: i64,
}

impl ClockMap {
    /// The identity map (both clocks agree).
    pub const IDENTITY: ClockMap = ClockMap { offset_ticks: 0 };

    /// The local time at which the remote clock reads `remote`.
    pub const fn to_local(&self, remote: Ticks) -> Micros {
        Ticks(remote.0.saturating_add_signed(self.offset_ticks)).to_local()
    }

    /// The remote clock reading at local time `local`.
    pub const fn to_remote(&self, local: Micros) -> Ticks {
        Ticks(
            Ticks::from_local(local)
                .0
                .saturating_add_signed(-self.offset_ticks),
        )
    }
}

/// Settings of a [`ClockTracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockTrackerConfig {
    /// The fastest the applied offset moves while it slews, in parts per
    /// million of elapsed local time (50 ppm: 50 µs per second). Two events
    /// 250 ms apart then keep their spacing within 12.5 µs, well under one
    /// sample at 48 kHz.
    pub max_slew_ppm: u32,
    /// An estimate further than this from the applied offset (and outside
    /// the sample's own error bound) is a real jump: the offset steps.
    pub step_threshold: Duration,
    /// At most this many samples are kept; the one with the smallest round
    /// trip is the estimate.
    pub window: usize,
    /// Samples older than this are dropped, except the newest one.
    pub max_age: Duration,
}

impl Default for ClockTrackerConfig {
    /// 50 ppm, 10 ms, the last 8 samples within 60 s.
    fn default() -> Self {
        ClockTrackerConfig {
            max_slew_ppm: 50,
            step_threshold: Duration::from_millis(10),
            window: 8,
            max_age: Duration::from_secs(60),
        }
    }
}

/// A clock-sync sample as the tracker keeps it: offset and round trip in µs.
#[derive(Debug, Clone, Copy)]
struct TrackedSample {
    at: Micros,
    offset_us: i64,
    rtt_us: i64,
}

/// Remote→local time mapping that follows clock-sync samples without jumps.
///
/// Each `CK` exchange yields an offset estimate whose error is at most half
/// its round trip. Replacing the mapping with every new estimate makes
/// remote event times jump by that error (round-trip noise, worse under CPU
/// load). The tracker instead:
///
/// - **filters**: keeps a window of samples and takes the one with the
///   smallest round trip (newest among equals) as the estimate;
/// - **holds** while the applied offset lies within that sample's error
///   bound (`rtt / 2` plus one tick of quantisation): no evidence says it is
///   wrong, so it does not move;
/// - **slews** otherwise: the applied offset moves toward the estimate by at
///   most [`ClockTrackerConfig::max_slew_ppm`] of the local time elapsed, so
///   remote event spacing changes by at most that fraction;
/// - **steps** only on the first sample and when the estimate is more than
///   [`ClockTrackerConfig::step_threshold`] away (a real jump: a restarted
///   peer clock, a first estimate taken under heavy load).
///
/// [`ClockTracker::map`] also keeps the local times of one stream's events
/// monotonic between steps: an event never maps before the previous one.
///
/// Sans-IO and deterministic: every method takes the local time `now`.
/// The offset is kept in microseconds, finer than the 100 µs tick.
///
/// Frequency skew is not estimated: a drift beyond `max_slew_ppm` between two
/// clocks is caught up by occasional steps.
///
/// ```
/// use jam_core::Micros;
/// use jam_transport::clock::{ClockTracker, ClockTrackerConfig, Ticks};
///
/// let mut t = ClockTracker::new(ClockTrackerConfig::default());
/// // First sample: local minus remote = 1000 ticks (100 ms), 2 ms round trip.
/// t.observe(Micros::from_secs(1), 1_000, 20);
/// assert_eq!(t.offset_us(Micros::from_secs(1)), Some(100_000));
/// // A better sample 1 ms away: slewed at 50 ppm, 50 µs per second.
/// t.observe(Micros::from_secs(2), 1_010, 2);
/// assert_eq!(t.offset_us(Micros::from_secs(3)), Some(100_050));
/// assert_eq!(t.map(Micros::from_secs(3), Ticks(5_000)), Some(Micros(600_050)));
/// ```
#[derive(Debug, Clone)]
pub struct ClockTracker {
    config: ClockTrackerConfig,
    samples: VecDeque<TrackedSample>,
    /// Applied offset (local minus remote, µs) as of `applied_at`.
    applied: Option<i64>,
    applied_at: Micros,
    /// Where the applied offset is slewing to.
    target: i64,
    steps: u64,
    /// The last mapped local time and the step count it was mapped under.
    last_local: Option<(Micros, u64)>,
}

impl ClockTracker {
    /// A tracker with no estimate yet.
    pub fn new(config: ClockTrackerConfig) -> Self {
        ClockTracker {
            config,
            samples: VecDeque::new(),
            applied: None,
            applied_at: Micros::ZERO,
            target: 0,
            steps: 0,
            last_local: None,
        }
    }

    /// Adds the sample of one exchange completed at local time `now`:
    /// `offset_ticks` = local minus remote clock, `rtt_ticks` its round trip
    /// (negative round trips are taken as zero).
    pub fn observe(&mut self, now: Micros, offset_ticks: i64, rtt_ticks: i64) {
        let tick = MICROS_PER_TICK as i64;
        self.samples.push_back(TrackedSample {
            at: now,
            offset_us: offset_ticks.saturating_mul(tick),
            rtt_us: rtt_ticks.max(0).saturating_mul(tick),
        });
        while self.samples.len() > self.config.window.max(1) {
            self.samples.pop_front();
        }
        let oldest_allowed = now - self.config.max_age;
        while self.samples.len() > 1 && self.samples.front().is_some_and(|s| s.at < oldest_allowed)
        {
            self.samples.pop_front();
        }
        let Some(best) = self.samples.iter().rev().min_by_key(|s| s.rtt_us).copied() else {
            return;
        };
        let Some(current) = self.offset_us(now) else {
            self.step(now, best.offset_us);
            return;
        };
        self.applied = Some(current);
        self.applied_at = self.applied_at.max(now);
        let error = best.offset_us.saturating_sub(current);
        let bound = best.rtt_us / 2 + tick;
        let threshold = i64::try_from(self.config.step_threshold.as_micros()).unwrap_or(i64::MAX);
        if error.unsigned_abs() > threshold.unsigned_abs()
            && error.unsigned_abs() > bound.unsigned_abs()
        {
            self.step(now, best.offset_us);
        } else if error.abs() > bound {
            self.target = best.offset_us;
        } else {
            // Consistent with the best sample: hold where we are.
            self.target = current;
        }
    }

    fn step(&mut self, now: Micros, offset_us: i64) {
        self.applied = Some(offset_us);
        self.applied_at = self.applied_at.max(now);
        self.target = offset_us;
        self.steps += 1;
    }

    /// The applied offset (local minus remote, µs) at local time `now`, once
    /// a sample has been observed.
    pub fn offset_us(&self, now: Micros) -> Option<i64> {
        let applied = self.applied?;
        let elapsed = now.0.saturating_sub(self.applied_at.0);
        let budget = u128::from(elapsed) * u128::from(self.config.max_slew_ppm) / 1_000_000;
        let budget = i64::try_from(budget).unwrap_or(i64::MAX);
        let gap = self.target.saturating_sub(applied);
        Some(applied.saturating_add(gap.clamp(-budget, budget)))
    }

    /// The applied offset at `now` as a [`ClockMap`] (rounded to the nearest
    /// tick), for code that works in ticks.
    pub fn clock_map(&self, now: Micros) -> Option<ClockMap> {
        let us = self.offset_us(now)?;
        let tick = MICROS_PER_TICK as i64;
        Some(ClockMap {
            offset_ticks: us.saturating_add(tick / 2).div_euclid(tick),
        })
    }

    /// How many times the offset has stepped (the first sample included).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The local time of a remote event stamped `remote`, mapped at `now`;
    /// never before the previous event this tracker mapped unless the
    /// offset stepped in between. `None` before the first sample.
    pub fn map(&mut self, now: Micros, remote: Ticks) -> Option<Micros> {
        let offset = self.offset_us(now)?;
        let remote_us = remote.0.saturating_mul(MICROS_PER_TICK);
        let mut local = Micros(remote_us.saturating_add_signed(offset));
        if let Some((last, steps)) = self.last_local
            && steps == self.steps
        {
            local = local.max(last);
        }
        self.last_local = Some((local, self.steps));
        Some(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unwraps_across_the_32_bit_boundary() {
        let reference = Ticks(0x1_0000_0005);
        assert_eq!(
            Ticks::unwrap_rtp(0xFFFF_FFF0, reference),
            Ticks(0xFFFF_FFF0)
        );
        assert_eq!(Ticks::unwrap_rtp(0x10, reference), Ticks(0x1_0000_0010));
        assert_eq!(Ticks::unwrap_rtp(5, Ticks(3)), Ticks(5));
    }

    #[test]
    fn clock_map_round_trips() {
        let m = ClockMap {
            offset_ticks: -4_000_000,
        };
        let local = Micros::from_secs(1_000);
        assert_eq!(m.to_local(m.to_remote(local)), local);
    }

    fn tracker() -> ClockTracker {
        ClockTracker::new(ClockTrackerConfig::default())
    }

    #[test]
    fn first_sample_steps_and_consistent_samples_hold() {
        let mut t = tracker();
        assert_eq!(t.offset_us(Micros::from_secs(1)), None);
        assert_eq!(t.map(Micros::from_secs(1), Ticks(1)), None);
        t.observe(Micros::from_secs(1), -4_000, 30);
        assert_eq!(t.offset_us(Micros::from_secs(1)), Some(-400_000));
        assert_eq!(t.steps(), 1);
        // 1 ms round trip: error bound 500 + 100 µs. 5 ticks (500 µs) away
        // is within it: nothing moves, now or later.
        t.observe(Micros::from_secs(2), -3_995, 10);
        assert_eq!(t.offset_us(Micros::from_secs(100)), Some(-400_000));
        assert_eq!(
            t.clock_map(Micros::from_secs(100)).unwrap().offset_ticks,
            -4_000
        );
        assert_eq!(t.steps(), 1);
    }

    #[test]
    fn an_inconsistent_sample_is_slewed_to_at_the_bounded_rate() {
        let mut t = tracker();
        t.observe(Micros::from_secs(1), 0, 40);
        // 0.2 ms round trip (bound 200 µs); the estimate is 3 ms away: slew
        // +3000 µs at 50 ppm, 50 µs per second, 60 s to get there.
        t.observe(Micros::from_secs(2), 30, 2);
        assert_eq!(t.offset_us(Micros::from_secs(2)), Some(0));
        assert_eq!(t.offset_us(Micros::from_millis(2_500)), Some(25));
        assert_eq!(t.offset_us(Micros::from_secs(12)), Some(500));
        assert_eq!(t.offset_us(Micros::from_secs(62)), Some(3_000));
        assert_eq!(t.offset_us(Micros::from_secs(600)), Some(3_000));
        assert_eq!(t.steps(), 1);
        // A new sample mid-slew continues from where the slew is.
        t.observe(Micros::from_secs(22), 30, 2);
        assert_eq!(t.offset_us(Micros::from_secs(22)), Some(1_000));
        assert_eq!(t.offset_us(Micros::from_secs(23)), Some(1_050));
    }

    #[test]
    fn a_large_jump_steps() {
        let mut t = tracker();
        t.observe(Micros::from_secs(1), 0, 2);
        // 10 ms is the threshold: 100 ticks slews, 101 steps.
        t.observe(Micros::from_secs(2), 100, 1);
        assert_eq!(t.steps(), 1);
        t.observe(Micros::from_secs(3), 101, 0);
        assert_eq!(t.steps(), 2);
        assert_eq!(t.offset_us(Micros::from_secs(3)), Some(10_100));
    }

    #[test]
    fn high_round_trip_samples_do_not_displace_a_good_one() {
        let mut t = tracker();
        t.observe(Micros::from_secs(1), 0, 1);
        // Load: a 20 ms round trip says 8 ms; the 0.1 ms sample in the
        // window wins, and the applied offset never moves.
        t.observe(Micros::from_secs(2), 80, 200);
        assert_eq!(t.offset_us(Micros::from_secs(30)), Some(0));
    }

    #[test]
    fn mapped_times_never_go_backwards_between_steps() {
        let mut t = tracker();
        t.observe(Micros::from_secs(1), 0, 0);
        t.observe(Micros::from_secs(1), -50, 0); // slew down by 5 ms
        assert_eq!(
            t.map(Micros::from_secs(1), Ticks(10_000)),
            Some(Micros(1_000_000))
        );
        // 10 s later the offset is 500 µs lower; an event stamped 100 µs
        // after the previous one would map 400 µs before it: it is held.
        assert_eq!(
            t.map(Micros::from_secs(11), Ticks(10_001)),
            Some(Micros(1_000_000))
        );
        assert_eq!(
            t.map(Micros::from_secs(11), Ticks(20_000)),
            Some(Micros(1_999_500))
        );
        // After a step the stream follows the new offset at once.
        t.observe(Micros::from_secs(12), -10_000, 0);
        assert_eq!(
            t.map(Micros::from_secs(12), Ticks(20_001)),
            Some(Micros(1_000_100))
        );
    }

    proptest! {
        #[test]
        fn mapped_local_times_never_go_backwards(
            first in -1_000_000i64..1_000_000,
            ops in prop::collection::vec((0u64..2_000_000, -45i64..=45, 0i64..200, 0u64..5_000), 1..200),
        ) {
            // Samples within half the step threshold of the first one, events
            // with non-decreasing remote stamps: no step after the first,
            // and every event maps at or after the one before.
            let mut t = tracker();
            let mut now = Micros::from_secs(1);
            t.observe(now, first, 10);
            let mut remote = Ticks(1_000_000);
            let mut last = None;
            for (dt, err, rtt, dr) in ops {
                now += Duration::from_micros(dt);
                t.observe(now, first + err, rtt);
                remote = Ticks(remote.0 + dr);
                let local = t.map(now, remote).unwrap();
                if let Some(l) = last {
                    prop_assert!(local >= l, "{local:?} before {l:?}");
                }
                // Held back by at most what the slew moved since.
                let raw = remote.to_local().0.saturating_add_signed(t.offset_us(now).unwrap());
                prop_assert!(local.0 >= raw);
                last = Some(local);
            }
            prop_assert_eq!(t.steps(), 1);
        }

        #[test]
        fn converges_to_the_true_offset_under_noisy_samples(
            truth in -100_000_000i64..100_000_000,
            exchanges in prop::collection::vec((0i64..=200, 0u64..=1000), 300),
        ) {
            // One exchange a second, the first one possibly slow (a 20 ms round
            // trip: up to 10 ms off); every fifth one is quick (≤ 0.4 ms).
            // The delay split is arbitrary, so a sample's error is anywhere
            // within ±rtt/2 (`clock_sync` maths, in ticks).
            let mut t = tracker();
            let mut now = Micros::ZERO;
            for (i, (rtt, split)) in exchanges.into_iter().enumerate() {
                let rtt = if i % 5 == 4 { rtt % 5 } else { rtt };
                let there = rtt * split as i64 / 1000;
                let back = rtt - there;
                // offset = truth + (back - there) / 2 (floor, as clock_sync).
                let offset = truth + (back - there).div_euclid(2);
                now += Duration::from_secs(1);
                t.observe(now, offset, rtt);
            }
            let err = t.offset_us(now).unwrap() - truth * 100;
            // The best sample's bound (≤ 0.2 ms + 0.1 ms) plus its own error.
            prop_assert!(err.abs() <= 500, "error {err} µs");
        }

        #[test]
        fn unwrap_inverts_truncation(t in 0u64..(1 << 50), d in -(1i64 << 30)..(1i64 << 30)) {
            let reference = Ticks(t.saturating_add_signed(d));
            prop_assert_eq!(Ticks::unwrap_rtp(Ticks(t).rtp(), reference), Ticks(t));
        }
    }
}
