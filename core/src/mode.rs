//! The latency modes: how a listener hears remote players.
//!
//! One vocabulary for the session document (which stores the mode), the
//! prediction crate (which schedules by it) and the command line.

use std::fmt;

/// How listeners hear remote players (ARCHITECTURE.md, "Latency modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LatencyMode {
    /// Remote notes as soon as they arrive, through an adaptive jitter buffer.
    #[default]
    Live,
    /// Every note at its beat plus one shared schedule-ahead offset.
    Coherent,
    /// Remote notes exactly one interval (N beats) later.
    Interval,
    /// Like live, with late notes rendered from the player's agent.
    Predictive,
}

impl LatencyMode {
    /// Every mode, in display order.
    pub const ALL: [LatencyMode; 4] = [
        LatencyMode::Live,
        LatencyMode::Coherent,
        LatencyMode::Interval,
        LatencyMode::Predictive,
    ];

    /// The stored (and displayed) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            LatencyMode::Live => "live",
            LatencyMode::Coherent => "coherent",
            LatencyMode::Interval => "interval",
            LatencyMode::Predictive => "predictive",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<LatencyMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for LatencyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for m in LatencyMode::ALL {
            assert_eq!(LatencyMode::parse(m.as_str()), Some(m));
            assert_eq!(m.to_string(), m.as_str());
        }
        assert_eq!(LatencyMode::parse("loud"), None);
        assert_eq!(LatencyMode::default(), LatencyMode::Live);
    }
}
