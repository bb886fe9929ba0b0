//! [`Endpoint`]: one local AppleMIDI participant and all its sessions, as a
//! sans-IO state machine.
//!
//! # Method groups (quinn's vocabulary)
//!
//! - **Construction:** [`Endpoint::new`]`(config, now)`.
//! - **Input:** [`Endpoint::handle_datagram`] for every datagram received on
//!   the control or data port, [`Endpoint::handle_timeout`] when the
//!   deadline from [`Endpoint::poll_timeout`] has passed.
//! - **Commands:** [`Endpoint::invite`], [`Endpoint::end`],
//!   [`Endpoint::close`], [`Endpoint::send_rtp`], [`Endpoint::send_feedback`].
//! - **Output:** [`Endpoint::poll_transmit`], [`Endpoint::poll_event`],
//!   [`Endpoint::poll_timeout`].
//! - **Getters:** [`Endpoint::peer`], [`Endpoint::peers`],
//!   [`Endpoint::clock_map`], [`Endpoint::rtt_stats`], [`Endpoint::stats`],
//!   [`Endpoint::ssrc`], [`Endpoint::name`].
//!
//! After every input or command, a driver drains `poll_transmit` until it
//! returns `None` (sending each datagram), then `poll_event`, then asks
//! `poll_timeout` for the next deadline. `now` must never go backwards.
//!
//! # Behaviour (`rtp-midi.md` §6)
//!
//! *Initiator* ([`Endpoint::invite`]): sends `IN` to the peer's control port,
//! then, once the control `OK` arrives, to its data port (control + 1). Each
//! unanswered `IN` is repeated every [`SessionTimers::invite_retry`] up to
//! [`SessionTimers::invite_max_tries`] tries per port, then the invitation
//! fails. `OK`/`NO` are matched by token and source address. The data `OK`
//! must name the same SSRC as the control `OK` (one SSRC per participant,
//! pitfall 9), or the invitation fails with [`FailReason::SsrcMismatch`].
//! Once joined it runs `CK` rounds: a burst of
//! [`SessionTimers::sync_burst_rounds`] rounds
//! [`SessionTimers::sync_burst_interval`] apart, then one every
//! [`SessionTimers::sync_interval`]; after
//! [`SessionTimers::sync_max_unanswered`] consecutive unanswered rounds the
//! peer is gone (`BY`, [`LeaveReason::TimedOut`]). It does not re-invite by
//! itself: the application decides.
//!
//! *Responder*: answers every `IN` at its source address. A control `IN` is
//! accepted per [`AcceptPolicy`] (and while fewer than
//! [`EndpointConfig::max_peers`] sessions exist), else `NO`. A data `IN` is
//! accepted only from a participant whose control handshake completed (same
//! SSRC and IP address; the token may differ, as the `rtpmidi` crate sends a
//! fresh one, and the `OK` echoes it), else `NO`; a half-open session is dropped
//! after [`SessionTimers::half_open`]. A joined session that hears no `CK`
//! for [`SessionTimers::sync_silence`] ends (`BY`, [`LeaveReason::TimedOut`]).
//! Repeated `IN`s (lost `OK`s) are answered again, not treated as new
//! sessions; a control `IN` with a new token from the same address and SSRC
//! replaces the old session ([`LeaveReason::Superseded`]).
//!
//! *Both roles*: a `BY` is accepted on either port and validated by SSRC and
//! source address, never by token (macOS sends token 0, pitfall 7). A `CK0`
//! from the peer is answered whoever initiated the session, and every
//! completed exchange feeds the per-peer [`ClockEstimator`]. `RS` and `RL` are
//! surfaced as events; unknown commands, garbage and RTP from unknown
//! sources are dropped and counted in [`EndpointStats`]. RTP packets are
//! matched to a session by SSRC *and* source address (macOS reuses SSRCs
//! across sessions) and handed up as opaque bytes.
//!
//! All randomness (the SSRC unless configured, initiator tokens) comes from
//! [`EndpointConfig::seed`]. Session clock stamps are
//! [`Ticks::from_local`]`(now)`: the RTP streams on top must stamp packets
//! with the same clock ([`Endpoint::session_ticks`]).
//!
//! Every handle returned by [`Endpoint::invite`] ends with exactly one of
//! [`EndpointEvent::InvitationRejected`], [`EndpointEvent::InvitationFailed`]
//! or [`EndpointEvent::Left`]; a handle announced by
//! [`EndpointEvent::Joined`] ends with exactly one [`EndpointEvent::Left`].
//! Sessions we responded to are only announced once both handshakes are
//! done; half-open ones disappear silently (counted).

use super::clock_sync::{ClockEstimator, ClockEstimatorConfig, RttStats, Sample};
use super::packet::{
    self, BitrateLimit, ClockSync, Command, DatagramKind, End, Feedback, Invitation,
};
use super::{Port, Transmit};
use crate::clock::{ClockMap, Ticks};
use jam_core::Micros;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A session with one remote participant, as the application sees it.
///
/// Handles are never reused by an endpoint, so a stale handle can only fail
/// to find its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerHandle(pub u64);

impl fmt::Display for PeerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// Which invitations a responder accepts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AcceptPolicy {
    /// Accept every invitation (up to [`EndpointConfig::max_peers`]).
    #[default]
    AcceptAll,
    /// Answer every invitation with `NO`.
    RejectAll,
    /// Accept only invitations whose name is in the list (exact match); a
    /// nameless invitation is rejected.
    AllowNames(Vec<String>),
}

