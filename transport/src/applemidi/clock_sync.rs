//! Clock synchronisation: the maths of one `CK` exchange and an estimator
//! that keeps the best sample of a sliding window.
//!
//! One exchange (`rtp-midi.md` §6.3) yields three stamps: `t1` and `t3` on
//! the initiator's session clock (when it sent `CK0` and received `CK1`),
//! `t2` on the responder's (when it answered). Assuming the two one-way
//! delays are equal,
//!
//! ```text
//! offset = (t1 + t3) / 2 - t2     // initiator clock minus responder clock
//! rtt    = t3 - t1
//! ```
//!
//! in signed 64-bit arithmetic. Whatever the split of the round trip, the
//! responder's `t2` happened somewhere between `t1` and `t3`, so the error of
//! the estimate is at most `rtt / 2`: the sample with the smallest round trip
//! is the most trustworthy. [`ClockEstimator`] therefore keeps the last few
//! samples (bounded by count and by age) and reports the minimum-round-trip
//! one as a [`ClockMap`] (local minus remote), plus round-trip statistics.
//!
//! ```
//! use jam_transport::applemidi::clock_sync::{ClockEstimator, ClockEstimatorConfig, Sample};
//! use jam_core::Micros;
//!
//! // The sheet's example (§5.5): responder clock 400 s ahead, 4 ms round trip.
//! let s = Sample::as_initiator(1_000_000, 5_000_020, 1_000_040).unwrap();
//! assert_eq!((s.local_minus_remote, s.rtt_ticks), (-4_000_000, 40));
//! let mut est = ClockEstimator::new(ClockEstimatorConfig::default());
//! est.add(Micros::from_secs(1), s);
//! assert_eq!(est.clock_map().unwrap().offset_ticks, -4_000_000);
//! ```

use crate::clock::{ClockMap, MICROS_PER_TICK};
use jam_core::Micros;
use std::collections::VecDeque;
use std::time::Duration;

/// One completed `CK` exchange, seen from the local side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sample {
    /// Local session clock minus the remote one, in ticks.
    pub local_minus_remote: i64,
    /// Round-trip time in ticks (100 µs), never negative.
    pub rtt_ticks: i64,
}

/// `(t1 + t3) / 2 - t2` and `t3 - t1` in exact arithmetic, saturated to
/// 64 bits; `None` when the round trip is negative (a bogus or replayed
/// `CK`).
fn exchange(t1: u64, t2: u64, t3: u64) -> Option<(i64, i64)> {
    let (t1, t2, t3) = (i128::from(t1), i128::from(t2), i128::from(t3));
    let rtt = t3 - t1;
    if rtt < 0 {
        return None;
    }
    let offset = (t1 + t3).div_euclid(2) - t2;
    let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    Some((clamp(offset), clamp(rtt)))
}

impl Sample {
    /// The sample when the local side initiated the exchange (sent `CK0` at
    /// `t1`, received `CK1` carrying the responder's `t2`, at `t3`).
    pub fn as_initiator(t1: u64, t2: u64, t3: u64) -> Option<Sample> {
        let (offset, rtt) = exchange(t1, t2, t3)?;
        Some(Sample {
            local_minus_remote: offset,
            rtt_ticks: rtt,
        })
    }

    /// The sample when the local side responded (stamped `t2`; the
    /// initiator's `t1` and `t3` arrived in `CK2`).
    pub fn as_responder(t1: u64, t2: u64, t3: u64) -> Option<Sample> {
        let (offset, rtt) = exchange(t1, t2, t3)?;
        Some(Sample {
            local_minus_remote: offset.saturating_neg(),
            rtt_ticks: rtt,
        })
    }

    /// The round trip as a duration.
    pub fn rtt(&self) -> Duration {
        ticks_to_duration(self.rtt_ticks)
    }

    /// The mapping this sample alone implies.
    pub fn clock_map(&self) -> ClockMap {
        ClockMap {
            offset_ticks: self.local_minus_remote,
        }
    }
}

fn ticks_to_duration(ticks: i64) -> Duration {
    Duration::from_micros(
        u64::try_from(ticks)
            .unwrap_or(0)
            .saturating_mul(MICROS_PER_TICK),
    )
}

/// Round-trip statistics over the estimator's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RttStats {
    /// The most recent sample's round trip.
    pub latest: Duration,
    /// The smallest round trip in the window.
    pub min: Duration,
    /// The median (the lower middle value for an even count).
    pub median: Duration,
    /// The 99th percentile (nearest rank; the maximum for fewer than 100
    /// samples).
    pub p99: Duration,
    /// How many samples the window holds.
    pub samples: usize,
}

