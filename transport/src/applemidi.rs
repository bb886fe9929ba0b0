//! The AppleMIDI session layer: who is in a session with whom, on which
//! ports, and how their clocks relate (`rtp-midi.md` §1 and §6, Apple's
//! "MIDI Network Driver Protocol").
//!
//! A participant owns two consecutive UDP ports: **control** (N) for the
//! first invitation handshake, `BY`, `RS` and `RL`, and **data** (N+1) for the
//! second handshake, `CK` clock sync and the RTP-MIDI packets themselves.
//!
//! - [`packet`]: the session commands on the wire (`IN` `OK` `NO` `BY` `CK`
//!   `RS` `RL`), and [`packet::classify`], which tells a session command from
//!   RTP and garbage on a shared port.
//! - [`clock_sync`]: the maths of a `CK` exchange and the minimum-round-trip
//!   offset estimator.
//! - [`endpoint`]: [`Endpoint`], the sans-IO state machine of one local
//!   participant with any number of remote ones: invitations (both roles),
//!   retries and timeouts, clock sync, `BY`, feedback, and demultiplexing of
//!   RTP packets to the session they belong to. It carries RTP opaquely; the
//!   RTP-MIDI payload and journal live in their own module.
//!
//! The tokio driver that gives an [`Endpoint`] real sockets is
//! [`crate::driver`]; LAN discovery over mDNS is `crate::discovery`.

pub mod clock_sync;
pub mod endpoint;
pub mod packet;

pub use clock_sync::{ClockEstimator, ClockEstimatorConfig, RttStats, Sample};
pub use endpoint::{
    AcceptPolicy, Endpoint, EndpointConfig, EndpointEvent, EndpointStats, FailReason, InviteError,
    LeaveReason, PeerHandle, PeerInfo, PeerState, SendError, SessionTimers,
};
pub use packet::{Command, DatagramKind, DecodeError};

use std::net::SocketAddr;

/// Which of the local participant's two ports a datagram arrived on or
/// leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// Port N: first handshake, `BY`, `RS`, `RL`.
    Control,
    /// Port N+1: second handshake, `CK`, RTP.
    Data,
}

/// A datagram the state machine wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local port to send it from.
    pub from: Port,
    /// The remote address to send it to.
    pub to: SocketAddr,
    /// The whole UDP payload.
    pub payload: Vec<u8>,
}
