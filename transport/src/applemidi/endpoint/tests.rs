//! Endpoint behaviour over the seeded network emulator, plus hand-driven
//! tests that pin what we do with the packets real peers get wrong.

use super::*;
use crate::applemidi::packet::{classify, rtp_ssrc};
use crate::netem::{LinkConfig, Network};
use std::net::{IpAddr, Ipv4Addr};

// ---------------------------------------------------------------- harness

/// Prints the seed of a failing run (the message appears right above the
/// panic's).
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("*** failing seed: {} ***", self.0);
        }
    }
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn control_of(n: u8) -> SocketAddr {
    SocketAddr::new(ip(n), 5004)
}

/// A datagram seen on the emulated wire.
#[derive(Debug, Clone)]
struct Wire {
    at: Micros,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

impl Wire {
    fn command(&self) -> Option<Command> {
        Command::decode(&self.payload).ok()
    }
    fn code(&self) -> Option<[u8; 2]> {
        self.command().map(|c| c.code())
    }
}

struct Node {
    ep: Endpoint,
    control: SocketAddr,
    data: SocketAddr,
    /// This node's local clock reads global time plus `skew` µs.
    skew: u64,
    events: Vec<(Micros, EndpointEvent)>,
}

type Filter = Box<dyn FnMut(&Wire) -> bool>;

/// Endpoints joined by a [`Network`]; each node has its own clock skew.
struct Harness {
    net: Network<SocketAddr>,
    nodes: Vec<Node>,
    now: Micros,
    /// Returns false to drop a datagram before it enters the network.
    filter: Option<Filter>,
    wire: Vec<Wire>,
    _guard: SeedGuard,
}

impl Harness {
    fn new(seed: u64, link: LinkConfig) -> Self {
        Harness {
            net: Network::new(seed, link),
            nodes: Vec::new(),
            now: Micros::ZERO,
            filter: None,
            wire: Vec::new(),
            _guard: SeedGuard(seed),
        }
    }

    /// Adds an endpoint at 127.0.0.`n`:5004/5005 and returns its index.
    fn add(&mut self, n: u8, config: EndpointConfig, skew: u64) -> usize {
        let control = control_of(n);
        let ep = Endpoint::new(config, self.now.offset_by(skew as i64));
        self.nodes.push(Node {
            ep,
            control,
            data: data_addr_of(control).unwrap(),
            skew,
            events: Vec::new(),
        });
        self.nodes.len() - 1
    }

    fn local(&self, i: usize) -> Micros {
        self.now.offset_by(self.nodes[i].skew as i64)
    }

    fn ep(&mut self, i: usize) -> &mut Endpoint {
        &mut self.nodes[i].ep
    }

    fn invite(&mut self, from: usize, to: usize) -> PeerHandle {
        let now = self.local(from);
        let control = self.nodes[to].control;
        let h = self.nodes[from].ep.invite(now, control).unwrap();
        self.flush();
        h
    }

    fn flush(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(t) = self.nodes[i].ep.poll_transmit() {
                let node = &self.nodes[i];
                let from = match t.from {
                    Port::Control => node.control,
                    Port::Data => node.data,
                };
                let w = Wire {
                    at: self.now,
                    from,
                    to: t.to,
                    payload: t.payload,
                };
                let keep = self.filter.as_mut().is_none_or(|f| f(&w));
                self.wire.push(w.clone());
                if keep {
                    self.net.send(self.now, w.from, w.to, w.payload);
                }
            }
            let local = self.local(i);
            while let Some(e) = self.nodes[i].ep.poll_event() {
                let _ = local;
                self.nodes[i].events.push((self.now, e));
            }
        }
    }

    fn next_event(&self) -> Option<Micros> {
        let timers = self
            .nodes
            .iter()
            .filter_map(|n| {
                n.ep.poll_timeout()
                    .map(|t| Micros(t.0.saturating_sub(n.skew)))
            })
            .min();
        match (self.net.next_delivery(), timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn step(&mut self, limit: Micros) -> bool {
        self.flush();
        let Some(t) = self.next_event() else {
            return false;
        };
        if t > limit {
            return false;
        }
        self.now = self.now.max(t);
        while let Some(d) = self.net.poll_deliver(self.now) {
            if let Some(i) = self
                .nodes
                .iter()
                .position(|n| n.control == d.to || n.data == d.to)
            {
                let port = if self.nodes[i].control == d.to {
                    Port::Control
                } else {
                    Port::Data
                };
                let now = self.local(i);
                self.nodes[i]
                    .ep
                    .handle_datagram(now, port, d.from, &d.payload);
            }
        }
        for i in 0..self.nodes.len() {
            let now = self.local(i);
            if self.nodes[i].ep.poll_timeout().is_some_and(|t| t <= now) {
                self.nodes[i].ep.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        let mut steps = 0;
        while self.step(until) {
            steps += 1;
            assert!(steps < 1_000_000, "no progress before {until}");
        }
        self.now = self.now.max(until);
        self.flush();
    }

    fn events(&self, i: usize) -> Vec<EndpointEvent> {
        self.nodes[i]
            .events
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn joined(&self, i: usize) -> Vec<(PeerHandle, bool)> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                EndpointEvent::Joined {
                    peer,
                    initiated_by_us,
                    ..
                } => Some((*peer, *initiated_by_us)),
                _ => None,
            })
            .collect()
    }

    fn left(&self, i: usize) -> Vec<(PeerHandle, LeaveReason)> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                EndpointEvent::Left { peer, reason } => Some((*peer, *reason)),
                _ => None,
            })
            .collect()
    }

    fn rtp(&self, i: usize) -> Vec<(PeerHandle, Vec<u8>)> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                EndpointEvent::Rtp { peer, packet } => Some((*peer, packet.clone())),
                _ => None,
            })
            .collect()
    }

    fn count(&self, from: SocketAddr, code: [u8; 2]) -> usize {
        self.wire
            .iter()
            .filter(|w| w.from == from && w.code() == Some(code))
            .count()
    }
}

fn config(name: &str, seed: u64) -> EndpointConfig {
    EndpointConfig::new(name, seed)
}

/// A minimal RTP packet (sheet §5.1 style: one Note On, no journal).
fn rtp_packet(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x61];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&10_000u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x03, 0x90, 0x3C, 0x64]);
    p
}

fn lan() -> LinkConfig {
    LinkConfig::default().delay(Duration::from_millis(2))
}

