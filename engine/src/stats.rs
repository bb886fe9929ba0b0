//! Per-peer figures and engine counters, shared between the audio thread,
//! the worker and the user interface without locks on the audio side.
//!
//! Numbers live in atomics: the audio thread bumps `late` and the drop
//! counters, the worker writes round-trip time, loss and recovered counts, and
//! the editor or the CLI read everything with [`PeerTable::snapshot`]. Names
//! and roles are strings, so they sit behind a `Mutex` that only the worker and
//! the user interface touch; the audio thread never does.
//!
//! Memory ordering: every figure is an independent counter or gauge, read for
//! display only, so `Relaxed` is enough; the slot's `present` flag is written
//! with `Release` after its figures are reset and read with `Acquire`.

use crate::MAX_PEERS;
use crate::net::{ConnectionState, LanPeer, Role};
use jam_core::PeerId;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Sentinel for "round-trip time not measured yet".
const NO_RTT: u64 = u64::MAX;

/// The atomic figures of one slot.
#[derive(Debug)]
struct SlotFigures {
    /// True while a participant holds the slot. Writer: worker.
    present: AtomicBool,
    /// Smoothed round-trip time in µs, or [`NO_RTT`]. Writer: worker.
    rtt_us: AtomicU64,
    /// Packets expected from the peer. Writer: worker.
    expected: AtomicU64,
    /// Packets lost. Writer: worker.
    lost: AtomicU64,
    /// Events received (including recovered ones). Writer: worker.
    events: AtomicU64,
    /// Events the recovery journal rebuilt. Writer: worker.
    recovered: AtomicU64,
    /// Events played later than their target (or dropped for it).
    /// Writers: audio thread and worker (relaxed adds).
    late: AtomicU64,
    /// Predicted notes played. Writer: worker.
    predicted: AtomicU64,
    /// Played predictions the real note confirmed. Writer: worker.
    predictions_right: AtomicU64,
    /// Played predictions the real note contradicted. Writer: worker.
    predictions_wrong: AtomicU64,
    /// Played predictions whose real note never came. Writer: worker.
    predictions_unconfirmed: AtomicU64,
    /// Notes the stuck-note guard ended. Writer: worker.
    stuck_ended: AtomicU64,
}

impl SlotFigures {
    fn new() -> Self {
        SlotFigures {
            present: AtomicBool::new(false),
            rtt_us: AtomicU64::new(NO_RTT),
            expected: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            events: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            late: AtomicU64::new(0),
            predicted: AtomicU64::new(0),
            predictions_right: AtomicU64::new(0),
            predictions_wrong: AtomicU64::new(0),
            predictions_unconfirmed: AtomicU64::new(0),
            stuck_ended: AtomicU64::new(0),
        }
    }
}

/// Who holds a slot (non-real-time side only).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotInfo {
    peer: PeerId,
    name: String,
    role: Role,
}

/// One row of the peer table, as the editor and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The slot: output MIDI channel (0-based) and monitor timbre.
    pub slot: u8,
    /// The participant.
    pub peer: PeerId,
    /// Its display name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// Packets expected.
    pub packets_expected: u64,
    /// Packets lost.
    pub packets_lost: u64,
    /// Events received.
    pub events: u64,
    /// Events rebuilt by the recovery journal.
    pub recovered: u64,
    /// Events played late (or dropped as too late).
    pub late: u64,
    /// Predicted notes played (predictive mode).
    pub predicted: u64,
    /// Played predictions the real note confirmed.
    pub predictions_right: u64,
    /// Played predictions the real note contradicted (corrected or ended).
    pub predictions_wrong: u64,
    /// Played predictions whose real note never came (lost on the way and
    /// not recovered, or not played): the next real note was the one after
    /// it. Neither right nor wrong.
    pub predictions_unconfirmed: u64,
    /// Notes held far too long that the stuck-note guard ended.
    pub stuck_ended: u64,
}

impl PeerView {
    /// Lost packets as a fraction of expected ones (0 when none expected).
    pub fn loss(&self) -> f64 {
        if self.packets_expected == 0 {
            0.0
        } else {
            self.packets_lost as f64 / self.packets_expected as f64
        }
    }
}