impl AcceptPolicy {
    fn accepts(&self, name: Option<&str>) -> bool {
        match self {
            AcceptPolicy::AcceptAll => true,
            AcceptPolicy::RejectAll => false,
            AcceptPolicy::AllowNames(names) => name.is_some_and(|n| names.iter().any(|a| a == n)),
        }
    }
}

/// The session timers (`rtp-midi.md` §6.8). Defaults follow Apple's note
/// and the open implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimers {
    /// Time between two tries of an unanswered `IN` (1 s).
    pub invite_retry: Duration,
    /// `IN`s sent per port before the invitation fails (12, as Apple).
    pub invite_max_tries: u32,
    /// How long a responder waits for the data-port `IN` after its control
    /// `OK` (5 s, as mt32-pi).
    pub half_open: Duration,
    /// `CK` rounds in the start-up burst, the first one right after joining (6).
    pub sync_burst_rounds: u32,
    /// Time between burst rounds (1 s).
    pub sync_burst_interval: Duration,
    /// Time between steady rounds (10 s; Apple's upper bound is 60 s, which
    /// collides with peers' 45-60 s timeouts, pitfall 12).
    pub sync_interval: Duration,
    /// Consecutive unanswered rounds after which the initiator gives the
    /// peer up (3), provided nothing at all was heard from it for
    /// [`SessionTimers::sync_dead_after`].
    pub sync_max_unanswered: u32,
    /// How long a peer must have been silent (no `CK` answer, no RTP, no
    /// feedback) before unanswered rounds end its session (30 s, as
    /// `rtp-midi.md` §6.3 suggests: "3 over 30 s"). Without it, the 1 s
    /// start-up burst would give a peer up after 3 s of bad luck on a lossy
    /// path while its MIDI was still arriving.
    pub sync_dead_after: Duration,
    /// How long a responder waits for any `CK` before ending the session
    /// (60 s).
    pub sync_silence: Duration,
}

impl Default for SessionTimers {
    fn default() -> Self {
        SessionTimers {
            invite_retry: Duration::from_secs(1),
            invite_max_tries: 12,
            half_open: Duration::from_secs(5),
            sync_burst_rounds: 6,
            sync_burst_interval: Duration::from_secs(1),
            sync_interval: Duration::from_secs(10),
            sync_max_unanswered: 3,
            sync_dead_after: Duration::from_secs(30),
            sync_silence: Duration::from_secs(60),
        }
    }
}

/// Settings of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The local session name sent in `IN` and `OK`.
    pub name: String,
    /// The local SSRC, used on both ports and in every session; drawn from
    /// `seed` when `None`.
    pub ssrc: Option<u32>,
    /// Seed of every random choice (SSRC, initiator tokens).
    pub seed: u64,
    /// Which invitations to accept.
    pub accept: AcceptPolicy,
    /// Sessions (in any state) beyond which invitations are rejected and
    /// [`Endpoint::invite`] fails.
    pub max_peers: usize,
    /// Timer settings.
    pub timers: SessionTimers,
    /// Clock-offset history per peer.
    pub clock: ClockEstimatorConfig,
}

impl EndpointConfig {
    /// Defaults for everything but the name and the seed.
    pub fn new(name: impl Into<String>, seed: u64) -> Self {
        EndpointConfig {
            name: name.into(),
            ssrc: None,
            seed,
            accept: AcceptPolicy::AcceptAll,
            max_peers: 64,
            timers: SessionTimers::default(),
            clock: ClockEstimatorConfig::default(),
        }
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// We invited; waiting for the control-port `OK`.
    InvitingControl,
    /// We invited, the control handshake is done; waiting for the data-port `OK`.
    InvitingData,
    /// We accepted the control `IN`; waiting for the data-port `IN`.
    AwaitingData,
    /// Both handshakes are done.
    Joined,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaveReason {
    /// The peer sent `BY`.
    ByeReceived,
    /// The peer stopped answering `CK` (initiator) or sending it (responder).
    TimedOut,
    /// [`Endpoint::end`] or [`Endpoint::close`] was called.
    EndedLocally,
    /// The peer invited again from the same address with the same SSRC and
    /// a new token (it restarted); the new session gets a new handle.
    Superseded,
}

/// Why an invitation we sent failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// No `OK` or `NO` came back on `port` within the allowed tries.
    NoAnswer {
        /// The port whose handshake went unanswered.
        port: Port,
    },
    /// The data-port `OK` named another SSRC than the control-port `OK`
    /// (pitfall 9: one SSRC per participant on both ports).
    SsrcMismatch {
        /// SSRC in the control `OK`.
        control: u32,
        /// SSRC in the data `OK`.
        data: u32,
    },
}

/// What an [`Endpoint`] reports, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// Both handshakes completed: RTP may flow both ways.
    Joined {
        /// The session.
        peer: PeerHandle,
        /// The remote session name, if it sent one.
        name: Option<String>,
        /// The remote SSRC (the same on both ports).
        ssrc: u32,
        /// The remote control port address.
        control: SocketAddr,
        /// The remote data port address.
        data: SocketAddr,
        /// True if we sent the invitation.
        initiated_by_us: bool,
    },
    /// The peer answered our invitation with `NO` (or ended it with `BY`
    /// before it completed).
    InvitationRejected {
        /// The session handle returned by [`Endpoint::invite`].
        peer: PeerHandle,
        /// The name the peer sent with its `NO`, if any.
        name: Option<String>,
        /// The control address we invited.
        control: SocketAddr,
    },
    /// Our invitation failed without a rejection.
    InvitationFailed {
        /// The session handle returned by [`Endpoint::invite`].
        peer: PeerHandle,
        /// The control address we invited.
        control: SocketAddr,
        /// What went wrong.
        reason: FailReason,
    },
    /// A session ended (after [`EndpointEvent::Joined`], or an invitation of
    /// ours cancelled with [`Endpoint::end`]).
    Left {
        /// The session.
        peer: PeerHandle,
        /// Why.
        reason: LeaveReason,
    },
    /// An RTP packet from the peer's SSRC and data address, untouched.
    Rtp {
        /// The session.
        peer: PeerHandle,
        /// The whole UDP payload.
        packet: Vec<u8>,
    },
    /// The peer acknowledged our RTP stream up to `seq` (`RS`).
    Feedback {
        /// The session.
        peer: PeerHandle,
        /// The highest sequence number the peer holds.
        seq: u16,
    },
    /// A `CK` exchange completed; the estimate may have changed.
    ClockUpdated {
        /// The session.
        peer: PeerHandle,
        /// Local session clock minus the peer's, from the best sample.
        clock: ClockMap,
        /// Round-trip statistics over the estimator's window.
        rtt: RttStats,
    },
    /// The peer asked us to keep our rate below `limit` (`RL`).
    BitrateLimit {
        /// The session.
        peer: PeerHandle,
        /// The limit (bits per second assumed).
        limit: u32,
    },
}

