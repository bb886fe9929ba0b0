//! The transport seam: two channels of engine-level types between the
//! engine worker and whatever runs the network.
//!
//! The worker never sees a socket. It sends [`NetCommand`]s (join, leave, send
//! stamped events, set the local role, browse the LAN) and receives
//! [`NetEvent`]s (connection state, peers joining and leaving, remote MIDI with
//! its local arrival time, mapped sender time and recovered flag, per-peer
//! statistics, LAN peers found by mDNS), plus the frames of the session
//! document's reliable channel and clock-sync measurements both ways
//! ([`NetCommand::SendReliable`], [`NetEvent::Reliable`],
//! [`NetEvent::PeerClock`]). [`net_link`] makes both ends:
//!
//! - [`NetLink`] goes to the engine worker ([`crate::EngineWorker::spawn`]);
//! - [`NetPort`] goes to the network side: the transport participant's
//!   driver, through a small adapter that turns its driver events into
//!   [`NetEvent`]s and carries out [`NetCommand`]s.
//!
//! Engine tests drive a [`NetPort`] directly, which tests the worker's half of
//! this boundary; the transport's tests cover the other half.

use crate::StampedEvent;
use jam_core::{Beats, Micros, PeerId, ShortMessage};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;

/// Commands queued from the worker to the network side. When the queue is
/// full the worker drops the command and counts it (it never waits).
pub const NET_COMMAND_CAPACITY: usize = 1024;
/// Events queued from the network side to the worker.
pub const NET_EVENT_CAPACITY: usize = 4096;

/// Where to join a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionAddress {
    /// A peer's AppleMIDI control port, by address (`192.168.1.20:5004`,
    /// `[::1]:5004`).
    Direct(SocketAddr),
    /// A peer's control port, by host name (`studio.local:5004`).
    Host {
        /// Host name to resolve.
        host: String,
        /// Control port.
        port: u16,
    },
    /// A peer announced on the LAN by mDNS, by its service instance name
    /// (`lan:Alice's jam`).
    Lan(String),
}

/// Why text is not a [`SessionAddress`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Nothing was typed.
    #[error("empty session address")]
    Empty,
    /// No `:port` after the host.
    #[error("session address {0:?} has no port (write host:port)")]
    NoPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("session address {0:?} has an invalid port")]
    BadPort(String),
}

impl FromStr for SessionAddress {
    type Err = AddressError;

    /// Parses `ip:port`, `[ipv6]:port`, `host:port` or `lan:NAME`.
    fn from_str(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Some(name) = s.strip_prefix("lan:") {
            let name = name.trim();
            if name.is_empty() {
                return Err(AddressError::Empty);
            }
            return Ok(SessionAddress::Lan(name.to_string()));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(SessionAddress::Direct(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| AddressError::NoPort(s.to_string()))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| AddressError::BadPort(s.to_string()))?;
        if host.is_empty() || host.contains(':') {
            return Err(AddressError::NoPort(s.to_string()));
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => Ok(SessionAddress::Direct(SocketAddr::new(ip, port))),
            Err(_) => Ok(SessionAddress::Host {
                host: host.to_string(),
                port,
            }),
        }
    }
}

impl fmt::Display for SessionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionAddress::Direct(a) => write!(f, "{a}"),
            SessionAddress::Host { host, port } => write!(f, "{host}:{port}"),
            SessionAddress::Lan(name) => write!(f, "lan:{name}"),
        }
    }
}

/// A participant's musical role, announced to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Role {
    /// Let the session infer it from what is played.
    #[default]
    Auto,
    /// Drums, bass, comping: late notes snap to the grid.
    Rhythm,
    /// Lead lines: expression is kept.
    Melody,
    /// Pads and chords: notes of one chord are grouped.
    Harmony,
}

impl Role {
    /// Every role, in parameter order.
    pub const ALL: [Role; 4] = [Role::Auto, Role::Rhythm, Role::Melody, Role::Harmony];

    /// A stable small number (parameter order), for atomics.
    pub fn index(self) -> u8 {
        match self {
            Role::Auto => 0,
            Role::Rhythm => 1,
            Role::Melody => 2,
            Role::Harmony => 3,
        }
    }

    /// The role for [`Role::index`]; out-of-range values are `Auto`.
    pub fn from_index(i: u8) -> Role {
        Role::ALL.get(i as usize).copied().unwrap_or(Role::Auto)
    }

    /// Lower-case name for display.
    pub fn name(self) -> &'static str {
        match self {
            Role::Auto => "auto",
            Role::Rhythm => "rhythm",
            Role::Melody => "melody",
            Role::Harmony => "harmony",
        }
    }
}

/// What the worker asks of the network side.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NetCommand {
    /// Join (invite) a session at `address`, announcing `display_name`; use
    /// the identity key in `key_file` for the secure channel when given.
    Join {
        /// Where to join.
        address: SessionAddress,
        /// The name other participants see.
        display_name: String,
        /// The identity key file, if any.
        key_file: Option<PathBuf>,
    },
    /// Invite one more participant into the current session (without
    /// leaving it, unlike `Join`).
    Invite(SessionAddress),
    /// Leave the session (say goodbye to every peer).
    Leave,
    /// Send these locally played events to every peer, in order.
    SendMidi(Vec<StampedEvent>),
    /// Announce a new local role.
    SetRole(Role),
    /// Start (`true`) or stop browsing the LAN for peers by mDNS.
    BrowseLan(bool),
    /// Send one frame of the session document's reliable channel
    /// (`jam_transport::reliable`, first byte `0x4A`) to one peer.
    SendReliable {
        /// To whom.
        peer: PeerId,
        /// The frame.
        frame: Vec<u8>,
    },
}

