//! [`EnsembleSnapshot`]: the immutable view of the ensemble the engine reads,
//! and the lock-free channel that hands it to the audio thread.
//!
//! # Real-time safety
//!
//! The audio thread must not lock, allocate **or free**. A plain
//! `Arc`/`arc-swap` cell is not enough: the reader that drops the last
//! reference to a replaced snapshot would free it on the audio thread, and
//! `arc-swap` allocates a thread-local debt node the first time a thread
//! reads (hosts may call `process()` from a pool of threads). So the channel
//! here is two fixed-capacity wait-free rings (`rtrb`):
//!
//! ```text
//!  worker: SnapshotPublisher ── forward ring (Arc<EnsembleSnapshot>) ──▶ SnapshotReader: audio
//!                           ◀── return ring (replaced snapshots) ──────
//! ```
//!
//! - [`SnapshotPublisher::publish`] (worker) builds nothing on the audio
//!   side: it pushes an already-built `Arc` and first drops, on the worker,
//!   every snapshot the reader has handed back.
//! - [`SnapshotReader::read`] (audio) pops the newest snapshot if one is
//!   waiting and pushes the one it replaces onto the return ring, and only
//!   if the return ring has room; otherwise it keeps reading the current one
//!   until the worker has collected. It never drops a snapshot, so it never
//!   frees; push and pop on `rtrb` never allocate or block.
//!
//! The reader reads through `&EnsembleSnapshot` borrowed from itself, so the
//! snapshot cannot change under it during a block. The test binary
//! `tests/snapshot_realtime.rs` proves "no allocation and no free" with a
//! counting global allocator, including reads that race publishes.

use crate::model::{
    ConnectionStats, LatencyMode, MusicalKey, Role, RoleAssignment, ScheduleAhead, SessionState,
    Swing,
};
use jam_core::{Beats, PeerId, SessionTime, Timeline};
use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::Arc;

/// One member as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnsembleMember {
    /// Stable identity.
    pub peer: PeerId,
    /// True while in the session.
    pub present: bool,
    /// Roles held, indexed by [`Role::index`].
    pub roles: [Option<RoleAssignment>; 3],
    /// Their published connection figures.
    pub connection: ConnectionStats,
    /// When they (last) joined.
    pub joined: SessionTime,
}

impl EnsembleMember {
    /// The assignment of `role`, if held.
    ///
    /// Realtime-safe: yes.
    pub fn role(&self, role: Role) -> Option<RoleAssignment> {
        self.roles[role.index()]
    }
}

/// The ensemble, immutable once built: participants with roles, the tempo
/// map, the latency mode and the grid.
///
/// Built on the worker after every change ([`crate::SessionDoc::snapshot`]);
/// every read method is realtime-safe (no allocation, bounded work).
/// Replicas holding the same document build `==` snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnsembleSnapshot {
    /// Session id.
    pub session_id: [u8; 16],
    /// The latency mode.
    pub mode: LatencyMode,
    /// Interval length in beats (interval mode).
    pub interval_beats: u32,
    /// Quantization grid step.
    pub grid: Beats,
    /// Grid swing.
    pub swing: Swing,
    /// Schedule-ahead in coherent mode.
    pub schedule_ahead: ScheduleAhead,
    /// Key and scale, if set.
    pub key: Option<MusicalKey>,
    /// The tempo map.
    pub timeline: Timeline,
    /// Every member ever joined, sorted by peer id (binary-searchable).
    pub members: Vec<EnsembleMember>,
}

impl EnsembleSnapshot {
    /// Builds the snapshot of a typed session state.
    pub fn from_state(s: &SessionState) -> EnsembleSnapshot {
        let settings = &s.info.settings;
        EnsembleSnapshot {
            session_id: s.info.id,
            mode: settings.mode,
            interval_beats: settings.interval_beats,
            grid: settings.grid,
            swing: settings.swing,
            schedule_ahead: settings.schedule_ahead,
            key: settings.key.clone(),
            timeline: s.timeline.clone(),
            // BTreeMap iteration is sorted by peer id.
            members: s
                .participants
                .values()
                .map(|p| EnsembleMember {
                    peer: p.peer,
                    present: p.is_present(),
                    roles: p.roles,
                    connection: p.connection,
                    joined: p.joined,
                })
                .collect(),
        }
    }

    /// The member with id `peer`.
    ///
    /// Realtime-safe: yes (binary search).
    pub fn member(&self, peer: PeerId) -> Option<&EnsembleMember> {
        self.members
            .binary_search_by(|m| m.peer.cmp(&peer))
            .ok()
            .map(|i| &self.members[i])
    }

    /// Members currently present, in peer order.
    ///
    /// Realtime-safe: yes.
    pub fn present(&self) -> impl Iterator<Item = &EnsembleMember> {
        self.members.iter().filter(|m| m.present)
    }

