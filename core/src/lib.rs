//! Small shared types that every jam.togthr crate speaks.
//!
//! What lives here is deliberately tiny and free of I/O: the units time is
//! measured in ([`Micros`] on a local monotonic clock, [`Beats`] on the shared
//! musical timeline), the identity of a participant ([`PeerId`]), a MIDI 1.0
//! message that fits in three bytes and so can cross the audio thread without
//! allocating ([`ShortMessage`]), and the [`Clock`] trait through which the
//! edges of the system inject "now" into the sans-IO cores.
//!
//! ```
//! use jam_core::{Beats, Micros, ShortMessage};
//! use std::time::Duration;
//!
//! let t = Micros::ZERO + Duration::from_millis(5);
//! assert_eq!(t.as_micros(), 5_000);
//! assert_eq!(Beats::from_f64(1.5).as_micros_of_beat(), 1_500_000);
//! let on = ShortMessage::note_on(0, 60, 100);
//! assert_eq!(on.as_slice(), &[0x90, 60, 100]);
//! ```
//!
//! The shared musical clock lives here too, as pure maths, because the
//! engine and the prediction crate need it without depending on the session
//! document: [`timeline`] ([`Tempo`], [`Meter`], [`Timeline`] with
//! `beat_at`/`time_at`, phase and boundaries) and [`session_time`]
//! ([`SessionTime`], the shared time axis, and [`SessionClock`], which maps a
//! peer's local clock onto it).
//!
//! [`bytes::ByteWriter`] writes the project's binary file formats (one
//! layout for every integer, varint and byte string).
//!
//! Not here: protocol codecs (`jam-transport`), the tempo timeline's storage
//! and conflict resolution (`jam-session-crdt`), anything that touches
//! sockets, files or threads.

pub mod beats;
pub mod bytes;
pub mod clock;
pub mod midi;
pub mod mode;
pub mod peer;
pub mod session_time;
pub mod time;
pub mod timeline;

pub use beats::Beats;
pub use clock::{Clock, MonotonicClock};
pub use midi::{MidiError, ShortMessage};
pub use mode::LatencyMode;
pub use peer::PeerId;
pub use session_time::{SessionClock, SessionTime};
pub use time::Micros;
pub use timeline::{Meter, Tempo, TempoChange, Timeline};