/// Engine-wide counters: every place where the engine drops something
/// instead of waiting. Written with `Relaxed` adds by whoever drops.
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Host events dropped because the outgoing ring was full (audio thread).
    pub dropped_outgoing: AtomicU64,
    /// Remote events dropped because the incoming ring was full (worker).
    pub dropped_incoming: AtomicU64,
    /// Remote events dropped because the interval scheduler was full (audio).
    pub dropped_scheduled: AtomicU64,
    /// Events dropped because a block's output buffer was full (audio).
    pub dropped_output: AtomicU64,
    /// Host input events beyond a block's input capacity (plugin).
    pub dropped_host_input: AtomicU64,
    /// Commands dropped because the network side's queue was full (worker).
    pub dropped_net_commands: AtomicU64,
    /// Locally played events handed to the network side (worker).
    pub sent: AtomicU64,
    /// Blocks processed (audio thread).
    pub blocks: AtomicU64,
    /// Remote events the worker has handled (placed, passed on or dropped).
    pub handled: AtomicU64,
    /// Worker ticks (time-driven work: predictions, stuck notes).
    pub ticks: AtomicU64,
}

/// A snapshot of [`EngineCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterView {
    /// See [`EngineCounters::dropped_outgoing`].
    pub dropped_outgoing: u64,
    /// See [`EngineCounters::dropped_incoming`].
    pub dropped_incoming: u64,
    /// See [`EngineCounters::dropped_scheduled`].
    pub dropped_scheduled: u64,
    /// See [`EngineCounters::dropped_output`].
    pub dropped_output: u64,
    /// See [`EngineCounters::dropped_host_input`].
    pub dropped_host_input: u64,
    /// See [`EngineCounters::dropped_net_commands`].
    pub dropped_net_commands: u64,
    /// See [`EngineCounters::sent`].
    pub sent: u64,
    /// See [`EngineCounters::blocks`].
    pub blocks: u64,
    /// See [`EngineCounters::handled`].
    pub handled: u64,
    /// See [`EngineCounters::ticks`].
    pub ticks: u64,
}

impl EngineCounters {
    /// Reads every counter.
    pub fn view(&self) -> CounterView {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterView {
            dropped_outgoing: r(&self.dropped_outgoing),
            dropped_incoming: r(&self.dropped_incoming),
            dropped_scheduled: r(&self.dropped_scheduled),
            dropped_output: r(&self.dropped_output),
            dropped_host_input: r(&self.dropped_host_input),
            dropped_net_commands: r(&self.dropped_net_commands),
            sent: r(&self.sent),
            blocks: r(&self.blocks),
            handled: r(&self.handled),
            ticks: r(&self.ticks),
        }
    }
}

/// The fixed-size table of participants, one row per slot
/// (`MAX_PEERS` rows), plus the connection state and the LAN peer list.
///
/// Thread-safe: yes. Realtime-safe: only the `add_*` counters.
#[derive(Debug)]
pub struct PeerTable {
    figures: [SlotFigures; MAX_PEERS],
    /// Names, roles and connection state. Writers: worker; readers: UI.
    /// The audio thread never takes this lock.
    info: Mutex<TableInfo>,
}

#[derive(Debug, Default)]
struct TableInfo {
    slots: [Option<SlotInfo>; MAX_PEERS],
    /// The slot each peer last held, so a peer that rejoins keeps its
    /// channel and timbre when the slot is still free.
    last_slot: Vec<(PeerId, u8)>,
    connection: ConnectionState,
    lan: Vec<LanPeer>,
}

impl Default for PeerTable {
    fn default() -> Self {
        PeerTable {
            figures: std::array::from_fn(|_| SlotFigures::new()),
            info: Mutex::new(TableInfo::default()),
        }
    }
}

