//! Tests of the reliable channel: frames, and whole transfers over the
//! emulated network with loss, reordering, duplication and partitions.

use super::*;
use crate::netem::{LinkConfig, Network, Sim, SimNode};
use proptest::prelude::*;
use std::time::Duration;

#[test]
fn frames_round_trip() {
    let d = Frame::Data {
        src_epoch: 7,
        dst_epoch: 9,
        seq: 42,
        frag_index: 1,
        frag_count: 3,
        payload: b"abc",
    };
    assert_eq!(Frame::decode(&d.encode()), Ok(d.clone()));
    let a = Frame::Ack {
        src_epoch: 7,
        dst_epoch: 0,
        next: 5,
        sack: 0b1011,
    };
    assert_eq!(a.encode().len(), ACK_LEN);
    assert_eq!(Frame::decode(&a.encode()), Ok(a));
}

#[test]
fn malformed_frames_get_clear_errors() {
    assert_eq!(
        Frame::decode(&[]),
        Err(FrameError::Truncated { len: 0, need: 2 })
    );
    assert_eq!(Frame::decode(&[0x80, 1]), Err(FrameError::BadMagic(0x80)));
    assert_eq!(Frame::decode(&[MAGIC, 9]), Err(FrameError::UnknownType(9)));
    assert_eq!(
        Frame::decode(&[MAGIC, TYPE_ACK, 0, 0]),
        Err(FrameError::Truncated {
            len: 4,
            need: ACK_LEN
        })
    );
    let mut d = Frame::Data {
        src_epoch: 1,
        dst_epoch: 0,
        seq: 0,
        frag_index: 3,
        frag_count: 3,
        payload: &[],
    }
    .encode();
    assert_eq!(
        Frame::decode(&d),
        Err(FrameError::BadFragment { index: 3, count: 3 })
    );
    d[2..6].copy_from_slice(&[0; 4]);
    assert_eq!(Frame::decode(&d), Err(FrameError::ZeroEpoch));
    assert!(
        FrameError::BadMagic(0x80).to_string().contains("0x80"),
        "messages name the offending value"
    );
}

#[test]
fn an_announced_giant_message_is_refused() {
    let mut r = Reliable::new(ReliableConfig::default(), 1);
    let d = Frame::Data {
        src_epoch: 2,
        dst_epoch: 0,
        seq: 0,
        frag_index: 0,
        frag_count: u32::MAX,
        payload: &[1],
    }
    .encode();
    assert!(matches!(
        r.handle_datagram(Micros::ZERO, &d),
        Err(FrameError::MessageTooLong { .. })
    ));
    assert!(r.is_idle());
}

#[test]
fn sending_refuses_oversized_messages_and_a_full_queue() {
    let config = ReliableConfig {
        max_message_len: 100,
        max_queued_bytes: 150,
        ..ReliableConfig::default()
    };
    let mut r = Reliable::new(config, 1);
    assert_eq!(
        r.send(&[0; 101]),
        Err(SendError::TooLong { len: 101, max: 100 })
    );
    r.send(&[0; 100]).unwrap();
    assert_eq!(
        r.send(&[0; 60]),
        Err(SendError::QueueFull {
            queued: 100,
            max: 150
        })
    );
}

#[test]
fn duplicates_are_dropped_and_reacknowledged() {
    let now = Micros::ZERO;
    let mut a = Reliable::new(ReliableConfig::default(), 1);
    let mut b = Reliable::new(ReliableConfig::default(), 2);
    a.send(b"one").unwrap();
    let d = a.poll_transmit(now).unwrap();
    b.handle_datagram(now, &d).unwrap();
    b.handle_datagram(now, &d).unwrap();
    assert_eq!(
        b.poll_event(),
        Some(ReliableEvent::Message(b"one".to_vec()))
    );
    assert_eq!(b.poll_event(), None);
    assert_eq!(b.stats().duplicates, 1);
    assert!(b.poll_transmit(now).is_some());
}

#[test]
fn empty_messages_are_delivered() {
    let now = Micros::ZERO;
    let mut a = Reliable::new(ReliableConfig::default(), 1);
    let mut b = Reliable::new(ReliableConfig::default(), 2);
    a.send(b"").unwrap();
    a.send(b"x").unwrap();
    while let Some(d) = a.poll_transmit(now) {
        b.handle_datagram(now, &d).unwrap();
    }
    assert_eq!(b.poll_event(), Some(ReliableEvent::Message(vec![])));
    assert_eq!(b.poll_event(), Some(ReliableEvent::Message(b"x".to_vec())));
}

