//! Participants (endpoint + RTP-MIDI streams) meshed over the network
//! emulator: what every musician sends arrives, repaired, with its time.

use jam_core::{Micros, ShortMessage};
use jam_transport::applemidi::{LeaveReason, PeerHandle};
use jam_transport::netem::{BurstLoss, LinkConfig};
use jam_transport::participant::{Participant, ParticipantConfig, ParticipantEvent};
use jam_transport::rtp::recv::RecvMessage;
use jam_transport::sim::HostSim;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

/// Prints the seed of a failing run.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("*** failing seed: {} ***", self.0);
        }
    }
}

fn mesh(n: usize, seed: u64, link: LinkConfig) -> HostSim<Participant> {
    let mut sim = HostSim::new(seed, link);
    for i in 0..n {
        // Clocks several seconds apart, so clock sync matters.
        let skew = 3_000_000 * i as u64 + 12_345;
        let name = format!("p{i}");
        let s = seed.wrapping_mul(31).wrapping_add(i as u64);
        sim.add_host([127, 0, 0, i as u8 + 1], 5004, skew, move |now| {
            Participant::new(ParticipantConfig::new(name, s), now)
        });
    }
    for i in 0..n {
        for j in i + 1..n {
            let to = sim.control_addr(j);
            sim.with(i, |p, now| p.invite(now, to)).unwrap();
        }
    }
    sim.run_for(Duration::from_secs(3));
    for i in 0..n {
        assert_eq!(
            sim.protocol(i).peers().count(),
            n - 1,
            "host {i} not fully joined"
        );
    }
    sim
}

/// A random but well-formed performance on `channel`: notes (released by the
/// end), controllers including the sustain pedal, program changes with bank,
/// pitch wheel and pressure. Returns (offset, message) sorted by offset.
fn performance(rng: &mut StdRng, channel: u8, length: Duration) -> Vec<(Duration, ShortMessage)> {
    let mut out = Vec::new();
    let mut t = Duration::ZERO;
    let mut held: BTreeMap<u8, Duration> = BTreeMap::new();
    while t < length {
        t += Duration::from_millis(rng.random_range(5..60));
        match rng.random_range(0..10) {
            0..=4 => {
                let key = rng.random_range(36..96);
                if held.remove(&key).is_some() {
                    out.push((t, ShortMessage::note_off(channel, key, 64)));
                } else {
                    out.push((
                        t,
                        ShortMessage::note_on(channel, key, rng.random_range(1..128)),
                    ));
                    held.insert(key, t);
                }
            }
            5 => {
                let cc = [1, 7, 10, 11, 64, 71, 74][rng.random_range(0..7)];
                out.push((
                    t,
                    ShortMessage::control_change(channel, cc, rng.random_range(0..128)),
                ));
            }
            6 => {
                out.push((
                    t,
                    ShortMessage::control_change(channel, 0, rng.random_range(0..4)),
                ));
                out.push((
                    t,
                    ShortMessage::program_change(channel, rng.random_range(0..128)),
                ));
            }
            7 => out.push((
                t,
                ShortMessage::pitch_bend(channel, rng.random_range(0..16384)),
            )),
            8 => out.push((
                t,
                ShortMessage::channel_pressure(channel, rng.random_range(0..128)),
            )),
            _ => {
                // Release the oldest held note.
                if let Some((&key, _)) = held.iter().min_by_key(|(_, at)| **at) {
                    out.push((t, ShortMessage::note_off(channel, key, 0)));
                    held.remove(&key);
                }
            }
        }
    }
    for key in held.into_keys() {
        t += Duration::from_millis(3);
        out.push((t, ShortMessage::note_off(channel, key, 64)));
    }
    out.push((t, ShortMessage::control_change(channel, 64, 0)));
    out
}

