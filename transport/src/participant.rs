//! [`Participant`]: one local musician in an RTP-MIDI session with any number
//! of remote ones — the AppleMIDI [`Endpoint`] plus one outgoing
//! [`SendStream`] and one incoming [`RecvStream`] per remote participant.
//!
//! This is the protocol object the tokio [`crate::driver`] runs for `jam
//! peer` and the engine, and that [`crate::sim::HostSim`] runs over the
//! network emulator for tests and `jam demo`. It is sans-IO like its parts.
//!
//! What it adds to its parts:
//!
//! - **Fan-out.** [`Participant::send`] queues one MIDI message for every
//!   joined peer. Each peer has its own stream (its own sequence space,
//!   journal and feedback), all under our one SSRC, as AppleMIDI
//!   implementations do: a slow or lossy peer never makes another peer's
//!   journal grow.
//! - **Late joiners.** A peer that joins mid-session first receives, as real
//!   MIDI, the program (with bank), controllers, pitch wheel and channel
//!   pressure we have sent so far (not notes: a note-on long after its
//!   attack is not music). The journal then protects them like any other
//!   message (`rtp-midi.md` §4.7, last paragraph).
//! - **Time.** Incoming events carry the sender's clock time; they are mapped
//!   onto the local clock by a [`ClockTracker`] fed with the peer's
//!   clock-sync estimates ([`EndpointEvent::ClockUpdated`]): it steps to the
//!   first one, then slews toward better ones at a bounded rate (stepping
//!   only for a large jump), so remote event times never jump by the
//!   round-trip noise of one exchange. Until the first `CK` exchange
//!   completes, the first packet's arrival time anchors the mapping (as if
//!   the network had no delay), so lateness is never computed against an
//!   unrelated clock.
//! - **Feedback** both ways: `RS` from each receive stream goes out through
//!   the endpoint, and `RS` from the peer trims that peer's send journal.
//! - **Clean ends.** When a session ends for any reason, every note that
//!   peer left sounding is released (reported as recovered events) before
//!   [`ParticipantEvent::Left`].
//!
//! - **A side channel** for the session document: frames of
//!   [`crate::reliable`] (first byte `0x4A`, never `FF` of an AppleMIDI
//!   command nor `0x80` of RTP) travel on the control port to and from
//!   joined peers only ([`Participant::send_reliable`],
//!   [`ParticipantEvent::Reliable`]). Frames from any other address, or not
//!   even a frame header, are dropped and counted
//!   ([`Participant::side_channel_stats`]).
//!
//! Method groups, in quinn's vocabulary: input `handle_datagram` /
//! `handle_timeout`; commands `invite`, `end`, `close`, `send`,
//! `send_sysex`, `send_reliable`; output `poll_transmit`, `poll_event`, `poll_timeout`
//! (through [`Protocol`], drained in that order); getters `peers`,
//! `peer_stats`, `endpoint`.

