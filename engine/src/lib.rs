//! The jam.togthr engine: what the plugin and `jam peer` both run.
//!
//! [`Engine::new`] returns two halves joined by fixed-capacity
//! single-producer/single-consumer rings ([`rtrb`]) and atomics:
//!
//! - [`EngineRt`], the audio-thread half. One call per host block,
//!   [`EngineRt::process_block`], stamps the host's notes with
//!   sample-accurate local time and beat ([`midi_manager`]), hands them to the
//!   worker, places remote events at the right sample of the right block per
//!   latency mode ([`output`]) on each participant's MIDI channel, and plays
//!   them through a small monitor synth ([`synth`]). Every method is
//!   "Realtime-safe: yes": no allocation, lock, syscall or logging.
//! - [`EngineWorker`], the network half, on its own thread with a small tokio
//!   runtime ([`EngineWorker::spawn`]). It talks to the network only through
//!   the transport seam in [`net`]: [`NetCommand`]s out, [`NetEvent`]s in.
//!   It also makes every timing decision that needs state, allocation or a
//!   model ([`timing`], built from `jam-predict`): the adaptive jitter
//!   buffer (live), the late-event policy and role-sensitive quantizer, the
//!   coherent schedule-ahead, the player's agent (predictive, [`agent`]) and
//!   the stuck-note guard. The audio thread only places the decided events.
//!
//! Per-peer figures (round-trip time, loss, recovered and late events) live
//! in a fixed table of atomics ([`stats`]) that the editor and the CLI read
//! through [`EngineControl`], with the predictions played, confirmed and
//! contradicted and the stuck notes ended.
//!
//! ```
//! use jam_engine::{Block, Engine, EngineConfig, EventBuffer, HostEvent, net};
//! use jam_core::{Micros, PeerId, ShortMessage};
//!
//! let (mut rt, worker) = Engine::new(EngineConfig::new(PeerId([1; 16])));
//! let (link, mut port) = net::net_link();
//! let handle = worker.spawn(link).unwrap();
//!
//! // One 256-sample block with a note from the host.
//! let mut out = EventBuffer::with_capacity(jam_engine::MAX_EVENTS_PER_BLOCK);
//! let (mut l, mut r) = (vec![0.0f32; 256], vec![0.0f32; 256]);
//! let input = [HostEvent { offset: 10, msg: ShortMessage::note_on(0, 60, 100) }];
//! rt.process_block(&mut Block {
//!     now: Micros::from_secs(1),
//!     sample_rate: 48_000.0,
//!     transport: Default::default(),
//!     settings: Default::default(),
//!     input: &input,
//!     output: &mut out,
//!     left: &mut l,
//!     right: &mut r,
//! });
//!
//! // The worker hands it to the network side, stamped.
//! let cmd = port.commands.blocking_recv().unwrap();
//! let net::NetCommand::SendMidi(events) = cmd else { panic!("{cmd:?}") };
//! assert_eq!(events[0].msg, ShortMessage::note_on(0, 60, 100));
//! handle.stop();
//! ```
//!
//! The session document (`jam-session-crdt`) is synced by the worker over
//! the transport's reliable side channel ([`session_sync`], turned on with
//! [`EngineControl::enable_session`]); the segment of its tempo map in force
//! reaches the audio thread as a [`Timeline`], like
//! [`EngineControl::set_timeline`]. The document also carries the coherent
//! schedule-ahead: each engine writes its proposals into it and applies
//! every change it resolves (see [`worker`] and [`timing`]); without a
//! document an engine applies its own proposals.
//!
//! Not here: the transport itself (RTP-MIDI, AppleMIDI sessions, sockets:
//! `jam-transport`, connected through [`net`]), the document's schema and
//! sync protocol (`jam-session-crdt`), the timing and prediction algorithms
//! themselves and agent training (`jam-predict`), the host API
//! (`jam-plugin`).

pub mod agent;
pub mod capture;
pub mod event;
pub mod key_file;
pub mod midi_manager;
pub mod net;
pub mod network;
pub mod output;
pub mod rt;
pub mod session_sync;
pub mod shared_clock;
pub mod stats;
pub mod synth;
pub mod timeline;
pub mod timing;
pub mod worker;

pub use agent::{AgentLoadError, AgentSource};
pub use capture::{
    CaptureStatus, CaptureTarget, Recording, RecordingError, RecordingStart, RecordingSummary,
};
pub use event::{EventBuffer, HostEvent, OutEvent, Received, RemoteEvent, StampedEvent};
pub use jam_core::LatencyMode;
pub use jam_predict::coherent::AheadChange;
pub use key_file::{KeyFileError, read_identity};
pub use midi_manager::{BlockClock, BlockTimer, HostTransport, MidiManager};
pub use net::{NetCommand, NetEvent, NetLink, NetPort, Role, SessionAddress};
pub use network::{NetworkConfig, NetworkError, NetworkInfo};
pub use rt::{Block, EngineRt, Settings};
pub use stats::{CounterView, EngineCounters, PeerTable, PeerView};
pub use timeline::Timeline;
pub use timing::{At, Placed, Timing};
pub use worker::{EngineControl, EngineWorker, WorkerHandle};