#[test]
fn a_lost_fragment_is_resent_after_the_rto_with_backoff() {
    let mut a = Reliable::new(ReliableConfig::default(), 1);
    a.send(b"lost").unwrap();
    let _lost = a.poll_transmit(Micros::ZERO).unwrap();
    let t1 = a.poll_timeout().unwrap();
    assert_eq!(t1, Micros(ReliableConfig::default().initial_rto_us));
    a.handle_timeout(t1);
    assert!(a.poll_transmit(t1).is_some());
    let t2 = a.poll_timeout().unwrap();
    assert_eq!(t2.0 - t1.0, 2 * ReliableConfig::default().initial_rto_us);
    assert_eq!(a.stats().retransmits, 1);
    // The backoff stops at max_rto.
    let mut t = t2;
    for _ in 0..20 {
        a.handle_timeout(t);
        while a.poll_transmit(t).is_some() {}
        let next = a.poll_timeout().unwrap();
        assert!(next.0 - t.0 <= ReliableConfig::default().max_rto_us);
        t = next;
    }
}

/// A node of the simulation: one channel end per peer address.
struct Node {
    me: u8,
    ends: BTreeMap<u8, Reliable>,
    received: BTreeMap<u8, Vec<Vec<u8>>>,
    restarts: u32,
}

impl Node {
    fn new(me: u8, peers: &[u8], epoch_seed: u32) -> Node {
        let ends = peers
            .iter()
            .filter(|p| **p != me)
            .map(|p| {
                let config = ReliableConfig {
                    mtu: 300,
                    ..ReliableConfig::default()
                };
                (
                    *p,
                    Reliable::new(config, epoch_seed * 256 + u32::from(me) + 1),
                )
            })
            .collect();
        Node {
            me,
            ends,
            received: BTreeMap::new(),
            restarts: 0,
        }
    }
}

impl SimNode<u8> for Node {
    fn handle_datagram(&mut self, now: Micros, from: u8, payload: &[u8]) {
        let Some(end) = self.ends.get_mut(&from) else {
            return;
        };
        end.handle_datagram(now, payload).unwrap();
        while let Some(e) = end.poll_event() {
            match e {
                ReliableEvent::Message(m) => self.received.entry(from).or_default().push(m),
                ReliableEvent::PeerRestarted => self.restarts += 1,
            }
        }
    }
    fn handle_timeout(&mut self, now: Micros) {
        for end in self.ends.values_mut() {
            if end.poll_timeout().is_some_and(|t| t <= now) {
                end.handle_timeout(now);
            }
        }
    }
    fn poll_transmit(&mut self, now: Micros) -> Option<(u8, Vec<u8>)> {
        let _ = self.me;
        self.ends
            .iter_mut()
            .find_map(|(p, e)| e.poll_transmit(now).map(|d| (*p, d)))
    }
    fn poll_timeout(&self) -> Option<Micros> {
        self.ends.values().filter_map(|e| e.poll_timeout()).min()
    }
}

fn message(from: u8, to: u8, i: usize, len: usize) -> Vec<u8> {
    let mut m = vec![from, to, i as u8, (i >> 8) as u8];
    m.extend((0..len).map(|k| (k * 31 + i) as u8));
    m
}

fn run_transfer(seed: u64, link: LinkConfig, nodes: u8, msgs: usize, partition: bool) {
    let addrs: Vec<u8> = (0..nodes).collect();
    let mut sim = Sim::new(Network::new(seed, link));
    for &a in &addrs {
        sim.add_node(a, Node::new(a, &addrs, 1));
    }
    let mut expected: BTreeMap<(u8, u8), Vec<Vec<u8>>> = BTreeMap::new();
    let mut rng = seed;
    for i in 0..msgs {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let from = (rng >> 33) as u8 % nodes;
        let to = ((rng >> 41) as u8 % (nodes - 1) + from + 1) % nodes;
        let len = ((rng >> 20) % 3000) as usize;
        let m = message(from, to, i, len);
        sim.nodes
            .get_mut(&from)
            .unwrap()
            .ends
            .get_mut(&to)
            .unwrap()
            .send(&m)
            .unwrap();
        expected.entry((from, to)).or_default().push(m);
        if i == msgs / 3 && partition {
            let half: Vec<u8> = addrs[..addrs.len() / 2].to_vec();
            let rest: Vec<u8> = addrs[addrs.len() / 2..].to_vec();
            sim.net.partition(&[&half, &rest]);
        }
        if i == 2 * msgs / 3 && partition {
            sim.run_for(Duration::from_secs(10));
            sim.net.heal();
        }
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(120));
    for ((from, to), msgs) in &expected {
        let got = sim.nodes[to]
            .received
            .get(from)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            got.len(),
            msgs.len(),
            "seed {seed}: {from}->{to} delivered {} of {}",
            got.len(),
            msgs.len()
        );
        assert!(
            &got == msgs,
            "seed {seed}: {from}->{to} out of order or corrupt"
        );
    }
    for n in sim.nodes.values() {
        assert!(
            n.ends.values().all(|e| e.is_idle()),
            "seed {seed}: not idle"
        );
        assert_eq!(n.restarts, 0);
    }
}

