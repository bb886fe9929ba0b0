//! The stuck-note guard: a note held far longer than its player's agent
//! expects is ended, and counted.
//!
//! A lost note-off that the recovery journal could not repair leaves a note
//! sounding for ever. When a note starts, the engine tells the guard how
//! long the player's agent expects it to last (the duration in its
//! [`Prediction`](crate::agent::Prediction)); the note's limit is that
//! expectation times [`StuckConfig::factor`], clamped to
//! `[min_hold, max_hold]`. [`StuckGuard::poll_stuck`] returns every note past
//! its limit once, with the note-off to send, and counts it.
//!
//! ```
//! use jam_core::Beats;
//! use jam_predict::stuck_guard::{StuckConfig, StuckGuard};
//!
//! let mut g = StuckGuard::new(StuckConfig::default());
//! g.handle_note_on(0, 60, Beats::ZERO, Beats::ONE); // expected: one beat
//! assert_eq!(g.poll_stuck(Beats::from_beats(7)), None);
//! let s = g.poll_stuck(Beats::from_beats(8)).unwrap(); // 8 × one beat
//! assert_eq!((s.channel, s.key), (0, 60));
//! assert_eq!(g.ended(), 1);
//! ```

use jam_core::{Beats, ShortMessage};

/// Settings of a [`StuckGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StuckConfig {
    /// A note may be held this many times its expected duration.
    pub factor: i64,
    /// But always at least this long.
    pub min_hold: Beats,
    /// And never longer than this.
    pub max_hold: Beats,
}

impl Default for StuckConfig {
    fn default() -> Self {
        StuckConfig {
            factor: 8,
            min_hold: Beats::from_beats(4),
            max_hold: Beats::from_beats(64),
        }
    }
}

/// A note the guard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StuckNote {
    /// MIDI channel.
    pub channel: u8,
    /// MIDI key.
    pub key: u8,
    /// When it started.
    pub onset: Beats,
    /// The beat past which it counted as stuck.
    pub limit: Beats,
}

impl StuckNote {
    /// The note-off that ends it.
    pub fn note_off(&self) -> ShortMessage {
        ShortMessage::note_off(self.channel, self.key, 0)
    }
}

/// Sounding notes of one remote player, with their limits. Fixed size
/// (16 × 128 slots), allocated once.
#[derive(Debug, Clone)]
pub struct StuckGuard {
    config: StuckConfig,
    /// `(onset, limit)` of the sounding note per channel × key.
    held: Vec<Option<(Beats, Beats)>>,
    /// Earliest limit among held notes (a cheap "nothing to do").
    earliest: Option<Beats>,
    ended: u64,
}

impl StuckGuard {
    /// A guard with `config`.
    pub fn new(config: StuckConfig) -> StuckGuard {
        StuckGuard {
            config,
            held: vec![None; 16 * 128],
            earliest: None,
            ended: 0,
        }
    }

    fn slot(channel: u8, key: u8) -> usize {
        usize::from(channel & 0x0F) * 128 + usize::from(key & 0x7F)
    }

    /// A note started at `onset`; its player's agent expects it to last
    /// `expected`.
    pub fn handle_note_on(&mut self, channel: u8, key: u8, onset: Beats, expected: Beats) {
        let hold = Beats(expected.0.max(0).saturating_mul(self.config.factor)).clamp(
            self.config.min_hold,
            self.config.max_hold.max(self.config.min_hold),
        );
        let limit = onset + hold;
        self.held[Self::slot(channel, key)] = Some((onset, limit));
        self.earliest = Some(self.earliest.map_or(limit, |e| e.min(limit)));
    }

    /// The note ended normally.
    pub fn handle_note_off(&mut self, channel: u8, key: u8) {
        self.held[Self::slot(channel, key)] = None;
    }

    /// Forgets every note (the engine released them all).
    pub fn clear(&mut self) {
        self.held.iter_mut().for_each(|h| *h = None);
        self.earliest = None;
    }

    /// The next note held past its limit at beat `now`, ended and counted;
    /// `None` when there is none.
    pub fn poll_stuck(&mut self, now: Beats) -> Option<StuckNote> {
        if self.earliest.is_none_or(|e| e > now) {
            return None;
        }
        let mut earliest: Option<Beats> = None;
        let mut found = None;
        for (i, h) in self.held.iter_mut().enumerate() {
            let Some((onset, limit)) = *h else { continue };
            if found.is_none() && limit <= now {
                *h = None;
                found = Some(StuckNote {
                    channel: (i / 128) as u8,
                    key: (i % 128) as u8,
                    onset,
                    limit,
                });
            } else {
                earliest = Some(earliest.map_or(limit, |e| e.min(limit)));
            }
        }
        self.earliest = earliest;
        if found.is_some() {
            self.ended += 1;
        }
        found
    }

    /// The beat at which the next note would count as stuck.
    pub fn poll_timeout(&self) -> Option<Beats> {
        self.earliest
    }

    /// Notes ended so far.
    pub fn ended(&self) -> u64 {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: f64) -> Beats {
        Beats::from_f64(x)
    }

    #[test]
    fn limits_follow_the_expected_duration_within_bounds() {
        let mut g = StuckGuard::new(StuckConfig::default());
        g.handle_note_on(0, 60, b(0.0), b(0.25)); // 2 beats -> floor of 4
        g.handle_note_on(0, 62, b(0.0), b(2.0)); // 16 beats
        g.handle_note_on(1, 64, b(0.0), b(100.0)); // ceiling of 64
        assert_eq!(g.poll_timeout(), Some(b(4.0)));
        assert_eq!(g.poll_stuck(b(3.99)), None);
        let s = g.poll_stuck(b(4.0)).unwrap();
        assert_eq!((s.channel, s.key, s.limit), (0, 60, b(4.0)));
        assert_eq!(s.note_off(), ShortMessage::note_off(0, 60, 0));
        assert_eq!(g.poll_stuck(b(4.0)), None);
        assert_eq!(g.poll_timeout(), Some(b(16.0)));
        assert_eq!(g.poll_stuck(b(100.0)).map(|s| s.key), Some(62));
        assert_eq!(g.poll_stuck(b(100.0)).map(|s| s.key), Some(64));
        assert_eq!(g.poll_stuck(b(100.0)), None);
        assert_eq!(g.ended(), 3);
    }

    #[test]
    fn a_released_note_is_never_ended() {
        let mut g = StuckGuard::new(StuckConfig::default());
        g.handle_note_on(2, 40, b(0.0), b(1.0));
        g.handle_note_off(2, 40);
        assert_eq!(g.poll_stuck(b(1_000.0)), None);
        assert_eq!(g.ended(), 0);
        // A retriggered note restarts its clock.
        g.handle_note_on(2, 40, b(0.0), b(1.0));
        g.handle_note_on(2, 40, b(5.0), b(1.0));
        assert_eq!(g.poll_stuck(b(12.9)), None);
        assert!(g.poll_stuck(b(13.0)).is_some());
    }
}
