//! Shared session time: [`SessionTime`] and the [`SessionClock`] that maps a
//! peer's local clock onto it.
//!
//! Every peer's [`Micros`] clock has its own origin (process start), so the
//! tempo timeline cannot be stored in local time. Like Ableton Link's "ghost
//! time", a session has one shared time axis: the founder's local clock
//! defines it (offset zero), and every other peer learns a constant offset
//! `session = local + offset` from clock-offset measurements to members that
//! are already aligned.
//!
//! A measurement comes from the transport's clock synchronisation (the
//! AppleMIDI `CK` exchange gives `local - remote` and the round trip time):
//! the error of an offset estimate is at most half its round trip, so the
//! clock keeps, within a sliding window, the measurement with the smallest
//! round trip (principle 4 in ARCHITECTURE.md). Re-measuring keeps slow
//! drift between crystal clocks in check.
//!
//! To stop peers from chasing each other in a loop once the founder has
//! left, each aligned clock has a *stratum* (as in NTP): the founder is 0, a
//! peer aligned to a stratum-`s` member is `s + 1`, and a clock only takes
//! measurements from members of a lower stratum than its own. A peer whose
//! references have all left keeps its last offset.
//!
//! ```
//! use jam_core::session_time::{ClockMeasurement, SessionClock};
//! use jam_core::{Micros, PeerId, SessionTime};
//!
//! let founder = SessionClock::founder();
//! let mut joiner = SessionClock::joining();
//! assert_eq!(joiner.to_session(Micros(5)), None);
//! // The joiner's clock reads 3 s less than the founder's; 20 ms round trip.
//! joiner.handle_measurement(Micros(1_000_000), ClockMeasurement {
//!     peer: PeerId([1; 16]),
//!     local_minus_remote_us: -3_000_000,
//!     remote_offset_us: founder.offset_us().unwrap(),
//!     remote_stratum: founder.stratum().unwrap(),
//!     rtt_us: 20_000,
//! });
//! assert_eq!(joiner.to_session(Micros(1_000_000)), Some(SessionTime(4_000_000)));
//! assert_eq!(joiner.stratum(), Some(1));
//! ```

use crate::{Micros, PeerId};
use std::fmt;

/// A point on the shared session time axis, in microseconds.
///
/// Signed, because a peer's local clock may map to a session time before the
/// founder's origin. Kept apart from [`Micros`] (local time) on purpose: the
/// two axes differ by a per-peer offset, and mixing them is the classic bug
/// a type prevents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SessionTime(pub i64);

impl SessionTime {
    /// The session time origin.
    pub const ZERO: SessionTime = SessionTime(0);

    /// Microseconds since the session time origin.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// `self + us`, saturating.
    pub const fn offset_by(self, us: i64) -> SessionTime {
        SessionTime(self.0.saturating_add(us))
    }

    /// `self - other` in microseconds, saturating.
    pub const fn signed_diff(self, other: SessionTime) -> i64 {
        self.0.saturating_sub(other.0)
    }
}

impl fmt::Display for SessionTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:06}s", a / 1_000_000, a % 1_000_000)
    }
}

/// One clock-offset measurement to an aligned member of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockMeasurement {
    /// The member measured against.
    pub peer: PeerId,
    /// Our local clock minus theirs, in µs (the transport's `ClockMap`
    /// offset in ticks × 100).
    pub local_minus_remote_us: i64,
    /// Their session offset (`session - their local`), as they publish it in
    /// the session document.
    pub remote_offset_us: i64,
    /// Their stratum, as they publish it.
    pub remote_stratum: u8,
    /// Round trip time of the measurement, in µs.
    pub rtt_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    at: Micros,
    offset_us: i64,
    rtt_us: u64,
    stratum: u8,
}

/// Maps the local clock onto session time: `session = local + offset`.
///
/// Sans-IO: measurements and `now` come in from the engine; nothing here
/// reads a clock. See the [module docs](self) for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClock {
    /// `None` until aligned.
    stratum: Option<u8>,
    offset_us: i64,
    /// Round trip of the measurement in use (0 for the founder).
    rtt_us: u64,
    window_us: u64,
    /// Bounded by [`SessionClock::MAX_SAMPLES`].
    samples: Vec<Sample>,
}

impl SessionClock {
    /// How long a measurement stays eligible by default: 60 s.
    pub const DEFAULT_WINDOW_US: u64 = 60_000_000;
    /// Most measurements kept (the oldest is dropped first).
    pub const MAX_SAMPLES: usize = 64;
    /// Highest stratum; members at this stratum are not used as references.
    pub const MAX_STRATUM: u8 = 15;