/// A snapshot of one session, from [`Endpoint::peer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The session.
    pub handle: PeerHandle,
    /// Where it stands.
    pub state: PeerState,
    /// True if we sent the invitation.
    pub initiated_by_us: bool,
    /// The remote session name, once known.
    pub name: Option<String>,
    /// The remote SSRC, once known.
    pub ssrc: Option<u32>,
    /// The remote control address.
    pub control: SocketAddr,
    /// The remote data address (control + 1 until the data handshake says
    /// otherwise).
    pub data: SocketAddr,
    /// Local minus remote session clock, once a `CK` exchange completed.
    pub clock: Option<ClockMap>,
    /// Round-trip statistics, once a `CK` exchange completed.
    pub rtt: Option<RttStats>,
    /// The last `RL` limit the peer sent.
    pub bitrate_limit: Option<u32>,
    /// RTP packets received from the peer.
    pub rtp_received: u64,
    /// RTP packets queued to the peer.
    pub rtp_sent: u64,
}

/// Counters of what the endpoint dropped or refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that are neither a session command nor RTP.
    pub garbage: u64,
    /// `FF FF` datagrams that failed to decode (truncated or invalid).
    pub malformed_commands: u64,
    /// Well-formed commands with an unknown code (ignored).
    pub unknown_commands: u64,
    /// Valid commands that match no session (wrong SSRC, address or token).
    pub unmatched_commands: u64,
    /// RTP packets whose SSRC and source address match no joined session.
    pub rtp_unknown_source: u64,
    /// RTP packets that arrived on the control port.
    pub rtp_on_control_port: u64,
    /// Invitations we answered with `NO`.
    pub invitations_refused: u64,
    /// Half-open responder sessions dropped for lack of a data-port `IN`.
    pub half_open_dropped: u64,
    /// `CK` messages that were stale, duplicated or inconsistent.
    pub stale_clock_syncs: u64,
}

/// Why [`Endpoint::invite`] refused to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// The control port is 65535, so there is no data port N+1.
    #[error("control port of {0} leaves no room for the data port")]
    NoDataPort(SocketAddr),
    /// [`EndpointConfig::max_peers`] sessions exist already.
    #[error("too many sessions: {0} already exist")]
    TooManyPeers(usize),
}

/// Why a command about one session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No session has this handle (never existed, or ended).
    #[error("no session {0}")]
    UnknownPeer(PeerHandle),
    /// The session exists but has not joined yet.
    #[error("session {0} has not joined yet")]
    NotJoined(PeerHandle),
}

/// Every timer of a session; the earliest armed one across all sessions is
/// the endpoint's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Initiator: repeat the unanswered `IN` or give up.
    InviteRetry = 0,
    /// Responder: drop a session whose data `IN` has not come.
    HalfOpen = 1,
    /// Initiator: start the next `CK` round (and count the last unanswered).
    SyncRound = 2,
    /// Responder: end a session that has been silent on `CK`.
    SyncSilence = 3,
}

const TIMERS: [Timer; 4] = [
    Timer::InviteRetry,
    Timer::HalfOpen,
    Timer::SyncRound,
    Timer::SyncSilence,
];

#[derive(Debug, Clone, Default)]
struct TimerTable([Option<Micros>; 4]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Micros) {
        self.0[t as usize] = Some(at);
    }
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn next(&self) -> Option<Micros> {
        self.0.iter().flatten().min().copied()
    }
    fn expired(&self, t: Timer, now: Micros) -> bool {
        self.0[t as usize].is_some_and(|at| at <= now)
    }
}

