//! The peer's side of a `jamd` relay, sans-IO: [`RelayClient`] says hello
//! with the join ticket, keeps the relay's idea of our address alive, and
//! says hello again by itself when the relay stops answering (a restarted
//! `jamd` forgets every address); [`RelayPeer`] runs a [`Participant`]
//! through it, with every packet sealed end to end by [`SecureSession`].
//!
//! # How a participant rides the relay
//!
//! The AppleMIDI endpoint inside [`Participant`] speaks to socket addresses.
//! [`RelayPeer`] gives every member of the session a *virtual* address,
//! `[fd6a:616d::<member id>]:5004` (control) and `:5005` (data), see
//! [`member_addr`]. A packet the participant sends to a virtual address is
//! sealed under our sender key with the port as its [`Channel`] and sent as
//! relay data addressed to that member; a relay data packet from member `m`
//! is opened and handed to the participant as if it came from `m`'s virtual
//! address. The session layer (invitations, clock sync, `BY`), RTP-MIDI and
//! the recovery journal therefore work exactly as on a LAN, and the relay
//! sees only the routing header, the size and the time of each packet.
//! [`RelayPeer::send_reliable`] carries [`crate::reliable`] frames (the
//! session document's sync messages) the same way.
//!
//! Who invites whom: of two members, the one with the lower member id
//! invites the other, once both are online; a session that ends while the
//! other member is still listed is invited again.
//!
//! Membership comes from the control plane: the caller polls the member
//! list over HTTP and hands it to [`RelayPeer::set_members`]; a member that
//! disappears from it makes everyone rotate their sender key (see
//! [`crate::secure`]) and ends its AppleMIDI session.
//!
//! # Direct paths
//!
//! With [`RelayPeerConfig::direct`] set, a peer also tries to reach every
//! member without the relay ([`crate::direct`]): it probes the addresses
//! the control plane lists for the member ([`RemoteMember::observed`] and
//! [`RemoteMember::reported`]) and, once a probe is answered, sends that
//! member's frames straight to its address. A direct datagram is a relay
//! data packet (same routing header: session, sender, addressee) around
//! the same sealed frame the relay would carry, so the receiver opens it
//! exactly as if the relay had forwarded it; it accepts both at all times,
//! and the replay window drops the copies of a switch. While the direct
//! path is in doubt (an answer late) each frame goes both ways; when it
//! goes silent the peer sends through the relay alone again. The
//! participant never notices: member addresses stay virtual.
//!
//! Not here: the HTTP calls (`jam-join` makes them).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use jam_core::Micros;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::applemidi::{PeerHandle, Port, Transmit};
use crate::direct::{DirectConfig, DirectPaths, Path, PathEvent, Probe};
use crate::driver::Protocol;
use crate::participant::{Participant, ParticipantConfig, ParticipantEvent};
use crate::relay::{
    self, EncodeError, Hello, HelloKey, Keepalive, Leave, MAX_PACKET_LEN, Packet, ReportedAddrs,
    Ticket,
};
use crate::secure::{Channel, Member, OpenError, Opened, SecureSession};

/// Settings of a [`RelayClient`].
#[derive(Debug, Clone)]
pub struct RelayClientConfig {
    /// The relay's UDP address.
    pub relay: SocketAddr,
    /// The ticket from the HTTP join.
    pub ticket: Ticket,
    /// The hello key from the HTTP join.
    pub key: HelloKey,
    /// Our own interface addresses, for the direct path.
    pub reported: ReportedAddrs,
    /// Time between keepalives while connected.
    pub keepalive_interval: Duration,
    /// Without any answer from the relay for this long, we say hello again.
    pub lost_after: Duration,
    /// Time between hellos while not connected.
    pub hello_retry: Duration,
}

impl RelayClientConfig {
    /// Defaults: a keepalive every second, a new hello after 2.5 s without
    /// an answer, retried every 500 ms. Home NATs keep a mapping alive far
    /// longer; the short interval is what lets peers notice a restarted
    /// relay within a few seconds.
    pub fn new(relay: SocketAddr, ticket: Ticket, key: HelloKey) -> Self {
        RelayClientConfig {
            relay,
            ticket,
            key,
            reported: ReportedAddrs::default(),
            keepalive_interval: Duration::from_secs(1),
            lost_after: Duration::from_millis(2_500),
            hello_retry: Duration::from_millis(500),
        }
    }
}

/// What a [`RelayClient`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayClientEvent {
    /// The relay accepted our hello (first time or again after a loss).
    Connected {
        /// Our address as the relay sees it.
        observed: SocketAddr,
        /// How many times we connected so far (1 the first time).
        count: u64,
    },
    /// The relay stopped answering; hellos are being retried.
    Lost,
}

/// Connection state of a [`RelayClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayState {
    /// Saying hello until the relay acknowledges.
    Connecting,
    /// The relay knows our address.
    Connected,
    /// We said goodbye.
    Left,
}

/// One member's link to the relay; see the [module docs](self).
#[derive(Debug)]
pub struct RelayClient {
    config: RelayClientConfig,
    state: RelayState,
    /// Wall clock (µs, relay-corrected) at `now_base`.
    unix_base: u64,
    now_base: Micros,
    last_client_time: u64,
    rng: StdRng,
    hello_nonce: u64,
    next_hello: Micros,
    next_keepalive: Micros,
    last_heard: Micros,
    keepalive_seq: u32,
    rtt_us: Option<u32>,
    connects: u64,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<RelayClientEvent>,
}

impl RelayClient {
    /// A client that starts saying hello at once. `unix_us` is the relay's
    /// wall clock (µs) at `now`, as the join response's server time gives
    /// it; `seed` draws the hello nonces.
    pub fn new(config: RelayClientConfig, now: Micros, unix_us: u64, seed: u64) -> Self {
        RelayClient {
            config,
            state: RelayState::Connecting,
            unix_base: unix_us,
            now_base: now,
            last_client_time: 0,
            rng: StdRng::seed_from_u64(seed),
            hello_nonce: 0,
            next_hello: now,
            next_keepalive: now,
            last_heard: now,
            keepalive_seq: 0,
            rtt_us: None,
            connects: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The relay's address.
    pub fn relay(&self) -> SocketAddr {
        self.config.relay
    }

    /// Our member id.
    pub fn member(&self) -> u32 {
        self.config.ticket.member
    }

    /// Changes the addresses our hellos report (once the local port is
    /// known); a connected client says hello again at once so the control
    /// plane lists them.
    pub fn set_reported(&mut self, now: Micros, reported: ReportedAddrs) {
        if self.config.reported == reported {
            return;
        }
        self.config.reported = reported;
        if self.state == RelayState::Connected {
            self.queue_hello(now);
        }
    }

    /// The session id.
    pub fn session(&self) -> u64 {
        self.config.ticket.session
    }

    /// Where we stand with the relay.
    pub fn state(&self) -> RelayState {
        self.state
    }

    /// The smoothed round-trip time to the relay, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt_us.map(|u| Duration::from_micros(u.into()))
    }

    /// How many times the relay accepted our hello.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    fn unix_us(&self, now: Micros) -> u64 {
        self.unix_base + now.saturating_duration_since(self.now_base).as_micros() as u64
    }

