//! The output manager: places remote events at the right sample of the right
//! block, per latency mode, on the participant's own MIDI channel.
//!
//! - **Interval**: an event plays exactly N beats after the beat it was played
//!   on, at the sample where that beat falls in this host's timeline (host
//!   transport while it plays, else the session timeline). Events for later
//!   blocks wait in a fixed-capacity scheduler ordered by target beat.
//!
//! - **Live, predictive and coherent**: the worker decides
//!   ([`crate::timing`]: jitter buffer, late-event policy, coherent
//!   scheduler, predictions) and hands over [`Placed`] events with a local
//!   time or a beat; this manager only puts each at its sample, holding the
//!   ones for later blocks in fixed-capacity schedulers (by time and by
//!   beat; among equal beats in the order every engine agrees on).
//!   Remote events that reach it undecided (no participant slot known to
//!   the worker's timing yet) play as soon as possible, as described next.
//! - **As soon as possible** (undecided events): an event that arrived `d`
//!   before this block's start time plays at `len - d·sr`: every such event
//!   is delayed by exactly one block period and their spacing is kept to the
//!   sample.
//!
//! **Channels.** A participant's slot is its MIDI channel on output (slot 0 →
//! channel 1), so each remote player can be routed to its own instrument.
//!
//! **No hanging notes, no cut notes.** The manager tracks which keys sound on
//! each channel. When the latency mode or interval changes, or a
//! participant leaves, every sounding note of those channels gets a
//! note-off at sample 0 of the next block. When the timeline jumps (loop,
//! relocation, play/stop, the session's tempo or axis changing), the same
//! happens in the modes that place events by beat (interval, coherent):
//! their note-offs aim at beats of the timeline as it was. In the modes
//! that place events by time (live, predictive, and undecided events) a
//! jump releases nothing: a remote player's note sounds until its own
//! note-off, which still comes at its time. A note-off for a key that is
//! not sounding is not sent.
//!
//! **Late events.** Live: an event whose mapped send time is more than
//! [`LIVE_LATE_AFTER`] before its arrival counts as late (it still plays).
//! Interval: an event whose target beat is already past plays at sample 0 if
//! it is a note-off or at most [`MAX_LATE`] late, else it is dropped; both
//! count as late.

use crate::event::prefaulted_vec;
use crate::midi_manager::BlockClock;
use crate::stats::{EngineCounters, PeerTable};
use crate::timing::{At, Placed};
use crate::{EventBuffer, MAX_PEERS, OutEvent, Received, RemoteEvent};
pub use jam_core::LatencyMode;
use jam_core::{Beats, Micros, ShortMessage};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Events the interval scheduler can hold (16 beats at 60 BPM from 8 peers
/// at 50 events/s is 6 400). When full, the newest event is dropped.
pub const SCHEDULER_CAPACITY: usize = 8192;
/// In live mode, an event that took longer than this from its sender's
/// clock to arrival counts as late (the ensemble-playing threshold).
pub const LIVE_LATE_AFTER: Duration = Duration::from_millis(30);
/// In interval mode, a note-on at most this far behind its target beat still
/// plays (at sample 0); later ones are dropped.
pub const MAX_LATE: Beats = Beats(250_000);
/// Held events whose target lies more than this beyond `now + interval`
/// (after the timeline jumped back) can no longer line up and are dropped.
pub const MAX_AHEAD: Beats = Beats(4_000_000);

/// The latency mode and interval that apply to a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// How events are placed.
    pub mode: LatencyMode,
    /// Interval length in whole beats (interval mode).
    pub interval_beats: u32,
}

/// An event waiting for its beat. Ordered so that `BinaryHeap` (a max-heap)
/// pops the earliest target first, in arrival order among equal targets.
#[derive(Debug, Clone, Copy)]
struct Held {
    target: Beats,
    /// Tie-break among equal targets (see [`Placed::order`]; arrival order
    /// for interval mode).
    order: (Beats, u64, u64),
    ev: RemoteEvent,
    predicted: bool,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.target, o.order).cmp(&(self.target, self.order))
    }
}

