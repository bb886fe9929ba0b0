//! Network transport for jam.togthr.
//!
//! Everything jam.togthr plays travels as RTP-MIDI (RFC 6295). This crate
//! holds the sans-IO cores that speak it and, at the edge, the only code that
//! owns sockets and timers:
//!
//! - [`netem`]: a seeded, in-memory network emulator on a virtual clock
//!   (delay, jitter, random and burst loss, reordering, duplication,
//!   partitions) and a small simulator that drives sans-IO nodes over it.
//!   Every multi-peer test in the workspace runs on it.
//! - [`clock`]: the AppleMIDI 100 µs session clock and the mapping of a
//!   remote peer's clock onto the local one.
//! - [`relay`]: the relay wire format shared by peers and `jamd`: a routing
//!   header in front of an opaque payload, and the authenticated hello,
//!   keepalive and leave messages (tickets and tags).
//!
//! Sans-IO means every state machine here takes bytes and `now` as input and
//! returns bytes, deadlines and events; nothing here reads the system clock,
//! spawns a task or draws from a global random number generator.

pub mod clock;
pub mod netem;
pub mod relay;