    /// A client time strictly above every one we sent (the relay refuses a
    /// hello or leave that is not newer than the last one).
    fn client_time(&mut self, now: Micros) -> u64 {
        self.last_client_time = self.unix_us(now).max(self.last_client_time + 1);
        self.last_client_time
    }

    fn queue_hello(&mut self, now: Micros) {
        self.hello_nonce = self.rng.next_u64();
        let hello = Hello {
            ticket: self.config.ticket,
            client_time_us: self.client_time(now),
            nonce: self.hello_nonce,
            reported: self.config.reported,
        };
        let mut buf = [0u8; MAX_PACKET_LEN];
        let n = relay::encode_hello(&hello, &self.config.key, &mut buf)
            .expect("a hello fits in a packet");
        self.out.push_back(buf[..n].to_vec());
        self.next_hello = now + self.config.hello_retry;
    }

    fn queue_keepalive(&mut self, now: Micros) {
        self.keepalive_seq += 1;
        let ka = Keepalive {
            seq: self.keepalive_seq,
            client_time_us: now.as_micros(),
            rtt_us: self.rtt_us.unwrap_or(0),
            loss_permille: 0,
            jitter_us: 0,
        };
        let mut buf = [0u8; 128];
        let n = relay::encode_keepalive(
            self.session(),
            self.member(),
            &ka,
            &self.config.key,
            &mut buf,
        )
        .expect("a keepalive fits");
        self.out.push_back(buf[..n].to_vec());
        self.next_keepalive = now + self.config.keepalive_interval;
    }

    /// A datagram from the relay. Returns the sender and payload of a data
    /// packet; control answers update the state. Anything else (not from
    /// our session, bad tags, stale answers) is ignored.
    pub fn handle_datagram<'a>(&mut self, now: Micros, bytes: &'a [u8]) -> Option<(u32, &'a [u8])> {
        let packet = Packet::decode(bytes).ok()?;
        let h = packet.header();
        if h.session != self.session() || self.state == RelayState::Left {
            return None;
        }
        match packet {
            Packet::Data {
                header, payload, ..
            } => {
                if self.state == RelayState::Connected {
                    self.last_heard = now;
                }
                Some((header.member, payload))
            }
            Packet::HelloAck(_, ack) => {
                if self.config.key.verify(bytes).is_err() || ack.nonce != self.hello_nonce {
                    return None;
                }
                self.last_heard = now;
                if self.state != RelayState::Connected {
                    self.state = RelayState::Connected;
                    self.connects += 1;
                    self.next_keepalive = now + self.config.keepalive_interval;
                    self.events.push_back(RelayClientEvent::Connected {
                        observed: ack.observed,
                        count: self.connects,
                    });
                }
                None
            }
            Packet::KeepaliveAck(_, ack) => {
                if self.config.key.verify(bytes).is_err() || self.state != RelayState::Connected {
                    return None;
                }
                self.last_heard = now;
                let rtt = now.as_micros().saturating_sub(ack.client_time_us);
                let rtt = u32::try_from(rtt).unwrap_or(u32::MAX);
                self.rtt_us = Some(match self.rtt_us {
                    Some(s) => ((u64::from(s) * 7 + u64::from(rtt)) / 8) as u32,
                    None => rtt,
                });
                None
            }
            _ => None,
        }
    }

    /// Runs the timers: hellos while connecting, keepalives while
    /// connected, and the switch back to connecting when the relay is
    /// silent for [`RelayClientConfig::lost_after`].
    pub fn handle_timeout(&mut self, now: Micros) {
        match self.state {
            RelayState::Connecting => {
                if now >= self.next_hello {
                    self.queue_hello(now);
                }
            }
            RelayState::Connected => {
                if now.saturating_duration_since(self.last_heard) >= self.config.lost_after {
                    self.state = RelayState::Connecting;
                    self.events.push_back(RelayClientEvent::Lost);
                    self.queue_hello(now);
                } else if now >= self.next_keepalive {
                    self.queue_keepalive(now);
                }
            }
            RelayState::Left => {}
        }
    }

    /// When [`RelayClient::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Micros> {
        match self.state {
            RelayState::Connecting => Some(self.next_hello),
            RelayState::Connected => Some(
                self.next_keepalive
                    .min(self.last_heard + self.config.lost_after),
            ),
            RelayState::Left => None,
        }
    }

    /// The next datagram for the relay.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RelayClientEvent> {
        self.events.pop_front()
    }

    /// Queues a data packet to `dest` (0: every other member).
    pub fn send(&mut self, dest: u32, payload: &[u8]) -> Result<(), EncodeError> {
        let mut buf = vec![0u8; relay::DATA_HEADER_LEN + payload.len()];
        let n = relay::encode_data(self.session(), self.member(), dest, payload, &mut buf)?;
        buf.truncate(n);
        self.out.push_back(buf);
        Ok(())
    }

    /// Says goodbye: the relay forgets our address at once.
    pub fn leave(&mut self, now: Micros) {
        if self.state == RelayState::Left {
            return;
        }
        let leave = Leave {
            client_time_us: self.client_time(now),
            nonce: self.rng.next_u64(),
        };
        let mut buf = [0u8; 128];
        let n = relay::encode_leave(
            self.session(),
            self.member(),
            &leave,
            &self.config.key,
            &mut buf,
        )
        .expect("a leave fits");
        self.out.push_back(buf[..n].to_vec());
        self.state = RelayState::Left;
    }
}

