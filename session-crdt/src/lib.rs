//! The jam.togthr session document: who is in the session, which roles they
//! play, the tempo timeline, the latency mode and the grid, kept identical
//! on every peer through churn and partitions by an Automerge CRDT.
//!
//! Main types:
//! - [`SessionDoc`]: one replica. Typed edits (join, leave, roles, tempo,
//!   coherent schedule-ahead proposals, settings, chat, markers), the typed view ([`SessionState`]), save and
//!   load, incremental change export for captures, and sans-IO sync with
//!   every peer (`generate`/`receive` sync messages as bytes, a resend timer
//!   so a lost message or a restarted peer never stalls the sync).
//! - [`schema`]: the versioned document layout (every key lives there) and
//!   the migration path.
//! - [`EnsembleSnapshot`] and [`snapshot_channel`]: the immutable view the
//!   engine reads, handed to the audio thread without locks, allocation or
//!   frees.
//!
//! The timeline maths ([`jam_core::Timeline`]) and the session clock
//! ([`jam_core::SessionClock`]) live in `jam-core`; this crate decides which
//! tempo changes exist and in which order they resolve, and likewise which
//! coherent-mode schedule-ahead changes the session agreed on
//! ([`SessionState::ahead_changes`]: each participant writes its proposals
//! in its own entry, the largest per bar boundary wins, ties to the
//! smallest peer id).
//!
//! ```
//! use jam_core::{Beats, Meter, Micros, PeerId, SessionTime, Tempo};
//! use jam_session_crdt::{Profile, SessionConfig, SessionDoc, SessionSettings};
//!
//! let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
//! let profile = |name: &str| Profile {
//!     name: name.into(), public_key: [7; 32], instrument: "keys".into(),
//! };
//! let config = SessionConfig {
//!     id: [9; 16], name: "tuesday".into(), created_unix_ms: 0,
//!     origin: SessionTime(0), tempo: Tempo::from_bpm(120.0).unwrap(),
//!     meter: Meter::FOUR_FOUR, settings: SessionSettings::default(),
//! };
//! let mut founder = SessionDoc::create(&config, a, &profile("ann"), 1).unwrap();
//! let mut joiner = SessionDoc::new_replica(b, 2);
//! founder.add_peer(b);
//! joiner.add_peer(a);
//! // Exchange sync messages until neither side has anything to say.
//! loop {
//!     let mut quiet = true;
//!     while let Some((to, m)) = founder.poll_transmit(Micros(0)) {
//!         assert_eq!(to, b);
//!         joiner.receive_sync_message(Micros(0), a, &m).unwrap();
//!         quiet = false;
//!     }
//!     while let Some((_, m)) = joiner.poll_transmit(Micros(0)) {
//!         founder.receive_sync_message(Micros(0), b, &m).unwrap();
//!         quiet = false;
//!     }
//!     if quiet { break; }
//! }
//! joiner.join(&profile("bob"), SessionTime(10)).unwrap();
//! assert_eq!(joiner.timeline().unwrap().beat_at(SessionTime(500_000)), Beats::ONE);
//! assert_eq!(joiner.state().unwrap().participants.len(), 2);
//! ```
//!
//! Not here: moving the bytes (`jam_transport::reliable` carries them, the
//! engine wires the two), the timeline maths (`jam-core`), role detection
//! and schedule-ahead tuning (`engine`).

pub mod document;
pub mod error;
pub mod model;
pub mod schema;
pub mod snapshot;

pub use document::{ExportedChange, MAX_SYNC_MESSAGE_LEN, MAX_TEXT_LEN, SessionDoc, SyncConfig};
pub use error::{EditError, LoadError, SyncError};
pub use model::{
    AheadEntry, ChatMessage, ClockInfo, Confidence, ConnectionStats, LatencyMode, Marker,
    MusicalKey, Participant, PitchClass, Profile, Role, RoleAssignment, RoleSource, ScheduleAhead,
    SessionConfig, SessionInfo, SessionSettings, SessionState, Swing, TempoEntry,
};
pub use schema::{SCHEMA_MAJOR, SCHEMA_MINOR, SchemaError};
pub use snapshot::{
    EnsembleMember, EnsembleSnapshot, SnapshotPublisher, SnapshotReader, snapshot_channel,
};

#[cfg(test)]
mod tests;