    /// The founder's clock: session time is its local time (offset 0,
    /// stratum 0). It never takes measurements.
    pub fn founder() -> SessionClock {
        SessionClock {
            stratum: Some(0),
            offset_us: 0,
            rtt_us: 0,
            window_us: Self::DEFAULT_WINDOW_US,
            samples: Vec::new(),
        }
    }

    /// A joining peer's clock, unaligned until its first measurement.
    pub fn joining() -> SessionClock {
        SessionClock {
            stratum: None,
            ..Self::founder()
        }
    }

    /// The same clock with a different measurement window.
    pub fn with_window(mut self, window_us: u64) -> SessionClock {
        self.window_us = window_us.max(1);
        self
    }

    /// Takes a measurement made at local time `now`. Returns true when the
    /// offset or stratum changed (the caller then republishes them).
    ///
    /// Ignored: any measurement on the founder, measurements against members
    /// of our own or a higher stratum, or of [`SessionClock::MAX_STRATUM`].
    pub fn handle_measurement(&mut self, now: Micros, m: ClockMeasurement) -> bool {
        if self.stratum == Some(0) || m.remote_stratum >= Self::MAX_STRATUM {
            return false;
        }
        if self.stratum.is_some_and(|own| m.remote_stratum >= own) {
            return false;
        }
        if self.samples.len() >= Self::MAX_SAMPLES {
            self.samples.remove(0);
        }
        self.samples.push(Sample {
            at: now,
            offset_us: m.remote_offset_us.saturating_sub(m.local_minus_remote_us),
            rtt_us: m.rtt_us,
            stratum: m.remote_stratum,
        });
        self.reselect(now)
    }

    /// Drops measurements older than the window and re-picks the best one.
    /// Call it now and then (the engine does on its clock-sync tick); returns
    /// true when the offset or stratum changed.
    pub fn handle_timeout(&mut self, now: Micros) -> bool {
        self.reselect(now)
    }

    fn reselect(&mut self, now: Micros) -> bool {
        let window = self.window_us;
        self.samples
            .retain(|s| now.0.saturating_sub(s.at.0) <= window);
        // Smallest round trip wins; ties go to the lower stratum, then to the
        // most recent measurement.
        let best = self
            .samples
            .iter()
            .enumerate()
            .min_by_key(|(i, s)| (s.rtt_us, s.stratum, usize::MAX - i))
            .map(|(_, s)| *s);
        let Some(best) = best else {
            return false;
        };
        let before = (self.stratum, self.offset_us);
        self.stratum = Some(best.stratum + 1);
        self.offset_us = best.offset_us;
        self.rtt_us = best.rtt_us;
        before != (self.stratum, self.offset_us)
    }

    /// True once the clock has an offset.
    pub fn is_aligned(&self) -> bool {
        self.stratum.is_some()
    }

    /// `session - local` in µs, once aligned.
    pub fn offset_us(&self) -> Option<i64> {
        self.stratum.map(|_| self.offset_us)
    }

    /// The stratum (0 for the founder), once aligned.
    pub fn stratum(&self) -> Option<u8> {
        self.stratum
    }

    /// Upper bound of the offset error against the reference used: half
    /// the round trip of the measurement in use (0 for the founder).
    pub fn error_bound_us(&self) -> Option<u64> {
        self.stratum.map(|_| self.rtt_us.div_ceil(2))
    }

    /// Session time at local time `local`, once aligned.
    ///
    /// Realtime-safe: yes.
    pub fn to_session(&self, local: Micros) -> Option<SessionTime> {
        let offset = self.offset_us()?;
        let s = (local.0 as i128 + offset as i128).clamp(i64::MIN as i128, i64::MAX as i128);
        Some(SessionTime(s as i64))
    }

