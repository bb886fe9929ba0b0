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
//! - [`applemidi`]: the AppleMIDI session layer: session packets, clock-sync
//!   maths and estimator, and [`applemidi::Endpoint`], the sans-IO state
//!   machine of one local participant with many remote ones on one
//!   control/data port pair.
//! - `discovery` (feature `mdns`, on by default): advertising and browsing
//!   `_apple-midi._udp` sessions on the LAN.
//! - [`driver`]: the tokio UDP driver, the only code here that owns sockets
//!   and timers; it runs any sans-IO [`driver::Protocol`] object on a
//!   control/data port pair.
//! - `discovery` (feature `mdns`, on by default): advertising and browsing
//!   `_apple-midi._udp` sessions on the LAN.
//!
//! Sans-IO means every state machine here takes bytes and `now` as input and
//! returns bytes, deadlines and events; nothing here reads the system clock,
//! spawns a task or draws from a global random number generator.

pub mod applemidi;
pub mod clock;
#[cfg(feature = "mdns")]
pub mod discovery;
pub mod driver;
pub mod netem;