use crate::applemidi::{
    Endpoint, EndpointConfig, EndpointEvent, FailReason, InviteError, LeaveReason, PeerHandle,
    Port, RttStats, SendError, Transmit,
};
use crate::clock::{ClockMap, ClockTracker, ClockTrackerConfig, MICROS_PER_TICK, Ticks};
use crate::driver::Protocol;
use crate::rtp::header::RtpHeader;
use crate::rtp::recv::{RecvConfig, RecvEvent, RecvStats, RecvStream};
use crate::rtp::send::{PushError, SendConfig, SendStats, SendStream};
use crate::rtp::state::MidiState;
use jam_core::{Micros, ShortMessage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// Settings of a [`Participant`].
#[derive(Debug, Clone)]
pub struct ParticipantConfig {
    /// The session layer: our name, SSRC seed, accept policy, timers.
    pub endpoint: EndpointConfig,
    /// Settings for every outgoing stream (SSRC and first sequence number
    /// are filled in per peer).
    pub send: SendConfig,
    /// Settings for every incoming stream.
    pub recv: RecvConfig,
}

impl ParticipantConfig {
    /// Defaults for a participant called `name`; all randomness (SSRC,
    /// invitation tokens, first sequence numbers) derives from `seed`.
    pub fn new(name: impl Into<String>, seed: u64) -> Self {
        ParticipantConfig {
            endpoint: EndpointConfig::new(name, seed),
            send: SendConfig::new(0, 0),
            recv: RecvConfig::default(),
        }
    }
}

/// What a [`Participant`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParticipantEvent {
    /// A session with a remote participant is up: MIDI flows both ways.
    Joined {
        /// The session.
        peer: PeerHandle,
        /// The remote participant's name, if it sent one.
        name: Option<String>,
        /// The remote SSRC.
        ssrc: u32,
        /// The remote control port address.
        control: SocketAddr,
        /// True if we sent the invitation.
        initiated_by_us: bool,
    },
    /// Our invitation was refused.
    InvitationRejected {
        /// The handle `invite` returned.
        peer: PeerHandle,
        /// The control address invited.
        control: SocketAddr,
    },
    /// Our invitation got no usable answer.
    InvitationFailed {
        /// The handle `invite` returned.
        peer: PeerHandle,
        /// The control address invited.
        control: SocketAddr,
        /// What went wrong.
        reason: FailReason,
    },
    /// A session ended; every note the peer left sounding was released
    /// first (as recovered [`ParticipantEvent::Midi`] events).
    Left {
        /// The session.
        peer: PeerHandle,
        /// Why it ended.
        reason: LeaveReason,
    },
    /// A MIDI message from a remote participant, in play order.
    Midi {
        /// Who sent it.
        peer: PeerHandle,
        /// The message, its sender time and whether the journal recovered it.
        event: RecvEvent,
        /// The sender time mapped onto the local clock.
        local_time: Micros,
        /// When the packet carrying it arrived (local clock).
        arrived: Micros,
    },
    /// A frame of the reliable side channel ([`crate::reliable`]) from a
    /// joined peer, for that peer's [`crate::reliable::Reliable`] end.
    Reliable {
        /// Who sent it.
        peer: PeerHandle,
        /// The whole frame (it starts with `0x4A`).
        bytes: Vec<u8>,
    },
    /// The clock-sync estimate for a peer changed. Event times follow it
    /// gradually (see the module docs), not at once.
    ClockUpdated {
        /// The session.
        peer: PeerHandle,
        /// Local clock minus the peer's: the window's minimum-round-trip
        /// estimate.
        clock: ClockMap,
        /// Round-trip statistics.
        rtt: RttStats,
    },
}

/// Figures for one remote participant, from [`Participant::peer_stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStats {
    /// The remote participant's name, if it sent one.
    pub name: Option<String>,
    /// The remote SSRC.
    pub ssrc: u32,
    /// Round-trip statistics from clock sync, once a `CK` exchange completed.
    pub rtt: Option<RttStats>,
    /// Our stream to the peer.
    pub send: SendStats,
    /// The peer's stream to us.
    pub recv: RecvStats,
}

/// The streams of one joined peer.
struct PeerStreams {
    name: Option<String>,
    ssrc: u32,
    send: SendStream,
    recv: RecvStream,
    /// Clock-sync estimates, filtered and slewed.
    tracker: ClockTracker,
    /// Fallback mapping anchored on the first packet's arrival.
    arrival_clock: Option<ClockMap>,
}

impl PeerStreams {
    fn clock(&self, now: Micros) -> ClockMap {
        self.tracker
            .clock_map(now)
            .or(self.arrival_clock)
            .unwrap_or(ClockMap::IDENTITY)
    }
}

/// What we have sent that a late joiner needs to hear first: the latest
/// program (with bank), controllers, pitch wheel and channel pressure per
/// channel. Unlike [`MidiState`] it remembers which values were ever set,
/// so it never sends a default nobody played.
#[derive(Debug, Clone, Default)]
struct CatchUp {
    /// (channel, controller) -> value, for every controller ever sent.
    controllers: BTreeMap<(u8, u8), u8>,
    /// channel -> program change message.
    programs: BTreeMap<u8, ShortMessage>,
    /// channel -> pitch-wheel message.
    bends: BTreeMap<u8, ShortMessage>,
    /// channel -> channel-pressure message.
    pressures: BTreeMap<u8, ShortMessage>,
}

impl CatchUp {
    fn record(&mut self, m: &ShortMessage) {
        let Some(ch) = m.channel() else { return };
        match m.status() & 0xF0 {
            0xB0 => {
                let n = m.data1();
                // Mode messages act once; they are not state to replay.
                if matches!(n, 120 | 121 | 123..=127) {
                    if n == 121 {
                        self.bends.remove(&ch);
                        self.pressures.remove(&ch);
                    }
                    return;
                }
                self.controllers.insert((ch, n), m.data2());
            }
            0xC0 => {
                self.programs.insert(ch, *m);
            }
            0xD0 => {
                self.pressures.insert(ch, *m);
            }
            0xE0 => {
                self.bends.insert(ch, *m);
            }
            _ => {}
        }
    }