/// The virtual control-port address of member `member` (the data port is
/// one up): `[fd6a:616d::<member>]:5004`, in a unique-local prefix no real
/// interface of ours uses.
pub fn member_addr(member: u32) -> SocketAddr {
    let ip = Ipv6Addr::new(
        0xfd6a,
        0x616d,
        0,
        0,
        0,
        0,
        (member >> 16) as u16,
        member as u16,
    );
    SocketAddr::new(IpAddr::V6(ip), VIRTUAL_CONTROL_PORT)
}

const VIRTUAL_CONTROL_PORT: u16 = 5004;

/// The member and channel behind a virtual address, if it is one.
pub fn member_of(addr: SocketAddr) -> Option<(u32, Channel)> {
    let IpAddr::V6(ip) = addr.ip() else {
        return None;
    };
    let s = ip.segments();
    if s[..6] != [0xfd6a, 0x616d, 0, 0, 0, 0] {
        return None;
    }
    let member = (u32::from(s[6]) << 16) | u32::from(s[7]);
    let channel = match addr.port() {
        VIRTUAL_CONTROL_PORT => Channel::Control,
        p if p == VIRTUAL_CONTROL_PORT + 1 => Channel::Data,
        _ => return None,
    };
    Some((member, channel))
}

/// A member as the control plane lists it, for [`RelayPeer::set_members`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMember {
    /// Member id on the relay.
    pub id: u32,
    /// X25519 public key of its device.
    pub public_key: [u8; 32],
    /// Live on the relay now.
    pub online: bool,
    /// Its public address as the relay saw its hello.
    pub observed: Option<SocketAddr>,
    /// The addresses it reported on its own interfaces.
    pub reported: ReportedAddrs,
}

impl RemoteMember {
    /// A member known by id and key only (no addresses: relay only).
    pub fn new(id: u32, public_key: [u8; 32], online: bool) -> Self {
        RemoteMember {
            id,
            public_key,
            online,
            observed: None,
            reported: ReportedAddrs::default(),
        }
    }
}

/// Settings of a [`RelayPeer`].
#[derive(Debug, Clone)]
pub struct RelayPeerConfig {
    /// The relay link.
    pub relay: RelayClientConfig,
    /// The participant (name, seeds, stream settings).
    pub participant: ParticipantConfig,
    /// The raw X25519 secret of the device we joined with.
    pub secret: [u8; 32],
    /// Seeds the sender keys (32 bytes from the OS generator at the edge).
    pub key_seed: [u8; 32],
    /// The relay's wall clock (µs) at the `now` given to
    /// [`RelayPeer::new`].
    pub unix_us: u64,
    /// How often an online member without a session is invited again.
    pub reinvite_interval: Duration,
    /// Direct paths to members (`None`: always through the relay).
    pub direct: Option<DirectConfig>,
}

/// What a [`RelayPeer`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayPeerEvent {
    /// From the participant (joins, MIDI, leaves, clock).
    Participant(ParticipantEvent),
    /// From the relay link (connected, lost).
    Relay(RelayClientEvent),
    /// A [`crate::reliable`] frame from a member.
    Reliable {
        /// The sender's member id.
        from: u32,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// We drew a new sender key because a member left.
    Rotated {
        /// The new epoch.
        epoch: u32,
    },
    /// A member's path changed (direct, or back to the relay).
    Path(PathEvent),
}

/// Counters of a [`RelayPeer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayPeerStats {
    /// Frames opened.
    pub opened: u64,
    /// Frames refused as replays.
    pub replayed: u64,
    /// Frames refused because they did not authenticate.
    pub bad_tag: u64,
    /// Frames from senders that are not members.
    pub unknown_sender: u64,
    /// Frames we held no key for (yet).
    pub no_key: u64,
    /// Other refused frames (malformed, stale keys).
    pub other: u64,
    /// Datagrams sent straight to a member (probes included).
    pub direct_out: u64,
    /// Frames opened that arrived straight from a member (probes included).
    pub direct_in: u64,
    /// Data packets sent through the relay.
    pub relay_out: u64,
    /// Of those, copies of frames also sent straight to a member whose
    /// direct path was in doubt ([`DirectPaths::in_doubt`]).
    pub relay_copies: u64,
}

/// A [`Participant`] over a relay, end-to-end encrypted; see the
/// [module docs](self). It runs on [`crate::driver::Driver`] like a plain
/// participant: only the control socket is used, for the relay.
pub struct RelayPeer {
    client: RelayClient,
    secure: SecureSession,
    participant: Participant,
    members: BTreeMap<u32, RemoteMember>,
    sessions: BTreeMap<u32, PeerHandle>,
    pending: BTreeMap<u32, PeerHandle>,
    next_reinvite: Micros,
    reinvite_interval: Duration,
    unix_base: u64,
    now_base: Micros,
    events: VecDeque<RelayPeerEvent>,
    stats: RelayPeerStats,
    /// Frames that could not be opened yet, per sender, with the address
    /// they came from if not through the relay.
    held: BTreeMap<u32, VecDeque<HeldFrame>>,
    direct: Option<DirectPaths>,
    /// Datagrams to send straight to a member.
    direct_out: VecDeque<Transmit>,
    now: Micros,
}

/// A frame waiting to be opened: where it came from if not through the
/// relay, and its bytes.
type HeldFrame = (Option<SocketAddr>, Vec<u8>);

/// How many frames per sender wait for a key or a member-list entry.
const HELD_PER_SENDER: usize = 32;
/// For how many senders frames wait at most.
const HELD_SENDERS: usize = 64;

impl RelayPeer {
    /// A peer that starts saying hello to the relay at once.
    pub fn new(config: RelayPeerConfig, now: Micros) -> Self {
        let member = config.relay.ticket.member;
        let session = config.relay.ticket.session;
        let seed = config.participant.endpoint.seed;
        let direct = config
            .direct
            .map(|c| DirectPaths::new(c, member, seed ^ 0xd1_4ec7));
        RelayPeer {
            client: RelayClient::new(config.relay, now, config.unix_us, seed ^ 0x4e11_0000),
            secure: SecureSession::new(
                session,
                member,
                config.secret,
                config.key_seed,
                config.unix_us / 1_000_000,
            ),
            participant: Participant::new(config.participant, now),
            members: BTreeMap::new(),
            sessions: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_reinvite: now,
            reinvite_interval: config.reinvite_interval,
            unix_base: config.unix_us,
            now_base: now,
            events: VecDeque::new(),
            stats: RelayPeerStats::default(),
            held: BTreeMap::new(),
            direct,
            direct_out: VecDeque::new(),
            now,
        }
    }