#[derive(Debug, Clone)]
struct Peer {
    state: PeerState,
    initiated_by_us: bool,
    token: u32,
    control: SocketAddr,
    data: SocketAddr,
    remote_ssrc: Option<u32>,
    remote_name: Option<String>,
    /// `IN`s sent on the current port (initiator).
    tries: u32,
    timers: TimerTable,
    clock: ClockEstimator,
    /// Initiator: rounds started so far.
    sync_rounds: u32,
    /// Initiator: `t1` of the round still waiting for its `CK1`.
    pending_ck: Option<u64>,
    /// Initiator: consecutive rounds that got no `CK1`.
    unanswered: u32,
    /// Last time any datagram of this session arrived (or it was created).
    last_heard: Micros,
    /// Responder side of exchanges: `t1` of the last `CK2` used, to drop
    /// duplicates.
    last_ck2_t1: Option<u64>,
    bitrate_limit: Option<u32>,
    rtp_received: u64,
    rtp_sent: u64,
}

impl Peer {
    fn is_from(&self, from: SocketAddr) -> bool {
        from == self.control || from == self.data
    }
}

/// One local AppleMIDI participant and its sessions. See the
/// [module docs](self) for the method groups, poll order and behaviour.
pub struct Endpoint {
    config: EndpointConfig,
    ssrc: u32,
    rng: StdRng,
    next_handle: u64,
    peers: BTreeMap<PeerHandle, Peer>,
    /// Joined sessions by (remote data address, remote SSRC): the RTP path.
    by_source: HashMap<(SocketAddr, u32), PeerHandle>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
    stats: EndpointStats,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.config.name)
            .field("ssrc", &format_args!("{:#010x}", self.ssrc))
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

fn data_addr_of(control: SocketAddr) -> Option<SocketAddr> {
    let port = control.port().checked_add(1)?;
    Some(SocketAddr::new(control.ip(), port))
}

impl Endpoint {
    /// A participant with no sessions. `now` is accepted for symmetry with
    /// the other inputs (nothing is scheduled until a session exists).
    pub fn new(config: EndpointConfig, now: Micros) -> Self {
        let _ = now;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let ssrc = config.ssrc.unwrap_or_else(|| rng.random::<u32>());
        Endpoint {
            config,
            ssrc,
            rng,
            next_handle: 1,
            peers: BTreeMap::new(),
            by_source: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
        }
    }

    // ----- getters -----

    /// The local SSRC (the same on both ports and in every session).
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The local session name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The local session clock at `now`: the clock of `CK` stamps, and of
    /// the RTP timestamps the streams on top must send.
    pub fn session_ticks(now: Micros) -> Ticks {
        Ticks::from_local(now)
    }