#[test]
fn delivers_everything_in_order_over_a_perfect_link() {
    run_transfer(
        1,
        LinkConfig::default().delay(Duration::from_millis(10)),
        2,
        50,
        false,
    );
}

#[test]
fn survives_a_partition_that_heals() {
    let link = LinkConfig::default()
        .delay(Duration::from_millis(20))
        .jitter(Duration::from_millis(5))
        .loss(0.05);
    run_transfer(2, link, 4, 120, true);
}

#[test]
fn a_restarted_peer_is_detected_and_both_directions_start_over() {
    let now = Micros::ZERO;
    let mut a = Reliable::new(ReliableConfig::default(), 10);
    let mut b = Reliable::new(ReliableConfig::default(), 20);
    let pump = |x: &mut Reliable, y: &mut Reliable| {
        for _ in 0..10 {
            while let Some(d) = x.poll_transmit(now) {
                y.handle_datagram(now, &d).unwrap();
            }
            while let Some(d) = y.poll_transmit(now) {
                x.handle_datagram(now, &d).unwrap();
            }
        }
    };
    a.send(b"before").unwrap();
    pump(&mut a, &mut b);
    assert_eq!(
        b.poll_event(),
        Some(ReliableEvent::Message(b"before".to_vec()))
    );
    // b restarts: a new incarnation with a new epoch.
    let mut b = Reliable::new(ReliableConfig::default(), 21);
    a.send(b"after").unwrap();
    b.send(b"hello again").unwrap();
    pump(&mut a, &mut b);
    assert_eq!(a.poll_event(), Some(ReliableEvent::PeerRestarted));
    // What a sent to the old b is gone; the application resynchronises.
    // New messages flow both ways.
    a.send(b"resync").unwrap();
    pump(&mut a, &mut b);
    let mut got = Vec::new();
    while let Some(e) = b.poll_event() {
        got.push(e);
    }
    assert_eq!(
        got.last(),
        Some(&ReliableEvent::Message(b"resync".to_vec()))
    );
    let mut got_a = Vec::new();
    while let Some(e) = a.poll_event() {
        got_a.push(e);
    }
    assert!(a.is_idle() && b.is_idle());
    // Stale frames from the old incarnation are ignored, not a new restart.
    let stale = Frame::Ack {
        src_epoch: 20,
        dst_epoch: 10,
        next: 0,
        sack: 0,
    }
    .encode();
    a.handle_datagram(now, &stale).unwrap();
    assert_eq!(a.poll_event(), None);
    assert_eq!(a.stats().peer_restarts, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("JAM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
    ))]

    #[test]
    fn delivers_exactly_once_in_order_over_any_impaired_link(
        seed in any::<u64>(),
        loss in 0.0f64..0.3,
        dup in 0.0f64..0.2,
        reorder in 0.0f64..0.3,
        nodes in 2u8..5,
        partition in any::<bool>(),
    ) {
        let link = LinkConfig::default()
            .delay(Duration::from_millis(15))
            .jitter(Duration::from_millis(10))
            .unordered()
            .loss(loss)
            .duplicate(dup)
            .reorder(reorder, Duration::from_millis(30));
        run_transfer(seed, link, nodes, 60, partition);
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_change_an_idle_channel(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut r = Reliable::new(ReliableConfig::default(), 1);
        if r.handle_datagram(Micros::ZERO, &bytes).is_err() {
            prop_assert!(r.is_idle());
            prop_assert_eq!(r.poll_event(), None);
        }
    }

    #[test]
    fn frames_decode_what_they_encode(
        src in 1u32.., dst in any::<u32>(), seq in any::<u32>(), count in 1u32..1000,
        idx in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let d = Frame::Data { src_epoch: src, dst_epoch: dst, seq, frag_index: idx % count, frag_count: count, payload: &payload };
        let bytes = d.encode();
        prop_assert_eq!(Frame::decode(&bytes), Ok(d));
    }
}