    /// The messages that bring a fresh receiver to our state: bank selects
    /// and other controllers first (so the program change picks the right
    /// bank), then programs, pitch wheel and pressure.
    fn messages(&self) -> impl Iterator<Item = ShortMessage> + '_ {
        let ccs = self
            .controllers
            .iter()
            .map(|(&(ch, n), &v)| ShortMessage::control_change(ch, n, v));
        ccs.chain(self.programs.values().copied())
            .chain(self.bends.values().copied())
            .chain(self.pressures.values().copied())
    }
}

/// One local participant with its sessions; see the [module docs](self).
pub struct Participant {
    endpoint: Endpoint,
    config: ParticipantConfig,
    peers: BTreeMap<PeerHandle, PeerStreams>,
    catch_up: CatchUp,
    rng: StdRng,
    events: VecDeque<ParticipantEvent>,
    /// Latest time seen from any input; `poll_transmit` has no `now` of its
    /// own, and packets are stamped and guard timers armed with this.
    now: Micros,
    buf: Vec<u8>,
    /// The reliable side channel's queued frames and counters.
    side: SideChannel,
}

impl Participant {
    /// A participant with no sessions yet.
    pub fn new(config: ParticipantConfig, now: Micros) -> Self {
        let endpoint = Endpoint::new(config.endpoint.clone(), now);
        // A separate stream of randomness for sequence numbers, derived from
        // the same seed so that a run is reproduced by its seed alone.
        let rng = StdRng::seed_from_u64(config.endpoint.seed ^ 0x5EED_0F5E_u64);
        Participant {
            endpoint,
            config,
            peers: BTreeMap::new(),
            catch_up: CatchUp::default(),
            rng,
            events: VecDeque::new(),
            now,
            buf: Vec::with_capacity(SendConfig::DEFAULT_MTU),
            side: SideChannel::default(),
        }
    }