/// Two endpoints, 1 invites 2; returns the harness and both handles.
fn joined_pair(seed: u64, link: LinkConfig) -> (Harness, PeerHandle, PeerHandle) {
    let mut h = Harness::new(seed, link);
    let a = h.add(1, config("alice", seed), 0);
    let b = h.add(2, config("bob", seed + 1), 0);
    let ha = h.invite(a, b);
    h.run_for(Duration::from_millis(500));
    let ja = h.joined(a);
    let jb = h.joined(b);
    assert_eq!(ja, vec![(ha, true)], "initiator joins once");
    assert_eq!(jb.len(), 1, "responder joins once");
    assert!(!jb[0].1);
    (h, ha, jb[0].0)
}

// ---------------------------------------------------------------- flows

#[test]
fn invite_accept_exchange_rtp_and_end() {
    let (mut h, ha, hb) = joined_pair(1, lan());
    let (a, b) = (0, 1);
    let (ssrc_a, ssrc_b) = (h.ep(a).ssrc(), h.ep(b).ssrc());
    let (ctrl_a, data_a, ctrl_b, data_b) = (
        h.nodes[a].control,
        h.nodes[a].data,
        h.nodes[b].control,
        h.nodes[b].data,
    );

    // Joined events carry names, SSRCs and addresses.
    assert!(h.events(a).contains(&EndpointEvent::Joined {
        peer: ha,
        name: Some("bob".into()),
        ssrc: ssrc_b,
        control: ctrl_b,
        data: data_b,
        initiated_by_us: true,
    }));
    assert!(h.events(b).contains(&EndpointEvent::Joined {
        peer: hb,
        name: Some("alice".into()),
        ssrc: ssrc_a,
        control: ctrl_a,
        data: data_a,
        initiated_by_us: false,
    }));
    // The handshake went control first, then data, from the right ports.
    let order: Vec<(SocketAddr, [u8; 2])> = h
        .wire
        .iter()
        .filter(|w| matches!(w.code(), Some(c) if c == *b"IN" || c == *b"OK"))
        .map(|w| (w.from, w.code().unwrap()))
        .collect();
    assert_eq!(
        order,
        vec![
            (ctrl_a, *b"IN"),
            (ctrl_b, *b"OK"),
            (data_a, *b"IN"),
            (data_b, *b"OK")
        ]
    );
    // Every command we sent names our one SSRC (pitfall 9).
    for w in &h.wire {
        if let Some(cmd) = w.command() {
            let expected = if w.from.ip() == ip(1) { ssrc_a } else { ssrc_b };
            assert_eq!(cmd.ssrc(), Some(expected), "{w:?}");
        }
    }
    // Clock sync ran (both sides got samples) and the offset is ~0.
    let info = h.ep(a).peer(ha).unwrap();
    assert_eq!(info.state, PeerState::Joined);
    assert!(info.clock.unwrap().offset_ticks.abs() <= 1);
    assert!(h.ep(b).clock_map(hb).is_some());

    // Opaque RTP both ways, delivered to the right handle.
    h.ep(a).send_rtp(ha, rtp_packet(ssrc_a, 1)).unwrap();
    h.ep(b).send_rtp(hb, rtp_packet(ssrc_b, 7)).unwrap();
    h.ep(b).send_feedback(hb, 1).unwrap();
    h.run_for(Duration::from_millis(100));
    assert_eq!(h.rtp(b), vec![(hb, rtp_packet(ssrc_a, 1))]);
    assert_eq!(h.rtp(a), vec![(ha, rtp_packet(ssrc_b, 7))]);
    assert!(
        h.events(a)
            .contains(&EndpointEvent::Feedback { peer: ha, seq: 1 })
    );
    let rs = h.wire.iter().find(|w| w.code() == Some(*b"RS")).unwrap();
    assert_eq!(
        (rs.from, rs.to),
        (ctrl_b, ctrl_a),
        "RS goes control to control"
    );

    // The initiator ends: BY on control, both sides report it.
    let now = h.local(a);
    h.ep(a).end(now, ha).unwrap();
    h.flush();
    h.run_for(Duration::from_millis(100));
    assert_eq!(h.left(a), vec![(ha, LeaveReason::EndedLocally)]);
    assert_eq!(h.left(b), vec![(hb, LeaveReason::ByeReceived)]);
    let by = h.wire.iter().find(|w| w.code() == Some(*b"BY")).unwrap();
    assert_eq!((by.from, by.to), (ctrl_a, ctrl_b));
    assert_eq!(h.ep(a).peer(ha), None);
    assert_eq!(
        h.ep(a).send_rtp(ha, vec![0x80]),
        Err(SendError::UnknownPeer(ha))
    );
    // Nothing left to do: no timers once every session ended.
    assert_eq!(h.ep(a).poll_timeout(), None);
    assert_eq!(h.ep(b).poll_timeout(), None);
}

#[test]
fn responder_can_end_the_session_too() {
    let (mut h, ha, hb) = joined_pair(2, lan());
    let now = h.local(1);
    h.ep(1).end(now, hb).unwrap();
    h.flush();
    h.run_for(Duration::from_millis(100));
    assert_eq!(h.left(1), vec![(hb, LeaveReason::EndedLocally)]);
    assert_eq!(h.left(0), vec![(ha, LeaveReason::ByeReceived)]);
    // The initiator stops its CK rounds.
    assert_eq!(h.ep(0).poll_timeout(), None);
}

#[test]
fn reject_all_policy_answers_no() {
    let mut h = Harness::new(3, lan());
    let a = h.add(1, config("alice", 3), 0);
    let mut cb = config("bob", 4);
    cb.accept = AcceptPolicy::RejectAll;
    let b = h.add(2, cb, 0);
    let ha = h.invite(a, b);
    h.run_for(Duration::from_secs(2));
    assert_eq!(
        h.events(a),
        vec![EndpointEvent::InvitationRejected {
            peer: ha,
            name: None,
            control: h.nodes[b].control
        }]
    );
    assert!(h.events(b).is_empty());
    assert_eq!(h.ep(b).stats().invitations_refused, 1);
    assert_eq!(h.count(h.nodes[a].control, *b"IN"), 1, "no retry after NO");
    assert_eq!(h.ep(a).poll_timeout(), None);
}