/// An event waiting for its local time; `BinaryHeap` pops the earliest.
#[derive(Debug, Clone, Copy)]
struct Timed {
    at: Micros,
    seq: u64,
    ev: RemoteEvent,
    predicted: bool,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Places remote events in blocks. Realtime-safe: every method but `new`.
#[derive(Debug)]
pub struct OutputManager {
    held: BinaryHeap<Held>,
    timed: BinaryHeap<Timed>,
    seq: u64,
    /// Keys sounding on each channel (bit k = key k), as sent to the host.
    sounding: [u128; MAX_PEERS],
    /// Keys that must get a note-off at the start of the next emission.
    to_release: [u128; MAX_PEERS],
    /// Mode and interval of the previous block, to notice changes.
    last: Option<Placement>,
}

impl OutputManager {
    /// An empty manager with its schedulers allocated (and written once, so
    /// filling them never faults in a page on the audio thread). Allocates.
    pub fn new() -> Self {
        OutputManager {
            held: BinaryHeap::from(prefaulted_vec(SCHEDULER_CAPACITY)),
            timed: BinaryHeap::from(prefaulted_vec(SCHEDULER_CAPACITY)),
            seq: 0,
            sounding: [0; MAX_PEERS],
            to_release: [0; MAX_PEERS],
            last: None,
        }
    }

    /// Drops every held event and releases every sounding note.
    pub fn reset(&mut self) {
        self.held.clear();
        self.timed.clear();
        self.release_all();
        self.last = None;
    }

    /// Number of events waiting for their beat or time.
    pub fn held(&self) -> usize {
        self.held.len() + self.timed.len()
    }

    fn release_all(&mut self) {
        for c in 0..MAX_PEERS {
            self.to_release[c] |= self.sounding[c];
            self.sounding[c] = 0;
        }
    }

    /// Releases every note of `slot` (its participant left).
    pub fn release_slot(&mut self, slot: u8) {
        if let Some(s) = self.sounding.get_mut(slot as usize) {
            self.to_release[slot as usize] |= *s;
            *s = 0;
        }
    }

    /// Starts a block: notices mode changes and timeline jumps, and queues
    /// the note-offs they call for.
    pub fn begin_block(&mut self, clock: &BlockClock, p: Placement) {
        if self.last.is_some_and(|l| l != p) {
            self.release_all();
            if self.last.is_some_and(|l| l.mode != p.mode) {
                // Decisions made for the previous mode no longer apply.
                self.held.clear();
                self.timed.clear();
            }
        }
        self.last = Some(p);
        if clock.discontinuity && places_by_beat(p.mode) {
            self.release_all();
            let horizon = clock.start_beat + Beats::from_beats(p.interval_beats as i64) + MAX_AHEAD;
            self.held.retain(|h| h.target <= horizon);
        }
    }

