//! [`Micros`]: a point on a local monotonic clock, in whole microseconds.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point in time on a local monotonic clock, in microseconds since an
/// arbitrary origin (process start for the real clock, zero for a virtual one).
///
/// Sans-IO state machines take `now: Micros` as an argument instead of asking
/// the operating system, so tests can drive them on a virtual clock. A plain
/// integer keeps comparisons exact and makes a virtual clock trivial to build,
/// which `std::time::Instant` does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub u64);

impl Micros {
    /// The origin of the clock.
    pub const ZERO: Micros = Micros(0);
    /// The largest representable instant; useful as "never" for deadlines.
    pub const MAX: Micros = Micros(u64::MAX);

    /// Builds an instant from whole microseconds since the origin.
    pub const fn from_micros(us: u64) -> Self {
        Micros(us)
    }

    /// Builds an instant from whole milliseconds since the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Micros(ms.saturating_mul(1_000))
    }

    /// Builds an instant from whole seconds since the origin.
    pub const fn from_secs(s: u64) -> Self {
        Micros(s.saturating_mul(1_000_000))
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Seconds since the origin, as a float (for display and statistics).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Micros) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// The time from `earlier` to `self`, or `None` if `earlier` is later.
    pub fn checked_duration_since(self, earlier: Micros) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_micros)
    }

    /// Signed difference `self - other` in microseconds.
    pub fn signed_diff(self, other: Micros) -> i64 {
        (self.0 as i128 - other.0 as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Moves the instant by a signed number of microseconds, saturating at the
    /// ends of the range.
    pub fn offset_by(self, us: i64) -> Micros {
        Micros(self.0.saturating_add_signed(us))
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<Micros> {
        u64::try_from(d.as_micros())
            .ok()
            .and_then(|d| self.0.checked_add(d))
            .map(Micros)
    }
}

impl Add<Duration> for Micros {
    type Output = Micros;
    /// Saturates at [`Micros::MAX`].
    fn add(self, rhs: Duration) -> Micros {
        self.checked_add(rhs).unwrap_or(Micros::MAX)
    }
}

impl AddAssign<Duration> for Micros {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Duration> for Micros {
    type Output = Micros;
    /// Saturates at [`Micros::ZERO`].
    fn sub(self, rhs: Duration) -> Micros {
        let d = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        Micros(self.0.saturating_sub(d))
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        assert_eq!(Micros::MAX + Duration::from_secs(1), Micros::MAX);
        assert_eq!(Micros(5) - Duration::from_secs(1), Micros::ZERO);
        assert_eq!(Micros(5).offset_by(-10), Micros::ZERO);
        assert_eq!(Micros(5).offset_by(10), Micros(15));
        assert_eq!(Micros(5).signed_diff(Micros(8)), -3);
    }

    #[test]
    fn durations_between_instants() {
        let a = Micros::from_millis(10);
        let b = Micros::from_millis(25);
        assert_eq!(b.saturating_duration_since(a), Duration::from_millis(15));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(a.checked_duration_since(b), None);
        assert_eq!(Micros::from_secs(2).to_string(), "2.000000s");
    }
}
