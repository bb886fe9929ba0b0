//! A per-peer adaptive jitter buffer.
//!
//! Every event from a remote player carries the time it was sent (on our
//! local clock, through the session's clock mapping). Its one-way delay is
//! `arrival - sent`. The buffer holds each event until `sent + playout
//! delay`, so that events come out with the spacing they were played with,
//! as long as they arrive within the playout delay.
//!
//! The playout delay follows the recent distribution of one-way delays: the
//! [`JitterConfig::percentile`] of the last [`JitterConfig::window`] delays
//! plus a margin, clamped to `[min_delay_us, max_delay_us]`. It is **quick
//! to grow** (a higher target applies at once) and **slow to shrink** (it
//! falls by at most [`JitterConfig::shrink_per_second_us`] per second of
//! sender time, so events already queued never come out of order and the
//! listener hears no sudden rush).
//!
//! An event that arrives after its playout time comes out at once, marked
//! with how late it is; the [late-event policy](crate::late_policy) decides
//! what to do with it.
//!
//! Sans-IO, in quinn's vocabulary: [`JitterBuffer::handle_event`] takes an
//! arrival, [`JitterBuffer::poll_event`] releases what is due at `now`, and
//! [`JitterBuffer::poll_timeout`] says when the next event is due.
//!
//! ```
//! use jam_core::Micros;
//! use jam_predict::jitter_buffer::{JitterBuffer, JitterConfig};
//!
//! let mut jb = JitterBuffer::new(JitterConfig { min_delay_us: 0, margin_us: 0, ..JitterConfig::default() });
//! // Sent at 1.000 s, arrived 20 ms later: the first sample sets the delay.
//! jb.handle_event(Micros(1_020_000), Micros(1_000_000), "C4");
//! assert_eq!(jb.playout_delay_us(), 20_000);
//! let out = jb.poll_event(Micros(1_020_000)).unwrap();
//! assert_eq!((out.event, out.late_us), ("C4", 0));
//! ```

use jam_core::Micros;
use std::collections::BinaryHeap;

/// Most delay samples a buffer keeps.
pub const MAX_WINDOW: usize = 1024;

/// Settings of a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// How many recent delay samples the percentile is taken over
    /// (1..=[`MAX_WINDOW`]).
    pub window: usize,
    /// Which percentile of the recent delays to cover, in percent (e.g. 95).
    pub percentile: f64,
    /// Added to the percentile, in µs.
    pub margin_us: u64,
    /// The playout delay never goes below this, in µs.
    pub min_delay_us: u64,
    /// Nor above this, in µs.
    pub max_delay_us: u64,
    /// How fast the delay may fall, in µs per second of sender time
    /// (must be below 1 000 000 so that order is kept).
    pub shrink_per_second_us: u64,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            window: 256,
            percentile: 95.0,
            margin_us: 2_000,
            min_delay_us: 1_000,
            max_delay_us: 500_000,
            shrink_per_second_us: 2_000,
        }
    }
}

/// An event let out of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released<T> {
    /// The event.
    pub event: T,
    /// When it was sent (local clock).
    pub sent: Micros,
    /// When it arrived.
    pub arrived: Micros,
    /// Its playout time: `sent + playout delay` at arrival.
    pub due: Micros,
    /// How far past its playout time it arrived, in µs (0 if in time).
    pub late_us: u64,
}

/// Counters, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    /// Events taken in.
    pub received: u64,
    /// Events let out.
    pub released: u64,
    /// Events that arrived after their playout time.
    pub late: u64,
}

#[derive(Debug)]
struct Queued<T> {
    due: Micros,
    sent: Micros,
    seq: u64,
    arrived: Micros,
    late_us: u64,
    event: T,
}

impl<T> Queued<T> {
    fn key(&self) -> (Micros, Micros, u64) {
        (self.due, self.sent, self.seq)
    }
}