    /// Takes one remote event from the worker: places it in `out` (live) or
    /// holds it for its beat (interval).
    pub fn accept(
        &mut self,
        ev: RemoteEvent,
        clock: &BlockClock,
        p: Placement,
        out: &mut EventBuffer<OutEvent>,
        peers: &PeerTable,
        counters: &EngineCounters,
    ) {
        match p.mode {
            LatencyMode::Interval => {
                let played = ev.beat.unwrap_or_else(|| clock.beat_of_time(ev.sent_at));
                let target = played + Beats::from_beats(p.interval_beats as i64);
                if self.held.len() >= self.held.capacity() {
                    counters.dropped_scheduled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.held.push(Held {
                    target,
                    order: (Beats::ZERO, 0, self.seq),
                    ev,
                    predicted: false,
                });
                self.seq += 1;
            }
            _ => {
                if ev.arrival.saturating_duration_since(ev.sent_at) > LIVE_LATE_AFTER {
                    peers.add_late(ev.slot);
                }
                let len = clock.len as i64;
                let offset = (len + clock.offset_of_time(ev.arrival)).clamp(0, (len - 1).max(0));
                push_out(out, offset as u32, ev, counters);
            }
        }
    }

    /// Takes one event the worker has placed: puts it in `out` when its
    /// time or beat falls in this block (at sample 0 when already past),
    /// else holds it.
    pub fn accept_placed(
        &mut self,
        p: Placed,
        clock: &BlockClock,
        out: &mut EventBuffer<OutEvent>,
        counters: &EngineCounters,
    ) {
        match p.at {
            At::Time(t) => {
                let offset = clock.offset_of_time(t);
                if offset < clock.len as i64 {
                    push_placed(out, offset.max(0) as u32, p.ev, p.predicted, counters);
                } else if self.timed.len() >= self.timed.capacity() {
                    counters.dropped_scheduled.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.timed.push(Timed {
                        at: t,
                        seq: self.seq,
                        ev: p.ev,
                        predicted: p.predicted,
                    });
                    self.seq += 1;
                }
            }
            At::Beat(target) => {
                if self.held.len() >= self.held.capacity() {
                    counters.dropped_scheduled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.held.push(Held {
                    target,
                    order: p.order,
                    ev: p.ev,
                    predicted: p.predicted,
                });
            }
        }
    }

    /// Moves every held event whose beat or time falls before the end of
    /// this block into `out`.
    pub fn emit_due(
        &mut self,
        clock: &BlockClock,
        out: &mut EventBuffer<OutEvent>,
        peers: &PeerTable,
        counters: &EngineCounters,
    ) {
        let end = clock.end_beat();
        while let Some(h) = self.held.peek().copied() {
            let offset = clock.offset_of_beat(h.target);
            if h.target >= end || offset >= clock.len as i64 {
                break;
            }
            if out.is_full() {
                // Leave the rest for the next block rather than lose them.
                break;
            }
            self.held.pop();
            if offset < 0 {
                peers.add_late(h.ev.slot);
                let lateness = clock.start_beat - h.target;
                if h.ev.msg.is_note_on() && lateness > MAX_LATE {
                    continue;
                }
            }
            push_placed(out, offset.max(0) as u32, h.ev, h.predicted, counters);
        }
        while let Some(t) = self.timed.peek().copied() {
            let offset = clock.offset_of_time(t.at);
            if offset >= clock.len as i64 || out.is_full() {
                break;
            }
            self.timed.pop();
            push_placed(out, offset.max(0) as u32, t.ev, t.predicted, counters);
        }
    }

    /// Finishes the block's events: puts queued note-offs first, sorts by
    /// sample (stable, in place), and drops note-offs for keys that are not
    /// sounding while tracking the keys that are.
    pub fn finish(&mut self, out: &mut EventBuffer<OutEvent>, counters: &EngineCounters) {
        // Queued releases go to sample 0, ahead of everything at sample 0.
        let mut releases = 0usize;
        for c in 0..MAX_PEERS {
            while self.to_release[c] != 0 {
                let key = self.to_release[c].trailing_zeros() as u8;
                let e = OutEvent {
                    offset: 0,
                    msg: ShortMessage::note_off(c as u8, key, 0),
                    slot: c as u8,
                    source: None,
                };
                if out.push(e).is_err() {
                    counters.dropped_output.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                self.to_release[c] &= !(1u128 << key);
                releases += 1;
            }
        }
        let events = out.as_mut_slice();
        // The releases were appended last; rotate them to the front.
        let n = events.len();
        events.rotate_right(releases.min(n));
        insertion_sort_by_offset(events);
        let sounding = &mut self.sounding;
        let mut released_now = [0u128; MAX_PEERS];
        for e in events.iter().take(releases) {
            released_now[e.slot as usize] |= 1u128 << e.msg.data1();
        }
        let mut i = 0usize;
        out.retain(|e| {
            let idx = i;
            i += 1;
            if idx < releases {
                return true;
            }
            let c = e.slot as usize;
            let bit = 1u128 << (e.msg.data1() & 0x7F);
            if e.msg.is_note_on() {
                sounding[c] |= bit;
                true
            } else if e.msg.is_note_off() {
                let was = sounding[c] & bit != 0;
                sounding[c] &= !bit;
                was
            } else {
                true
            }
        });
    }
}

impl Default for OutputManager {
    fn default() -> Self {
        Self::new()
    }
}

/// The modes whose events wait for a beat of the timeline (and so lose
/// their meaning when it jumps), as opposed to a local time.
fn places_by_beat(mode: LatencyMode) -> bool {
    matches!(mode, LatencyMode::Interval | LatencyMode::Coherent)
}

fn push_out(out: &mut EventBuffer<OutEvent>, offset: u32, ev: RemoteEvent, c: &EngineCounters) {
    let slot = ev.slot.min(MAX_PEERS as u8 - 1);
    let e = OutEvent {
        offset,
        msg: ev.msg.with_channel(slot),
        slot,
        source: Some(Received {
            played: ev.msg,
            arrival: ev.arrival,
            recovered: ev.recovered,
        }),
    };
    if out.push(e).is_err() {
        c.dropped_output.fetch_add(1, Ordering::Relaxed);
    }
}

/// [`push_out`] for a decided event; a predicted note carries no
/// [`Received`] (nothing was delivered).
fn push_placed(
    out: &mut EventBuffer<OutEvent>,
    offset: u32,
    ev: RemoteEvent,
    predicted: bool,
    c: &EngineCounters,
) {
    if !predicted {
        return push_out(out, offset, ev, c);
    }
    let slot = ev.slot.min(MAX_PEERS as u8 - 1);
    let e = OutEvent {
        offset,
        msg: ev.msg.with_channel(slot),
        slot,
        source: None,
    };
    if out.push(e).is_err() {
        c.dropped_output.fetch_add(1, Ordering::Relaxed);
    }
}

/// Stable, in-place sort by offset. Events arrive nearly sorted (live events
/// in arrival order, held ones in beat order), where insertion sort is linear;
/// the slice's own stable sort would allocate a buffer.
fn insertion_sort_by_offset(v: &mut [OutEvent]) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v[j - 1].offset > v[j].offset {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::midi_manager::{HostTransport, MidiManager};
    use jam_core::{Micros, PeerId};

    fn remote(slot: u8, msg: ShortMessage, beat: Beats, arrival: Micros) -> RemoteEvent {
        RemoteEvent {
            slot,
            msg,
            beat: Some(beat),
            sent_at: arrival,
            arrival,
            recovered: false,
        }
    }

    fn playing(beat: f64) -> HostTransport {
        HostTransport {
            playing: true,
            tempo: Some(120.0),
            beat: Some(beat),
        }
    }

    struct Rig {
        mm: MidiManager,
        om: OutputManager,
        out: EventBuffer<OutEvent>,
        peers: PeerTable,
        counters: EngineCounters,
    }

    impl Rig {
        fn new() -> Self {
            Rig {
                mm: MidiManager::new(PeerId::default()),
                om: OutputManager::new(),
                out: EventBuffer::with_capacity(64),
                peers: PeerTable::default(),
                counters: EngineCounters::default(),
            }
        }

        fn block(
            &mut self,
            now: Micros,
            len: u32,
            t: HostTransport,
            mode: LatencyMode,
            evs: &[RemoteEvent],
        ) -> Vec<OutEvent> {
            let c = self.mm.begin_block(now, 48_000.0, len, t);
            self.out.clear();
            let p = Placement {
                mode,
                interval_beats: 4,
            };
            self.om.begin_block(&c, p);
            for &e in evs {
                self.om
                    .accept(e, &c, p, &mut self.out, &self.peers, &self.counters);
            }
            self.om
                .emit_due(&c, &mut self.out, &self.peers, &self.counters);
            self.om.finish(&mut self.out, &self.counters);
            self.out.as_slice().to_vec()
        }
    }

    #[test]
    fn live_events_keep_their_spacing_one_block_later() {
        let mut r = Rig::new();
        let now = Micros::from_secs(1);
        // 256 samples at 48 kHz = 5333 µs. Arrivals 1 ms and 3 ms before now.
        let a = remote(
            2,
            ShortMessage::note_on(0, 60, 100),
            Beats::ZERO,
            Micros(now.0 - 3000),
        );
        let b = remote(
            2,
            ShortMessage::note_off(0, 60, 0),
            Beats::ZERO,
            Micros(now.0 - 1000),
        );
        let out = r.block(
            now,
            256,
            HostTransport::default(),
            LatencyMode::Live,
            &[a, b],
        );
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].offset, out[1].offset), (256 - 144, 256 - 48));
        assert_eq!(
            out[0].msg,
            ShortMessage::note_on(2, 60, 100),
            "slot 2 plays on channel 3"
        );
    }