/// The state of the connection to the session, for the editor and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not in a session.
    #[default]
    Idle,
    /// Joining `address`.
    Connecting(String),
    /// In a session.
    Connected(String),
    /// Joining or the session failed; the text says why.
    Failed(String),
    /// The network side has gone away (its channel closed).
    Offline,
}

/// Network figures for one peer, as the transport measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerNetStats {
    /// Smoothed round-trip time from clock sync, if measured yet.
    pub rtt: Option<Duration>,
    /// Packets the peer's sequence numbers say it sent.
    pub packets_expected: u64,
    /// Packets that never arrived.
    pub packets_lost: u64,
}

/// A peer found on the LAN by mDNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanPeer {
    /// The service instance name (what [`SessionAddress::Lan`] names).
    pub name: String,
    /// Its control port address.
    pub addr: SocketAddr,
}

/// What the network side tells the worker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NetEvent {
    /// A frame of the session document's reliable channel from a peer.
    Reliable {
        /// Who sent it.
        peer: PeerId,
        /// The frame (first byte `0x4A`).
        bytes: Vec<u8>,
    },
    /// A new clock-sync estimate against a peer (for the session clock).
    PeerClock {
        /// Who.
        peer: PeerId,
        /// Our local clock minus theirs, µs.
        local_minus_remote_us: i64,
        /// Round trip of the measurement, µs.
        rtt_us: u64,
    },
    /// The connection state changed.
    Connection(ConnectionState),
    /// A participant joined (or was already there when we joined).
    PeerJoined {
        /// Its stable identity.
        peer: PeerId,
        /// Its display name.
        name: String,
        /// Its announced role.
        role: Role,
        /// Its control port address, when the transport knows it.
        address: Option<SocketAddr>,
        /// Its device public key, when the transport knows it (a member of
        /// a session joined through `jamd`): the session document names it
        /// in its profile, which is how the engine finds this peer there.
        key: Option<[u8; 32]>,
    },
    /// A participant announced a new role.
    PeerRole {
        /// Who.
        peer: PeerId,
        /// The new role.
        role: Role,
    },
    /// A participant left or timed out.
    PeerLeft {
        /// Who.
        peer: PeerId,
        /// Why, in the transport's words (`ByeReceived`, `TimedOut`, ...).
        reason: Option<String>,
    },
    /// A MIDI event from a participant.
    Midi {
        /// Who played it.
        peer: PeerId,
        /// The message (channel as played).
        msg: ShortMessage,
        /// The sender's time for the event, mapped onto the local clock.
        sent_at: Micros,
        /// The beat the sender played it on, when the transport carries it
        /// (RTP-MIDI does not: `None` lets the engine take the beat of
        /// `sent_at` on its own timeline).
        beat: Option<Beats>,
        /// When its packet arrived (local clock).
        arrival: Micros,
        /// True when the recovery journal rebuilt it after a loss.
        recovered: bool,
    },
    /// New network figures for a participant.
    PeerStats {
        /// Who.
        peer: PeerId,
        /// The figures.
        stats: PeerNetStats,
    },
    /// The peers currently seen on the LAN (replaces the previous list).
    LanPeers(Vec<LanPeer>),
}

/// The worker's end of the seam.
#[derive(Debug)]
pub struct NetLink {
    /// Commands to the network side.
    pub commands: mpsc::Sender<NetCommand>,
    /// Events from the network side.
    pub events: mpsc::Receiver<NetEvent>,
}

/// The network side's end of the seam.
#[derive(Debug)]
pub struct NetPort {
    /// Commands from the worker.
    pub commands: mpsc::Receiver<NetCommand>,
    /// Events to the worker.
    pub events: mpsc::Sender<NetEvent>,
}

/// Makes the two connected ends of the seam.
pub fn net_link() -> (NetLink, NetPort) {
    let (cmd_tx, cmd_rx) = mpsc::channel(NET_COMMAND_CAPACITY);
    let (ev_tx, ev_rx) = mpsc::channel(NET_EVENT_CAPACITY);
    (
        NetLink {
            commands: cmd_tx,
            events: ev_rx,
        },
        NetPort {
            commands: cmd_rx,
            events: ev_tx,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<SessionAddress, AddressError>) {
        assert_eq!(text.parse::<SessionAddress>(), expected, "{text:?}");
    }

    #[test]
    fn session_addresses_parse_as_typed() {
        check(
            "127.0.0.1:5004",
            Ok(SessionAddress::Direct("127.0.0.1:5004".parse().unwrap())),
        );
        check(
            " [::1]:5004 ",
            Ok(SessionAddress::Direct("[::1]:5004".parse().unwrap())),
        );
        check(
            "studio.local:5004",
            Ok(SessionAddress::Host {
                host: "studio.local".into(),
                port: 5004,
            }),
        );
        check("lan:Alice", Ok(SessionAddress::Lan("Alice".into())));
        check("", Err(AddressError::Empty));
        check("lan:", Err(AddressError::Empty));
        check("studio", Err(AddressError::NoPort("studio".into())));
        check("studio:0", Err(AddressError::BadPort("studio:0".into())));
        check("studio:x", Err(AddressError::BadPort("studio:x".into())));
        check("::1", Err(AddressError::NoPort("::1".into())));
    }

    #[test]
    fn addresses_display_as_they_parse() {
        for s in ["127.0.0.1:5004", "studio.local:5004", "lan:Alice"] {
            assert_eq!(s.parse::<SessionAddress>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn roles_round_trip_through_their_index() {
        for r in Role::ALL {
            assert_eq!(Role::from_index(r.index()), r);
        }
        assert_eq!(Role::from_index(200), Role::Auto);
    }
}
