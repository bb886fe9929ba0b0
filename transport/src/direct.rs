//! Direct paths between members of a relayed session, sans-IO: which
//! member we can reach without the relay, at which address, and when to
//! fall back to the relay.
//!
//! Every member tells the relay its own interface addresses in its hello
//! ([`crate::relay::ReportedAddrs`]); the relay adds the address it saw the
//! hello come from (the member's public address behind its NAT), and the
//! control plane lists both for every member. [`DirectPaths`] takes these
//! as *candidates* per member and
//!
//! 1. **probes** every candidate a few times a second (a [`Probe`] the
//!    caller seals and sends straight to the candidate address, not to the
//!    relay);
//! 2. switches the member to **direct** when an authentic [`ProbeKind::Ack`]
//!    to one of our probes comes back, and sends to the address the
//!    answered probe went to;
//! 3. **keeps the path alive** with one probe per
//!    [`DirectConfig::keepalive_interval`] (data from the member on that
//!    address counts as well);
//! 4. **doubts** a path silent for [`DirectConfig::doubt_after`] (a
//!    keepalive answer late or lost): until the member is heard again, the
//!    caller sends each frame both ways, direct and through the relay
//!    ([`DirectPaths::in_doubt`]), so frames sent into a path that has just
//!    broken still arrive;
//! 5. **falls back to the relay** as soon as the path has been silent for
//!    [`DirectConfig::silent_after`], and keeps probing (a few rounds, then
//!    a pause of [`DirectConfig::retry_after`]) so a path that comes back
//!    is used again.
//!
//! The control plane's list may arrive again and again (pushed on every
//! change anywhere in the session, or polled): an unchanged entry never
//! touches a working path. A member listed at new addresses with an old one
//! gone has moved: its path drops to the relay at once and the new
//! addresses are probed ([`DirectPaths::set_candidates`]).
//!
//! Each side decides for its own sending direction; a receiver accepts a
//! member's frames from the relay and from any address, because every frame
//! is authenticated end to end and the replay window of
//! [`crate::secure`] drops the copies that arrive both ways while a path
//! switches.
//!
//! # Authentication
//!
//! This module never sees a byte from the network: the caller seals a
//! probe's 13 bytes like any other frame (sender key, [`Channel::Path`]),
//! and hands [`DirectPaths::handle_probe`] only probes that opened under the
//! member's key. A probe names its addressee ([`Probe::to`]), so a frame
//! sealed for one member and replayed to another is refused, and acks echo
//! a random 64-bit nonce, so a path is only taken when the member itself
//! answered a probe sent to that address. A stranger on the network
//! therefore cannot make us send a member's traffic elsewhere; the worst it
//! can do is drop packets, which sends us back to the relay.
//!
//! A member that receives an authentic probe from an address it did not
//! know adds it to that member's candidates (a NAT's mapping the control
//! plane has not seen) and probes it at once: two members behind
//! hole-punching-friendly NATs open each other's mappings this way.
//!
//! ```
//! use jam_core::Micros;
//! use jam_transport::direct::{DirectConfig, DirectPaths, Path, ProbeKind};
//!
//! let (a_addr, b_addr) = ("127.0.0.1:7000".parse().unwrap(), "127.0.0.1:8000".parse().unwrap());
//! let mut a = DirectPaths::new(DirectConfig::default(), 1, 11);
//! let mut b = DirectPaths::new(DirectConfig::default(), 2, 22);
//! a.set_candidates(Micros::ZERO, 2, &[b_addr]);
//! a.handle_timeout(Micros::ZERO);
//! let (to, addr, probe) = a.poll_probe().unwrap();
//! assert_eq!((to, addr, probe.kind), (2, b_addr, ProbeKind::Probe));
//! // (sealed, sent to `addr`, opened by b)
//! b.handle_probe(Micros(1_000), 1, a_addr, probe);
//! let (_, back, ack) = b.poll_probe().unwrap();
//! assert_eq!((back, ack.kind), (a_addr, ProbeKind::Ack));
//! a.handle_probe(Micros(2_000), 2, b_addr, ack);
//! assert_eq!(a.path(2), Path::Direct(b_addr));
//! ```
//!
//! Not here: sealing and sockets ([`crate::relay_client::RelayPeer`] does
//! both), and NAT traversal beyond simultaneous probing (no TURN-like
//! allocation: the relay already is the fallback).
//!
//! [`Channel::Path`]: crate::secure::Channel::Path

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use jam_core::Micros;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Length of an encoded [`Probe`].
pub const PROBE_LEN: usize = 13;
/// At most this many candidate addresses are kept per member (the control
/// plane lists up to five; probes from new addresses add the rest).
pub const MAX_CANDIDATES: usize = 8;
/// At most this many probes per member wait for their ack.
const MAX_OUTSTANDING: usize = 64;