impl PeerTable {
    fn info(&self) -> std::sync::MutexGuard<'_, TableInfo> {
        // A poisoned lock only means a reader panicked; the data is plain.
        self.info.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one late event for `slot`. Realtime-safe: yes.
    pub fn add_late(&self, slot: u8) {
        if let Some(f) = self.figures.get(slot as usize) {
            f.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one predicted note played for `slot`. Realtime-safe: yes.
    pub fn add_predicted(&self, slot: u8) {
        if let Some(f) = self.figures.get(slot as usize) {
            f.predicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a played prediction as confirmed (`right`) or contradicted by
    /// the real note. Realtime-safe: yes.
    pub fn add_prediction_outcome(&self, slot: u8, right: bool) {
        if let Some(f) = self.figures.get(slot as usize) {
            let c = if right {
                &f.predictions_right
            } else {
                &f.predictions_wrong
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a played prediction whose real note never came (the next
    /// real note was intended well after it). Realtime-safe: yes.
    pub fn add_prediction_unconfirmed(&self, slot: u8) {
        if let Some(f) = self.figures.get(slot as usize) {
            f.predictions_unconfirmed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one note ended by the stuck-note guard. Realtime-safe: yes.
    pub fn add_stuck(&self, slot: u8) {
        if let Some(f) = self.figures.get(slot as usize) {
            f.stuck_ended.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The slot `peer` holds, if any. Worker side.
    pub fn slot_of(&self, peer: PeerId) -> Option<u8> {
        self.info()
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.peer == peer))
            .map(|i| i as u8)
    }

    /// Gives `peer` a slot (its previous one when free, else the lowest free
    /// one) and records its name and role; returns the slot, or `None` when
    /// all `MAX_PEERS` slots are taken. A peer that already holds a slot
    /// keeps it and gets its name and role updated. Worker side.
    pub fn join(&self, peer: PeerId, name: &str, role: Role) -> Option<u8> {
        let mut info = self.info();
        if let Some(i) = info
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.peer == peer))
        {
            info.slots[i] = Some(SlotInfo {
                peer,
                name: name.to_string(),
                role,
            });
            return Some(i as u8);
        }
        let previous = info
            .last_slot
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|&(_, s)| s as usize)
            .filter(|&s| info.slots[s].is_none());
        let slot = previous.or_else(|| info.slots.iter().position(Option::is_none))?;
        info.slots[slot] = Some(SlotInfo {
            peer,
            name: name.to_string(),
            role,
        });
        info.last_slot.retain(|(p, _)| *p != peer);
        info.last_slot.push((peer, slot as u8));
        let f = &self.figures[slot];
        f.rtt_us.store(NO_RTT, Ordering::Relaxed);
        for a in [
            &f.expected,
            &f.lost,
            &f.events,
            &f.recovered,
            &f.late,
            &f.predicted,
            &f.predictions_right,
            &f.predictions_wrong,
            &f.predictions_unconfirmed,
            &f.stuck_ended,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        f.present.store(true, Ordering::Release);
        Some(slot as u8)
    }

    /// Frees `peer`'s slot and returns it. Worker side.
    pub fn leave(&self, peer: PeerId) -> Option<u8> {
        let mut info = self.info();
        let i = info
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.peer == peer))?;
        info.slots[i] = None;
        self.figures[i].present.store(false, Ordering::Release);
        Some(i as u8)
    }

    /// Frees every slot (on leaving the session). Worker side.
    pub fn clear(&self) {
        let mut info = self.info();
        for (i, s) in info.slots.iter_mut().enumerate() {
            *s = None;
            self.figures[i].present.store(false, Ordering::Release);
        }
    }

    /// Records `peer`'s new role. Worker side.
    pub fn set_role(&self, peer: PeerId, role: Role) {
        let mut info = self.info();
        if let Some(s) = info.slots.iter_mut().flatten().find(|s| s.peer == peer) {
            s.role = role;
        }
    }

    /// Records network figures for `slot`. Worker side.
    pub fn set_net(&self, slot: u8, rtt: Option<Duration>, expected: u64, lost: u64) {
        if let Some(f) = self.figures.get(slot as usize) {
            let rtt = rtt.map_or(NO_RTT, |d| d.as_micros().min(NO_RTT as u128 - 1) as u64);
            f.rtt_us.store(rtt, Ordering::Relaxed);
            f.expected.store(expected, Ordering::Relaxed);
            f.lost.store(lost, Ordering::Relaxed);
        }
    }

    /// Counts one received event (and whether it was recovered). Worker side.
    pub fn add_event(&self, slot: u8, recovered: bool) {
        if let Some(f) = self.figures.get(slot as usize) {
            f.events.fetch_add(1, Ordering::Relaxed);
            if recovered {
                f.recovered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sets the connection state. Worker side.
    pub fn set_connection(&self, state: ConnectionState) {
        self.info().connection = state;
    }

    /// The connection state.
    pub fn connection(&self) -> ConnectionState {
        self.info().connection.clone()
    }

    /// Replaces the list of LAN peers. Worker side.
    pub fn set_lan_peers(&self, peers: Vec<LanPeer>) {
        self.info().lan = peers;
    }

    /// Peers seen on the LAN.
    pub fn lan_peers(&self) -> Vec<LanPeer> {
        self.info().lan.clone()
    }

    /// Every present participant with its figures, by slot. Allocates; for
    /// the user interface and the CLI, never the audio thread.
    pub fn snapshot(&self) -> Vec<PeerView> {
        let info = self.info();
        let mut out = Vec::new();
        for (i, s) in info.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            let f = &self.figures[i];
            if !f.present.load(Ordering::Acquire) {
                continue;
            }
            let rtt = f.rtt_us.load(Ordering::Relaxed);
            out.push(PeerView {
                slot: i as u8,
                peer: s.peer,
                name: s.name.clone(),
                role: s.role,
                rtt: (rtt != NO_RTT).then(|| Duration::from_micros(rtt)),
                packets_expected: f.expected.load(Ordering::Relaxed),
                packets_lost: f.lost.load(Ordering::Relaxed),
                events: f.events.load(Ordering::Relaxed),
                recovered: f.recovered.load(Ordering::Relaxed),
                late: f.late.load(Ordering::Relaxed),
                predicted: f.predicted.load(Ordering::Relaxed),
                predictions_right: f.predictions_right.load(Ordering::Relaxed),
                predictions_wrong: f.predictions_wrong.load(Ordering::Relaxed),
                predictions_unconfirmed: f.predictions_unconfirmed.load(Ordering::Relaxed),
                stuck_ended: f.stuck_ended.load(Ordering::Relaxed),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId([n; 16])
    }

    #[test]
    fn slots_are_stable_and_reused_by_the_same_peer() {
        let t = PeerTable::default();
        assert_eq!(t.join(peer(1), "a", Role::Auto), Some(0));
        assert_eq!(t.join(peer(2), "b", Role::Rhythm), Some(1));
        assert_eq!(t.join(peer(1), "a2", Role::Melody), Some(0));
        assert_eq!(t.leave(peer(1)), Some(0));
        assert_eq!(t.join(peer(3), "c", Role::Auto), Some(0));
        // Peer 1 comes back: its old slot is taken, so it gets the next free.
        assert_eq!(t.join(peer(1), "a", Role::Auto), Some(2));
        t.leave(peer(2));
        // Peer 2 comes back to its own free slot.
        assert_eq!(t.join(peer(2), "b", Role::Auto), Some(1));
    }

    #[test]
    fn the_table_is_full_at_max_peers() {
        let t = PeerTable::default();
        for i in 0..MAX_PEERS as u8 {
            assert_eq!(t.join(peer(i), "x", Role::Auto), Some(i));
        }
        assert_eq!(t.join(peer(200), "y", Role::Auto), None);
    }

    #[test]
    fn snapshot_shows_the_figures_each_side_wrote() {
        let t = PeerTable::default();
        let s = t.join(peer(9), "nine", Role::Harmony).unwrap();
        t.set_net(s, Some(Duration::from_millis(12)), 100, 5);
        t.add_event(s, false);
        t.add_event(s, true);
        t.add_late(s);
        let v = t.snapshot();
        assert_eq!(v.len(), 1);
        let v = &v[0];
        assert_eq!((v.name.as_str(), v.role), ("nine", Role::Harmony));
        assert_eq!(v.rtt, Some(Duration::from_millis(12)));
        assert_eq!((v.events, v.recovered, v.late), (2, 1, 1));
        assert!((v.loss() - 0.05).abs() < 1e-12);
        t.leave(peer(9));
        assert!(t.snapshot().is_empty());
    }
}