/// Plays every host's performance in virtual time (each message sent at its
/// own moment), then lets guard packets and feedback settle. Guard packets
/// back off to one a second; the burst-loss model drops packets in runs
/// counted in packets, not seconds, so a sparse tail of guards can sit in
/// one burst for several seconds: the settle time covers that.
fn play(sim: &mut HostSim<Participant>, parts: &[Vec<(Duration, ShortMessage)>]) {
    let start = sim.now();
    let mut schedule: Vec<(Micros, usize, ShortMessage)> = parts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.iter().map(move |&(d, m)| (start + d, i, m)))
        .collect();
    schedule.sort_by_key(|&(t, i, _)| (t, i));
    for (t, i, m) in schedule {
        sim.run_until(t);
        sim.with(i, |p, now| p.send(now, now, m)).unwrap();
    }
    sim.run_for(Duration::from_secs(15));
}

/// The handle host `i` uses for host `j`.
fn handle_of(sim: &HostSim<Participant>, i: usize, j: usize) -> PeerHandle {
    let ssrc = sim.protocol(j).ssrc();
    sim.protocol(i)
        .peers()
        .find(|&h| sim.protocol(i).peer_stats(h).unwrap().ssrc == ssrc)
        .expect("peer is joined")
}

#[test]
fn lossless_mesh_delivers_every_message_in_order_with_its_time() {
    let _g = SeedGuard(1);
    let delay = Duration::from_millis(25);
    let mut sim = mesh(3, 1, LinkConfig::default().delay(delay));
    let mut rng = StdRng::seed_from_u64(1);
    let parts: Vec<_> = (0..3)
        .map(|i| performance(&mut rng, i as u8, Duration::from_secs(4)))
        .collect();
    for i in 0..3 {
        sim.take_events(i);
    }
    play(&mut sim, &parts);
    for i in 0..3 {
        let mut by_peer: BTreeMap<PeerHandle, Vec<(ShortMessage, Micros, Micros)>> =
            BTreeMap::new();
        for (_, e) in sim.take_events(i) {
            if let ParticipantEvent::Midi {
                peer,
                event,
                local_time,
                arrived,
            } = e
            {
                assert!(!event.recovered, "nothing was lost, nothing to recover");
                let RecvMessage::Short(m) = event.message else {
                    panic!("no sysex was sent")
                };
                by_peer
                    .entry(peer)
                    .or_default()
                    .push((m, local_time, arrived));
            }
        }
        for j in (0..3).filter(|&j| j != i) {
            let got = &by_peer[&handle_of(&sim, i, j)];
            let msgs: Vec<ShortMessage> = got.iter().map(|g| g.0).collect();
            let sent: Vec<ShortMessage> = parts[j].iter().map(|p| p.1).collect();
            assert_eq!(msgs, sent, "host {i} from host {j}");
            // Mapped sender time: arrival minus the one-way delay, within a
            // tick of clock-sync error plus tick truncation.
            for (_, local_time, arrived) in got {
                let latency = arrived.signed_diff(*local_time);
                assert!(
                    (latency - delay.as_micros() as i64).abs() <= 300,
                    "latency {latency} µs vs delay {delay:?}"
                );
            }
        }
    }
}

fn lossy_run(seed: u64, link: LinkConfig) {
    let _g = SeedGuard(seed);
    let n = 3;
    let mut sim = mesh(
        n,
        seed,
        LinkConfig::default().delay(Duration::from_millis(20)),
    );
    sim.net.set_default(link);
    let mut rng = StdRng::seed_from_u64(seed);
    let parts: Vec<_> = (0..n)
        .map(|i| performance(&mut rng, i as u8, Duration::from_secs(6)))
        .collect();
    play(&mut sim, &parts);
    let mut recovered = 0;
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let h = handle_of(&sim, i, j);
            let received = sim.protocol(i).received_state(h).unwrap();
            // What j sent to i: replay j's performance into a fresh model.
            let mut sent = jam_transport::rtp::state::MidiState::new();
            for (_, m) in &parts[j] {
                sent.apply(m);
            }
            let diff = received.differences(&sent);
            assert!(diff.is_empty(), "host {i} from host {j}: {diff:?}");
            assert_eq!(received.sounding_count(), 0, "stuck notes at {i} from {j}");
            recovered += sim.protocol(i).peer_stats(h).unwrap().recv.recovered_events;
        }
    }
    if link.loss >= 0.05 {
        assert!(recovered > 0, "a lossy run must exercise the journal");
    }
}