#[test]
fn allow_list_accepts_listed_names_only() {
    let mut h = Harness::new(5, lan());
    let mut cb = config("bob", 5);
    cb.accept = AcceptPolicy::AllowNames(vec!["alice".into()]);
    let b = h.add(2, cb, 0);
    let a = h.add(1, config("alice", 6), 0);
    let m = h.add(3, config("mallory", 7), 0);
    let ha = h.invite(a, b);
    let hm = h.invite(m, b);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.joined(a), vec![(ha, true)]);
    assert!(matches!(
        h.events(m)[..],
        [EndpointEvent::InvitationRejected { peer, .. }] if peer == hm
    ));
    assert_eq!(h.joined(b).len(), 1);
}

#[test]
fn unanswered_invitation_is_retried_every_second_then_fails() {
    let mut h = Harness::new(6, lan());
    let a = h.add(1, config("alice", 6), 0);
    let nobody = control_of(9);
    let now = h.local(a);
    let ha = h.ep(a).invite(now, nobody).unwrap();
    h.run_for(Duration::from_secs(30));
    let ins: Vec<Micros> = h
        .wire
        .iter()
        .filter(|w| w.code() == Some(*b"IN"))
        .map(|w| w.at)
        .collect();
    assert_eq!(ins, (0..12).map(Micros::from_secs).collect::<Vec<_>>());
    assert_eq!(
        h.nodes[a].events,
        vec![(
            Micros::from_secs(12),
            EndpointEvent::InvitationFailed {
                peer: ha,
                control: nobody,
                reason: FailReason::NoAnswer {
                    port: Port::Control
                }
            }
        )]
    );
    assert_eq!(h.ep(a).peers().count(), 0);
}

#[test]
fn unanswered_data_invitation_fails_and_closes_the_control_session() {
    let mut h = Harness::new(7, lan());
    let a = h.add(1, config("alice", 7), 0);
    let b = h.add(2, config("bob", 8), 0);
    let data_b = h.nodes[b].data;
    h.filter = Some(Box::new(move |w: &Wire| w.to != data_b));
    let ha = h.invite(a, b);
    h.run_for(Duration::from_secs(20));
    assert_eq!(
        h.events(a),
        vec![EndpointEvent::InvitationFailed {
            peer: ha,
            control: h.nodes[b].control,
            reason: FailReason::NoAnswer { port: Port::Data }
        }]
    );
    assert_eq!(h.count(h.nodes[a].data, *b"IN"), 12);
    assert_eq!(h.count(h.nodes[a].control, *b"BY"), 1);
    // The responder dropped its half-open session long before.
    assert!(h.events(b).is_empty());
    assert_eq!(h.ep(b).peers().count(), 0);
}

#[test]
fn every_single_handshake_packet_loss_is_recovered_by_retry() {
    // The four handshake datagrams in order: IN ctrl, OK ctrl, IN data, OK data.
    for (k, (code, port)) in [
        (*b"IN", 5004),
        (*b"OK", 5004),
        (*b"IN", 5005),
        (*b"OK", 5005),
    ]
    .into_iter()
    .enumerate()
    {
        let mut h = Harness::new(10 + k as u64, lan());
        let a = h.add(1, config("alice", 1), 0);
        let b = h.add(2, config("bob", 2), 0);
        let mut dropped = false;
        h.filter = Some(Box::new(move |w: &Wire| {
            let hit = !dropped && w.code() == Some(code) && w.from.port() == port;
            dropped |= hit;
            !hit
        }));
        let ha = h.invite(a, b);
        h.run_for(Duration::from_secs(3));
        assert_eq!(h.joined(a), vec![(ha, true)], "drop #{k}");
        assert_eq!(h.joined(b).len(), 1, "drop #{k}");
        assert_eq!(h.ep(b).stats().invitations_refused, 0, "drop #{k}");
    }
}

#[test]
fn duplicated_and_reordered_handshakes_are_harmless() {
    for seed in 0..40 {
        let link = LinkConfig::default()
            .delay(Duration::from_millis(5))
            .jitter(Duration::from_millis(5))
            .unordered()
            .duplicate(0.5)
            .reorder(0.3, Duration::from_millis(30));
        let mut h = Harness::new(seed, link);
        let a = h.add(1, config("alice", seed), 0);
        let b = h.add(2, config("bob", seed + 100), 0);
        let ha = h.invite(a, b);
        h.run_for(Duration::from_secs(15));
        assert_eq!(h.joined(a), vec![(ha, true)], "seed {seed}");
        assert_eq!(h.joined(b).len(), 1, "seed {seed}");
        assert!(h.left(a).is_empty() && h.left(b).is_empty(), "seed {seed}");
        assert_eq!(h.ep(b).stats().invitations_refused, 0, "seed {seed}");
        // Duplicated CKs never produce a second sample for one round.
        let clock_events = h
            .events(b)
            .iter()
            .filter(|e| matches!(e, EndpointEvent::ClockUpdated { .. }))
            .count();
        let ck2_sent = h
            .wire
            .iter()
            .filter(|w| matches!(w.command(), Some(Command::ClockSync(c)) if c.count == 2))
            .count();
        assert!(clock_events <= ck2_sent, "seed {seed}");
    }
}

#[test]
fn initiator_detects_a_dead_peer_after_three_unanswered_rounds() {
    let (mut h, ha, hb) = joined_pair(20, lan());
    // Let the burst finish, then cut the peer off. Three rounds 10 s apart
    // go unanswered; the third one's deadline ends the session.
    h.run_for(Duration::from_secs(10));
    let cut_at = h.now;
    let (a_addrs, b_addrs) = (
        [h.nodes[0].control, h.nodes[0].data],
        [h.nodes[1].control, h.nodes[1].data],
    );
    h.net.partition(&[&a_addrs, &b_addrs]);
    h.run_for(Duration::from_secs(45));
    let left: Vec<_> = h.nodes[0]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, EndpointEvent::Left { .. }))
        .cloned()
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].1,
        EndpointEvent::Left {
            peer: ha,
            reason: LeaveReason::TimedOut
        }
    );
    let waited = left[0].0.saturating_duration_since(cut_at);
    assert!(
        waited >= Duration::from_secs(30) && waited <= Duration::from_secs(40),
        "{waited:?}"
    );
    // The responder, cut off as well, ends on CK silence later.
    h.run_for(Duration::from_secs(60));
    assert_eq!(h.left(1), vec![(hb, LeaveReason::TimedOut)]);
}