    #[test]
    fn interval_events_play_exactly_n_beats_later_to_the_sample() {
        let mut r = Rig::new();
        // Played at beat 1 + 1000 samples (120 BPM, 48 kHz: 24 000 samples/beat).
        let beat = Beats(1_000_000 + 1000 * 1_000_000 / 24_000);
        let e = remote(0, ShortMessage::note_on(0, 64, 90), beat, Micros::ZERO);
        let out = r.block(Micros::ZERO, 512, playing(1.0), LatencyMode::Interval, &[e]);
        assert!(out.is_empty());
        assert_eq!(r.om.held(), 1);
        // Target: beat 5 + 1000 samples. The block starting at beat 5 + 512
        // samples holds it at offset 488.
        let mut found = None;
        let mut start = 5.0 * 24_000.0 - 512.0 * 3.0;
        for _ in 0..6 {
            let out = r.block(
                Micros::ZERO,
                512,
                playing(start / 24_000.0),
                LatencyMode::Interval,
                &[],
            );
            if let Some(ev) = out.first() {
                found = Some((start as i64, ev.offset));
            }
            start += 512.0;
        }
        assert_eq!(found, Some((5 * 24_000 + 512, 488)));
    }

    #[test]
    fn in_interval_mode_a_loop_releases_sounding_notes_and_never_sends_stray_note_offs() {
        let mut r = Rig::new();
        let now = Micros::from_secs(1);
        // Played at beat 0, out at beat 4 (interval 4): the block from beat
        // 4 holds it at sample 0.
        let on = remote(1, ShortMessage::note_on(0, 50, 100), Beats::ZERO, now);
        let out = r.block(now, 64, playing(4.0), LatencyMode::Interval, &[on]);
        assert_eq!(out.len(), 1);
        // The host loops back to beat 0: the note-off, played at beat 1, was
        // aimed at beat 5 of the timeline as it was.
        let out = r.block(now, 64, playing(0.0), LatencyMode::Interval, &[]);
        assert_eq!(
            out,
            vec![OutEvent {
                offset: 0,
                msg: ShortMessage::note_off(1, 50, 0),
                slot: 1,
                source: None,
            }]
        );
        // The real note-off arrives later and is not sent again.
        let off = remote(1, ShortMessage::note_off(0, 50, 0), Beats(1_000_000), now);
        let mut sent = Vec::new();
        for i in 1..2000 {
            let beat = f64::from(i * 64) / 24_000.0;
            sent.extend(r.block(
                now,
                64,
                playing(beat),
                LatencyMode::Interval,
                &[off][..(i == 1) as usize],
            ));
        }
        assert!(sent.is_empty(), "{sent:?}");
    }

