//! The reliable side channel of [`Participant`]: `0x4A` frames between joined
//! participants on the control port, over the network emulator, with real
//! [`Reliable`] ends on both sides.

use jam_core::Micros;
use jam_transport::applemidi::{PeerHandle, Port};
use jam_transport::driver::Protocol;
use jam_transport::netem::LinkConfig;
use jam_transport::participant::{
    Participant, ParticipantConfig, ParticipantEvent, SideChannelError,
};
use jam_transport::reliable::{Reliable, ReliableConfig, ReliableEvent};
use jam_transport::sim::HostSim;
use proptest::prelude::*;
use std::net::SocketAddr;
use std::time::Duration;

fn pair(seed: u64, link: LinkConfig) -> HostSim<Participant> {
    let mut sim = HostSim::new(seed, link);
    for i in 0..2u64 {
        let name = format!("p{i}");
        sim.add_host([127, 0, 0, i as u8 + 1], 5004, 1_000_000 * i, move |now| {
            Participant::new(ParticipantConfig::new(name, seed + i), now)
        });
    }
    let to = sim.control_addr(1);
    sim.with(0, |p, now| p.invite(now, to)).unwrap();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.protocol(0).peers().count(), 1);
    assert_eq!(sim.protocol(1).peers().count(), 1);
    sim.take_events(0);
    sim.take_events(1);
    sim
}

fn only_peer(sim: &HostSim<Participant>, i: usize) -> PeerHandle {
    sim.protocol(i).peers().next().unwrap()
}

/// Moves frames between two reliable ends through the participants until
/// `b` has delivered `want` messages (or virtual time runs out).
fn exchange(sim: &mut HostSim<Participant>, ends: &mut [Reliable; 2], want: usize) -> Vec<Vec<u8>> {
    let handles = [only_peer(sim, 0), only_peer(sim, 1)];
    let mut got = Vec::new();
    for _ in 0..2_000 {
        for i in 0..2 {
            let now = sim.local_now(i);
            if ends[i].poll_timeout().is_some_and(|t| t <= now) {
                ends[i].handle_timeout(now);
            }
            while let Some(f) = ends[i].poll_transmit(now) {
                sim.with(i, |p, _| p.send_reliable(handles[i], f)).unwrap();
            }
        }
        sim.run_for(Duration::from_millis(5));
        for i in 0..2 {
            let now = sim.local_now(i);
            for (_, e) in sim.take_events(i) {
                if let ParticipantEvent::Reliable { peer, bytes } = e {
                    assert_eq!(peer, handles[i]);
                    ends[i].handle_datagram(now, &bytes).unwrap();
                }
            }
        }
        while let Some(e) = ends[1].poll_event() {
            if let ReliableEvent::Message(m) = e {
                got.push(m);
            }
        }
        if got.len() >= want && ends[0].is_idle() {
            break;
        }
    }
    got
}

#[test]
fn messages_cross_between_joined_participants_intact_and_in_order() {
    let link = LinkConfig::default()
        .delay(Duration::from_millis(5))
        .loss(0.03)
        .duplicate(0.03);
    let mut sim = pair(7, link);
    let mut ends = [
        Reliable::new(ReliableConfig::default(), 11),
        Reliable::new(ReliableConfig::default(), 22),
    ];
    let msgs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 300 * i as usize + 1]).collect();
    for m in &msgs {
        ends[0].send(m).unwrap();
    }
    let got = exchange(&mut sim, &mut ends, msgs.len());
    assert_eq!(got, msgs);
    let s0 = sim.protocol(0).side_channel_stats();
    let s1 = sim.protocol(1).side_channel_stats();
    assert!(s0.sent > 0 && s1.received > 0, "{s0:?} {s1:?}");
    assert_eq!(s1.unknown_source + s1.malformed, 0);
    // MIDI sessions are untouched by the side traffic.
    assert_eq!(sim.protocol(0).endpoint().stats().garbage, 0);
    assert_eq!(sim.protocol(1).endpoint().stats().garbage, 0);
}

#[test]
fn frames_from_strangers_and_on_the_data_port_are_dropped_and_counted() {
    let mut sim = pair(3, LinkConfig::default().delay(Duration::from_millis(5)));
    let stranger: SocketAddr = "127.0.0.9:5004".parse().unwrap();
    let frame = {
        let mut r = Reliable::new(ReliableConfig::default(), 5);
        r.send(b"hello").unwrap();
        r.poll_transmit(Micros::ZERO).unwrap()
    };
    sim.with(1, |p, now| {
        p.handle_datagram(now, Port::Control, stranger, &frame)
    });
    // The joined peer's data address is not its control port either.
    let data0 = sim.data_addr(0);
    sim.with(1, |p, now| {
        p.handle_datagram(now, Port::Control, data0, &frame)
    });
    // A lone magic byte is no frame.
    let control0 = sim.control_addr(0);
    sim.with(1, |p, now| {
        p.handle_datagram(now, Port::Control, control0, &[0x4A])
    });
    let s = sim.protocol(1).side_channel_stats();
    assert_eq!((s.unknown_source, s.malformed, s.received), (2, 1, 0));
    assert!(
        !sim.take_events(1)
            .iter()
            .any(|(_, e)| matches!(e, ParticipantEvent::Reliable { .. }))
    );
    // From the joined peer's control port it is delivered.
    sim.with(1, |p, now| {
        p.handle_datagram(now, Port::Control, control0, &frame)
    });
    let events = sim.take_events(1);
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, ParticipantEvent::Reliable { bytes, .. } if *bytes == frame))
    );
}

#[test]
fn sending_needs_a_joined_peer_and_a_frame() {
    let mut sim = pair(5, LinkConfig::default().delay(Duration::from_millis(5)));
    let h = only_peer(&sim, 0);
    assert_eq!(
        sim.with(0, |p, _| p.send_reliable(h, vec![0xFF, 0xFF])),
        Err(SideChannelError::BadMagic(0xFF))
    );
    assert_eq!(
        sim.with(0, |p, _| p.send_reliable(PeerHandle(999), vec![0x4A, 1])),
        Err(SideChannelError::NotJoined(PeerHandle(999)))
    );
    sim.with(0, |p, now| p.end(now, h)).unwrap();
    assert_eq!(
        sim.with(0, |p, _| p.send_reliable(h, vec![0x4A, 1])),
        Err(SideChannelError::NotJoined(h))
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_on_the_control_port_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..200)
    ) {
        let mut p = Participant::new(ParticipantConfig::new("x", 1), Micros::ZERO);
        let from: SocketAddr = "127.0.0.2:5004".parse().unwrap();
        let mut b = vec![0x4A];
        b.extend_from_slice(&tail);
        p.handle_datagram(Micros(1), Port::Control, from, &b);
        p.handle_datagram(Micros(2), Port::Data, from, &b);
        while p.poll_event().is_some() {}
        while p.poll_transmit().is_some() {}
    }
}