impl<T> PartialEq for Queued<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<T> Eq for Queued<T> {}
impl<T> PartialOrd for Queued<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Queued<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest comes first.
        other.key().cmp(&self.key())
    }
}

/// The adaptive jitter buffer of one remote peer. See the [module docs](self).
#[derive(Debug)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    /// Ring of the last `config.window` delays.
    delays: Vec<u64>,
    next_slot: usize,
    /// Scratch for the percentile; preallocated.
    scratch: Vec<u64>,
    delay_us: u64,
    /// Sender time of the newest sample, for the shrink rate.
    last_sent: Option<Micros>,
    queue: BinaryHeap<Queued<T>>,
    seq: u64,
    stats: JitterStats,
}

impl<T> JitterBuffer<T> {
    /// An empty buffer. Its delay starts at `min_delay_us` and is set by
    /// the first sample.
    pub fn new(config: JitterConfig) -> Self {
        let mut config = config;
        config.window = config.window.clamp(1, MAX_WINDOW);
        config.max_delay_us = config.max_delay_us.max(config.min_delay_us);
        config.shrink_per_second_us = config.shrink_per_second_us.min(999_999);
        if !(config.percentile.is_finite()) {
            config.percentile = 95.0;
        }
        config.percentile = config.percentile.clamp(0.0, 100.0);
        JitterBuffer {
            delays: Vec::with_capacity(config.window),
            scratch: Vec::with_capacity(config.window),
            next_slot: 0,
            delay_us: config.min_delay_us,
            last_sent: None,
            queue: BinaryHeap::new(),
            seq: 0,
            stats: JitterStats::default(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// The current playout delay, in µs.
    pub fn playout_delay_us(&self) -> u64 {
        self.delay_us
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when no event waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The configured percentile of the delays in the window (nearest rank),
    /// or `None` before the first sample.
    pub fn delay_percentile_us(&mut self) -> Option<u64> {
        if self.delays.is_empty() {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.delays);
        let n = self.scratch.len();
        let rank = ((self.config.percentile / 100.0) * n as f64).ceil() as usize;
        let idx = rank.clamp(1, n) - 1;
        let (_, v, _) = self.scratch.select_nth_unstable(idx);
        Some(*v)
    }

    /// Takes a delay sample without an event (for example from a packet
    /// that carried only a journal).
    pub fn handle_delay_sample(&mut self, arrived: Micros, sent: Micros) {
        let delay = arrived.0.saturating_sub(sent.0);
        if self.delays.len() < self.config.window {
            self.delays.push(delay);
        } else {
            self.delays[self.next_slot] = delay;
        }
        self.next_slot = (self.next_slot + 1) % self.config.window;
        let target = self
            .delay_percentile_us()
            .unwrap_or(delay)
            .saturating_add(self.config.margin_us)
            .clamp(self.config.min_delay_us, self.config.max_delay_us);
        if self.last_sent.is_none() || target >= self.delay_us {
            // Quick to grow (and the first sample sets it).
            self.delay_us = target;
        } else if let Some(last) = self.last_sent {
            // Slow to shrink: at most the configured rate per second of
            // sender time elapsed since the newest sample.
            let elapsed = sent.0.saturating_sub(last.0);
            let step = (u128::from(elapsed) * u128::from(self.config.shrink_per_second_us)
                / 1_000_000) as u64;
            self.delay_us = self.delay_us.saturating_sub(step).max(target);
        }
        if self.last_sent.is_none_or(|l| sent > l) {
            self.last_sent = Some(sent);
        }
    }

    /// An event that arrived at `arrived` and was sent at `sent`: records
    /// the delay sample, then queues the event for `sent + playout delay`.
    pub fn handle_event(&mut self, arrived: Micros, sent: Micros, event: T) {
        self.handle_delay_sample(arrived, sent);
        let due = Micros(sent.0.saturating_add(self.delay_us));
        let late_us = arrived.0.saturating_sub(due.0);
        self.stats.received += 1;
        if late_us > 0 {
            self.stats.late += 1;
        }
        self.seq += 1;
        self.queue.push(Queued {
            due,
            sent,
            seq: self.seq,
            arrived,
            late_us,
            event,
        });
    }

    /// The next event due at `now` (earliest playout time first; ties in
    /// sending order, then arrival order), or `None`.
    pub fn poll_event(&mut self, now: Micros) -> Option<Released<T>> {
        let head = self.queue.peek()?;
        // A late event is due at its arrival.
        if head.due.max(head.arrived) > now {
            return None;
        }
        let q = self.queue.pop()?;
        self.stats.released += 1;
        Some(Released {
            event: q.event,
            sent: q.sent,
            arrived: q.arrived,
            due: q.due,
            late_us: q.late_us,
        })
    }

    /// When the next event is due, if any waits.
    pub fn poll_timeout(&self) -> Option<Micros> {
        self.queue.peek().map(|q| q.due.max(q.arrived))
    }

    /// Lets every waiting event out now (a peer left; the engine still
    /// releases their notes properly).
    pub fn drain(&mut self) -> impl Iterator<Item = Released<T>> + '_ {
        std::iter::from_fn(move || {
            let q = self.queue.pop()?;
            self.stats.released += 1;
            Some(Released {
                event: q.event,
                sent: q.sent,
                arrived: q.arrived,
                due: q.due,
                late_us: q.late_us,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> JitterConfig {
        JitterConfig {
            window: 4,
            percentile: 75.0,
            margin_us: 0,
            min_delay_us: 0,
            max_delay_us: 1_000_000,
            shrink_per_second_us: 10_000,
        }
    }

    fn ms(x: u64) -> Micros {
        Micros::from_millis(x)
    }

    #[test]
    fn delay_is_the_percentile_of_the_window_by_nearest_rank() {
        let mut jb = JitterBuffer::new(cfg());
        // Delays 10, 40, 20, 30 ms: p75 by nearest rank of 4 = 3rd = 30 ms.
        // The second sample (40) raises the delay at once.
        for (i, d) in [10u64, 40, 20, 30].into_iter().enumerate() {
            let sent = ms(1000 * i as u64);
            jb.handle_event(sent + std::time::Duration::from_millis(d), sent, i);
        }
        assert_eq!(jb.delay_percentile_us(), Some(30_000));
        // It grew to 40 ms on the second sample and may fall only 10 ms per
        // second of sender time: at 2 s the target is p75(10,40,20)=40; at
        // 3 s the target is 30 and the step is 10 ms: 40 - 10 = 30.
        assert_eq!(jb.playout_delay_us(), 30_000);
    }

    #[test]
    fn grows_at_once_and_shrinks_slowly() {
        let mut jb: JitterBuffer<()> = JitterBuffer::new(JitterConfig { window: 1, ..cfg() });
        jb.handle_delay_sample(ms(10), ms(0));
        assert_eq!(jb.playout_delay_us(), 10_000);
        jb.handle_delay_sample(ms(1_100), ms(1_000)); // 100 ms: grow at once
        assert_eq!(jb.playout_delay_us(), 100_000);
        jb.handle_delay_sample(ms(1_510), ms(1_500)); // target 10, 0.5 s later
        assert_eq!(jb.playout_delay_us(), 95_000);
        jb.handle_delay_sample(ms(11_510), ms(11_500)); // 10 s later: floor at target
        assert_eq!(jb.playout_delay_us(), 10_000);
    }

    #[test]
    fn events_come_out_at_sent_plus_delay_in_sending_order() {
        let mut jb = JitterBuffer::new(JitterConfig { window: 1, ..cfg() });
        jb.handle_event(ms(130), ms(100), 'a'); // delay 30
        jb.handle_event(ms(125), ms(110), 'b'); // delay 15, still due at 140
        assert_eq!(jb.poll_timeout(), Some(ms(130)));
        assert_eq!(jb.poll_event(ms(129)), None);
        let a = jb.poll_event(ms(130)).unwrap();
        assert_eq!((a.event, a.due, a.late_us), ('a', ms(130), 0));
        assert_eq!(jb.poll_event(ms(139)), None);
        let b = jb.poll_event(ms(140)).unwrap();
        // b's due: 110 + 29.9 ms (shrunk by 10 ms/s over 10 ms of sender time).
        assert_eq!(b.due, Micros(139_900));
        assert!(jb.is_empty());
    }

    #[test]
    fn a_late_event_comes_out_at_arrival_marked_late() {
        let mut jb = JitterBuffer::new(JitterConfig {
            window: 8,
            percentile: 50.0,
            ..cfg()
        });
        for i in 0..4 {
            jb.handle_event(ms(i * 100 + 10), ms(i * 100), i);
        }
        while jb.poll_event(ms(1_000)).is_some() {}
        // A 60 ms straggler: median stays 10 ms, so it is 50 ms late.
        jb.handle_event(ms(460), ms(400), 9);
        let r = jb.poll_event(ms(460)).unwrap();
        assert_eq!((r.event, r.late_us), (9, 50_000));
        assert_eq!(jb.stats().late, 1);
    }

    proptest! {
        /// Every event comes out exactly once, never before its playout time
        /// nor before it arrived, and in non-decreasing release order.
        #[test]
        fn no_event_lost_or_emitted_twice(
            sends in proptest::collection::vec((0u64..5_000, 0u64..200_000), 1..200),
            shrink in 0u64..50_000,
        ) {
            let mut jb = JitterBuffer::new(JitterConfig { shrink_per_second_us: shrink, ..JitterConfig::default() });
            let mut arrivals: Vec<(u64, u64, usize)> = Vec::new();
            let mut sent = 0u64;
            for (i, (gap, delay)) in sends.iter().enumerate() {
                sent += gap * 100;
                arrivals.push((sent + delay, sent, i));
            }
            arrivals.sort();
            let mut seen = vec![0u32; arrivals.len()];
            let mut last_release = 0u64;
            let mut out = 0;
            let check = |r: Released<usize>, now: u64, seen: &mut Vec<u32>| {
                assert!(now >= r.due.0.max(r.arrived.0));
                seen[r.event] += 1;
            };
            for &(arr, s, i) in &arrivals {
                while let Some(t) = jb.poll_timeout() {
                    if t.0 > arr { break; }
                    let r = jb.poll_event(t).unwrap();
                    prop_assert!(t.0 >= last_release);
                    last_release = t.0;
                    check(r, t.0, &mut seen);
                    out += 1;
                }
                jb.handle_event(Micros(arr), Micros(s), i);
            }
            while let Some(t) = jb.poll_timeout() {
                let r = jb.poll_event(t).unwrap();
                check(r, t.0, &mut seen);
                out += 1;
            }
            prop_assert_eq!(out, arrivals.len());
            prop_assert!(seen.iter().all(|&c| c == 1));
            prop_assert_eq!(jb.stats().released, arrivals.len() as u64);
        }

        /// Events that arrive in sending order within the playout delay come
        /// out in sending order.
        #[test]
        fn in_time_events_keep_sending_order(
            gaps in proptest::collection::vec(1u64..100_000, 1..100),
            delay in 1_000u64..50_000,
        ) {
            let mut jb = JitterBuffer::new(JitterConfig { min_delay_us: delay, margin_us: 0, ..JitterConfig::default() });
            let mut sent = 0;
            for (i, g) in gaps.iter().enumerate() {
                sent += g;
                jb.handle_event(Micros(sent + delay / 2), Micros(sent), i);
            }
            let order: Vec<usize> = jb.drain().map(|r| r.event).collect();
            prop_assert_eq!(order, (0..gaps.len()).collect::<Vec<_>>());
        }
    }
}
