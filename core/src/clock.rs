//! [`Clock`]: how the edges of the system inject "now".

use crate::Micros;
use std::time::Instant;

/// A source of the current local time.
///
/// Sans-IO cores never read the clock themselves; drivers, the engine worker
/// and the CLI hold a `Clock` and pass `now` in. Tests use a virtual clock.
pub trait Clock: Send + Sync {
    /// The current local time.
    fn now(&self) -> Micros;
}

/// The real monotonic clock, counted from the moment the value was created.
///
/// Thread-safe: yes. Realtime-safe: yes (one `clock_gettime` through the vDSO),
/// but the audio thread should still read it at most once per block.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }

    /// A clock with an explicit origin, so several components can share one
    /// time base.
    pub fn with_origin(origin: Instant) -> Self {
        MonotonicClock { origin }
    }

    /// The `Instant` this clock counts from.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Converts a local instant back into a `std::time::Instant` (for timers).
    pub fn to_instant(&self, t: Micros) -> Instant {
        self.origin + std::time::Duration::from_micros(t.0)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Micros {
        Micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward_and_maps_back() {
        let c = MonotonicClock::new();
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = c.now();
        assert!(b > a);
        assert!(c.to_instant(b) >= c.origin());
    }
}