/// Whether a probe asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// "Can you hear me at this address?"
    Probe,
    /// "Yes": echoes the probe's nonce back to where the probe came from.
    Ack,
}

/// A path probe: the plaintext the caller seals on [`Channel::Path`].
///
/// [`Channel::Path`]: crate::secure::Channel::Path
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Probe or ack.
    pub kind: ProbeKind,
    /// The addressee's member id (a probe for someone else is refused).
    pub to: u32,
    /// Random for a probe, echoed by its ack.
    pub nonce: u64,
}

/// Why bytes are not a [`Probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Not exactly [`PROBE_LEN`] bytes.
    #[error("probe of {0} bytes, expected 13")]
    Length(usize),
    /// An unknown kind byte.
    #[error("unknown probe kind {0}")]
    Kind(u8),
}

impl Probe {
    /// `kind (1: probe, 2: ack) · to (u32) · nonce (u64)`, big-endian.
    pub fn encode(&self) -> [u8; PROBE_LEN] {
        let mut b = [0u8; PROBE_LEN];
        b[0] = match self.kind {
            ProbeKind::Probe => 1,
            ProbeKind::Ack => 2,
        };
        b[1..5].copy_from_slice(&self.to.to_be_bytes());
        b[5..].copy_from_slice(&self.nonce.to_be_bytes());
        b
    }

    /// Parses exactly [`PROBE_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Probe, ProbeError> {
        if bytes.len() != PROBE_LEN {
            return Err(ProbeError::Length(bytes.len()));
        }
        let kind = match bytes[0] {
            1 => ProbeKind::Probe,
            2 => ProbeKind::Ack,
            k => return Err(ProbeError::Kind(k)),
        };
        Ok(Probe {
            kind,
            to: u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes")),
            nonce: u64::from_be_bytes(bytes[5..].try_into().expect("8 bytes")),
        })
    }
}

/// Timers of [`DirectPaths`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectConfig {
    /// Time between probe rounds while looking for a path.
    pub probe_interval: Duration,
    /// Rounds before pausing.
    pub probe_rounds: u32,
    /// The pause after unanswered rounds.
    pub retry_after: Duration,
    /// Time between keepalive probes on a direct path.
    pub keepalive_interval: Duration,
    /// A direct path silent for this long is in doubt: frames go both ways
    /// until the member is heard again.
    pub doubt_after: Duration,
    /// A direct path silent for this long is dropped for the relay.
    pub silent_after: Duration,
}

impl Default for DirectConfig {
    /// Probe every 200 ms for 3 s, then every 5 s; keep a path alive every
    /// 250 ms, doubt it after 400 ms of silence (one answer missing) and
    /// drop it after 1 s (four missing). A path that breaks costs what was
    /// sent into it in the 400 ms before the doubt (the recovery journal
    /// repairs the state of those keys once the relay's copies carry it);
    /// a late answer costs a few frames sent twice.
    fn default() -> Self {
        DirectConfig {
            probe_interval: Duration::from_millis(200),
            probe_rounds: 15,
            retry_after: Duration::from_secs(5),
            keepalive_interval: Duration::from_millis(250),
            doubt_after: Duration::from_millis(400),
            silent_after: Duration::from_secs(1),
        }
    }
}

/// How we send to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Through the relay.
    Relay,
    /// Straight to this address.
    Direct(SocketAddr),
}

/// What [`DirectPaths`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathEvent {
    /// We now send to `member` directly.
    Direct {
        /// The member.
        member: u32,
        /// Its address.
        addr: SocketAddr,
        /// Round trip of the probe that found it.
        rtt: Duration,
    },
    /// The direct path to `member` went silent; the relay carries it again.
    Relay {
        /// The member.
        member: u32,
    },
}