    #[test]
    fn in_live_mode_a_jump_keeps_remote_notes_until_their_own_note_off() {
        let mut r = Rig::new();
        let t = HostTransport::default();
        let now = Micros::from_secs(1);
        let on = remote(1, ShortMessage::note_on(0, 50, 100), Beats::ZERO, now);
        let out = r.block(now, 64, t, LatencyMode::Live, &[on]);
        assert_eq!(out.len(), 1);
        // The host starts playing at beat 0, then the session's timeline
        // changes under a stopped host: two discontinuities.
        let out = r.block(now, 64, playing(0.0), LatencyMode::Live, &[]);
        assert!(out.is_empty(), "{out:?}");
        r.mm.set_timeline(crate::timeline::Timeline::new(90.0, Beats(7_000_000), now));
        let out = r.block(now, 64, t, LatencyMode::Live, &[]);
        assert!(out.is_empty(), "{out:?}");
        // The player's own note-off ends the note, as received.
        let off = remote(1, ShortMessage::note_off(0, 50, 0), Beats::ZERO, now);
        let out = r.block(now, 64, t, LatencyMode::Live, &[off]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].msg, ShortMessage::note_off(1, 50, 0));
        assert!(
            out[0].source.is_some(),
            "the received note-off, not a release"
        );
    }