#[test]
fn unanswered_clock_rounds_do_not_end_a_session_whose_midi_still_arrives() {
    let (mut h, ha, hb) = joined_pair(21, lan());
    // Every CK answer is lost from the start of the burst, but the peer
    // keeps sending RTP: it is alive, so the session must stay up.
    h.filter = Some(Box::new(|w: &Wire| {
        !matches!(
            w.command(),
            Some(Command::ClockSync(ClockSync { count: 1, .. }))
        )
    }));
    let rtp = vec![0x80, 0x61, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x00];
    for _ in 0..400 {
        let mut p = rtp.clone();
        p[8..12].copy_from_slice(&h.ep(1).ssrc().to_be_bytes());
        h.ep(1).send_rtp(hb, p).unwrap();
        h.flush();
        h.run_for(Duration::from_millis(100));
    }
    assert!(h.left(0).is_empty(), "live peer given up: {:?}", h.left(0));
    // Once everything from the peer stops, it is given up within the
    // silence window plus one steady round.
    let cut_at = h.now;
    h.filter = Some(Box::new(|w: &Wire| w.from.ip() == ip(1)));
    h.run_for(Duration::from_secs(60));
    let left = h.left(0);
    assert_eq!(left, vec![(ha, LeaveReason::TimedOut)]);
    let at = h.nodes[0]
        .events
        .iter()
        .find(|(_, e)| matches!(e, EndpointEvent::Left { .. }))
        .unwrap()
        .0;
    let waited = at.saturating_duration_since(cut_at);
    assert!(
        waited >= Duration::from_secs(30) && waited <= Duration::from_secs(50),
        "{waited:?}"
    );
}

#[test]
fn clock_offset_converges_within_half_the_round_trip_under_jitter() {
    for seed in 0..10u64 {
        let link = LinkConfig::default()
            .delay(Duration::from_millis(15))
            .jitter(Duration::from_millis(8))
            .unordered();
        let mut h = Harness::new(seed, link);
        // Skews in whole ticks; responder 400 s ahead, as in the sheet.
        let a = h.add(1, config("alice", seed), 1_000_000_000);
        let b = h.add(2, config("bob", seed + 7), 1_400_000_000 + seed * 12_300);
        let ha = h.invite(a, b);
        h.run_for(Duration::from_secs(40));
        let truth = (h.nodes[a].skew as i64 - h.nodes[b].skew as i64) / 100;
        let est = h.ep(a).clock_map(ha).unwrap().offset_ticks;
        let rtt = h.ep(a).rtt_stats(ha).unwrap();
        let bound = (rtt.min.as_micros() / 100 / 2 + 1) as i64;
        assert!(
            (est - truth).abs() <= bound,
            "seed {seed}: est {est} truth {truth} bound {bound}"
        );
        let hb = h.joined(b)[0].0;
        let est_b = h.ep(b).clock_map(hb).unwrap().offset_ticks;
        let bound_b = (h.ep(b).rtt_stats(hb).unwrap().min.as_micros() / 100 / 2 + 1) as i64;
        assert!(
            (est_b + truth).abs() <= bound_b,
            "seed {seed}: responder est {est_b} truth {}",
            -truth
        );
        assert!(
            rtt.min >= Duration::from_millis(30) && rtt.p99 >= rtt.median && rtt.median >= rtt.min
        );
        // Rounds: 6 in the first 5 s, then every 10 s.
        let ck0_times: Vec<u64> = h
            .wire
            .iter()
            .filter(|w| matches!(w.command(), Some(Command::ClockSync(c)) if c.count == 0))
            .map(|w| w.at.as_micros() / 1_000_000)
            .collect();
        assert_eq!(ck0_times.len(), 6 + 3, "seed {seed}: {ck0_times:?}");
    }
}