#[derive(Debug)]
struct MemberPath {
    candidates: Vec<SocketAddr>,
    /// The addresses the control plane listed last (usable ones only).
    listed: Vec<SocketAddr>,
    direct: Option<SocketAddr>,
    last_heard: Micros,
    /// The direct path has been silent for `doubt_after`.
    doubt: bool,
    rounds_left: u32,
    next_probe: Micros,
    /// Probes awaiting their ack: (nonce, address, sent at).
    sent: VecDeque<(u64, SocketAddr, Micros)>,
}

impl MemberPath {
    fn active(&self) -> bool {
        self.direct.is_some() || !self.candidates.is_empty()
    }
}

/// The direct-path state of every member; see the [module docs](self).
#[derive(Debug)]
pub struct DirectPaths {
    config: DirectConfig,
    me: u32,
    rng: StdRng,
    members: BTreeMap<u32, MemberPath>,
    out: VecDeque<(u32, SocketAddr, Probe)>,
    events: VecDeque<PathEvent>,
}

/// Whether an address can be probed at all.
fn usable(a: &SocketAddr) -> bool {
    a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast()
}

impl DirectPaths {
    /// Paths of member `me`; `seed` draws the probe nonces.
    pub fn new(config: DirectConfig, me: u32, seed: u64) -> Self {
        DirectPaths {
            config,
            me,
            rng: StdRng::seed_from_u64(seed),
            members: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// How we send to `member` now.
    pub fn path(&self, member: u32) -> Path {
        self.members
            .get(&member)
            .and_then(|m| m.direct)
            .map_or(Path::Relay, Path::Direct)
    }

    /// The candidate addresses of `member` (from the control plane and
    /// from its probes).
    pub fn candidates(&self, member: u32) -> &[SocketAddr] {
        self.members.get(&member).map_or(&[][..], |m| &m.candidates)
    }

    /// The addresses the control plane lists for `member` (observed first,
    /// then reported). New addresses restart probing at once; addresses
    /// learned from the member's own probes are kept.
    ///
    /// The same list again changes nothing, so a working direct path
    /// survives every re-sent member list. A list that drops an address
    /// listed before means the member moved (a new network, a new NAT
    /// mapping): its old candidates and learned addresses are forgotten,
    /// and a direct path to an address no longer listed goes back to the
    /// relay at once ([`PathEvent::Relay`]) while the new addresses are
    /// probed.
    pub fn set_candidates(&mut self, now: Micros, member: u32, addrs: &[SocketAddr]) {
        if member == self.me {
            return;
        }
        let listed: Vec<SocketAddr> = addrs.iter().copied().filter(usable).collect();
        let rounds = self.config.probe_rounds;
        let m = self.member_path(now, member);
        let moved = m.listed.iter().any(|a| !listed.contains(a));
        m.listed.clone_from(&listed);
        if moved {
            m.candidates.retain(|a| listed.contains(a));
            m.sent.clear();
            let dropped = m.direct.is_some_and(|d| !listed.contains(&d));
            if dropped {
                m.direct = None;
            }
            if m.direct.is_none() {
                m.rounds_left = rounds;
                m.next_probe = now;
            }
            if dropped {
                self.events.push_back(PathEvent::Relay { member });
            }
        }
        self.add_candidates(now, member, &listed);
    }

    /// The path state of `member`, made if there is none yet.
    fn member_path(&mut self, now: Micros, member: u32) -> &mut MemberPath {
        let rounds = self.config.probe_rounds;
        self.members.entry(member).or_insert_with(|| MemberPath {
            candidates: Vec::new(),
            listed: Vec::new(),
            direct: None,
            last_heard: now,
            doubt: false,
            rounds_left: rounds,
            next_probe: now,
            sent: VecDeque::new(),
        })
    }

    /// Adds candidate addresses of `member` (listed, or learned from its
    /// probes); a new one restarts probing unless the path is direct.
    fn add_candidates(&mut self, now: Micros, member: u32, addrs: &[SocketAddr]) {
        let rounds = self.config.probe_rounds;
        let m = self.member_path(now, member);
        let mut fresh = false;
        for a in addrs.iter().filter(|a| usable(a)) {
            if !m.candidates.contains(a) && m.candidates.len() < MAX_CANDIDATES {
                m.candidates.push(*a);
                fresh = true;
            }
        }
        if fresh && m.direct.is_none() {
            m.rounds_left = rounds;
            m.next_probe = m.next_probe.min(now);
        }
    }

    /// Whether we send to `member` directly now.
    pub fn is_direct(&self, member: u32) -> bool {
        self.path(member) != Path::Relay
    }

    /// Forgets every member for which `keep` is false (they left).
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.members.retain(|id, _| keep(*id));
        self.out.retain(|(id, _, _)| keep(*id));
    }

    /// An authentic probe or ack from `member` that arrived from `from`.
    pub fn handle_probe(&mut self, now: Micros, member: u32, from: SocketAddr, probe: Probe) {
        if probe.to != self.me || member == self.me {
            return;
        }
        match probe.kind {
            ProbeKind::Probe => {
                self.out.push_back((
                    member,
                    from,
                    Probe {
                        kind: ProbeKind::Ack,
                        to: member,
                        nonce: probe.nonce,
                    },
                ));
                // A mapping the control plane has not seen: probe it too.
                if member != self.me {
                    self.add_candidates(now, member, &[from]);
                }
            }
            ProbeKind::Ack => {
                let Some(m) = self.members.get_mut(&member) else {
                    return;
                };
                let Some(i) = m.sent.iter().position(|(n, _, _)| *n == probe.nonce) else {
                    return;
                };
                let (_, addr, sent_at) = m.sent.remove(i).expect("found above");
                match m.direct {
                    None => {
                        m.direct = Some(addr);
                        m.last_heard = now;
                        m.doubt = false;
                        m.next_probe = now + self.config.keepalive_interval;
                        self.events.push_back(PathEvent::Direct {
                            member,
                            addr,
                            rtt: now.saturating_duration_since(sent_at),
                        });
                    }
                    Some(d) if d == addr => {
                        m.last_heard = now;
                        m.doubt = false;
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// An authentic frame from `member` arrived straight from `from`: a
    /// live direct path needs no probe answer to stay up.
    pub fn heard(&mut self, now: Micros, member: u32, from: SocketAddr) {
        if let Some(m) = self.members.get_mut(&member)
            && m.direct == Some(from)
        {
            m.last_heard = m.last_heard.max(now);
            m.doubt = false;
        }
    }

    /// Whether the direct path to `member` is in doubt (silent for
    /// [`DirectConfig::doubt_after`], not yet given up): send each frame
    /// through the relay as well as to [`DirectPaths::path`]. The receiver
    /// keeps the first copy; its replay window drops the other.
    pub fn in_doubt(&self, member: u32) -> bool {
        self.members
            .get(&member)
            .is_some_and(|m| m.direct.is_some() && m.doubt)
    }

    /// Runs the probe and silence timers.
    pub fn handle_timeout(&mut self, now: Micros) {
        let c = self.config;
        for (&id, m) in &mut self.members {
            m.sent
                .retain(|(_, _, t)| now.saturating_duration_since(*t) < c.retry_after);
            if let Some(d) = m.direct {
                let silence = now.saturating_duration_since(m.last_heard);
                m.doubt = silence >= c.doubt_after;
                if silence >= c.silent_after {
                    m.direct = None;
                    m.doubt = false;
                    m.rounds_left = c.probe_rounds;
                    m.next_probe = now;
                    self.events.push_back(PathEvent::Relay { member: id });
                } else if now >= m.next_probe {
                    send_probe(&mut self.rng, &mut self.out, &mut m.sent, id, d, now);
                    m.next_probe = now + c.keepalive_interval;
                    continue;
                } else {
                    continue;
                }
            }
            if m.candidates.is_empty() || now < m.next_probe {
                continue;
            }
            for &a in &m.candidates {
                send_probe(&mut self.rng, &mut self.out, &mut m.sent, id, a, now);
            }
            m.rounds_left = m.rounds_left.saturating_sub(1);
            m.next_probe = if m.rounds_left > 0 {
                now + c.probe_interval
            } else {
                m.rounds_left = c.probe_rounds;
                now + c.retry_after
            };
        }
    }

    /// When [`DirectPaths::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Micros> {
        self.members
            .values()
            .filter(|m| m.active())
            .map(|m| match m.direct {
                Some(_) if m.doubt => m.next_probe.min(m.last_heard + self.config.silent_after),
                Some(_) => m.next_probe.min(m.last_heard + self.config.doubt_after),
                None => m.next_probe,
            })
            .min()
    }

    /// The next probe to seal and send straight to the address:
    /// (member, address, probe).
    pub fn poll_probe(&mut self) -> Option<(u32, SocketAddr, Probe)> {
        self.out.pop_front()
    }

    /// The next path change.
    pub fn poll_event(&mut self) -> Option<PathEvent> {
        self.events.pop_front()
    }
}

/// Queues a probe with a fresh nonce to member `id` at `to`, and
/// remembers the nonce so that only an ack echoing it opens the path.
fn send_probe(
    rng: &mut StdRng,
    out: &mut VecDeque<(u32, SocketAddr, Probe)>,
    sent: &mut VecDeque<(u64, SocketAddr, Micros)>,
    id: u32,
    to: SocketAddr,
    now: Micros,
) {
    let nonce = rng.next_u64();
    push_sent(sent, nonce, to, now);
    out.push_back((
        id,
        to,
        Probe {
            kind: ProbeKind::Probe,
            to: id,
            nonce,
        },
    ));
}

fn push_sent(
    sent: &mut VecDeque<(u64, SocketAddr, Micros)>,
    nonce: u64,
    a: SocketAddr,
    now: Micros,
) {
    if sent.len() == MAX_OUTSTANDING {
        sent.pop_front();
    }
    sent.push_back((nonce, a, now));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Two members' paths over a toy network where `reach(from, to)` says
    /// whether a datagram gets through, with 1 ms of delay; runs until `end`.
    struct Net {
        a: DirectPaths,
        b: DirectPaths,
        a_addr: SocketAddr,
        b_addr: SocketAddr,
        now: Micros,
        events: Vec<(u32, PathEvent)>,
        sent: Vec<(u32, SocketAddr, ProbeKind)>,
    }

    impl Net {
        fn new() -> Net {
            let c = DirectConfig::default();
            Net {
                a: DirectPaths::new(c, 1, 1),
                b: DirectPaths::new(c, 2, 2),
                a_addr: addr("10.0.0.1:5004"),
                b_addr: addr("10.0.0.2:5004"),
                now: Micros::ZERO,
                events: Vec::new(),
                sent: Vec::new(),
            }
        }

        fn run(&mut self, until: Micros, reach: impl Fn(u32, SocketAddr) -> bool) {
            let step = Duration::from_millis(1);
            while self.now < until {
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
                let mut flights = Vec::new();
                while let Some((to, at, p)) = self.a.poll_probe() {
                    assert_eq!(to, 2);
                    self.sent.push((1, at, p.kind));
                    flights.push((1u32, at, p));
                }
                while let Some((to, at, p)) = self.b.poll_probe() {
                    assert_eq!(to, 1);
                    self.sent.push((2, at, p.kind));
                    flights.push((2u32, at, p));
                }
                self.now += step;
                for (from, at, p) in flights {
                    if !reach(from, at) {
                        continue;
                    }
                    if from == 1 && at == self.b_addr {
                        self.b.handle_probe(self.now, 1, self.a_addr, p);
                    } else if from == 2 && at == self.a_addr {
                        self.a.handle_probe(self.now, 2, self.b_addr, p);
                    }
                }
                while let Some(e) = self.a.poll_event() {
                    self.events.push((1, e));
                }
                while let Some(e) = self.b.poll_event() {
                    self.events.push((2, e));
                }
            }
        }
    }

    #[test]
    fn probe_codec_round_trips_and_refuses_junk() {
        let p = Probe {
            kind: ProbeKind::Ack,
            to: 0xdead_beef,
            nonce: 42,
        };
        assert_eq!(Probe::decode(&p.encode()), Ok(p));
        assert_eq!(Probe::decode(&[1; 12]), Err(ProbeError::Length(12)));
        let mut b = p.encode();
        b[0] = 9;
        assert_eq!(Probe::decode(&b), Err(ProbeError::Kind(9)));
    }

    #[test]
    fn both_sides_go_direct_when_the_network_lets_them() {
        let mut n = Net::new();
        let (a_addr, b_addr) = (n.a_addr, n.b_addr);
        n.a.set_candidates(Micros::ZERO, 2, &[addr("192.168.1.9:5004"), b_addr]);
        n.b.set_candidates(Micros::ZERO, 1, &[a_addr]);
        n.run(Micros(50_000), |_, at| at == a_addr || at == b_addr);
        assert_eq!(n.a.path(2), Path::Direct(b_addr));
        assert_eq!(n.b.path(1), Path::Direct(a_addr));
        assert!(n.events.iter().any(|(w, e)| *w == 1
            && matches!(e, PathEvent::Direct { member: 2, rtt, .. } if *rtt == Duration::from_millis(2))));
        // Kept alive: still direct ten seconds later, with keepalives only
        // to the chosen address (the dead candidate is no longer probed).
        n.sent.clear();
        n.run(Micros(10_050_000), |_, at| at == a_addr || at == b_addr);
        assert_eq!(n.a.path(2), Path::Direct(b_addr));
        let probes: Vec<_> = n
            .sent
            .iter()
            .filter(|(w, _, k)| *w == 1 && *k == ProbeKind::Probe)
            .collect();
        assert!(probes.iter().all(|(_, at, _)| *at == b_addr));
        // 10 s at one keepalive per 250 ms.
        assert!((38..=42).contains(&probes.len()), "{}", probes.len());
    }

    #[test]
    fn a_path_that_goes_silent_falls_back_within_a_second_and_comes_back() {
        let mut n = Net::new();
        let (a_addr, b_addr) = (n.a_addr, n.b_addr);
        n.a.set_candidates(Micros::ZERO, 2, &[b_addr]);
        n.b.set_candidates(Micros::ZERO, 1, &[a_addr]);
        n.run(Micros(100_000), |_, _| true);
        assert_eq!(n.a.path(2), Path::Direct(b_addr));
        assert!(!n.a.in_doubt(2));
        n.events.clear();
        // Everything direct is dropped from 0.1 s on. The last answer came
        // at most a keepalive before: in doubt by 0.1 + 0.4 s, while still
        // sending direct.
        n.run(Micros(500_000), |_, _| false);
        assert!(n.a.in_doubt(2) && n.b.in_doubt(1));
        n.run(Micros(1_000_000), |_, _| false);
        assert_eq!(n.a.path(2), Path::Direct(b_addr), "not yet a second");
        assert!(n.a.in_doubt(2));
        n.run(Micros(1_400_000), |_, _| false);
        assert_eq!(n.a.path(2), Path::Relay);
        assert_eq!(n.b.path(1), Path::Relay);
        assert!(!n.a.in_doubt(2), "no doubt on the relay");
        assert!(n.events.contains(&(1, PathEvent::Relay { member: 2 })));
        // The path heals: found again by the next probe round (at most
        // retry_after later).
        n.run(Micros(8_000_000), |_, _| true);
        assert_eq!(n.a.path(2), Path::Direct(b_addr));
    }

    #[test]
    fn data_on_the_path_keeps_it_up_without_acks() {
        let mut n = Net::new();
        let (a_addr, b_addr) = (n.a_addr, n.b_addr);
        n.a.set_candidates(Micros::ZERO, 2, &[b_addr]);
        n.b.set_candidates(Micros::ZERO, 1, &[a_addr]);
        n.run(Micros(100_000), |_, _| true);
        // b's acks stop arriving, but b's data keeps coming from b_addr.
        let mut t = n.now;
        while t < Micros(3_000_000) {
            t += Duration::from_millis(100);
            n.a.heard(t, 2, b_addr);
            n.a.handle_timeout(t);
            while n.a.poll_probe().is_some() {}
        }
        assert_eq!(n.a.path(2), Path::Direct(b_addr));
        assert!(!n.a.in_doubt(2), "data is an answer too");
        // Data from another address does not count.
        let mut t2 = t;
        while t2 < t + Duration::from_millis(1_500) {
            t2 += Duration::from_millis(100);
            n.a.heard(t2, 2, addr("10.9.9.9:1"));
            n.a.handle_timeout(t2);
        }
        assert_eq!(n.a.path(2), Path::Relay);
    }

    #[test]
    fn one_way_reachability_makes_one_side_direct() {
        // b only knows a wrong address for a; a's probes teach it the
        // right one.
        let mut n = Net::new();
        let (a_addr, b_addr) = (n.a_addr, n.b_addr);
        n.a.set_candidates(Micros::ZERO, 2, &[b_addr]);
        n.b.set_candidates(Micros::ZERO, 1, &[addr("203.0.113.1:4000")]);
        n.run(Micros(500_000), |_, at| at == a_addr || at == b_addr);
        // b learned a's address from a's probe and answers there.
        assert_eq!(n.a.path(2), Path::Direct(b_addr));
        assert!(n.b.candidates(1).contains(&a_addr));
        assert_eq!(n.b.path(1), Path::Direct(a_addr));
        // Only a's datagrams get through (b's probes and acks are dropped):
        // a never hears an ack, b never hears one either.
        let mut m = Net::new();
        m.a.set_candidates(Micros::ZERO, 2, &[b_addr]);
        m.b.set_candidates(Micros::ZERO, 1, &[a_addr]);
        m.run(Micros(500_000), |from, _| from == 1);
        assert_eq!(m.a.path(2), Path::Relay);
        assert_eq!(m.b.path(1), Path::Relay);
    }

    #[test]
    fn forged_and_misaddressed_acks_take_no_path() {
        let mut a = DirectPaths::new(DirectConfig::default(), 1, 1);
        let b_addr = addr("10.0.0.2:5004");
        a.set_candidates(Micros::ZERO, 2, &[b_addr]);
        a.handle_timeout(Micros::ZERO);
        let (_, _, p) = a.poll_probe().unwrap();
        // An ack with a nonce we never sent.
        a.handle_probe(
            Micros(1),
            2,
            b_addr,
            Probe {
                kind: ProbeKind::Ack,
                to: 1,
                nonce: p.nonce ^ 1,
            },
        );
        // The right nonce, addressed to someone else.
        a.handle_probe(
            Micros(1),
            2,
            b_addr,
            Probe {
                kind: ProbeKind::Ack,
                to: 3,
                nonce: p.nonce,
            },
        );
        // The right nonce, from another member.
        a.handle_probe(
            Micros(1),
            3,
            b_addr,
            Probe {
                kind: ProbeKind::Ack,
                to: 1,
                nonce: p.nonce,
            },
        );
        assert_eq!(a.path(2), Path::Relay);
        assert_eq!(a.poll_event(), None);
        // The real ack, even from another source address, takes the
        // address the probe went to.
        a.handle_probe(
            Micros(9),
            2,
            addr("10.0.0.77:1"),
            Probe {
                kind: ProbeKind::Ack,
                to: 1,
                nonce: p.nonce,
            },
        );
        assert_eq!(a.path(2), Path::Direct(b_addr));
        // Replaying the same ack changes nothing (and the secure layer
        // refuses the replayed frame before it gets here anyway).
        a.handle_probe(
            Micros(10),
            2,
            b_addr,
            Probe {
                kind: ProbeKind::Ack,
                to: 1,
                nonce: p.nonce,
            },
        );
        assert!(matches!(a.poll_event(), Some(PathEvent::Direct { .. })));
        assert_eq!(a.poll_event(), None);
    }

    #[test]
    fn probing_pauses_after_its_rounds_and_members_can_be_forgotten() {
        let c = DirectConfig::default();
        let mut a = DirectPaths::new(c, 1, 1);
        a.set_candidates(Micros::ZERO, 2, &[addr("10.0.0.2:1"), addr("0.0.0.0:5")]);
        a.set_candidates(Micros::ZERO, 1, &[addr("10.0.0.1:1")]);
        assert_eq!(a.candidates(2).len(), 1, "unusable address dropped");
        assert!(a.candidates(1).is_empty(), "never ourselves");
        let mut probes = 0;
        let mut t = Micros::ZERO;
        while t < Micros(4_000_000) {
            a.handle_timeout(t);
            while a.poll_probe().is_some() {
                probes += 1;
            }
            t = a.poll_timeout().unwrap().max(t + Duration::from_micros(1));
        }
        assert_eq!(probes, c.probe_rounds as usize);
        assert!(
            a.poll_timeout().unwrap()
                >= Micros::ZERO + Duration::from_millis(2_800) + c.retry_after
        );
        a.retain(|id| id != 2);
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(a.path(2), Path::Relay);
    }

    proptest! {
        #[test]
        fn probe_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(p) = Probe::decode(&bytes) {
                prop_assert_eq!(&p.encode()[..], &bytes[..]);
            }
        }
    }
}