    #[test]
    fn late_interval_events_play_at_zero_or_drop_and_are_counted() {
        let mut r = Rig::new();
        let s = r
            .peers
            .join(PeerId([1; 16]), "a", crate::Role::Auto)
            .unwrap();
        r.block(Micros::ZERO, 256, playing(10.0), LatencyMode::Interval, &[]);
        let slightly = remote(
            s,
            ShortMessage::note_on(0, 60, 1),
            Beats::from_f64(5.9),
            Micros::ZERO,
        );
        let very = remote(
            s,
            ShortMessage::note_on(0, 61, 1),
            Beats::from_f64(5.0),
            Micros::ZERO,
        );
        let out = r.block(
            Micros::ZERO,
            256,
            playing(10.0 + 256.0 / 24_000.0),
            LatencyMode::Interval,
            &[slightly, very],
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].offset, out[0].msg.data1()), (0, 60));
        assert_eq!(r.peers.snapshot()[0].late, 2);
    }

    #[test]
    fn a_full_scheduler_drops_the_newest_and_counts() {
        let mut r = Rig::new();
        let c = r.mm.begin_block(Micros::ZERO, 48_000.0, 64, playing(0.0));
        for i in 0..SCHEDULER_CAPACITY + 3 {
            let e = remote(
                0,
                ShortMessage::note_on(0, 60, 1),
                Beats(i as i64),
                Micros::ZERO,
            );
            r.om.accept(
                e,
                &c,
                Placement {
                    mode: LatencyMode::Interval,
                    interval_beats: 4,
                },
                &mut r.out,
                &r.peers,
                &r.counters,
            );
        }
        assert_eq!(r.om.held(), SCHEDULER_CAPACITY);
        assert_eq!(r.counters.dropped_scheduled.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn sorting_is_stable_for_equal_offsets() {
        let on = ShortMessage::note_on(0, 1, 1);
        let off = ShortMessage::note_off(0, 1, 0);
        let mut v = vec![
            OutEvent {
                offset: 5,
                msg: on,
                slot: 0,
                source: None,
            },
            OutEvent {
                offset: 5,
                msg: off,
                slot: 0,
                source: None,
            },
            OutEvent {
                offset: 2,
                msg: on,
                slot: 1,
                source: None,
            },
        ];
        insertion_sort_by_offset(&mut v);
        assert_eq!(
            v.iter().map(|e| (e.offset, e.slot)).collect::<Vec<_>>(),
            [(2, 1), (5, 0), (5, 0)]
        );
        assert_eq!(v[1].msg, on);
    }
}