    /// How we send to `member` now.
    pub fn path(&self, member: u32) -> Path {
        self.direct.as_ref().map_or(Path::Relay, |d| d.path(member))
    }

    /// The direct-path state, if direct paths are on.
    pub fn direct(&self) -> Option<&DirectPaths> {
        self.direct.as_ref()
    }

    /// Sets the addresses our hellos report (our own interface addresses
    /// with the bound port), so the other members can try them.
    pub fn set_reported(&mut self, now: Micros, addrs: &[SocketAddr]) {
        let addrs = &addrs[..addrs.len().min(relay::MAX_REPORTED_ADDRS)];
        let reported = ReportedAddrs::new(addrs).expect("at most four");
        self.client.set_reported(now, reported);
    }

    /// The participant inside (to send MIDI, read statistics).
    pub fn participant(&mut self) -> &mut Participant {
        &mut self.participant
    }

    /// The relay link.
    pub fn client(&self) -> &RelayClient {
        &self.client
    }

    /// The encryption state.
    pub fn secure(&self) -> &SecureSession {
        &self.secure
    }

    /// The encryption state, mutable: lets a test (or a diagnostic tool)
    /// try to open captured frames with this member's keys.
    pub fn secure_mut(&mut self) -> &mut SecureSession {
        &mut self.secure
    }

    /// Frame counters.
    pub fn stats(&self) -> RelayPeerStats {
        self.stats
    }

    /// The device public key of the member behind the virtual address
    /// `addr` ([`member_addr`]), if it is listed: who a participant of the
    /// relayed session is, beyond its AppleMIDI name.
    pub fn member_key(&self, addr: SocketAddr) -> Option<[u8; 32]> {
        let (id, _) = member_of(addr)?;
        self.members.get(&id).map(|m| m.public_key)
    }

