//! What each player would hear in a latency mode: the events the network
//! delivered to it, in arrival order, through the engine's timing decisions
//! ([`jam_engine::Timing`]: jitter buffer, late-event policy, coherent
//! schedule-ahead, predictions, stuck-note guard), ticked every millisecond
//! of virtual time as the engine's worker ticks.

use jam_core::{Beats, LatencyMode, Micros, PeerId, ShortMessage};
use jam_engine::net::Role;
use jam_engine::{PeerTable, Placed, Timeline, Timing};
use std::time::Duration;

/// Interval length the demo uses in interval mode, in beats.
pub(crate) const INTERVAL_BEATS: i64 = 4;
const TICK: Duration = Duration::from_millis(1);

/// One delivered event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivered {
    /// Index of the sending player.
    pub(crate) sender: usize,
    pub(crate) msg: ShortMessage,
    /// Sender time mapped onto the receiver's clock.
    pub(crate) sent: Micros,
    pub(crate) arrived: Micros,
    pub(crate) recovered: bool,
}

/// One player's figures in the mode.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ModeFigures {
    /// Events played late or dropped as too late.
    pub(crate) late: u64,
    /// Predicted notes played.
    pub(crate) predicted: u64,
    /// Played predictions the real note confirmed.
    pub(crate) right: u64,
    /// Played predictions the real note contradicted.
    pub(crate) wrong: u64,
    /// Notes the stuck-note guard ended.
    pub(crate) stuck_ended: u64,
    /// Coherent mode: the schedule-ahead at the end, in ms.
    pub(crate) ahead_ms: f64,
}

/// Runs one receiver's deliveries through the engine's timing in `mode`.
pub(crate) fn hear(
    mode: LatencyMode,
    roles: &[Role],
    mut events: Vec<Delivered>,
    model: Option<&[u8]>,
) -> ModeFigures {
    let table = PeerTable::default();
    let mut timing = Timing::new();
    if let Some(m) = model {
        // The model was checked when it was loaded.
        let _ = timing.set_model(m.to_vec());
    }
    let mut slots = vec![None; roles.len()];
    for (j, &role) in roles.iter().enumerate() {
        let peer = PeerId([j as u8 + 1; 16]);
        if let Some(s) = table.join(peer, &format!("p{j}"), role) {
            timing.set_peer(s, peer, role);
            slots[j] = Some(s);
        }
    }
    events.sort_by_key(|e| e.arrived);
    let tl = Timeline::default();
    let interval = Beats::from_beats(INTERVAL_BEATS);
    let mut out: Vec<Placed> = Vec::new();
    let Some(first) = events.first().map(|e| e.arrived) else {
        return ModeFigures::default();
    };
    let mut now = first;
    let tick_to = |timing: &mut Timing, now: &mut Micros, until: Micros, out: &mut Vec<Placed>| {
        while *now + TICK <= until {
            *now += TICK;
            timing.handle_tick(mode, &tl, *now, out, &table);
            if mode == LatencyMode::Coherent {
                // One listener, no session document: its own changes.
                timing.apply_own_ahead(&tl, *now);
            }
            out.clear();
        }
    };
    for e in &events {
        tick_to(&mut timing, &mut now, e.arrived, &mut out);
        let Some(slot) = slots.get(e.sender).copied().flatten() else {
            continue;
        };
        let ev = jam_engine::RemoteEvent {
            slot,
            msg: e.msg,
            beat: None,
            sent_at: e.sent,
            arrival: e.arrived,
            recovered: e.recovered,
        };
        let decided = timing.handle_event(mode, interval, &tl, ev, &mut out, &table);
        if !decided && e.msg.is_note_on() {
            // Interval mode: late when its beat plus the interval has passed.
            if tl.beat_at(e.arrived) > tl.beat_at(e.sent) + interval {
                table.add_late(slot);
            }
        }
        out.clear();
    }
    // Let predictions and the stuck-note guard run out.
    let end = now + Duration::from_secs(30);
    tick_to(&mut timing, &mut now, end, &mut out);
    let mut f = ModeFigures {
        ahead_ms: tl.bpm().recip() * 60e3 * timing.schedule_ahead(tl.beat_at(now)).as_f64(),
        ..ModeFigures::default()
    };
    for p in table.snapshot() {
        f.late += p.late;
        f.predicted += p.predicted;
        f.right += p.predictions_right;
        f.wrong += p.predictions_wrong;
        f.stuck_ended += p.stuck_ended;
    }
    f
}