    /// The session layer underneath (names, addresses, counters).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.endpoint.ssrc()
    }

    /// Joined peers.
    pub fn peers(&self) -> impl Iterator<Item = PeerHandle> + '_ {
        self.peers.keys().copied()
    }

    /// Figures for one joined peer.
    pub fn peer_stats(&self, peer: PeerHandle) -> Option<PeerStats> {
        let p = self.peers.get(&peer)?;
        Some(PeerStats {
            name: p.name.clone(),
            ssrc: p.ssrc,
            rtt: self.endpoint.rtt_stats(peer),
            send: p.send.stats(),
            recv: p.recv.stats(),
        })
    }

    /// What a joined peer has played to us so far (after repairs).
    pub fn received_state(&self, peer: PeerHandle) -> Option<&MidiState> {
        Some(self.peers.get(&peer)?.recv.state())
    }

    /// Invites the participant whose control port is `control`.
    pub fn invite(&mut self, now: Micros, control: SocketAddr) -> Result<PeerHandle, InviteError> {
        self.advance(now);
        let h = self.endpoint.invite(now, control);
        self.pump();
        h
    }

    /// Ends one session (sends `BY`).
    pub fn end(&mut self, now: Micros, peer: PeerHandle) -> Result<(), SendError> {
        self.advance(now);
        let r = self.endpoint.end(now, peer);
        self.pump();
        r
    }

    /// Ends every session (sends `BY` to everyone).
    pub fn close(&mut self, now: Micros) {
        self.advance(now);
        self.endpoint.close(now);
        self.pump();
    }

    /// Sends one MIDI message, stamped with local time `time` (usually
    /// `now`, or the moment the musician played it), to every joined peer.
    pub fn send(&mut self, now: Micros, time: Micros, msg: ShortMessage) -> Result<(), PushError> {
        self.advance(now);
        let ticks = Ticks::from_local(time);
        for p in self.peers.values_mut() {
            p.send.push(ticks, msg)?;
        }
        self.catch_up.record(&msg);
        Ok(())
    }

    /// Sends one System Exclusive message (`F0 .. F7`) to every joined peer.
    pub fn send_sysex(&mut self, now: Micros, time: Micros, bytes: &[u8]) -> Result<(), PushError> {
        self.advance(now);
        let ticks = Ticks::from_local(time);
        for p in self.peers.values_mut() {
            p.send.push_sysex(ticks, bytes)?;
        }
        Ok(())
    }

    fn advance(&mut self, now: Micros) {
        self.now = self.now.max(now);
    }

    /// Handles every endpoint event raised so far.
    fn pump(&mut self) {
        while let Some(e) = self.endpoint.poll_event() {
            self.on_endpoint_event(e);
        }
    }

    fn on_endpoint_event(&mut self, e: EndpointEvent) {
        let now = self.now;
        match e {
            EndpointEvent::Joined {
                peer,
                name,
                ssrc,
                control,
                initiated_by_us,
                ..
            } => {
                let mut send_config = self.config.send;
                send_config.ssrc = self.endpoint.ssrc();
                send_config.initial_seq = self.rng.next_u32() as u16;
                let mut send = SendStream::new(send_config, now);
                let at = Ticks::from_local(now);
                for m in self.catch_up.messages() {
                    // Only channel voice messages are recorded, and those
                    // are never refused.
                    let _ = send.push(at, m);
                }
                self.peers.insert(
                    peer,
                    PeerStreams {
                        name: name.clone(),
                        ssrc,
                        send,
                        recv: RecvStream::with_ssrc(self.config.recv, ssrc),
                        tracker: ClockTracker::new(ClockTrackerConfig::default()),
                        arrival_clock: None,
                    },
                );
                self.events.push_back(ParticipantEvent::Joined {
                    peer,
                    name,
                    ssrc,
                    control,
                    initiated_by_us,
                });
            }
            EndpointEvent::InvitationRejected { peer, control, .. } => {
                self.events
                    .push_back(ParticipantEvent::InvitationRejected { peer, control });
            }
            EndpointEvent::InvitationFailed {
                peer,
                control,
                reason,
            } => {
                self.events.push_back(ParticipantEvent::InvitationFailed {
                    peer,
                    control,
                    reason,
                });
            }
            EndpointEvent::Left { peer, reason } => {
                if let Some(mut p) = self.peers.remove(&peer) {
                    p.recv.end();
                    // The releases are played now, whatever their stamp.
                    while let Some(event) = p.recv.poll_event() {
                        self.events.push_back(ParticipantEvent::Midi {
                            peer,
                            event,
                            local_time: now,
                            arrived: now,
                        });
                    }
                }
                self.events
                    .push_back(ParticipantEvent::Left { peer, reason });
            }
            EndpointEvent::Rtp { peer, packet } => self.on_rtp(peer, &packet),
            EndpointEvent::Feedback { peer, seq } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.send.handle_feedback(now, seq);
                }
            }
            EndpointEvent::ClockUpdated { peer, clock, rtt } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    // The estimate rests on the window's minimum round trip.
                    let rtt_ticks = rtt.min.as_micros() / u128::from(MICROS_PER_TICK);
                    let rtt_ticks = i64::try_from(rtt_ticks).unwrap_or(i64::MAX);
                    p.tracker.observe(now, clock.offset_ticks, rtt_ticks);
                }
                self.events
                    .push_back(ParticipantEvent::ClockUpdated { peer, clock, rtt });
            }
            // Rate limiting is optional in AppleMIDI (`rtp-midi.md` §6.6);
            // the endpoint keeps the value in its peer info.
            EndpointEvent::BitrateLimit { .. } => {}
        }
    }

    fn on_rtp(&mut self, peer: PeerHandle, packet: &[u8]) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.tracker.steps() == 0
            && p.arrival_clock.is_none()
            && let Ok((h, _)) = RtpHeader::decode(packet)
        {
            let local = Ticks::from_local(now).0;
            let remote = Ticks::unwrap_rtp(h.timestamp, Ticks(local)).0;
            p.arrival_clock = Some(ClockMap {
                offset_ticks: local as i64 - remote as i64,
            });
        }
        let clock = p.clock(now);
        // A malformed or foreign packet plays nothing; the stream counts it.
        let _ = p.recv.handle_packet(now, &clock, packet);
        while let Some(event) = p.recv.poll_event() {
            let local_time = p
                .tracker
                .map(now, event.time)
                .unwrap_or_else(|| clock.to_local(event.time));
            self.events.push_back(ParticipantEvent::Midi {
                peer,
                event,
                local_time,
                arrived: now,
            });
        }
    }

    /// Moves packets and feedback from the streams into the endpoint.
    fn flush_streams(&mut self) {
        let now = self.now;
        for (&peer, p) in self.peers.iter_mut() {
            while let Some(n) = p.send.poll_transmit(now, &mut self.buf) {
                // The peer is joined (it is in `peers`), so this succeeds.
                let _ = self.endpoint.send_rtp(peer, self.buf[..n].to_vec());
            }
            if let Some(seq) = p.recv.poll_feedback(now) {
                let _ = self.endpoint.send_feedback(peer, seq);
            }
        }
    }
}

// ----- reliable side channel -----

/// First byte of every [`crate::reliable`] frame: what tells a side-channel
/// frame from an AppleMIDI command (`FF FF`) and RTP (`0x80`..).
pub const SIDE_CHANNEL_MAGIC: u8 = 0x4A;