    /// Members we have an AppleMIDI session with.
    pub fn joined_members(&self) -> impl Iterator<Item = u32> + '_ {
        self.sessions.keys().copied()
    }

    fn unix_secs(&self, now: Micros) -> u64 {
        (self.unix_base + now.saturating_duration_since(self.now_base).as_micros() as u64)
            / 1_000_000
    }

    /// The member list from the control plane (ours may be included). New
    /// members get our key; members gone make us rotate and end their
    /// sessions; online members we have no session with are invited (by
    /// the lower member id of each pair). Direct paths: online members'
    /// addresses become candidates ([`DirectPaths::set_candidates`]: the
    /// same entry again changes nothing, a moved member is probed anew);
    /// members who left are forgotten, and a working direct path to a
    /// member listed offline on the relay is kept until it goes silent.
    pub fn set_members(&mut self, now: Micros, members: &[RemoteMember]) {
        self.now = self.now.max(now);
        let me = self.client.member();
        let list: Vec<Member> = members
            .iter()
            .map(|m| Member {
                id: m.id,
                public_key: m.public_key,
            })
            .collect();
        if self.secure.set_members(self.unix_secs(now), &list) {
            self.events.push_back(RelayPeerEvent::Rotated {
                epoch: self.secure.epoch(),
            });
        }
        let ids: BTreeSet<u32> = members.iter().map(|m| m.id).filter(|&i| i != me).collect();
        let gone: Vec<(u32, PeerHandle)> = self
            .sessions
            .iter()
            .chain(&self.pending)
            .filter(|(id, _)| !ids.contains(id))
            .map(|(id, h)| (*id, *h))
            .collect();
        for (id, h) in gone {
            let _ = self.participant.end(now, h);
            self.sessions.remove(&id);
            self.pending.remove(&id);
        }
        self.members = members
            .iter()
            .filter(|m| m.id != me)
            .map(|m| (m.id, *m))
            .collect();
        if let Some(d) = &mut self.direct {
            // Members who left are forgotten, and so are offline members
            // we have no working path to. A working direct path stays up
            // while the member is listed, even offline on the relay (a
            // restarted relay, a missed relay keepalive): it falls back by
            // itself once it goes silent.
            let keep: BTreeSet<u32> = self
                .members
                .values()
                .filter(|m| m.online || d.is_direct(m.id))
                .map(|m| m.id)
                .collect();
            d.retain(|id| keep.contains(&id));
            for m in self.members.values().filter(|m| m.online) {
                let addrs: Vec<SocketAddr> = m
                    .observed
                    .into_iter()
                    .chain(m.reported.as_slice().iter().copied())
                    .collect();
                d.set_candidates(now, m.id, &addrs);
            }
        }
        let known: Vec<u32> = self
            .held
            .keys()
            .copied()
            .filter(|id| self.members.contains_key(id))
            .collect();
        for id in known {
            self.release_held(now, id);
        }
        self.invite_missing(now);
    }

    fn invite_missing(&mut self, now: Micros) {
        if self.client.state() != RelayState::Connected {
            return;
        }
        let me = self.client.member();
        let want: Vec<u32> = self
            .members
            .values()
            .filter(|m| m.online && m.id > me)
            .filter(|m| !self.sessions.contains_key(&m.id) && !self.pending.contains_key(&m.id))
            .filter(|m| self.secure.members().any(|x| x == m.id))
            .map(|m| m.id)
            .collect();
        for id in want {
            if let Ok(h) = self.participant.invite(now, member_addr(id)) {
                self.pending.insert(id, h);
            }
        }
    }

    /// Sends a [`crate::reliable`] frame to member `dest`, sealed.
    pub fn send_reliable(&mut self, dest: u32, frame: &[u8]) -> Result<(), SendReliableError> {
        let sealed = self
            .secure
            .seal(dest, Channel::Reliable, frame)
            .map_err(|_| SendReliableError::UnknownMember(dest))?;
        self.send_sealed(dest, &sealed)
            .map_err(|_| SendReliableError::TooLong(frame.len()))
    }

    /// Sends a sealed frame to `dest` on its current path, and through the
    /// relay as well while that path is in doubt.
    fn send_sealed(&mut self, dest: u32, sealed: &[u8]) -> Result<(), EncodeError> {
        match self.path(dest) {
            Path::Direct(to) => {
                self.send_direct(dest, to, sealed)?;
                if self.direct.as_ref().is_some_and(|d| d.in_doubt(dest)) {
                    self.stats.relay_out += 1;
                    self.stats.relay_copies += 1;
                    self.client.send(dest, sealed)?;
                }
                Ok(())
            }
            Path::Relay => {
                self.stats.relay_out += 1;
                self.client.send(dest, sealed)
            }
        }
    }

    /// A relay data packet around `sealed`, straight to `to`.
    fn send_direct(&mut self, dest: u32, to: SocketAddr, sealed: &[u8]) -> Result<(), EncodeError> {
        let mut buf = vec![0u8; relay::DATA_HEADER_LEN + sealed.len()];
        let n = relay::encode_data(
            self.client.session(),
            self.client.member(),
            dest,
            sealed,
            &mut buf,
        )?;
        buf.truncate(n);
        self.stats.direct_out += 1;
        self.direct_out.push_back(Transmit {
            from: Port::Control,
            to,
            payload: buf,
        });
        Ok(())
    }

    /// Seals and queues the probes the path state machine asks for.
    fn pump_probes(&mut self) {
        let Some(d) = &mut self.direct else {
            return;
        };
        let mut probes = Vec::new();
        while let Some(p) = d.poll_probe() {
            probes.push(p);
        }
        for (member, to, probe) in probes {
            if let Ok(sealed) = self.secure.seal(member, Channel::Path, &probe.encode()) {
                let _ = self.send_direct(member, to, &sealed);
            }
        }
    }

    /// Ends every session, says goodbye to the relay.
    pub fn close(&mut self, now: Micros) {
        self.now = self.now.max(now);
        self.participant.close(now);
        // Flush the BYs before the leave.
        while let Some(t) = Protocol::poll_transmit(&mut self.participant) {
            self.route(t);
        }
        self.client.leave(now);
    }

    fn route(&mut self, t: Transmit) {
        let Some((dest, channel)) = member_of(t.to) else {
            return;
        };
        if let Ok(sealed) = self.secure.seal(dest, channel, &t.payload) {
            let _ = self.send_sealed(dest, &sealed);
        }
    }

    fn pump_participant_events(&mut self) {
        while let Some(e) = Protocol::poll_event(&mut self.participant) {
            match &e {
                ParticipantEvent::Joined { peer, control, .. } => {
                    if let Some((id, _)) = member_of(*control) {
                        self.pending.remove(&id);
                        self.sessions.insert(id, *peer);
                    }
                }
                ParticipantEvent::Left { peer, .. }
                | ParticipantEvent::InvitationFailed { peer, .. }
                | ParticipantEvent::InvitationRejected { peer, .. } => {
                    self.sessions.retain(|_, h| h != peer);
                    self.pending.retain(|_, h| h != peer);
                }
                _ => {}
            }
            self.events.push_back(RelayPeerEvent::Participant(e));
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push_back(RelayPeerEvent::Relay(e));
        }
    }

    /// Opens a frame from `sender` and hands its contents on. A frame we
    /// cannot open *yet* (its sender is not in our member list yet, or its
    /// key has not arrived) is held, a few per sender, and tried again when
    /// the member list or the key arrives: a newcomer's first packets (its
    /// key, its answer to an invitation) then cost no retry.
    fn deliver(&mut self, now: Micros, sender: u32, via: Option<SocketAddr>, payload: Vec<u8>) {
        let opened = self.secure.open(now, sender, &payload);
        if opened.is_ok()
            && let Some(from) = via
        {
            self.stats.direct_in += 1;
            if let Some(d) = &mut self.direct {
                d.heard(now, sender, from);
            }
        }
        match opened {
            Ok(Opened::Data { channel, body }) => {
                self.stats.opened += 1;
                let port = match channel {
                    Channel::Control => Port::Control,
                    Channel::Data => Port::Data,
                    Channel::Path => {
                        // Only a probe that came straight from the member
                        // says anything about a path.
                        if let (Some(from), Some(d), Ok(probe)) =
                            (via, &mut self.direct, Probe::decode(body))
                        {
                            d.handle_probe(now, sender, from, probe);
                        }
                        return;
                    }
                    Channel::Reliable => {
                        self.events.push_back(RelayPeerEvent::Reliable {
                            from: sender,
                            bytes: body.to_vec(),
                        });
                        return;
                    }
                };
                let mut from = member_addr(sender);
                if port == Port::Data {
                    from.set_port(from.port() + 1);
                }
                let body = body.to_vec();
                Protocol::handle_datagram(&mut self.participant, now, port, from, &body);
                self.pump_participant_events();
            }
            Ok(Opened::KeyInstalled { .. }) => {
                self.stats.opened += 1;
                self.release_held(now, sender);
            }
            Ok(_) => self.stats.opened += 1,
            Err(e) => {
                if matches!(e, OpenError::NoKey { .. } | OpenError::UnknownSender(_))
                    && (self.held.contains_key(&sender) || self.held.len() < HELD_SENDERS)
                {
                    let q = self.held.entry(sender).or_default();
                    if q.len() < HELD_PER_SENDER {
                        q.push_back((via, payload));
                    }
                }
                self.note_error(e);
            }
        }
    }

    /// A datagram that did not come from the relay: a member's data packet
    /// sent straight to us (a relay data packet addressed to us, from a
    /// current member), or nothing we take.
    fn handle_direct(&mut self, now: Micros, from: SocketAddr, bytes: &[u8]) {
        if self.direct.is_none() {
            return;
        }
        let Ok(Packet::Data {
            header,
            dest,
            payload,
        }) = Packet::decode(bytes)
        else {
            return;
        };
        if header.session != self.client.session()
            || dest != self.client.member()
            || !self.members.contains_key(&header.member)
        {
            return;
        }
        self.deliver(now, header.member, Some(from), payload.to_vec());
    }

    fn release_held(&mut self, now: Micros, sender: u32) {
        if let Some(q) = self.held.remove(&sender) {
            for (via, f) in q {
                self.deliver(now, sender, via, f);
            }
        }
    }

    fn note_error(&mut self, e: OpenError) {
        let s = &mut self.stats;
        match e {
            OpenError::Replay { .. } => s.replayed += 1,
            OpenError::BadTag(_) => s.bad_tag += 1,
            OpenError::UnknownSender(_) => s.unknown_sender += 1,
            OpenError::NoKey { .. } => s.no_key += 1,
            _ => s.other += 1,
        }
    }
}