    /// Local time at session time `t`, once aligned (saturating at the ends
    /// of the local clock's range).
    ///
    /// Realtime-safe: yes.
    pub fn to_local(&self, t: SessionTime) -> Option<Micros> {
        let offset = self.offset_us()?;
        let l = (t.0 as i128 - offset as i128).clamp(0, u64::MAX as i128);
        Some(Micros(l as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(lmr: i64, remote_offset: i64, stratum: u8, rtt: u64) -> ClockMeasurement {
        ClockMeasurement {
            peer: PeerId([stratum; 16]),
            local_minus_remote_us: lmr,
            remote_offset_us: remote_offset,
            remote_stratum: stratum,
            rtt_us: rtt,
        }
    }

    #[test]
    fn founder_is_aligned_and_ignores_measurements() {
        let mut c = SessionClock::founder();
        assert!(!c.handle_measurement(Micros(0), m(5, 0, 0, 10)));
        assert_eq!(c.to_session(Micros(42)), Some(SessionTime(42)));
        assert_eq!(c.error_bound_us(), Some(0));
    }

    #[test]
    fn keeps_the_minimum_round_trip_within_the_window() {
        let mut c = SessionClock::joining().with_window(10_000_000);
        assert!(c.handle_measurement(Micros(0), m(-1_000, 0, 0, 30_000)));
        assert_eq!(c.offset_us(), Some(1_000));
        // A better measurement replaces it, a worse one does not.
        assert!(c.handle_measurement(Micros(1_000_000), m(-1_200, 0, 0, 4_000)));
        assert!(!c.handle_measurement(Micros(2_000_000), m(-900, 0, 0, 50_000)));
        assert_eq!(c.offset_us(), Some(1_200));
        assert_eq!(c.error_bound_us(), Some(2_000));
        // After the good one leaves the window, the best remaining one rules.
        assert!(c.handle_timeout(Micros(11_500_000)));
        assert_eq!(c.offset_us(), Some(900));
        // With everything expired the clock keeps its last offset.
        assert!(!c.handle_timeout(Micros(100_000_000)));
        assert_eq!(c.offset_us(), Some(900));
    }

    #[test]
    fn strata_prevent_loops() {
        // B aligns to the founder (stratum 1), C to B (stratum 2).
        let mut b = SessionClock::joining();
        b.handle_measurement(Micros(0), m(-10, 0, 0, 100));
        assert_eq!(b.stratum(), Some(1));
        let mut c = SessionClock::joining();
        c.handle_measurement(Micros(0), m(5, b.offset_us().unwrap(), 1, 100));
        assert_eq!(c.stratum(), Some(2));
        assert_eq!(c.offset_us(), Some(5));
        // B never follows C, however good the measurement.
        assert!(!b.handle_measurement(Micros(1), m(0, c.offset_us().unwrap(), 2, 1)));
        assert_eq!(b.offset_us(), Some(10));
        // C moves up to stratum 1 when it measures the founder directly.
        assert!(c.handle_measurement(Micros(2), m(-7, 0, 0, 50)));
        assert_eq!(c.stratum(), Some(1));
    }

    #[test]
    fn sample_memory_is_bounded() {
        let mut c = SessionClock::joining();
        for i in 0..1000u64 {
            c.handle_measurement(Micros(i), m(0, 0, 0, 1000 - i));
        }
        assert_eq!(c.samples.len(), SessionClock::MAX_SAMPLES);
        assert_eq!(c.error_bound_us(), Some(1));
    }

    #[test]
    fn session_time_displays_with_sign() {
        assert_eq!(SessionTime(-1_500_000).to_string(), "-1.500000s");
        assert_eq!(SessionTime(2_000_001).to_string(), "2.000001s");
    }

    proptest! {
        /// Two peers aligned to the same founder agree on session time to
        /// within the sum of their error bounds, whatever their clocks read.
        #[test]
        fn aligned_peers_agree_within_error_bounds(
            a_origin in 0i64..1_000_000_000_000,
            b_origin in 0i64..1_000_000_000_000,
            rtt_a in 0u64..200_000, asym_a in 0.0f64..1.0,
            rtt_b in 0u64..200_000, asym_b in 0.0f64..1.0,
            at in 0u64..1_000_000_000_000,
        ) {
            // True clocks: founder local = T, a local = T - a_origin, b local = T - b_origin.
            // A measured offset is off by at most rtt/2 (path asymmetry).
            let err = |rtt: u64, asym: f64| ((asym - 0.5) * rtt as f64) as i64;
            let mut a = SessionClock::joining();
            a.handle_measurement(Micros(0), m(-a_origin + err(rtt_a, asym_a), 0, 0, rtt_a));
            let mut b = SessionClock::joining();
            b.handle_measurement(Micros(0), m(-b_origin + err(rtt_b, asym_b), 0, 0, rtt_b));
            let truth = at as i64 + a_origin.max(b_origin);
            let sa = a.to_session(Micros((truth - a_origin) as u64)).unwrap();
            let sb = b.to_session(Micros((truth - b_origin) as u64)).unwrap();
            let bound = a.error_bound_us().unwrap() + b.error_bound_us().unwrap();
            prop_assert!((sa.0 - sb.0).unsigned_abs() <= bound);
            prop_assert!((sa.0 - truth).unsigned_abs() <= a.error_bound_us().unwrap());
        }

        #[test]
        fn to_local_inverts_to_session(offset in -1_000_000_000_000i64..1_000_000_000_000, local in 0u64..1_000_000_000_000_000) {
            let mut c = SessionClock::joining();
            c.handle_measurement(Micros(0), m(-offset, 0, 0, 0));
            prop_assume!((local as i64) + offset >= 0);
            let s = c.to_session(Micros(local)).unwrap();
            prop_assert_eq!(c.to_local(s), Some(Micros(local)));
        }
    }
}