/// How much history a [`ClockEstimator`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockEstimatorConfig {
    /// At most this many samples (at least 1 is always kept).
    pub max_samples: usize,
    /// Samples older than this are dropped, except the newest one.
    pub max_age: Duration,
}

impl Default for ClockEstimatorConfig {
    /// The last 8 exchanges within 60 s.
    fn default() -> Self {
        ClockEstimatorConfig {
            max_samples: 8,
            max_age: Duration::from_secs(60),
        }
    }
}

/// Keeps a sliding window of exchange samples and reports the one with the
/// smallest round trip (the newest among equals).
///
/// Sans-IO: the caller passes the local time each sample was taken at.
#[derive(Debug, Clone)]
pub struct ClockEstimator {
    config: ClockEstimatorConfig,
    samples: VecDeque<(Micros, Sample)>,
    total: u64,
}

impl ClockEstimator {
    /// An empty estimator.
    pub fn new(config: ClockEstimatorConfig) -> Self {
        ClockEstimator {
            config,
            samples: VecDeque::new(),
            total: 0,
        }
    }

    /// Adds the sample of an exchange completed at `now`, then trims the
    /// window by count and by age.
    pub fn add(&mut self, now: Micros, sample: Sample) {
        self.samples.push_back((now, sample));
        self.total += 1;
        let max = self.config.max_samples.max(1);
        while self.samples.len() > max {
            self.samples.pop_front();
        }
        let oldest_allowed = now - self.config.max_age;
        while self.samples.len() > 1
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| *t < oldest_allowed)
        {
            self.samples.pop_front();
        }
    }

    /// The sample the estimate rests on: minimum round trip, newest among
    /// equals.
    pub fn best(&self) -> Option<Sample> {
        self.samples
            .iter()
            .rev()
            .min_by_key(|(_, s)| s.rtt_ticks)
            .map(|(_, s)| *s)
    }

    /// Local clock minus remote clock, from the best sample.
    pub fn clock_map(&self) -> Option<ClockMap> {
        self.best().map(|s| s.clock_map())
    }

    /// The most recent sample.
    pub fn latest(&self) -> Option<Sample> {
        self.samples.back().map(|(_, s)| *s)
    }

    /// Round-trip statistics over the window.
    pub fn rtt_stats(&self) -> Option<RttStats> {
        let latest = self.latest()?;
        let mut rtts: Vec<i64> = self.samples.iter().map(|(_, s)| s.rtt_ticks).collect();
        rtts.sort_unstable();
        let n = rtts.len();
        let median = rtts[(n - 1) / 2];
        // Nearest rank: the smallest value with at least 99% of samples at or below it.
        let rank = (n * 99).div_ceil(100).max(1);
        let p99 = rtts[rank - 1];
        Some(RttStats {
            latest: latest.rtt(),
            min: ticks_to_duration(rtts[0]),
            median: ticks_to_duration(median),
            p99: ticks_to_duration(p99),
            samples: n,
        })
    }

    /// Samples added since creation (including those no longer in the window).
    pub fn total_samples(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sheet_example_from_both_sides() {
        let i = Sample::as_initiator(1_000_000, 5_000_020, 1_000_040).unwrap();
        assert_eq!(i.local_minus_remote, -4_000_000);
        assert_eq!(i.rtt(), Duration::from_millis(4));
        let r = Sample::as_responder(1_000_000, 5_000_020, 1_000_040).unwrap();
        assert_eq!(r.local_minus_remote, 4_000_000);
        assert_eq!(r.rtt_ticks, 40);
    }

    #[test]
    fn negative_round_trips_and_extreme_stamps_are_handled() {
        assert_eq!(Sample::as_initiator(10, 5, 9), None);
        let s = Sample::as_initiator(u64::MAX, 0, u64::MAX).unwrap();
        assert_eq!(s.local_minus_remote, i64::MAX);
        let s = Sample::as_responder(0, u64::MAX, 0).unwrap();
        assert_eq!(s.local_minus_remote, i64::MAX);
        let s = Sample::as_initiator(0, u64::MAX, u64::MAX).unwrap();
        assert_eq!(s.rtt_ticks, i64::MAX);
    }

    fn sample(offset: i64, rtt: i64) -> Sample {
        Sample {
            local_minus_remote: offset,
            rtt_ticks: rtt,
        }
    }

    #[test]
    fn best_is_min_rtt_newest_among_equals_and_window_slides() {
        let mut e = ClockEstimator::new(ClockEstimatorConfig {
            max_samples: 3,
            max_age: Duration::from_secs(60),
        });
        assert_eq!(e.clock_map(), None);
        assert_eq!(e.rtt_stats(), None);
        e.add(Micros::from_secs(1), sample(100, 10));
        e.add(Micros::from_secs(2), sample(200, 30));
        e.add(Micros::from_secs(3), sample(300, 10));
        assert_eq!(e.best(), Some(sample(300, 10)));
        e.add(Micros::from_secs(4), sample(400, 20));
        e.add(Micros::from_secs(5), sample(500, 25));
        // The window is now (300,10), (400,20), (500,25).
        assert_eq!(e.best(), Some(sample(300, 10)));
        e.add(Micros::from_secs(6), sample(600, 40));
        assert_eq!(e.best(), Some(sample(400, 20)));
        let st = e.rtt_stats().unwrap();
        assert_eq!(st.samples, 3);
        assert_eq!(st.latest, Duration::from_millis(4));
        assert_eq!(st.min, Duration::from_millis(2));
        assert_eq!(st.median, Duration::from_micros(2_500));
        assert_eq!(st.p99, Duration::from_millis(4));
        assert_eq!(e.total_samples(), 6);
    }

    #[test]
    fn old_samples_age_out_but_the_newest_stays() {
        let mut e = ClockEstimator::new(ClockEstimatorConfig {
            max_samples: 100,
            max_age: Duration::from_secs(60),
        });
        e.add(Micros::from_secs(0), sample(1, 1));
        e.add(Micros::from_secs(30), sample(2, 50));
        assert_eq!(e.best(), Some(sample(1, 1)));
        e.add(Micros::from_secs(70), sample(3, 90));
        assert_eq!(e.best(), Some(sample(2, 50)));
        e.add(Micros::from_secs(200), sample(4, 99));
        assert_eq!(e.best(), Some(sample(4, 99)));
        assert_eq!(e.rtt_stats().unwrap().samples, 1);
    }

    #[test]
    fn p99_is_nearest_rank() {
        let mut e = ClockEstimator::new(ClockEstimatorConfig {
            max_samples: 200,
            max_age: Duration::from_secs(1_000),
        });
        for i in 1..=200 {
            e.add(Micros::from_secs(i), sample(0, i as i64));
        }
        let st = e.rtt_stats().unwrap();
        assert_eq!(st.p99, ticks_to_duration(198));
        assert_eq!(st.median, ticks_to_duration(100));
        assert_eq!(st.min, ticks_to_duration(1));
    }

    /// One simulated exchange: the initiator's clock reads `t` at true time
    /// `t`, the responder's reads `t - true_offset`; `CK0` takes `up` ticks,
    /// `CK1` takes `down`; the responder answers at once.
    fn simulate(t1: u64, true_offset: i64, up: u64, down: u64) -> (u64, u64, u64) {
        let t2 = (t1 + up).checked_add_signed(-true_offset).unwrap();
        (t1, t2, t1 + up + down)
    }

    proptest! {
        #[test]
        fn symmetric_delays_give_the_exact_offset(
            t1 in 1u64 << 40..1u64 << 41,
            offset in -(1i64 << 39)..(1i64 << 39),
            delay in 0u64..100_000,
        ) {
            let (t1, t2, t3) = simulate(t1, offset, delay, delay);
            let i = Sample::as_initiator(t1, t2, t3).unwrap();
            prop_assert_eq!(i.local_minus_remote, offset);
            prop_assert_eq!(i.rtt_ticks as u64, 2 * delay);
            let r = Sample::as_responder(t1, t2, t3).unwrap();
            prop_assert_eq!(r.local_minus_remote, -offset);
        }

        #[test]
        fn min_rtt_sample_bounds_the_error_by_half_its_rtt(
            offset in -(1i64 << 39)..(1i64 << 39),
            base in 1u64..500,
            jitter in proptest::collection::vec((0u64..2_000, 0u64..2_000), 1..30),
        ) {
            let mut e = ClockEstimator::new(ClockEstimatorConfig {
                max_samples: 8,
                max_age: Duration::from_secs(3_600),
            });
            let mut t = 1u64 << 40;
            for (k, (up, down)) in jitter.iter().enumerate() {
                let (t1, t2, t3) = simulate(t, offset, base + up, base + down);
                e.add(Micros::from_secs(k as u64), Sample::as_initiator(t1, t2, t3).unwrap());
                t += 100_000;
            }
            let best = e.best().unwrap();
            let err = (best.local_minus_remote - offset).abs();
            // Integer halving may add half a tick.
            prop_assert!(err <= best.rtt_ticks / 2 + 1, "error {} rtt {}", err, best.rtt_ticks);
            // And the best sample is the window's minimum.
            let window_min = jitter.iter().rev().take(8).map(|(u, d)| 2 * base + u + d).min().unwrap();
            prop_assert_eq!(best.rtt_ticks as u64, window_min);
        }
    }
}