    /// The largest published p99 round trip among present members, µs (the
    /// input of the automatic schedule-ahead).
    ///
    /// Realtime-safe: yes.
    pub fn max_rtt_p99_us(&self) -> u32 {
        self.present()
            .map(|m| m.connection.rtt_p99_us)
            .max()
            .unwrap_or(0)
    }
}

/// Snapshots that can wait in the forward ring.
pub const FORWARD_CAPACITY: usize = 4;
/// Replaced snapshots that can wait in the return ring. Larger than the
/// forward ring so that one read can always drain the forward ring.
pub const RETURN_CAPACITY: usize = 2 * FORWARD_CAPACITY;

/// Creates the channel, with `initial` as the first snapshot the reader
/// sees.
pub fn snapshot_channel(initial: EnsembleSnapshot) -> (SnapshotPublisher, SnapshotReader) {
    let (fwd_tx, fwd_rx) = RingBuffer::new(FORWARD_CAPACITY);
    let (ret_tx, ret_rx) = RingBuffer::new(RETURN_CAPACITY);
    let initial = Arc::new(initial);
    (
        SnapshotPublisher {
            forward: fwd_tx,
            returned: ret_rx,
            pending: None,
            latest: initial.clone(),
            published: 0,
        },
        SnapshotReader {
            forward: fwd_rx,
            returned: ret_tx,
            current: initial,
            version: 0,
        },
    )
}

/// The worker half of the snapshot channel.
///
/// Thread-safe: `Send`, used from one thread. Realtime-safe: no (it
/// allocates and frees).
pub struct SnapshotPublisher {
    forward: Producer<Arc<EnsembleSnapshot>>,
    returned: Consumer<Arc<EnsembleSnapshot>>,
    /// The newest snapshot when the forward ring was full (the reader has not
    /// read for a while); pushed on the next `publish` or `collect`.
    pending: Option<Arc<EnsembleSnapshot>>,
    latest: Arc<EnsembleSnapshot>,
    published: u64,
}

impl SnapshotPublisher {
    /// Publishes a new snapshot: the reader sees it at its next
    /// [`SnapshotReader::read`]. Also frees the snapshots the reader has
    /// returned.
    pub fn publish(&mut self, snapshot: EnsembleSnapshot) {
        let snapshot = Arc::new(snapshot);
        self.latest = snapshot.clone();
        self.pending = Some(snapshot);
        self.published += 1;
        self.collect();
    }

    /// Frees returned snapshots and pushes a pending one. Call it now and
    /// then (every worker tick) so that a reader that paused still gets the
    /// newest snapshot.
    pub fn collect(&mut self) {
        while let Ok(old) = self.returned.pop() {
            drop(old);
        }
        if let Some(p) = self.pending.take()
            && let Err(rtrb::PushError::Full(p)) = self.forward.push(p)
        {
            self.pending = Some(p);
        }
    }

    /// The newest snapshot published (for readers on the worker side).
    pub fn latest(&self) -> &Arc<EnsembleSnapshot> {
        &self.latest
    }

    /// How many snapshots were published.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// True once the reader has been dropped.
    pub fn is_abandoned(&self) -> bool {
        self.forward.is_abandoned()
    }
}

/// The audio-thread half of the snapshot channel.
///
/// Thread-safe: `Send`, used from one thread at a time. Realtime-safe: yes
/// for [`read`](SnapshotReader::read) and
/// [`version`](SnapshotReader::version); dropping the reader frees its
/// snapshot, so drop it off the audio thread (in `deactivate`).
pub struct SnapshotReader {
    forward: Consumer<Arc<EnsembleSnapshot>>,
    returned: Producer<Arc<EnsembleSnapshot>>,
    current: Arc<EnsembleSnapshot>,
    version: u64,
}

impl SnapshotReader {
    /// The newest snapshot available: picks up any published since the last
    /// call (handing the replaced ones back to the worker).
    ///
    /// Realtime-safe: yes. No lock, no allocation, no free; at most
    /// [`FORWARD_CAPACITY`] ring operations.
    pub fn read(&mut self) -> &EnsembleSnapshot {
        // Only take a new snapshot when the old one can be handed back; the
        // single producer of the return ring is us, so free slots only grow
        // between this check and the push.
        while self.returned.slots() > 0 {
            let Ok(new) = self.forward.pop() else { break };
            let old = std::mem::replace(&mut self.current, new);
            self.version += 1;
            if let Err(rtrb::PushError::Full(old)) = self.returned.push(old) {
                // Unreachable (slots were checked); keep the snapshot alive
                // rather than free it here.
                std::mem::forget(old);
            }
        }
        &self.current
    }

    /// How many new snapshots this reader has picked up; a change means the
    /// snapshot changed since the value was last seen.
    ///
    /// Realtime-safe: yes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// True once the publisher has been dropped (no further updates).
    pub fn is_abandoned(&self) -> bool {
        self.forward.is_abandoned()
    }
}