#[test]
fn several_peers_on_one_endpoint_are_kept_apart() {
    let mut h = Harness::new(30, lan());
    let hub = h.add(1, config("hub", 30), 0);
    // Two spokes share one SSRC (macOS reuses SSRCs): addresses tell them apart.
    let mut c2 = config("two", 31);
    c2.ssrc = Some(0xAAAA_AAAA);
    let mut c3 = config("three", 32);
    c3.ssrc = Some(0xAAAA_AAAA);
    let s2 = h.add(2, c2, 0);
    let s3 = h.add(3, c3, 0);
    let s4 = h.add(4, config("four", 33), 0);
    let to2 = h.invite(hub, s2);
    let h3 = h.invite(s3, hub);
    let h4 = h.invite(s4, hub);
    h.run_for(Duration::from_secs(1));
    let joined = h.joined(hub);
    assert_eq!(joined.len(), 3);
    let by_name = |h: &Harness, name: &str| {
        h.nodes[0]
            .events
            .iter()
            .find_map(|(_, e)| match e {
                EndpointEvent::Joined {
                    peer,
                    name: Some(n),
                    ..
                } if n == name => Some(*peer),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(by_name(&h, "two"), to2);
    let (from3, from4) = (by_name(&h, "three"), by_name(&h, "four"));
    let hub_ssrc = h.ep(hub).ssrc();
    let s2h = h.joined(s2)[0].0;
    h.ep(s2).send_rtp(s2h, rtp_packet(0xAAAA_AAAA, 2)).unwrap();
    h.ep(s3).send_rtp(h3, rtp_packet(0xAAAA_AAAA, 3)).unwrap();
    let ssrc4 = h.ep(s4).ssrc();
    h.ep(s4).send_rtp(h4, rtp_packet(ssrc4, 4)).unwrap();
    h.ep(hub).send_rtp(from3, rtp_packet(hub_ssrc, 9)).unwrap();
    h.run_for(Duration::from_millis(100));
    let mut got = h.rtp(hub);
    got.sort();
    let mut want = vec![
        (to2, rtp_packet(0xAAAA_AAAA, 2)),
        (from3, rtp_packet(0xAAAA_AAAA, 3)),
        (from4, rtp_packet(ssrc4, 4)),
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(h.rtp(s3), vec![(h3, rtp_packet(hub_ssrc, 9))]);
    assert!(h.rtp(s2).is_empty() && h.rtp(s4).is_empty());
    // Ending one session leaves the others running.
    let now = h.local(s3);
    h.ep(s3).end(now, h3).unwrap();
    h.run_for(Duration::from_secs(30));
    assert_eq!(h.left(hub), vec![(from3, LeaveReason::ByeReceived)]);
    assert_eq!(h.ep(hub).peers().count(), 2);
    for p in [to2, from4] {
        assert_eq!(h.ep(hub).peer_state(p), Some(PeerState::Joined));
    }
}

#[test]
fn every_invitation_ends_in_exactly_one_outcome_under_heavy_loss() {
    for seed in 0..30u64 {
        let link = LinkConfig::default()
            .delay(Duration::from_millis(3))
            .loss(0.5)
            .duplicate(0.2);
        let mut h = Harness::new(seed, link);
        let a = h.add(1, config("alice", seed), 0);
        let b = h.add(2, config("bob", seed + 1), 0);
        let ha = h.invite(a, b);
        h.run_for(Duration::from_secs(120));
        let now = h.local(a);
        let _ = h.ep(a).end(now, ha);
        h.run_for(Duration::from_secs(1));
        let terminal = h
            .events(a)
            .iter()
            .filter(|e| {
                matches!(e,
                    EndpointEvent::InvitationRejected { peer, .. }
                    | EndpointEvent::InvitationFailed { peer, .. }
                    | EndpointEvent::Left { peer, .. } if *peer == ha)
            })
            .count();
        assert_eq!(terminal, 1, "seed {seed}: {:?}", h.events(a));
        assert!(
            h.joined(a).len() <= 1 && h.joined(b).len() <= 1,
            "seed {seed}"
        );
        assert!(h.left(b).len() <= h.joined(b).len(), "seed {seed}");
    }
}

// ------------------------------------------------ hand-driven pitfall tests

fn remote() -> SocketAddr {
    SocketAddr::new(ip(7), 6000)
}
fn remote_data() -> SocketAddr {
    SocketAddr::new(ip(7), 6001)
}

fn cmd(c: Command) -> Vec<u8> {
    c.to_vec()
}

fn inv(token: u32, ssrc: u32, name: Option<&str>) -> Invitation {
    Invitation {
        token,
        ssrc,
        name: name.map(str::to_string),
    }
}

fn drain(ep: &mut Endpoint) -> (Vec<Transmit>, Vec<EndpointEvent>) {
    let t = std::iter::from_fn(|| ep.poll_transmit()).collect();
    let e = std::iter::from_fn(|| ep.poll_event()).collect();
    (t, e)
}

fn decode_all(ts: &[Transmit]) -> Vec<(Port, SocketAddr, Command)> {
    ts.iter()
        .map(|t| (t.from, t.to, Command::decode(&t.payload).unwrap()))
        .collect()
}

/// A responder endpoint that a hand-driven peer (SSRC 0x1234_5678, token
/// 0x0BAD_F00D, at 127.0.0.7:6000/6001) has joined.
fn responder_joined() -> (Endpoint, PeerHandle) {
    let mut ep = Endpoint::new(config("us", 99), Micros::ZERO);
    let t = Micros::from_millis(10);
    ep.handle_datagram(
        t,
        Port::Control,
        remote(),
        &cmd(Command::Invitation(inv(
            0x0BAD_F00D,
            0x1234_5678,
            Some("them"),
        ))),
    );
    ep.handle_datagram(
        t,
        Port::Data,
        remote_data(),
        &cmd(Command::Invitation(inv(
            0x0BAD_F00D,
            0x1234_5678,
            Some("them"),
        ))),
    );
    let (ts, evs) = drain(&mut ep);
    let ours = ep.ssrc();
    assert_eq!(
        decode_all(&ts),
        vec![
            (
                Port::Control,
                remote(),
                Command::Accept(inv(0x0BAD_F00D, ours, Some("us")))
            ),
            (
                Port::Data,
                remote_data(),
                Command::Accept(inv(0x0BAD_F00D, ours, Some("us")))
            ),
        ]
    );
    let [EndpointEvent::Joined { peer, .. }] = evs[..] else {
        panic!("{evs:?}")
    };
    (ep, peer)
}

#[test]
fn data_invitation_without_control_handshake_is_refused() {
    let mut ep = Endpoint::new(config("us", 1), Micros::ZERO);
    ep.handle_datagram(
        Micros::ZERO,
        Port::Data,
        remote_data(),
        &cmd(Command::Invitation(inv(5, 6, Some("x")))),
    );
    let (ts, evs) = drain(&mut ep);
    assert_eq!(
        decode_all(&ts),
        vec![(
            Port::Data,
            remote_data(),
            Command::Reject(inv(5, ep.ssrc(), None))
        )]
    );
    assert!(evs.is_empty());
    // After the control handshake, a data IN with another SSRC, or from
    // another IP, is refused too.
    ep.handle_datagram(
        Micros::ZERO,
        Port::Control,
        remote(),
        &cmd(Command::Invitation(inv(5, 6, Some("x")))),
    );
    ep.handle_datagram(
        Micros::ZERO,
        Port::Data,
        remote_data(),
        &cmd(Command::Invitation(inv(5, 7, Some("x")))),
    );
    ep.handle_datagram(
        Micros::ZERO,
        Port::Data,
        SocketAddr::new(ip(8), 6001),
        &cmd(Command::Invitation(inv(5, 6, Some("x")))),
    );
    let (ts, evs) = drain(&mut ep);
    let replies = decode_all(&ts);
    assert!(matches!(replies[0].2, Command::Accept(_)));
    assert!(matches!(replies[1].2, Command::Reject(_)));
    assert!(matches!(replies[2].2, Command::Reject(_)));
    assert!(evs.is_empty());
}

#[test]
fn data_invitation_with_a_fresh_token_is_accepted_and_echoed() {
    // The `rtpmidi` crate invites the data port with a new token.
    let mut ep = Endpoint::new(config("us", 1), Micros::ZERO);
    ep.handle_datagram(
        Micros::ZERO,
        Port::Control,
        remote(),
        &cmd(Command::Invitation(inv(5, 6, Some("x")))),
    );
    ep.handle_datagram(
        Micros::ZERO,
        Port::Data,
        remote_data(),
        &cmd(Command::Invitation(inv(9, 6, Some("x")))),
    );
    let (ts, evs) = drain(&mut ep);
    let ours = ep.ssrc();
    assert_eq!(
        decode_all(&ts)[1],
        (
            Port::Data,
            remote_data(),
            Command::Accept(inv(9, ours, Some("us")))
        )
    );
    assert!(matches!(evs[..], [EndpointEvent::Joined { ssrc: 6, .. }]));
}

#[test]
fn half_open_sessions_are_dropped_after_five_seconds() {
    let mut ep = Endpoint::new(config("us", 1), Micros::ZERO);
    ep.handle_datagram(
        Micros::ZERO,
        Port::Control,
        remote(),
        &cmd(Command::Invitation(inv(5, 6, None))),
    );
    assert_eq!(ep.poll_timeout(), Some(Micros::from_secs(5)));
    ep.handle_timeout(Micros::from_secs(5));
    assert_eq!(ep.peers().count(), 0);
    assert_eq!(ep.stats().half_open_dropped, 1);
    let _ = drain(&mut ep);
    ep.handle_datagram(
        Micros::from_secs(6),
        Port::Data,
        remote_data(),
        &cmd(Command::Invitation(inv(5, 6, None))),
    );
    let (ts, evs) = drain(&mut ep);
    assert!(matches!(
        decode_all(&ts)[..],
        [(Port::Data, _, Command::Reject(_))]
    ));
    assert!(evs.is_empty(), "half-open sessions are never announced");
}

#[test]
fn nameless_invitations_are_accepted() {
    // Pitfall 8: requiring a name breaks peers that send none.
    let mut ep = Endpoint::new(config("us", 1), Micros::ZERO);
    ep.handle_datagram(
        Micros::ZERO,
        Port::Control,
        remote(),
        &cmd(Command::Invitation(inv(5, 6, None))),
    );
    ep.handle_datagram(
        Micros::ZERO,
        Port::Data,
        remote_data(),
        &cmd(Command::Invitation(inv(5, 6, None))),
    );
    let (_, evs) = drain(&mut ep);
    assert!(matches!(
        &evs[..],
        [EndpointEvent::Joined {
            name: None,
            ssrc: 6,
            ..
        }]
    ));
}

#[test]
fn data_port_is_taken_from_the_data_invitation_not_assumed() {
    // Pitfall 11: never assume N+1 (or 5004/5005) for the remote side.
    let mut ep = Endpoint::new(config("us", 1), Micros::ZERO);
    let odd_data = SocketAddr::new(ip(7), 7777);
    ep.handle_datagram(
        Micros::ZERO,
        Port::Control,
        remote(),
        &cmd(Command::Invitation(inv(5, 6, None))),
    );
    ep.handle_datagram(
        Micros::ZERO,
        Port::Data,
        odd_data,
        &cmd(Command::Invitation(inv(5, 6, None))),
    );
    let (ts, evs) = drain(&mut ep);
    assert_eq!(ts[1].to, odd_data);
    let [EndpointEvent::Joined { peer, data, .. }] = evs[..] else {
        panic!()
    };
    assert_eq!(data, odd_data);
    ep.handle_datagram(Micros::ZERO, Port::Data, odd_data, &rtp_packet(6, 1));
    assert_eq!(
        ep.poll_event(),
        Some(EndpointEvent::Rtp {
            peer,
            packet: rtp_packet(6, 1)
        })
    );
    ep.send_rtp(peer, rtp_packet(ep.ssrc(), 1)).unwrap();
    assert_eq!(ep.poll_transmit().unwrap().to, odd_data);
}

#[test]
fn bye_is_validated_by_ssrc_and_address_not_token() {
    // Pitfall 7: macOS sends BY with token 0; rtpmidid sends it on both ports.
    for (port, from) in [(Port::Control, remote()), (Port::Data, remote_data())] {
        let (mut ep, peer) = responder_joined();
        let t = Micros::from_secs(1);
        // Wrong SSRC, or right SSRC from elsewhere: ignored.
        ep.handle_datagram(
            t,
            port,
            from,
            &cmd(Command::End(End {
                token: 0,
                ssrc: 0x999,
            })),
        );
        ep.handle_datagram(
            t,
            port,
            SocketAddr::new(ip(8), from.port()),
            &cmd(Command::End(End {
                token: 0,
                ssrc: 0x1234_5678,
            })),
        );
        assert_eq!(ep.peer_state(peer), Some(PeerState::Joined));
        assert_eq!(ep.stats().unmatched_commands, 2);
        ep.handle_datagram(
            t,
            port,
            from,
            &cmd(Command::End(End {
                token: 0,
                ssrc: 0x1234_5678,
            })),
        );
        let (ts, evs) = drain(&mut ep);
        assert!(ts.is_empty(), "BY gets no reply");
        assert_eq!(
            evs,
            vec![EndpointEvent::Left {
                peer,
                reason: LeaveReason::ByeReceived
            }]
        );
    }
}

#[test]
fn responder_ends_a_session_after_sixty_seconds_without_ck() {
    let (mut ep, peer) = responder_joined();
    let start = Micros::from_millis(10);
    assert_eq!(ep.poll_timeout(), Some(start + Duration::from_secs(60)));
    // A CK0 at 30 s pushes the deadline and gets a CK1 with our stamp.
    let t30 = Micros::from_secs(30);
    ep.handle_datagram(
        t30,
        Port::Data,
        remote_data(),
        &cmd(Command::ClockSync(ClockSync {
            ssrc: 0x1234_5678,
            count: 0,
            timestamps: [777, 0, 0],
        })),
    );
    let (ts, _) = drain(&mut ep);
    assert_eq!(
        decode_all(&ts),
        vec![(
            Port::Data,
            remote_data(),
            Command::ClockSync(ClockSync {
                ssrc: ep.ssrc(),
                count: 1,
                timestamps: [777, 300_000, 0]
            })
        )]
    );
    assert_eq!(ep.poll_timeout(), Some(t30 + Duration::from_secs(60)));
    ep.handle_timeout(Micros::from_secs(89));
    assert_eq!(ep.peer_state(peer), Some(PeerState::Joined));
    ep.handle_timeout(Micros::from_secs(90));
    let (ts, evs) = drain(&mut ep);
    assert_eq!(
        evs,
        vec![EndpointEvent::Left {
            peer,
            reason: LeaveReason::TimedOut
        }]
    );
    assert!(
        matches!(decode_all(&ts)[..], [(Port::Control, to, Command::End(_))] if to == remote())
    );
}

#[test]
fn ck2_completes_the_responder_sample_and_duplicates_are_ignored() {
    let (mut ep, peer) = responder_joined();
    // Sheet §5.5 stamps, seen from the responder: our clock read 5 000 020
    // ticks when we answered, so the initiator is 400 s behind us.
    let ck2 = cmd(Command::ClockSync(ClockSync {
        ssrc: 0x1234_5678,
        count: 2,
        timestamps: [1_000_000, 5_000_020, 1_000_040],
    }));
    ep.handle_datagram(Micros::from_secs(1), Port::Data, remote_data(), &ck2);
    ep.handle_datagram(Micros::from_secs(1), Port::Data, remote_data(), &ck2);
    let (_, evs) = drain(&mut ep);
    assert_eq!(evs.len(), 1);
    let EndpointEvent::ClockUpdated { clock, rtt, .. } = &evs[0] else {
        panic!()
    };
    assert_eq!(clock.offset_ticks, 4_000_000);
    assert_eq!(rtt.latest, Duration::from_millis(4));
    assert_eq!(ep.stats().stale_clock_syncs, 1);
    assert_eq!(ep.clock_map(peer), Some(*clock));
}

#[test]
fn rs_rl_and_unknown_commands() {
    let (mut ep, peer) = responder_joined();
    let t = Micros::from_secs(1);
    // RS with non-zero low half (pitfall 6): the upper 16 bits are the seq.
    ep.handle_datagram(
        t,
        Port::Control,
        remote(),
        &[
            0xFF, 0xFF, b'R', b'S', 0x12, 0x34, 0x56, 0x78, 0x12, 0x38, 0xAB, 0xCD,
        ],
    );
    ep.handle_datagram(
        t,
        Port::Control,
        remote(),
        &cmd(Command::BitrateLimit(BitrateLimit {
            ssrc: 0x1234_5678,
            limit: 31_250,
        })),
    );
    ep.handle_datagram(
        t,
        Port::Control,
        remote(),
        &[0xFF, 0xFF, b'Z', b'Z', 1, 2, 3],
    );
    ep.handle_datagram(t, Port::Control, remote(), &[0xFF, 0xFF, b'C', b'K', 1]);
    ep.handle_datagram(t, Port::Data, remote_data(), &[0x00, 0x01]);
    let (ts, evs) = drain(&mut ep);
    assert!(ts.is_empty());
    assert_eq!(
        evs,
        vec![
            EndpointEvent::Feedback { peer, seq: 0x1238 },
            EndpointEvent::BitrateLimit {
                peer,
                limit: 31_250
            },
        ]
    );
    assert_eq!(ep.peer(peer).unwrap().bitrate_limit, Some(31_250));
    let s = ep.stats();
    assert_eq!(
        (s.unknown_commands, s.malformed_commands, s.garbage),
        (1, 1, 1)
    );
    assert_eq!(
        ep.peer_state(peer),
        Some(PeerState::Joined),
        "nothing above is fatal"
    );
}

#[test]
fn rtp_is_matched_by_ssrc_and_source_address() {
    let (mut ep, peer) = responder_joined();
    let t = Micros::from_secs(1);
    let good = rtp_packet(0x1234_5678, 1);
    assert_eq!(classify(&good), DatagramKind::Rtp);
    assert_eq!(rtp_ssrc(&good), Some(0x1234_5678));
    ep.handle_datagram(t, Port::Data, remote_data(), &good);
    ep.handle_datagram(t, Port::Data, remote(), &good); // wrong source port
    ep.handle_datagram(t, Port::Data, remote_data(), &rtp_packet(0x1234_5679, 1)); // wrong SSRC
    ep.handle_datagram(t, Port::Control, remote(), &good); // RTP on the control port
    let (_, evs) = drain(&mut ep);
    assert_eq!(evs, vec![EndpointEvent::Rtp { peer, packet: good }]);
    let s = ep.stats();
    assert_eq!((s.rtp_unknown_source, s.rtp_on_control_port), (2, 1));
    assert_eq!(ep.peer(peer).unwrap().rtp_received, 1);
}

#[test]
fn repeated_invitation_with_a_new_token_supersedes_the_session() {
    let (mut ep, peer) = responder_joined();
    let t = Micros::from_secs(2);
    ep.handle_datagram(
        t,
        Port::Control,
        remote(),
        &cmd(Command::Invitation(inv(
            0x0BAD_F00D,
            0x1234_5678,
            Some("them"),
        ))),
    );
    let (ts, evs) = drain(&mut ep);
    assert!(matches!(
        decode_all(&ts)[..],
        [(Port::Control, _, Command::Accept(_))]
    ));
    assert!(evs.is_empty(), "a repeated IN is not a new session");
    ep.handle_datagram(
        t,
        Port::Control,
        remote(),
        &cmd(Command::Invitation(inv(0x5EED, 0x1234_5678, Some("them")))),
    );
    let (_, evs) = drain(&mut ep);
    assert_eq!(
        evs,
        vec![EndpointEvent::Left {
            peer,
            reason: LeaveReason::Superseded
        }]
    );
    assert_eq!(ep.peers().count(), 1);
}

#[test]
fn initiator_fails_when_the_data_ok_names_another_ssrc() {
    // Pitfall 9 (pymidi's server): one participant, two SSRCs.
    let mut ep = Endpoint::new(config("us", 1), Micros::ZERO);
    let peer = ep.invite(Micros::ZERO, remote()).unwrap();
    let (ts, _) = drain(&mut ep);
    let Command::Invitation(sent) = Command::decode(&ts[0].payload).unwrap() else {
        panic!()
    };
    assert_eq!(sent.name.as_deref(), Some("us"));
    ep.handle_datagram(
        Micros::from_millis(1),
        Port::Control,
        remote(),
        &cmd(Command::Accept(inv(sent.token, 0x111, Some("py")))),
    );
    let (ts, _) = drain(&mut ep);
    assert_eq!((ts[0].from, ts[0].to), (Port::Data, remote_data()));
    ep.handle_datagram(
        Micros::from_millis(2),
        Port::Data,
        remote_data(),
        &cmd(Command::Accept(inv(sent.token, 0x222, Some("py")))),
    );
    let (ts, evs) = drain(&mut ep);
    assert_eq!(
        evs,
        vec![EndpointEvent::InvitationFailed {
            peer,
            control: remote(),
            reason: FailReason::SsrcMismatch {
                control: 0x111,
                data: 0x222
            }
        }]
    );
    assert!(
        matches!(decode_all(&ts)[..], [(Port::Control, to, Command::End(_))] if to == remote())
    );
}

#[test]
fn ok_from_the_wrong_address_or_token_is_ignored() {
    let mut ep = Endpoint::new(config("us", 1), Micros::ZERO);
    let peer = ep.invite(Micros::ZERO, remote()).unwrap();
    let (ts, _) = drain(&mut ep);
    let Command::Invitation(sent) = Command::decode(&ts[0].payload).unwrap() else {
        panic!()
    };
    ep.handle_datagram(
        Micros::ZERO,
        Port::Control,
        SocketAddr::new(ip(8), 6000),
        &cmd(Command::Accept(inv(sent.token, 1, None))),
    );
    ep.handle_datagram(
        Micros::ZERO,
        Port::Control,
        remote(),
        &cmd(Command::Accept(inv(sent.token ^ 1, 1, None))),
    );
    ep.handle_datagram(
        Micros::ZERO,
        Port::Data,
        remote(),
        &cmd(Command::Accept(inv(sent.token, 1, None))),
    );
    assert_eq!(ep.peer_state(peer), Some(PeerState::InvitingControl));
    assert_eq!(ep.stats().unmatched_commands, 3);
}

#[test]
fn initiator_answers_ck0_from_its_peer_and_stale_ck1_is_ignored() {
    let mut ep = Endpoint::new(config("us", 1), Micros::ZERO);
    let peer = ep.invite(Micros::ZERO, remote()).unwrap();
    let (ts, _) = drain(&mut ep);
    let Command::Invitation(sent) = Command::decode(&ts[0].payload).unwrap() else {
        panic!()
    };
    let ok = |ssrc| cmd(Command::Accept(inv(sent.token, ssrc, Some("them"))));
    ep.handle_datagram(Micros::from_millis(1), Port::Control, remote(), &ok(0x42));
    ep.handle_datagram(Micros::from_millis(2), Port::Data, remote_data(), &ok(0x42));
    let (ts, evs) = drain(&mut ep);
    assert!(matches!(
        evs[..],
        [EndpointEvent::Joined {
            initiated_by_us: true,
            ..
        }]
    ));
    // The first CK0 goes out at once, on the data port, stamped with our clock.
    let ck0 = decode_all(&ts).pop().unwrap();
    assert_eq!(
        ck0,
        (
            Port::Data,
            remote_data(),
            Command::ClockSync(ClockSync {
                ssrc: ep.ssrc(),
                count: 0,
                timestamps: [20, 0, 0]
            })
        )
    );
    // A CK1 that answers nothing we sent is dropped.
    let ck1 = |t1| {
        cmd(Command::ClockSync(ClockSync {
            ssrc: 0x42,
            count: 1,
            timestamps: [t1, 9_000, 0],
        }))
    };
    ep.handle_datagram(Micros::from_millis(3), Port::Data, remote_data(), &ck1(19));
    assert_eq!(ep.stats().stale_clock_syncs, 1);
    ep.handle_datagram(Micros::from_millis(4), Port::Data, remote_data(), &ck1(20));
    let (ts, evs) = drain(&mut ep);
    assert_eq!(
        decode_all(&ts),
        vec![(
            Port::Data,
            remote_data(),
            Command::ClockSync(ClockSync {
                ssrc: ep.ssrc(),
                count: 2,
                timestamps: [20, 9_000, 40]
            })
        )]
    );
    assert!(
        matches!(evs[..], [EndpointEvent::ClockUpdated { clock, .. }] if clock.offset_ticks == 30 - 9_000)
    );
    // The peer may run exchanges of its own: we answer as a responder would.
    ep.handle_datagram(
        Micros::from_millis(5),
        Port::Data,
        remote_data(),
        &cmd(Command::ClockSync(ClockSync {
            ssrc: 0x42,
            count: 0,
            timestamps: [1, 0, 0],
        })),
    );
    let (ts, _) = drain(&mut ep);
    assert!(matches!(
        decode_all(&ts)[..],
        [(
            Port::Data,
            _,
            Command::ClockSync(ClockSync {
                count: 1,
                timestamps: [1, 50, 0],
                ..
            })
        )]
    ));
    let _ = peer;
}

#[test]
fn invite_rejects_port_65535_and_too_many_peers() {
    let mut c = config("us", 1);
    c.max_peers = 1;
    let mut ep = Endpoint::new(c, Micros::ZERO);
    let top = SocketAddr::new(ip(1), 65535);
    assert_eq!(
        ep.invite(Micros::ZERO, top),
        Err(InviteError::NoDataPort(top))
    );
    ep.invite(Micros::ZERO, remote()).unwrap();
    assert_eq!(
        ep.invite(Micros::ZERO, remote()),
        Err(InviteError::TooManyPeers(1))
    );
    // Full: incoming invitations are refused too.
    ep.handle_datagram(
        Micros::ZERO,
        Port::Control,
        SocketAddr::new(ip(9), 5004),
        &cmd(Command::Invitation(inv(1, 2, None))),
    );
    assert_eq!(ep.stats().invitations_refused, 1);
}

#[test]
fn same_seed_same_ssrc_and_tokens() {
    let mk = || {
        let mut ep = Endpoint::new(config("us", 42), Micros::ZERO);
        ep.invite(Micros::ZERO, remote()).unwrap();
        (ep.ssrc(), ep.poll_transmit().unwrap().payload)
    };
    assert_eq!(mk(), mk());
    let other = Endpoint::new(config("us", 43), Micros::ZERO);
    assert_ne!(other.ssrc(), mk().0);
}

#[test]
fn close_says_bye_to_everyone_but_reports_only_announced_sessions() {
    let (mut ep, joined) = responder_joined();
    // A second participant half-way through its handshake.
    let other = SocketAddr::new(ip(9), 5004);
    ep.handle_datagram(
        Micros::from_secs(1),
        Port::Control,
        other,
        &cmd(Command::Invitation(inv(1, 2, None))),
    );
    let _ = drain(&mut ep);
    assert_eq!(ep.peers().count(), 2);
    ep.close(Micros::from_secs(2));
    let (ts, evs) = drain(&mut ep);
    let byes: Vec<SocketAddr> = decode_all(&ts)
        .into_iter()
        .filter(|(_, _, c)| matches!(c, Command::End(_)))
        .map(|(_, to, _)| to)
        .collect();
    assert_eq!(byes, vec![remote(), other]);
    assert_eq!(
        evs,
        vec![EndpointEvent::Left {
            peer: joined,
            reason: LeaveReason::EndedLocally
        }]
    );
    assert_eq!(ep.poll_timeout(), None);
}