/// Why a reliable frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendReliableError {
    /// The addressee is not a current member.
    #[error("member {0} is not in the session")]
    UnknownMember(u32),
    /// The frame does not fit in one relay packet.
    #[error("frame of {0} bytes does not fit in a relay packet")]
    TooLong(usize),
}

impl Protocol for RelayPeer {
    type Event = RelayPeerEvent;

    fn handle_datagram(&mut self, now: Micros, local: Port, from: SocketAddr, bytes: &[u8]) {
        self.now = self.now.max(now);
        if local != Port::Control {
            return;
        }
        if from != self.client.relay() {
            self.handle_direct(now, from, bytes);
            return;
        }
        let was = self.client.state();
        let Some((sender, payload)) = self.client.handle_datagram(now, bytes) else {
            if was != RelayState::Connected && self.client.state() == RelayState::Connected {
                // (Re)connected: re-announce our key, invite who is missing.
                self.secure.resend_keys();
                self.invite_missing(now);
            }
            self.pump_participant_events();
            return;
        };
        let payload = payload.to_vec();
        self.deliver(now, sender, None, payload);
    }

    fn handle_timeout(&mut self, now: Micros) {
        self.now = self.now.max(now);
        self.client.handle_timeout(now);
        if let Some(d) = &mut self.direct
            && d.poll_timeout().is_some_and(|t| t <= now)
        {
            d.handle_timeout(now);
        }
        if Protocol::poll_timeout(&self.participant).is_some_and(|t| t <= now) {
            Protocol::handle_timeout(&mut self.participant, now);
        }
        if now >= self.next_reinvite {
            self.next_reinvite = now + self.reinvite_interval;
            self.invite_missing(now);
        }
        self.pump_participant_events();
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            if let Some(payload) = self.client.poll_transmit() {
                return Some(Transmit {
                    from: Port::Control,
                    to: self.client.relay(),
                    payload,
                });
            }
            if let Some(t) = self.direct_out.pop_front() {
                return Some(t);
            }
            if let Some((dest, frame)) = self.secure.poll_transmit() {
                let _ = self.send_sealed(dest, &frame);
                continue;
            }
            self.pump_probes();
            if !self.direct_out.is_empty() {
                continue;
            }
            let t = Protocol::poll_transmit(&mut self.participant)?;
            self.route(t);
        }
    }

    fn poll_timeout(&self) -> Option<Micros> {
        [
            self.client.poll_timeout(),
            self.direct.as_ref().and_then(DirectPaths::poll_timeout),
            Protocol::poll_timeout(&self.participant),
            Some(self.next_reinvite),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn poll_event(&mut self) -> Option<RelayPeerEvent> {
        self.pump_participant_events();
        if let Some(d) = &mut self.direct {
            while let Some(e) = d.poll_event() {
                self.events.push_back(RelayPeerEvent::Path(e));
            }
        }
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{HelloAck, KeepaliveAck, ServerSecret};
    use proptest::prelude::*;

    const UNIX0: u64 = 1_700_000_000_000_000;

    fn client() -> (RelayClient, HelloKey) {
        let (ticket, key) = Ticket::issue(&ServerSecret([3; 32]), 0xabc, 7, u64::MAX);
        let cfg = RelayClientConfig::new("127.0.0.1:4000".parse().unwrap(), ticket, key.clone());
        (RelayClient::new(cfg, Micros::ZERO, UNIX0, 1), key)
    }

    fn hello_of(bytes: &[u8]) -> Hello {
        match Packet::decode(bytes).unwrap() {
            Packet::Hello(_, h) => h,
            other => panic!("expected a hello, got {other:?}"),
        }
    }

    fn ack(key: &HelloKey, nonce: u64) -> Vec<u8> {
        let a = HelloAck {
            client_time_us: 0,
            nonce,
            relay_time_us: UNIX0,
            observed: "203.0.113.5:40000".parse().unwrap(),
        };
        let mut buf = [0u8; 128];
        let n = relay::encode_hello_ack(0xabc, 7, &a, key, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn connects_only_on_an_authentic_ack_to_our_hello() {
        let (mut c, key) = client();
        c.handle_timeout(Micros::ZERO);
        let h = hello_of(&c.poll_transmit().unwrap());
        assert_eq!(h.client_time_us, UNIX0);
        // Wrong key, wrong nonce: ignored.
        assert!(
            c.handle_datagram(Micros(1), &ack(&HelloKey([9; 32]), h.nonce))
                .is_none()
        );
        assert!(
            c.handle_datagram(Micros(1), &ack(&key, h.nonce ^ 1))
                .is_none()
        );
        assert_eq!(c.state(), RelayState::Connecting);
        c.handle_datagram(Micros(2), &ack(&key, h.nonce));
        assert_eq!(c.state(), RelayState::Connected);
        assert!(matches!(
            c.poll_event(),
            Some(RelayClientEvent::Connected { count: 1, .. })
        ));
    }

    #[test]
    fn keepalives_flow_and_silence_brings_a_fresh_hello() {
        let (mut c, key) = client();
        c.handle_timeout(Micros::ZERO);
        let h1 = hello_of(&c.poll_transmit().unwrap());
        c.handle_datagram(Micros::ZERO, &ack(&key, h1.nonce));
        c.poll_event();
        // One keepalive per second while the relay answers.
        let mut t = Micros::ZERO;
        for seq in 1..=3u32 {
            t = c.poll_timeout().unwrap();
            c.handle_timeout(t);
            let ka = c.poll_transmit().unwrap();
            let Packet::Keepalive(_, k) = Packet::decode(&ka).unwrap() else {
                panic!("expected a keepalive")
            };
            key.verify(&ka).unwrap();
            assert_eq!(k.seq, seq);
            let a = KeepaliveAck {
                seq,
                client_time_us: k.client_time_us,
                relay_time_us: 0,
            };
            let mut buf = [0u8; 128];
            let n = relay::encode_keepalive_ack(0xabc, 7, &a, &key, &mut buf).unwrap();
            c.handle_datagram(t + Duration::from_millis(3), &buf[..n]);
        }
        assert_eq!(c.rtt(), Some(Duration::from_millis(3)));
        // The relay goes silent (restarted): after `lost_after`, a new hello
        // with a later client time, retried until answered.
        let mut hellos = Vec::new();
        while hellos.len() < 3 {
            t = c.poll_timeout().unwrap();
            c.handle_timeout(t);
            while let Some(p) = c.poll_transmit() {
                if let Ok(Packet::Hello(_, h)) = Packet::decode(&p) {
                    hellos.push(h);
                }
            }
        }
        assert_eq!(c.poll_event(), Some(RelayClientEvent::Lost));
        assert!(
            hellos
                .windows(2)
                .all(|w| w[1].client_time_us > w[0].client_time_us)
        );
        assert!(hellos[0].client_time_us > h1.client_time_us);
        c.handle_datagram(t, &ack(&key, hellos[2].nonce));
        assert!(matches!(
            c.poll_event(),
            Some(RelayClientEvent::Connected { count: 2, .. })
        ));
    }

    #[test]
    fn data_comes_through_and_leave_ends_everything() {
        let (mut c, key) = client();
        c.handle_timeout(Micros::ZERO);
        let h = hello_of(&c.poll_transmit().unwrap());
        c.handle_datagram(Micros::ZERO, &ack(&key, h.nonce));
        let mut buf = [0u8; 64];
        let n = relay::encode_data(0xabc, 9, 7, b"sealed", &mut buf).unwrap();
        assert_eq!(
            c.handle_datagram(Micros(5), &buf[..n]),
            Some((9, &b"sealed"[..]))
        );
        // Another session's packet is not ours.
        let n = relay::encode_data(0xabd, 9, 7, b"x", &mut buf).unwrap();
        assert_eq!(c.handle_datagram(Micros(5), &buf[..n]), None);
        c.send(9, b"out").unwrap();
        assert!(matches!(
            Packet::decode(&c.poll_transmit().unwrap()),
            Ok(Packet::Data { dest: 9, .. })
        ));
        c.leave(Micros(10));
        let l = c.poll_transmit().unwrap();
        assert!(matches!(Packet::decode(&l), Ok(Packet::Leave(..))));
        key.verify(&l).unwrap();
        assert_eq!(c.state(), RelayState::Left);
        assert_eq!(c.poll_timeout(), None);
    }

    /// Two relay peers (members 10 and 20 of session 0xabc) and a toy
    /// relay that acknowledges hellos and keepalives and forwards data;
    /// datagrams between the peers' own addresses get through while
    /// `open`. One millisecond per step.
    struct Pair {
        peers: [RelayPeer; 2],
        addrs: [SocketAddr; 2],
        keys: [HelloKey; 2],
        publics: [[u8; 32]; 2],
        relay: SocketAddr,
        now: Micros,
        open: bool,
        /// Data packets the toy relay forwarded.
        forwarded: u64,
        /// MIDI events each peer's participant delivered.
        midi_in: [usize; 2],
    }

    const IDS: [u32; 2] = [10, 20];

    impl Pair {
        fn new() -> Pair {
            let relay: SocketAddr = "192.0.2.1:7400".parse().unwrap();
            let addrs: [SocketAddr; 2] = [
                "10.0.0.1:5004".parse().unwrap(),
                "10.0.0.2:5004".parse().unwrap(),
            ];
            let mut keys = Vec::new();
            let mut publics = [[0u8; 32]; 2];
            let peers = [0usize, 1].map(|i| {
                let (ticket, key) = Ticket::issue(&ServerSecret([3; 32]), 0xabc, IDS[i], u64::MAX);
                keys.push(key.clone());
                let secret = [i as u8 + 1; 32];
                publics[i] = crate::secure::public_key(&secret);
                let config = RelayPeerConfig {
                    relay: RelayClientConfig::new(relay, ticket, key),
                    participant: ParticipantConfig::new(format!("p{i}"), i as u64 + 1),
                    secret,
                    key_seed: [i as u8 + 7; 32],
                    unix_us: UNIX0,
                    reinvite_interval: Duration::from_secs(1),
                    direct: Some(DirectConfig::default()),
                };
                RelayPeer::new(config, Micros::ZERO)
            });
            let keys = [keys[0].clone(), keys[1].clone()];
            Pair {
                peers,
                addrs,
                keys,
                publics,
                relay,
                now: Micros::ZERO,
                open: true,
                forwarded: 0,
                midi_in: [0; 2],
            }
        }

        /// Both members online at their own addresses, except that peer
        /// `i` sees member `j` as `other` says.
        fn list(&self, other: Option<(usize, bool, SocketAddr)>) -> [Vec<RemoteMember>; 2] {
            [0usize, 1].map(|i| {
                (0..2)
                    .map(|j| {
                        let mut m = RemoteMember::new(IDS[j], self.publics[j], true);
                        m.observed = Some(self.addrs[j]);
                        if let Some((k, online, addr)) = other
                            && k == i
                            && j != i
                        {
                            m.online = online;
                            m.observed = Some(addr);
                        }
                        m
                    })
                    .collect()
            })
        }

        fn set_members(&mut self, lists: [Vec<RemoteMember>; 2]) {
            for (p, l) in self.peers.iter_mut().zip(lists) {
                p.set_members(self.now, &l);
            }
        }

        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                let mut sent: Vec<(usize, Transmit)> = Vec::new();
                for (i, p) in self.peers.iter_mut().enumerate() {
                    if Protocol::poll_timeout(p).is_some_and(|t| t <= self.now) {
                        Protocol::handle_timeout(p, self.now);
                    }
                    while let Some(t) = Protocol::poll_transmit(p) {
                        sent.push((i, t));
                    }
                    while let Some(e) = Protocol::poll_event(p) {
                        if matches!(
                            e,
                            RelayPeerEvent::Participant(ParticipantEvent::Midi { .. })
                        ) {
                            self.midi_in[i] += 1;
                        }
                    }
                }
                let mut flights: Vec<(usize, SocketAddr, Vec<u8>)> = Vec::new();
                for (i, t) in sent {
                    if t.to == self.relay {
                        flights.extend(self.relay_answer(i, &t.payload));
                    } else if let Some(j) = self.addrs.iter().position(|a| *a == t.to)
                        && self.open
                    {
                        flights.push((j, self.addrs[i], t.payload));
                    }
                }
                self.now += Duration::from_millis(1);
                for (to, from, bytes) in flights {
                    Protocol::handle_datagram(
                        &mut self.peers[to],
                        self.now,
                        Port::Control,
                        from,
                        &bytes,
                    );
                }
            }
        }

        /// What the toy relay sends for a datagram from peer `i`.
        fn relay_answer(&mut self, i: usize, bytes: &[u8]) -> Vec<(usize, SocketAddr, Vec<u8>)> {
            let mut buf = [0u8; 256];
            let n = match Packet::decode(bytes) {
                Ok(Packet::Hello(_, h)) => {
                    let a = HelloAck {
                        client_time_us: h.client_time_us,
                        nonce: h.nonce,
                        relay_time_us: UNIX0,
                        observed: self.addrs[i],
                    };
                    relay::encode_hello_ack(0xabc, IDS[i], &a, &self.keys[i], &mut buf).unwrap()
                }
                Ok(Packet::Keepalive(_, k)) => {
                    let a = KeepaliveAck {
                        seq: k.seq,
                        client_time_us: k.client_time_us,
                        relay_time_us: UNIX0,
                    };
                    relay::encode_keepalive_ack(0xabc, IDS[i], &a, &self.keys[i], &mut buf).unwrap()
                }
                Ok(Packet::Data { dest, .. }) => {
                    let Some(j) = IDS.iter().position(|id| *id == dest) else {
                        return Vec::new();
                    };
                    self.forwarded += 1;
                    return vec![(j, self.relay, bytes.to_vec())];
                }
                _ => return Vec::new(),
            };
            vec![(i, self.relay, buf[..n].to_vec())]
        }

        fn paths(&self) -> [Path; 2] {
            [self.peers[0].path(IDS[1]), self.peers[1].path(IDS[0])]
        }
    }

    /// Two peers that reach each other, on a direct path.
    fn direct_pair() -> Pair {
        let mut n = Pair::new();
        let lists = n.list(None);
        n.set_members(lists);
        n.run_for(Duration::from_secs(2));
        assert_eq!(
            n.paths(),
            [Path::Direct(n.addrs[1]), Path::Direct(n.addrs[0])]
        );
        assert_eq!(n.peers[0].joined_members().collect::<Vec<_>>(), [IDS[1]]);
        n
    }

    #[test]
    fn the_same_member_list_again_keeps_a_working_direct_path() {
        let mut n = direct_pair();
        let before = n.forwarded;
        // The list re-sent unchanged, and with the other member listed
        // offline on the relay (same address): neither touches the path,
        // and the relay carries nothing.
        for _ in 0..5 {
            let lists = n.list(None);
            n.set_members(lists);
            n.run_for(Duration::from_millis(20));
            let offline = n.list(Some((0, false, n.addrs[1])));
            n.set_members(offline);
            assert_eq!(n.paths()[0], Path::Direct(n.addrs[1]));
            n.run_for(Duration::from_millis(20));
        }
        for _ in 0..20 {
            let now = n.now;
            let m = jam_core::ShortMessage::note_on(0, 60, 100);
            n.peers[0].participant().send(now, now, m).unwrap();
            n.run_for(Duration::from_millis(50));
        }
        assert_eq!(
            n.paths(),
            [Path::Direct(n.addrs[1]), Path::Direct(n.addrs[0])]
        );
        assert_eq!(n.forwarded, before, "the relay carried data");
        assert!(n.peers[0].stats().direct_out > 20);
    }

    /// A note from peer 10 every 50 ms for `ms`; how many peer 20 heard.
    fn play(n: &mut Pair, ms: u64) -> usize {
        let before = n.midi_in[1];
        for _ in 0..ms / 50 {
            let now = n.now;
            let m = jam_core::ShortMessage::note_on(0, 60, 100);
            n.peers[0].participant().send(now, now, m).unwrap();
            n.run_for(Duration::from_millis(50));
        }
        n.midi_in[1] - before
    }

    #[test]
    fn frames_sent_while_a_direct_path_is_in_doubt_also_go_through_the_relay() {
        let mut n = direct_pair();
        assert_eq!(play(&mut n, 500), 10);
        assert_eq!(n.peers[0].stats().relay_copies, 0);
        // The direct path breaks. What is sent before the doubt (400 ms
        // of silence; the last answer came up to a keepalive earlier) is
        // lost; from then on the relay's copies arrive, before the path is
        // given up at 1 s.
        n.open = false;
        let heard = play(&mut n, 2_000);
        assert_eq!(n.paths()[0], Path::Relay);
        let copies = n.peers[0].stats().relay_copies;
        assert!(copies > 0, "no copies through the relay");
        let c = DirectConfig::default();
        let lost_at_most = (c.doubt_after.as_millis() / 50) as usize;
        assert!(heard >= 40 - lost_at_most, "heard {heard} of 40");
        assert!(
            heard > 40 - (c.silent_after.as_millis() / 50) as usize,
            "no better than waiting for the fallback: heard {heard} of 40"
        );
        // A late answer on a working path: copies for a moment, nothing
        // lost, the path stays.
        let mut n = direct_pair();
        n.open = false;
        n.run_for(c.doubt_after + Duration::from_millis(100));
        n.open = true;
        assert_eq!(play(&mut n, 1_000), 20);
        assert!(matches!(n.paths()[0], Path::Direct(_)));
        assert!(!n.peers[0].direct().unwrap().in_doubt(IDS[1]));
    }

    #[test]
    fn a_member_listed_at_a_new_address_is_probed_there_and_the_old_path_dropped() {
        let mut n = direct_pair();
        // Member 20 moved: its old address is gone from the network, the
        // control plane lists the new one. Peer 10 leaves the old path at
        // once instead of sending into it for a second.
        let moved: SocketAddr = "10.0.0.3:6000".parse().unwrap();
        let old = n.addrs[1];
        n.addrs[1] = moved;
        let lists = n.list(Some((0, true, moved)));
        n.set_members(lists);
        assert_eq!(n.paths()[0], Path::Relay);
        assert_eq!(n.peers[0].direct().unwrap().candidates(IDS[1]), [moved]);
        n.run_for(Duration::from_millis(500));
        assert_eq!(n.paths()[0], Path::Direct(moved));
        assert_ne!(n.paths()[0], Path::Direct(old));
    }

    proptest! {
        #[test]
        fn virtual_addresses_map_back(member in 1u32.., data: bool) {
            let mut a = member_addr(member);
            if data {
                a.set_port(a.port() + 1);
            }
            let ch = if data { Channel::Data } else { Channel::Control };
            prop_assert_eq!(member_of(a), Some((member, ch)));
        }

        #[test]
        fn real_addresses_are_not_members(ip: [u8; 4], port: u16) {
            prop_assert_eq!(member_of(SocketAddr::from((ip, port))), None);
        }
    }
}