    /// Every session in any state, in handle order.
    pub fn peers(&self) -> impl Iterator<Item = PeerHandle> + '_ {
        self.peers.keys().copied()
    }

    /// A snapshot of one session, or `None` if it does not exist (any more).
    pub fn peer(&self, handle: PeerHandle) -> Option<PeerInfo> {
        let p = self.peers.get(&handle)?;
        Some(PeerInfo {
            handle,
            state: p.state,
            initiated_by_us: p.initiated_by_us,
            name: p.remote_name.clone(),
            ssrc: p.remote_ssrc,
            control: p.control,
            data: p.data,
            clock: p.clock.clock_map(),
            rtt: p.clock.rtt_stats(),
            bitrate_limit: p.bitrate_limit,
            rtp_received: p.rtp_received,
            rtp_sent: p.rtp_sent,
        })
    }

    /// The state of one session.
    pub fn peer_state(&self, handle: PeerHandle) -> Option<PeerState> {
        self.peers.get(&handle).map(|p| p.state)
    }

    /// Local minus remote session clock for one session, once known.
    pub fn clock_map(&self, handle: PeerHandle) -> Option<ClockMap> {
        self.peers.get(&handle)?.clock.clock_map()
    }

    /// Round-trip statistics for one session, once known.
    pub fn rtt_stats(&self, handle: PeerHandle) -> Option<RttStats> {
        self.peers.get(&handle)?.clock.rtt_stats()
    }

    /// The joined session an RTP packet from `from` with `ssrc` belongs to.
    pub fn peer_by_source(&self, from: SocketAddr, ssrc: u32) -> Option<PeerHandle> {
        self.by_source.get(&(from, ssrc)).copied()
    }

    /// Drop and refusal counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    // ----- output -----

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// The earliest time [`Endpoint::handle_timeout`] must be called, if any
    /// timer is armed.
    pub fn poll_timeout(&self) -> Option<Micros> {
        self.peers.values().filter_map(|p| p.timers.next()).min()
    }

    // ----- commands -----

    /// Invites the participant whose control port is `control` (its data
    /// port is assumed to be `control + 1`, as the protocol defines).
    pub fn invite(&mut self, now: Micros, control: SocketAddr) -> Result<PeerHandle, InviteError> {
        let data = data_addr_of(control).ok_or(InviteError::NoDataPort(control))?;
        if self.peers.len() >= self.config.max_peers {
            return Err(InviteError::TooManyPeers(self.peers.len()));
        }
        let handle = self.new_handle();
        let token = self.rng.random::<u32>();
        let mut peer = self.new_peer(now, true, token, control, data);
        peer.state = PeerState::InvitingControl;
        peer.tries = 1;
        peer.timers
            .set(Timer::InviteRetry, now + self.config.timers.invite_retry);
        self.peers.insert(handle, peer);
        let inv = self.our_invitation(token, true);
        self.send_command(Port::Control, control, &Command::Invitation(inv));
        Ok(handle)
    }

    /// Ends a session: sends `BY` to the peer's control port and reports
    /// [`LeaveReason::EndedLocally`]. Works in any state (an invitation in
    /// progress is cancelled).
    pub fn end(&mut self, now: Micros, handle: PeerHandle) -> Result<(), SendError> {
        let _ = now;
        let peer = self
            .peers
            .get(&handle)
            .ok_or(SendError::UnknownPeer(handle))?;
        let bye = Command::End(End {
            token: peer.token,
            ssrc: self.ssrc,
        });
        let control = peer.control;
        // A half-open session we respond to was never announced: it leaves
        // without an event.
        let announced = peer.initiated_by_us || peer.state == PeerState::Joined;
        self.send_command(Port::Control, control, &bye);
        self.remove(handle, announced.then_some(LeaveReason::EndedLocally));
        Ok(())
    }

    /// Ends every session (see [`Endpoint::end`]).
    pub fn close(&mut self, now: Micros) {
        let handles: Vec<PeerHandle> = self.peers.keys().copied().collect();
        for h in handles {
            let _ = self.end(now, h);
        }
    }

    /// Queues an RTP packet (opaque bytes, sent as they are) to the peer's
    /// data port. The packet's SSRC should be [`Endpoint::ssrc`].
    pub fn send_rtp(
        &mut self,
        handle: PeerHandle,
        packet: impl Into<Vec<u8>>,
    ) -> Result<(), SendError> {
        let peer = self.joined_mut(handle)?;
        peer.rtp_sent += 1;
        let to = peer.data;
        self.transmits.push_back(Transmit {
            from: Port::Data,
            to,
            payload: packet.into(),
        });
        Ok(())
    }

    /// Sends `RS` (we hold the peer's stream up to `seq`) to the peer's
    /// control port.
    pub fn send_feedback(&mut self, handle: PeerHandle, seq: u16) -> Result<(), SendError> {
        let to = self.joined_mut(handle)?.control;
        let rs = Command::Feedback(Feedback {
            ssrc: self.ssrc,
            seq,
        });
        self.send_command(Port::Control, to, &rs);
        Ok(())
    }

    /// Asks the peer to keep its rate below `limit` (`RL`, on the control port).
    pub fn send_bitrate_limit(&mut self, handle: PeerHandle, limit: u32) -> Result<(), SendError> {
        let to = self.joined_mut(handle)?.control;
        let rl = Command::BitrateLimit(BitrateLimit {
            ssrc: self.ssrc,
            limit,
        });
        self.send_command(Port::Control, to, &rl);
        Ok(())
    }

    // ----- input -----

    /// A datagram arrived on `local` from `from`.
    pub fn handle_datagram(&mut self, now: Micros, local: Port, from: SocketAddr, bytes: &[u8]) {
        match packet::classify(bytes) {
            DatagramKind::Garbage => self.stats.garbage += 1,
            DatagramKind::Rtp => {
                if let Some(ssrc) = packet::rtp_ssrc(bytes) {
                    self.heard(now, from, ssrc);
                }
                self.handle_rtp(local, from, bytes)
            }
            DatagramKind::Command => match Command::decode(bytes) {
                Ok(cmd) => {
                    if let Some(ssrc) = cmd.ssrc() {
                        self.heard(now, from, ssrc);
                    }
                    self.handle_command(now, local, from, cmd)
                }
                Err(_) => self.stats.malformed_commands += 1,
            },
        }
    }

    /// Notes that the session of `ssrc` at `from` is alive.
    fn heard(&mut self, now: Micros, from: SocketAddr, ssrc: u32) {
        for p in self.peers.values_mut() {
            if p.remote_ssrc == Some(ssrc) && p.is_from(from) {
                p.last_heard = now;
            }
        }
    }

    /// Runs every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Micros) {
        let due: Vec<PeerHandle> = self
            .peers
            .iter()
            .filter(|(_, p)| p.timers.next().is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            for timer in TIMERS {
                let Some(p) = self.peers.get(&h) else { break };
                if p.timers.expired(timer, now) {
                    self.on_timer(now, h, timer);
                }
            }
        }
    }

    // ----- internals -----

    fn new_handle(&mut self) -> PeerHandle {
        let h = PeerHandle(self.next_handle);
        self.next_handle += 1;
        h
    }

    fn new_peer(
        &self,
        now: Micros,
        initiated_by_us: bool,
        token: u32,
        control: SocketAddr,
        data: SocketAddr,
    ) -> Peer {
        Peer {
            state: PeerState::InvitingControl,
            initiated_by_us,
            token,
            control,
            data,
            remote_ssrc: None,
            remote_name: None,
            tries: 0,
            timers: TimerTable::default(),
            clock: ClockEstimator::new(self.config.clock),
            sync_rounds: 0,
            pending_ck: None,
            unanswered: 0,
            last_heard: now,
            last_ck2_t1: None,
            bitrate_limit: None,
            rtp_received: 0,
            rtp_sent: 0,
        }
    }

    fn our_invitation(&self, token: u32, with_name: bool) -> Invitation {
        Invitation {
            token,
            ssrc: self.ssrc,
            name: with_name.then(|| self.config.name.clone()),
        }
    }

    fn send_command(&mut self, from: Port, to: SocketAddr, cmd: &Command) {
        self.transmits.push_back(Transmit {
            from,
            to,
            payload: cmd.to_vec(),
        });
    }

    fn joined_mut(&mut self, handle: PeerHandle) -> Result<&mut Peer, SendError> {
        let peer = self
            .peers
            .get_mut(&handle)
            .ok_or(SendError::UnknownPeer(handle))?;
        if peer.state != PeerState::Joined {
            return Err(SendError::NotJoined(handle));
        }
        Ok(peer)
    }

    /// Forgets a session and reports `reason` if given.
    fn remove(&mut self, handle: PeerHandle, reason: Option<LeaveReason>) {
        if let Some(p) = self.peers.remove(&handle)
            && let Some(ssrc) = p.remote_ssrc
            && self.by_source.get(&(p.data, ssrc)) == Some(&handle)
        {
            self.by_source.remove(&(p.data, ssrc));
        }
        if let Some(reason) = reason {
            self.events.push_back(EndpointEvent::Left {
                peer: handle,
                reason,
            });
        }
    }

    fn handle_rtp(&mut self, local: Port, from: SocketAddr, bytes: &[u8]) {
        if local == Port::Control {
            self.stats.rtp_on_control_port += 1;
            return;
        }
        let Some(ssrc) = packet::rtp_ssrc(bytes) else {
            self.stats.garbage += 1;
            return;
        };
        let Some(&handle) = self.by_source.get(&(from, ssrc)) else {
            self.stats.rtp_unknown_source += 1;
            return;
        };
        if let Some(p) = self.peers.get_mut(&handle) {
            p.rtp_received += 1;
        }
        self.events.push_back(EndpointEvent::Rtp {
            peer: handle,
            packet: bytes.to_vec(),
        });
    }

    fn handle_command(&mut self, now: Micros, local: Port, from: SocketAddr, cmd: Command) {
        match cmd {
            Command::Invitation(inv) => match local {
                Port::Control => self.on_control_invitation(now, from, inv),
                Port::Data => self.on_data_invitation(now, from, inv),
            },
            Command::Accept(inv) => self.on_accept(now, local, from, inv),
            Command::Reject(inv) => self.on_reject(local, from, inv),
            Command::End(end) => self.on_end(from, end),
            Command::ClockSync(ck) => self.on_clock_sync(now, from, ck),
            Command::Feedback(fb) => match self.joined_from(from, fb.ssrc) {
                Some(peer) => self
                    .events
                    .push_back(EndpointEvent::Feedback { peer, seq: fb.seq }),
                None => self.stats.unmatched_commands += 1,
            },
            Command::BitrateLimit(rl) => match self.joined_from(from, rl.ssrc) {
                Some(peer) => {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.bitrate_limit = Some(rl.limit);
                    }
                    self.events.push_back(EndpointEvent::BitrateLimit {
                        peer,
                        limit: rl.limit,
                    });
                }
                None => self.stats.unmatched_commands += 1,
            },
            Command::Unknown { .. } => self.stats.unknown_commands += 1,
        }
    }

    /// The joined session whose remote SSRC is `ssrc` and one of whose
    /// remote addresses is `from`.
    fn joined_from(&self, from: SocketAddr, ssrc: u32) -> Option<PeerHandle> {
        self.peers
            .iter()
            .find(|(_, p)| {
                p.state == PeerState::Joined && p.remote_ssrc == Some(ssrc) && p.is_from(from)
            })
            .map(|(h, _)| *h)
    }

    fn refuse(&mut self, port: Port, to: SocketAddr, token: u32) {
        self.stats.invitations_refused += 1;
        let no = Command::Reject(self.our_invitation(token, false));
        self.send_command(port, to, &no);
    }

    fn accept_reply(&mut self, port: Port, to: SocketAddr, token: u32) {
        let ok = Command::Accept(self.our_invitation(token, true));
        self.send_command(port, to, &ok);
    }

    fn on_control_invitation(&mut self, now: Micros, from: SocketAddr, inv: Invitation) {
        // Sessions we respond to, opened by this address and SSRC.
        let existing = self
            .peers
            .iter()
            .find(|(_, p)| {
                !p.initiated_by_us && p.control == from && p.remote_ssrc == Some(inv.ssrc)
            })
            .map(|(h, p)| (*h, p.token, p.state));
        if let Some((handle, token, state)) = existing {
            if token == inv.token {
                // Our OK was lost: answer again, nothing else changes.
                self.accept_reply(Port::Control, from, inv.token);
                return;
            }
            // Same participant, new token: it restarted its session.
            let reason = (state == PeerState::Joined).then_some(LeaveReason::Superseded);
            self.remove(handle, reason);
        }
        if !self.config.accept.accepts(inv.name.as_deref())
            || self.peers.len() >= self.config.max_peers
        {
            self.refuse(Port::Control, from, inv.token);
            return;
        }
        let Some(data) = data_addr_of(from) else {
            self.refuse(Port::Control, from, inv.token);
            return;
        };
        let handle = self.new_handle();
        let mut peer = self.new_peer(now, false, inv.token, from, data);
        peer.state = PeerState::AwaitingData;
        peer.remote_ssrc = Some(inv.ssrc);
        peer.remote_name = inv.name;
        peer.timers
            .set(Timer::HalfOpen, now + self.config.timers.half_open);
        self.peers.insert(handle, peer);
        self.accept_reply(Port::Control, from, inv.token);
    }

    fn on_data_invitation(&mut self, now: Micros, from: SocketAddr, inv: Invitation) {
        let found = self
            .peers
            .iter()
            .find(|(_, p)| {
                // Not matched by token: the `rtpmidi` crate invites the data
                // port with a fresh token. SSRC and IP tie it to the control
                // handshake; the OK echoes the data IN's token.
                !p.initiated_by_us
                    && p.remote_ssrc == Some(inv.ssrc)
                    && p.control.ip() == from.ip()
                    && (p.state == PeerState::AwaitingData
                        || (p.state == PeerState::Joined && p.data == from))
            })
            .map(|(h, _)| *h);
        let Some(handle) = found else {
            // No completed control handshake for this participant.
            self.refuse(Port::Data, from, inv.token);
            return;
        };
        let silence = now + self.config.timers.sync_silence;
        let Some(p) = self.peers.get_mut(&handle) else {
            return;
        };
        if p.state == PeerState::AwaitingData {
            p.state = PeerState::Joined;
            p.data = from;
            p.timers.stop(Timer::HalfOpen);
            p.timers.set(Timer::SyncSilence, silence);
            if inv.name.is_some() && p.remote_name.is_none() {
                p.remote_name = inv.name;
            }
            let event = EndpointEvent::Joined {
                peer: handle,
                name: p.remote_name.clone(),
                ssrc: inv.ssrc,
                control: p.control,
                data: from,
                initiated_by_us: false,
            };
            self.by_source.insert((from, inv.ssrc), handle);
            self.accept_reply(Port::Data, from, inv.token);
            self.events.push_back(event);
        } else {
            // A repeated data IN: our OK was lost.
            self.accept_reply(Port::Data, from, inv.token);
        }
    }

    /// The session we initiated that an `OK`/`NO` on `local` from `from`
    /// with `token` answers.
    fn invited(&self, local: Port, from: SocketAddr, token: u32) -> Option<PeerHandle> {
        self.peers
            .iter()
            .find(|(_, p)| {
                p.initiated_by_us
                    && p.token == token
                    && match (local, p.state) {
                        (Port::Control, PeerState::InvitingControl) => from == p.control,
                        (Port::Data, PeerState::InvitingData) => from == p.data,
                        _ => false,
                    }
            })
            .map(|(h, _)| *h)
    }

    fn on_accept(&mut self, now: Micros, local: Port, from: SocketAddr, inv: Invitation) {
        let Some(handle) = self.invited(local, from, inv.token) else {
            // Duplicates of OKs already used end up here too.
            self.stats.unmatched_commands += 1;
            return;
        };
        let retry = now + self.config.timers.invite_retry;
        let Some(p) = self.peers.get_mut(&handle) else {
            return;
        };
        match local {
            Port::Control => {
                p.state = PeerState::InvitingData;
                p.remote_ssrc = Some(inv.ssrc);
                p.remote_name = inv.name;
                p.tries = 1;
                p.timers.set(Timer::InviteRetry, retry);
                let (to, token) = (p.data, p.token);
                let invitation = Command::Invitation(self.our_invitation(token, true));
                self.send_command(Port::Data, to, &invitation);
            }
            Port::Data => {
                let control_ssrc = p.remote_ssrc.unwrap_or(inv.ssrc);
                if control_ssrc != inv.ssrc {
                    let (control, token) = (p.control, p.token);
                    let bye = Command::End(End {
                        token,
                        ssrc: self.ssrc,
                    });
                    self.send_command(Port::Control, control, &bye);
                    self.remove(handle, None);
                    self.events.push_back(EndpointEvent::InvitationFailed {
                        peer: handle,
                        control,
                        reason: FailReason::SsrcMismatch {
                            control: control_ssrc,
                            data: inv.ssrc,
                        },
                    });
                    return;
                }
                p.state = PeerState::Joined;
                p.timers.stop(Timer::InviteRetry);
                if p.remote_name.is_none() {
                    p.remote_name = inv.name;
                }
                let event = EndpointEvent::Joined {
                    peer: handle,
                    name: p.remote_name.clone(),
                    ssrc: inv.ssrc,
                    control: p.control,
                    data: p.data,
                    initiated_by_us: true,
                };
                self.by_source.insert((p.data, inv.ssrc), handle);
                self.events.push_back(event);
                self.start_sync_round(now, handle);
            }
        }
    }

    fn on_reject(&mut self, local: Port, from: SocketAddr, inv: Invitation) {
        let Some(handle) = self.invited(local, from, inv.token) else {
            self.stats.unmatched_commands += 1;
            return;
        };
        let Some(p) = self.peers.get(&handle) else {
            return;
        };
        let (control, token) = (p.control, p.token);
        if local == Port::Data {
            // The control handshake had completed: close it.
            let bye = Command::End(End {
                token,
                ssrc: self.ssrc,
            });
            self.send_command(Port::Control, control, &bye);
        }
        self.remove(handle, None);
        self.events.push_back(EndpointEvent::InvitationRejected {
            peer: handle,
            name: inv.name,
            control,
        });
    }

    fn on_end(&mut self, from: SocketAddr, end: End) {
        // Validated by SSRC and address; the token is ignored (pitfall 7).
        let found = self
            .peers
            .iter()
            .find(|(_, p)| p.remote_ssrc == Some(end.ssrc) && p.is_from(from))
            .map(|(h, p)| (*h, p.state, p.control));
        let Some((handle, state, control)) = found else {
            self.stats.unmatched_commands += 1;
            return;
        };
        match state {
            PeerState::Joined => self.remove(handle, Some(LeaveReason::ByeReceived)),
            PeerState::InvitingData => {
                self.remove(handle, None);
                self.events.push_back(EndpointEvent::InvitationRejected {
                    peer: handle,
                    name: None,
                    control,
                });
            }
            // Half-open sessions were never announced.
            PeerState::AwaitingData | PeerState::InvitingControl => self.remove(handle, None),
        }
    }

    fn on_clock_sync(&mut self, now: Micros, from: SocketAddr, ck: ClockSync) {
        let Some(handle) = self.joined_from(from, ck.ssrc) else {
            self.stats.unmatched_commands += 1;
            return;
        };
        let ticks = Ticks::from_local(now).0;
        let silence = now + self.config.timers.sync_silence;
        let ssrc = self.ssrc;
        let Some(p) = self.peers.get_mut(&handle) else {
            return;
        };
        let [t1, t2, t3] = ck.timestamps;
        let sample = match ck.count {
            0 => {
                if !p.initiated_by_us {
                    p.timers.set(Timer::SyncSilence, silence);
                }
                let to = p.data;
                let reply = Command::ClockSync(ClockSync {
                    ssrc,
                    count: 1,
                    timestamps: [t1, ticks, 0],
                });
                self.send_command(Port::Data, to, &reply);
                return;
            }
            1 => {
                if p.pending_ck != Some(t1) {
                    self.stats.stale_clock_syncs += 1;
                    return;
                }
                p.pending_ck = None;
                p.unanswered = 0;
                let to = p.data;
                let reply = Command::ClockSync(ClockSync {
                    ssrc,
                    count: 2,
                    timestamps: [t1, t2, ticks],
                });
                let sample = Sample::as_initiator(t1, t2, ticks);
                self.send_command(Port::Data, to, &reply);
                sample
            }
            _ => {
                if !p.initiated_by_us {
                    p.timers.set(Timer::SyncSilence, silence);
                }
                if p.last_ck2_t1 == Some(t1) {
                    self.stats.stale_clock_syncs += 1;
                    return;
                }
                p.last_ck2_t1 = Some(t1);
                Sample::as_responder(t1, t2, t3)
            }
        };
        let Some(sample) = sample else {
            self.stats.stale_clock_syncs += 1;
            return;
        };
        let Some(p) = self.peers.get_mut(&handle) else {
            return;
        };
        p.clock.add(now, sample);
        if let (Some(clock), Some(rtt)) = (p.clock.clock_map(), p.clock.rtt_stats()) {
            self.events.push_back(EndpointEvent::ClockUpdated {
                peer: handle,
                clock,
                rtt,
            });
        }
    }

    /// Initiator: sends `CK0` and schedules the next round.
    fn start_sync_round(&mut self, now: Micros, handle: PeerHandle) {
        let timers = self.config.timers;
        let ssrc = self.ssrc;
        let Some(p) = self.peers.get_mut(&handle) else {
            return;
        };
        let t1 = Ticks::from_local(now).0;
        p.pending_ck = Some(t1);
        p.sync_rounds = p.sync_rounds.saturating_add(1);
        let gap = if p.sync_rounds < timers.sync_burst_rounds {
            timers.sync_burst_interval
        } else {
            timers.sync_interval
        };
        p.timers.set(Timer::SyncRound, now + gap);
        let to = p.data;
        let ck0 = Command::ClockSync(ClockSync {
            ssrc,
            count: 0,
            timestamps: [t1, 0, 0],
        });
        self.send_command(Port::Data, to, &ck0);
    }

    fn on_timer(&mut self, now: Micros, handle: PeerHandle, timer: Timer) {
        let timers = self.config.timers;
        let ssrc = self.ssrc;
        let Some(p) = self.peers.get_mut(&handle) else {
            return;
        };
        p.timers.stop(timer);
        match timer {
            Timer::InviteRetry => {
                let port = match p.state {
                    PeerState::InvitingControl => Port::Control,
                    PeerState::InvitingData => Port::Data,
                    _ => return,
                };
                let (control, token) = (p.control, p.token);
                if p.tries >= timers.invite_max_tries {
                    if port == Port::Data {
                        let bye = Command::End(End { token, ssrc });
                        self.send_command(Port::Control, control, &bye);
                    }
                    self.remove(handle, None);
                    self.events.push_back(EndpointEvent::InvitationFailed {
                        peer: handle,
                        control,
                        reason: FailReason::NoAnswer { port },
                    });
                    return;
                }
                p.tries += 1;
                p.timers.set(Timer::InviteRetry, now + timers.invite_retry);
                let to = if port == Port::Control {
                    control
                } else {
                    p.data
                };
                let inv = Command::Invitation(self.our_invitation(token, true));
                self.send_command(port, to, &inv);
            }
            Timer::HalfOpen => {
                if p.state == PeerState::AwaitingData {
                    self.stats.half_open_dropped += 1;
                    self.remove(handle, None);
                }
            }
            Timer::SyncRound => {
                if p.state != PeerState::Joined {
                    return;
                }
                if p.pending_ck.is_some() {
                    p.unanswered += 1;
                    let silent = now.saturating_duration_since(p.last_heard);
                    if p.unanswered >= timers.sync_max_unanswered
                        && silent >= timers.sync_dead_after
                    {
                        let (control, token) = (p.control, p.token);
                        self.send_command(
                            Port::Control,
                            control,
                            &Command::End(End { token, ssrc }),
                        );
                        self.remove(handle, Some(LeaveReason::TimedOut));
                        return;
                    }
                }
                self.start_sync_round(now, handle);
            }
            Timer::SyncSilence => {
                if p.state == PeerState::Joined {
                    let (control, token) = (p.control, p.token);
                    self.send_command(Port::Control, control, &Command::End(End { token, ssrc }));
                    self.remove(handle, Some(LeaveReason::TimedOut));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