/// Counters of the reliable side channel, from
/// [`Participant::side_channel_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SideChannelStats {
    /// Frames queued to joined peers.
    pub sent: u64,
    /// Frames from joined peers handed to the application.
    pub received: u64,
    /// Frames dropped: from an address that is no joined peer's control port.
    pub unknown_source: u64,
    /// Datagrams with the magic byte that are not even a frame header.
    pub malformed: u64,
}

/// Why [`Participant::send_reliable`] refused a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SideChannelError {
    /// No joined session with that handle.
    #[error("no joined session {0}")]
    NotJoined(PeerHandle),
    /// The bytes do not start with the side channel's magic byte.
    #[error("side-channel frame starts with {0:#04x}, not 0x4a")]
    BadMagic(u8),
    /// Longer than one datagram may be.
    #[error("side-channel frame of {len} bytes exceeds {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Largest side-channel frame sent (a UDP payload over IPv4).
pub const MAX_SIDE_FRAME_LEN: usize = 65_507;

#[derive(Debug, Default)]
struct SideChannel {
    out: VecDeque<Transmit>,
    stats: SideChannelStats,
}

impl Participant {
    /// Queues one frame of the reliable side channel (a
    /// [`crate::reliable::Reliable`] datagram, magic `0x4A`) to a joined
    /// peer's control port.
    pub fn send_reliable(
        &mut self,
        peer: PeerHandle,
        frame: impl Into<Vec<u8>>,
    ) -> Result<(), SideChannelError> {
        let frame = frame.into();
        match frame.first() {
            Some(&SIDE_CHANNEL_MAGIC) => {}
            other => return Err(SideChannelError::BadMagic(other.copied().unwrap_or(0))),
        }
        if frame.len() > MAX_SIDE_FRAME_LEN {
            return Err(SideChannelError::TooLong {
                len: frame.len(),
                max: MAX_SIDE_FRAME_LEN,
            });
        }
        if !self.peers.contains_key(&peer) {
            return Err(SideChannelError::NotJoined(peer));
        }
        let to = self
            .endpoint
            .peer(peer)
            .ok_or(SideChannelError::NotJoined(peer))?
            .control;
        self.side.stats.sent += 1;
        self.side.out.push_back(Transmit {
            from: Port::Control,
            to,
            payload: frame,
        });
        Ok(())
    }

    /// Counters of the reliable side channel.
    pub fn side_channel_stats(&self) -> SideChannelStats {
        self.side.stats
    }

    /// A datagram with the magic byte arrived on the control port.
    fn on_side_frame(&mut self, from: SocketAddr, bytes: &[u8]) {
        // Only the frame header is checked here; the receiving
        // `Reliable` end validates the rest and never panics either.
        if bytes.len() < 2 {
            self.side.stats.malformed += 1;
            return;
        }
        let peer = self.peers.keys().copied().find(|&h| {
            self.endpoint.peer(h).is_some_and(|i| {
                i.state == crate::applemidi::PeerState::Joined && i.control == from
            })
        });
        match peer {
            Some(peer) => {
                self.side.stats.received += 1;
                self.events.push_back(ParticipantEvent::Reliable {
                    peer,
                    bytes: bytes.to_vec(),
                });
            }
            None => self.side.stats.unknown_source += 1,
        }
    }
}

impl Protocol for Participant {
    type Event = ParticipantEvent;

    fn handle_datagram(&mut self, now: Micros, local: Port, from: SocketAddr, bytes: &[u8]) {
        self.advance(now);
        if local == Port::Control && bytes.first() == Some(&SIDE_CHANNEL_MAGIC) {
            self.on_side_frame(from, bytes);
            return;
        }
        self.endpoint.handle_datagram(now, local, from, bytes);
        self.pump();
    }

    fn handle_timeout(&mut self, now: Micros) {
        self.advance(now);
        self.endpoint.handle_timeout(now);
        for p in self.peers.values_mut() {
            p.send.handle_timeout(now);
        }
        self.pump();
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.flush_streams();
        self.endpoint
            .poll_transmit()
            .or_else(|| self.side.out.pop_front())
    }

    fn poll_timeout(&self) -> Option<Micros> {
        let streams = self
            .peers
            .values()
            .flat_map(|p| [p.send.poll_timeout(), p.recv.poll_timeout()])
            .flatten();
        self.endpoint
            .poll_timeout()
            .into_iter()
            .chain(streams)
            .min()
    }

    fn poll_event(&mut self) -> Option<ParticipantEvent> {
        self.pump();
        self.events.pop_front()
    }
}