#[test]
fn lossy_meshes_end_with_identical_state_and_no_stuck_notes() {
    let base = LinkConfig::default().delay(Duration::from_millis(20));
    for seed in 0..6 {
        lossy_run(seed, base.loss(0.01).jitter(Duration::from_millis(3)));
        lossy_run(100 + seed, base.loss(0.1).jitter(Duration::from_millis(5)));
        lossy_run(200 + seed, base.loss(0.3));
        lossy_run(300 + seed, base.burst(BurstLoss::new(0.1, 4.0)));
        lossy_run(
            400 + seed,
            base.loss(0.05)
                .reorder(0.1, Duration::from_millis(15))
                .duplicate(0.05)
                .jitter(Duration::from_millis(8))
                .unordered(),
        );
    }
}

#[test]
fn a_late_joiner_hears_the_controllers_already_set() {
    let _g = SeedGuard(7);
    let mut sim = mesh(2, 7, LinkConfig::default().delay(Duration::from_millis(10)));
    for m in [
        ShortMessage::control_change(2, 0, 1),
        ShortMessage::program_change(2, 40),
        ShortMessage::control_change(2, 7, 90),
        ShortMessage::pitch_bend(2, 9000),
        ShortMessage::channel_pressure(2, 33),
    ] {
        sim.with(0, |p, now| p.send(now, now, m)).unwrap();
    }
    sim.run_for(Duration::from_secs(1));
    let c = sim.add_host([127, 0, 0, 9], 5004, 999, |now| {
        Participant::new(ParticipantConfig::new("late", 77), now)
    });
    let to = sim.control_addr(c);
    sim.with(0, |p, now| p.invite(now, to)).unwrap();
    sim.run_for(Duration::from_secs(2));
    let h = handle_of(&sim, c, 0);
    let state = sim
        .protocol(c)
        .received_state(h)
        .unwrap()
        .channel(2)
        .clone();
    assert_eq!(state.controllers[7], 90);
    assert_eq!(state.pitch_bend, 9000);
    assert_eq!(state.channel_pressure, 33);
    let program = state.program.expect("program arrived");
    assert_eq!((program.number, program.bank_msb), (40, 1));
}

#[test]
fn a_peer_that_leaves_leaves_no_note_sounding() {
    let _g = SeedGuard(3);
    let mut sim = mesh(2, 3, LinkConfig::default().delay(Duration::from_millis(10)));
    sim.with(0, |p, now| {
        p.send(now, now, ShortMessage::note_on(0, 60, 100))
    })
    .unwrap();
    sim.with(0, |p, now| {
        p.send(now, now, ShortMessage::control_change(0, 64, 127))
    })
    .unwrap();
    sim.run_for(Duration::from_millis(200));
    sim.take_events(1);
    sim.with(0, |p, now| p.close(now));
    sim.run_for(Duration::from_secs(1));
    let events = sim.take_events(1);
    let released = events.iter().any(|(_, e)| {
        matches!(e, ParticipantEvent::Midi { event, .. }
            if event.recovered && event.message == RecvMessage::Short(ShortMessage::note_off(0, 60, 0))
                || matches!(&event.message, RecvMessage::Short(m) if m.is_note_off() && m.data1() == 60))
    });
    assert!(released, "note 60 released: {events:?}");
    assert!(events.iter().any(|(_, e)| matches!(
        e,
        ParticipantEvent::Left {
            reason: LeaveReason::ByeReceived,
            ..
        }
    )));
    assert_eq!(sim.protocol(1).peers().count(), 0);
}