use jam_core::PeerId;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};

/// Remote participants with their own slot: MIDI channel, timbre and row in
/// the peer table. MIDI has 16 channels.
pub const MAX_PEERS: usize = 16;
/// Capacity of the ring from the audio thread to the worker (stamped host
/// events). When full the newest event is dropped and counted.
pub const OUTGOING_RING_CAPACITY: usize = 4096;
/// Capacity of the ring from the worker to the audio thread (remote events
/// and updates). When full the newest item is dropped and counted.
pub const INCOMING_RING_CAPACITY: usize = 4096;
/// Events one block can take from or give to the host.
pub const MAX_EVENTS_PER_BLOCK: usize = 2048;

/// What the engine needs to start.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// This participant's identity (stamped on every outgoing event).
    pub local_peer: PeerId,
    /// Initial sample rate (each block may change it).
    pub sample_rate: f32,
    /// The player's agent for predictive mode, loaded by the worker when it
    /// starts (a failure is logged; the modes work without an agent).
    pub agent: Option<AgentSource>,
}

impl EngineConfig {
    /// A configuration for `local_peer` at 48 kHz.
    pub fn new(local_peer: PeerId) -> Self {
        EngineConfig {
            local_peer,
            sample_rate: 48_000.0,
            agent: None,
        }
    }
}

/// State both halves share; only atomics are touched by the audio thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) counters: EngineCounters,
    pub(crate) peers: PeerTable,
    /// The local role as the audio thread last saw it in its settings.
    /// Writer: audio thread; reader: worker (announces changes). Relaxed:
    /// a lone value, no other data depends on it.
    pub(crate) local_role: AtomicU8,
    /// The session document as the worker last saw it. Writer: worker;
    /// readers: user interface, CLI. Never touched by the audio thread.
    pub(crate) session: std::sync::Mutex<session_sync::SessionView>,
    /// The local time of the audio thread's latest block: the worker's
    /// clock for its timing decisions. Writer: audio thread. Relaxed.
    pub(crate) audio_now: AtomicU64,
    /// The latency mode and interval of the latest block
    /// ([`encode_placement`]). Writer: audio thread. Relaxed.
    pub(crate) placement: AtomicU32,
    /// The host's record switch ([`EngineRt::set_record`]). Writer: audio
    /// thread; reader: worker (starts and finishes the capture). Relaxed:
    /// a lone flag.
    pub(crate) record: AtomicBool,
    /// The capture as the worker last saw it. Writer: worker; readers:
    /// user interface. Never touched by the audio thread.
    pub(crate) capture: std::sync::Mutex<capture::CaptureStatus>,
    /// The runtime the worker runs on, once it runs: the user interface
    /// starts network work there ([`EngineControl::runtime`]). Set once by
    /// the worker's thread; never touched by the audio thread.
    pub(crate) runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

/// Packs a latency mode and interval into one atomic word.
pub(crate) fn encode_placement(mode: LatencyMode, interval_beats: u32) -> u32 {
    let m = LatencyMode::ALL
        .iter()
        .position(|&x| x == mode)
        .unwrap_or(0) as u32;
    m | (interval_beats.min(0x00FF_FFFF) << 8)
}

/// Unpacks [`encode_placement`].
pub(crate) fn decode_placement(word: u32) -> (LatencyMode, u32) {
    let mode = LatencyMode::ALL
        .get((word & 0xFF) as usize)
        .copied()
        .unwrap_or_default();
    (mode, (word >> 8).max(1))
}

/// Writes every slot of an empty ring once (without committing anything),
/// so neither thread faults in its pages later (see
/// [`event::prefaulted_vec`]).
fn prefault_ring<T>(p: &mut rtrb::Producer<T>) {
    if let Ok(mut chunk) = p.write_chunk_uninit(p.slots()) {
        let (a, b) = chunk.as_mut_slices();
        event::prefault(a);
        event::prefault(b);
    }
}

/// Builds the engine's two halves.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// Makes the audio-thread half and the worker half, joined by their
    /// rings. Allocates every buffer the audio thread will ever use and
    /// writes it once (so its pages are mapped before the first block), so call
    /// it from a non-real-time thread (the plugin does so in `initialize`).
    #[allow(
        clippy::new_ret_no_self,
        reason = "a pair of halves, like rtrb::RingBuffer::new"
    )]
    pub fn new(config: EngineConfig) -> (EngineRt, EngineWorker) {
        let (mut out_tx, out_rx) = rtrb::RingBuffer::new(OUTGOING_RING_CAPACITY);
        let (mut in_tx, in_rx) = rtrb::RingBuffer::new(INCOMING_RING_CAPACITY);
        prefault_ring(&mut out_tx);
        prefault_ring(&mut in_tx);
        let shared = Arc::new(Shared::default());
        let rt = EngineRt::new(
            out_tx,
            in_rx,
            shared.clone(),
            MidiManager::new(config.local_peer),
            config.sample_rate,
        );
        let worker = EngineWorker::new(out_rx, in_tx, shared, config.agent, config.local_peer);
        (rt, worker)
    }
}
