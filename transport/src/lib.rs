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
//! - [`driver`]: the tokio UDP driver, the only code here that owns sockets
//!   and timers; it runs any sans-IO [`driver::Protocol`] object on a
//!   control/data port pair.
//! - [`rtp`]: the RTP-MIDI payload codec, the recovery journal, and the
//!   [`rtp::SendStream`] / [`rtp::RecvStream`] state machines that send
//!   and repair one stream.
//! - [`relay`]: the relay wire format shared by peers and `jamd`: a routing
//!   header in front of an opaque payload, and the authenticated hello,
//!   keepalive and leave messages (tickets and tags).
//! - [`secure`]: end-to-end encryption of everything that goes through a
//!   relay: per-member sender keys (ChaCha20-Poly1305, counter nonces, a
//!   replay window at each receiver) distributed over pairwise
//!   X25519/HKDF channels, rotated whenever a member leaves.
//! - [`relay_client`]: the peer's side of the relay: hello with the join
//!   ticket, keepalives, automatic re-hello after a relay restart, and
//!   [`relay_client::RelayPeer`], a participant whose packets ride the
//!   relay sealed by [`secure`].
//! - [`direct`]: direct paths between members of a relayed session:
//!   authenticated probes to the addresses the control plane lists, the
//!   switch to a direct path, its keepalive, and the fall back to the relay.
//! - [`reliable`]: an ordered, acknowledged message channel over datagrams
//!   (fragmentation, selective acks, retransmission with backoff, restart
//!   detection) that carries the session document's sync messages.
//! - [`participant`]: [`participant::Participant`], the protocol object a
//!   musician's process runs: the endpoint plus one RTP-MIDI send stream and
//!   one receive stream per remote participant, with fan-out, late-joiner
//!   catch-up and clock mapping.
//! - [`sim`]: [`sim::HostSim`], which runs the same protocol objects over
//!   [`netem`] on a virtual clock, each host with its own clock skew.
//! - `discovery` (feature `mdns`, on by default): advertising and browsing
//!   `_apple-midi._udp` sessions on the LAN (an edge, like the driver:
//!   `mdns-sd` runs its own thread and sockets).
//!
//! Two endpoints joined by hand, without any network (the driver does the
//! same with sockets):
//!
//! ```
//! use jam_transport::applemidi::{Endpoint, EndpointConfig, EndpointEvent, Port};
//! use jam_core::Micros;
//! use std::net::SocketAddr;
//!
//! let (a_ctrl, b_ctrl): (SocketAddr, SocketAddr) =
//!     ("127.0.0.1:5004".parse().unwrap(), "127.0.0.1:6004".parse().unwrap());
//! let now = Micros::ZERO;
//! let mut a = Endpoint::new(EndpointConfig::new("alice", 1), now);
//! let mut b = Endpoint::new(EndpointConfig::new("bob", 2), now);
//! let peer = a.invite(now, b_ctrl).unwrap();
//! // Deliver datagrams until both sides are quiet.
//! for _ in 0..4 {
//!     while let Some(t) = a.poll_transmit() {
//!         let from = SocketAddr::new(a_ctrl.ip(), a_ctrl.port() + (t.from == Port::Data) as u16);
//!         let port = if t.to.port() == b_ctrl.port() { Port::Control } else { Port::Data };
//!         b.handle_datagram(now, port, from, &t.payload);
//!     }
//!     while let Some(t) = b.poll_transmit() {
//!         let from = SocketAddr::new(b_ctrl.ip(), b_ctrl.port() + (t.from == Port::Data) as u16);
//!         let port = if t.to.port() == a_ctrl.port() { Port::Control } else { Port::Data };
//!         a.handle_datagram(now, port, from, &t.payload);
//!     }
//! }
//! assert!(matches!(
//!     a.poll_event(),
//!     Some(EndpointEvent::Joined { peer: p, initiated_by_us: true, .. }) if p == peer
//! ));
//! assert!(matches!(a.poll_event(), Some(EndpointEvent::ClockUpdated { .. })));
//! ```
//!
//! The endpoint carries RTP packets opaquely: the RTP-MIDI payload codec and
//! recovery journal sit on top of it, never inside it. Not here: anything
//! musical (timelines, quantization, prediction).
//!
//! Sans-IO means every state machine here takes bytes and `now` as input and
//! returns bytes, deadlines and events; nothing here reads the system clock,
//! spawns a task or draws from a global random number generator.

pub mod applemidi;
pub mod clock;
pub mod direct;
#[cfg(feature = "mdns")]
pub mod discovery;
pub mod driver;
pub mod netem;
pub mod participant;
pub mod relay;
pub mod relay_client;
pub mod reliable;
pub mod rtp;
pub mod secure;
pub mod sim;
