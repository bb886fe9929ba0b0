//! SendStream -> packets -> RecvStream, end to end: round trips without
//! loss (proptest), and convergence of the receiver's MIDI state with the
//! sender's over a lossy, reordering, duplicating network (`netem`), with
//! the receiver's `RS` feedback flowing back over the same emulator.
//!
//! Every loss scenario runs many seeds; a failure names its seed. The
//! receiver's state is rebuilt here from the events it emitted (not taken
//! from the receiver's own bookkeeping).

use jam_core::{Micros, ShortMessage};
use jam_transport::clock::{ClockMap, Ticks};
use jam_transport::netem::{BurstLoss, LinkConfig, Network};
use jam_transport::rtp::{
    MidiState, RecvConfig, RecvEvent, RecvMessage, RecvStream, SendConfig, SendStream,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Msg {
    Short(ShortMessage),
    SysEx(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Event {
    /// Sender time in ticks (100 µs).
    time: u64,
    msg: Msg,
}

#[derive(Debug, Default)]
struct Outcome {
    sent: MidiState,
    played: MidiState,
    events: Vec<RecvEvent>,
    max_packet: usize,
    packets: u64,
    recv: jam_transport::rtp::RecvStats,
    send: jam_transport::rtp::SendStats,
}

fn apply(state: &mut MidiState, m: &RecvMessage) {
    match m {
        RecvMessage::Short(s) => state.apply(s),
        RecvMessage::SysEx(s) => state.apply_sysex(s.as_bytes()),
    }
}

/// Runs `stream` through a sender and a receiver joined by `link` in both
/// directions, then lets guards and feedback run for `tail`.
fn run(
    stream: &[Event],
    config: SendConfig,
    link: LinkConfig,
    seed: u64,
    tail: Duration,
) -> Outcome {
    run_with(stream, config, RecvConfig::default(), link, seed, tail)
}

fn run_with(
    stream: &[Event],
    config: SendConfig,
    recv_config: RecvConfig,
    link: LinkConfig,
    seed: u64,
    tail: Duration,
) -> Outcome {
    let mut net: Network<u8> = Network::new(seed, link);
    let mut sender = SendStream::new(config, Micros::ZERO);
    let mut receiver = RecvStream::new(recv_config);
    let clock = ClockMap::IDENTITY;
    let mut out = Outcome::default();
    let mut buf = Vec::new();
    let mut next = 0usize;
    let mut now = Micros::ZERO;
    let end = Micros::from_micros(stream.last().map_or(0, |e| e.time) * 100) + tail;
    for _ in 0..10_000_000u64 {
        while next < stream.len() && Micros::from_micros(stream[next].time * 100) <= now {
            let e = &stream[next];
            match &e.msg {
                Msg::Short(m) => sender.push(Ticks(e.time), *m).unwrap(),
                Msg::SysEx(b) => sender.push_sysex(Ticks(e.time), b).unwrap(),
            }
            next += 1;
        }
        sender.handle_timeout(now);
        while let Some(n) = sender.poll_transmit(now, &mut buf) {
            assert_eq!(n, buf.len());
            out.max_packet = out.max_packet.max(n);
            out.packets += 1;
            net.send(now, 0, 1, buf.clone());
        }
        while let Some(d) = net.poll_deliver(now) {
            if d.to == 1 {
                receiver
                    .handle_packet(now, &clock, &d.payload)
                    .expect("sender packets decode");
            } else {
                sender.handle_feedback(now, u16::from_be_bytes([d.payload[0], d.payload[1]]));
            }
        }
        while let Some(e) = receiver.poll_event() {
            out.events.push(e);
        }
        while let Some(seq) = receiver.poll_feedback(now) {
            net.send(now, 1, 0, seq.to_be_bytes().to_vec());
        }
        let candidates = [
            (next < stream.len()).then(|| Micros::from_micros(stream[next].time * 100)),
            net.next_delivery(),
            sender.poll_timeout(),
            receiver.poll_timeout(),
        ];
        let Some(t) = candidates.into_iter().flatten().min() else {
            break;
        };
        if t > end && next >= stream.len() {
            break;
        }
        now = now
            .max(t)
            .max(now + Duration::from_micros(1).min(t.saturating_duration_since(now)));
        if t <= now && sender.queued() == 0 && net.next_delivery().is_none_or(|d| d > now) {
            // Only a receiver timer is due now: it was served above.
            now += Duration::from_micros(100);
        }
    }
    for s in stream {
        match &s.msg {
            Msg::Short(m) => out.sent.apply(m),
            Msg::SysEx(b) => out.sent.apply_sysex(b),
        }
    }
    for e in &out.events {
        apply(&mut out.played, &e.message);
    }
    out.recv = receiver.stats();
    out.send = sender.stats();
    out
}

// ---------------------------------------------------------------------------
// Random musical streams for the loss tests.

fn sysex(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0xF0, 0x7D];
    v.extend((0..len).map(|_| rng.random_range(0..128u8)));
    if rng.random_bool(0.9) {
        v.push(0xF7);
    }
    v
}

/// A stream of `n` events over a few channels. With `release`, it ends with
/// Note Offs for every note still down (controllers stay where they are).
fn musical_stream(rng: &mut StdRng, n: usize, release: bool) -> Vec<Event> {
    let mut out = Vec::new();
    let mut state = MidiState::new();
    let mut time = 1_000u64;
    let push = |out: &mut Vec<Event>, state: &mut MidiState, time: u64, msg: Msg| {
        match &msg {
            Msg::Short(m) => state.apply(m),
            Msg::SysEx(b) => state.apply_sysex(b),
        }
        out.push(Event { time, msg });
    };
    let cc = ShortMessage::control_change;
    for _ in 0..n {
        time += rng.random_range(0..400u64);
        let ch = if rng.random_bool(0.7) {
            rng.random_range(0..3u8)
        } else {
            rng.random_range(0..16u8)
        };
        let roll = rng.random_range(0..1000u32);
        let held: Vec<(u8, u8, u8)> = state.sounding().collect();
        let msg = match roll {
            0..=349 => {
                if !held.is_empty() && rng.random_bool(0.1) {
                    let (c, k, _) = held[rng.random_range(0..held.len())];
                    Msg::Short(ShortMessage::note_on(c, k, rng.random_range(1..128)))
                } else {
                    Msg::Short(ShortMessage::note_on(
                        ch,
                        rng.random_range(30..100),
                        rng.random_range(1..128),
                    ))
                }
            }
            350..=599 if !held.is_empty() => {
                let (c, k, _) = held[rng.random_range(0..held.len())];
                if rng.random_bool(0.3) {
                    Msg::Short(ShortMessage::note_on(c, k, 0))
                } else {
                    let v = if rng.random_bool(0.5) {
                        64
                    } else {
                        rng.random_range(0..128)
                    };
                    Msg::Short(ShortMessage::note_off(c, k, v))
                }
            }
            350..=699 => {
                const NUMBERS: [u8; 16] =
                    [0, 1, 2, 7, 10, 11, 32, 64, 64, 65, 66, 67, 68, 69, 74, 122];
                let n = if rng.random_bool(0.7) {
                    NUMBERS[rng.random_range(0..NUMBERS.len())]
                } else {
                    rng.random_range(0..120u8)
                };
                let n = if matches!(n, 6 | 38 | 96..=101) {
                    12
                } else {
                    n
                };
                Msg::Short(cc(ch, n, rng.random_range(0..128)))
            }
            700..=719 => Msg::Short(cc(ch, [120, 121, 123, 123][rng.random_range(0..4usize)], 0)),
            720..=749 => {
                if rng.random_bool(0.5) {
                    push(
                        &mut out,
                        &mut state,
                        time,
                        Msg::Short(cc(ch, 0, rng.random_range(0..4))),
                    );
                    if rng.random_bool(0.5) {
                        push(
                            &mut out,
                            &mut state,
                            time,
                            Msg::Short(cc(ch, 32, rng.random_range(0..4))),
                        );
                    }
                }
                Msg::Short(ShortMessage::program_change(ch, rng.random_range(0..128)))
            }
            750..=819 => Msg::Short(ShortMessage::pitch_bend(ch, rng.random_range(0..16384))),
            820..=849 => Msg::Short(ShortMessage::channel_pressure(ch, rng.random_range(0..128))),
            850..=879 => Msg::Short(ShortMessage::poly_pressure(
                ch,
                rng.random_range(30..100),
                rng.random_range(0..128),
            )),
            880..=909 => {
                let (msb_cc, lsb_cc) = if rng.random_bool(0.6) {
                    (101, 100)
                } else {
                    (99, 98)
                };
                push(
                    &mut out,
                    &mut state,
                    time,
                    Msg::Short(cc(ch, msb_cc, rng.random_range(0..3))),
                );
                push(
                    &mut out,
                    &mut state,
                    time,
                    Msg::Short(cc(ch, lsb_cc, rng.random_range(0..5))),
                );
                push(
                    &mut out,
                    &mut state,
                    time,
                    Msg::Short(cc(ch, 6, rng.random_range(0..128))),
                );
                if rng.random_bool(0.5) {
                    push(
                        &mut out,
                        &mut state,
                        time,
                        Msg::Short(cc(ch, 38, rng.random_range(0..128))),
                    );
                }
                for _ in 0..rng.random_range(0..3) {
                    push(
                        &mut out,
                        &mut state,
                        time,
                        Msg::Short(cc(ch, if rng.random_bool(0.5) { 96 } else { 97 }, 0)),
                    );
                }
                if rng.random_bool(0.5) {
                    push(&mut out, &mut state, time, Msg::Short(cc(ch, msb_cc, 127)));
                    Msg::Short(cc(ch, lsb_cc, 127))
                } else {
                    Msg::Short(cc(ch, 7, rng.random_range(0..128)))
                }
            }
            910..=939 => {
                let len = if rng.random_bool(0.1) {
                    rng.random_range(200..3000)
                } else {
                    rng.random_range(0..40)
                };
                Msg::SysEx(sysex(rng, len))
            }
            940..=989 => {
                let m: &[u8] = match rng.random_range(0..7u32) {
                    0 => &[0xF8],
                    1 => &[0xFA],
                    2 => &[0xFB],
                    3 => &[0xFC],
                    4 => &[0xF6],
                    5 => &[0xF3, 5],
                    _ => &[0xF2, 10, 1],
                };
                Msg::Short(ShortMessage::try_from_slice(m).unwrap())
            }
            990..=994 => Msg::SysEx(vec![0xF0, 0x7E, 0x7F, 0x09, 0x01, 0xF7]),
            _ => Msg::Short(ShortMessage::try_from_slice(&[0xFF]).unwrap()),
        };
        push(&mut out, &mut state, time, msg);
    }
    if release {
        time += 50;
        let held: Vec<(u8, u8, u8)> = state.sounding().collect();
        for (c, k, _) in held {
            push(
                &mut out,
                &mut state,
                time,
                Msg::Short(ShortMessage::note_off(c, k, 64)),
            );
        }
        assert_eq!(state.sounding_count(), 0);
    }
    out
}

fn config(seed: u64) -> SendConfig {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED);
    SendConfig::random(&mut rng)
}

fn seeds() -> u64 {
    std::env::var("JAM_LOSS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

fn check_converges(name: &str, link: LinkConfig, events: usize) {
    for seed in 0..seeds() {
        let mut rng = StdRng::seed_from_u64(seed);
        let stream = musical_stream(&mut rng, events, true);
        let out = run(&stream, config(seed), link, seed, Duration::from_secs(8));
        let diff = out.sent.differences(&out.played);
        assert!(
            diff.is_empty(),
            "{name}: seed {seed}: receiver state differs from sender's ({} differences): {:#?}\nrecv {:?}\nsend {:?}",
            diff.len(),
            &diff[..diff.len().min(20)],
            out.recv,
            out.send
        );
        assert_eq!(
            out.played.sounding_count(),
            0,
            "{name}: seed {seed}: stuck notes"
        );
        assert!(
            out.max_packet <= SendConfig::DEFAULT_MTU,
            "{name}: seed {seed}: packet over MTU"
        );
    }
}

fn check_held_subset(name: &str, link: LinkConfig, events: usize) {
    for seed in 0..seeds() {
        let mut rng = StdRng::seed_from_u64(seed + 1000);
        let stream = musical_stream(&mut rng, events, false);
        let out = run(&stream, config(seed), link, seed, Duration::from_secs(8));
        for (ch, note, _) in out.played.sounding() {
            assert!(
                out.sent.channel(ch).notes[usize::from(note)] > 0,
                "{name}: seed {seed}: receiver holds ch {ch} note {note} that the sender released"
            );
        }
        // Everything but the notes must agree exactly.
        let diff: Vec<String> = out
            .sent
            .differences(&out.played)
            .into_iter()
            .filter(|d| !d.contains(" note "))
            .collect();
        assert!(diff.is_empty(), "{name}: seed {seed}: {diff:#?}");
    }
}

fn link() -> LinkConfig {
    LinkConfig::default()
        .delay(Duration::from_millis(10))
        .jitter(Duration::from_millis(2))
}

#[test]
fn converges_at_1_percent_loss() {
    check_converges("1%", link().loss(0.01), 400);
}

#[test]
fn converges_at_10_percent_loss() {
    check_converges("10%", link().loss(0.10), 400);
}

#[test]
fn converges_at_30_percent_loss() {
    check_converges("30%", link().loss(0.30), 400);
}

#[test]
fn converges_under_burst_loss() {
    check_converges("burst", link().burst(BurstLoss::new(0.1, 5.0)), 400);
}

#[test]
fn converges_under_reordering_and_duplication() {
    let l = link()
        .loss(0.05)
        .reorder(0.1, Duration::from_millis(15))
        .duplicate(0.1)
        .unordered();
    check_converges("reorder+dup", l, 400);
}

#[test]
fn held_notes_at_the_end_are_a_subset_of_the_senders() {
    check_held_subset("held 10%", link().loss(0.10), 300);
    check_held_subset("held 30%", link().loss(0.30).duplicate(0.05), 300);
}

// ---------------------------------------------------------------------------
// Round trips without loss.

fn short_message() -> impl Strategy<Value = ShortMessage> {
    prop_oneof![
        (0x80u8..0xF0, 0u8..128, 0u8..128).prop_map(|(s, a, b)| {
            let len = if (0xC0..0xE0).contains(&s) { 2 } else { 3 };
            ShortMessage::try_from_slice(&[s, a, b][..len]).unwrap()
        }),
        prop::sample::select(vec![0xF6u8, 0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF])
            .prop_map(|s| ShortMessage::try_from_slice(&[s]).unwrap()),
        (0u8..128).prop_map(|v| ShortMessage::try_from_slice(&[0xF3, v]).unwrap()),
        (0u8..128).prop_map(|v| ShortMessage::try_from_slice(&[0xF1, v]).unwrap()),
        (0u8..128, 0u8..128)
            .prop_map(|(a, b)| ShortMessage::try_from_slice(&[0xF2, a, b]).unwrap()),
    ]
}

fn message() -> impl Strategy<Value = Msg> {
    prop_oneof![
        8 => short_message().prop_map(Msg::Short),
        1 => (prop::collection::vec(0u8..128, 0..3000), any::<bool>()).prop_map(|(d, term)| {
            let mut v = vec![0xF0];
            v.extend(d);
            if term {
                v.push(0xF7);
            }
            Msg::SysEx(v)
        }),
    ]
}

/// Batches of (gap, message): each batch is pushed at once, so one packet
/// carries several commands with delta times of every length.
fn batches() -> impl Strategy<Value = Vec<Vec<(u64, Msg)>>> {
    let gap = prop_oneof![
        Just(0u64),
        0u64..128,
        128u64..0x4000,
        0x4000u64..0x20_0000,
        0x20_0000u64..0x0FFF_FFFF
    ];
    prop::collection::vec(prop::collection::vec((gap, message()), 1..12), 1..10)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_stream_round_trips_without_loss(batches in batches(), mtu in prop_oneof![Just(1200usize), 40usize..300], rs in any::<bool>()) {
        let mut config = SendConfig::new(0xABCD, 65_500);
        config.mtu = mtu;
        config.running_status = rs;
        let mut sender = SendStream::new(config, Micros::ZERO);
        let mut receiver = RecvStream::new(RecvConfig::default());
        let mut time = 0u64;
        let mut expected = Vec::new();
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for batch in &batches {
            for (gap, msg) in batch {
                time += gap;
                match msg {
                    Msg::Short(m) => sender.push(Ticks(time), *m).unwrap(),
                    Msg::SysEx(b) => sender.push_sysex(Ticks(time), b).unwrap(),
                }
                expected.push((time, msg.clone()));
            }
            let now = Micros::from_micros(time * 100);
            while let Some(n) = sender.poll_transmit(now, &mut buf) {
                prop_assert!(n <= mtu, "packet of {} octets over mtu {}", n, mtu);
                receiver.handle_packet(now, &ClockMap::IDENTITY, &buf).unwrap();
            }
            while let Some(e) = receiver.poll_event() {
                prop_assert!(!e.recovered);
                let msg = match e.message {
                    RecvMessage::Short(m) => Msg::Short(m),
                    RecvMessage::SysEx(s) => Msg::SysEx(s.into_bytes()),
                };
                got.push((e.time.0, msg));
            }
        }
        prop_assert_eq!(got, expected);
        let stats = receiver.stats();
        prop_assert_eq!((stats.lost, stats.repairs), (0, 1));
    }
}

/// The convergence tests above can fail: the same streams, networks and
/// checks without journal repair leave the receiver in a different state.
#[test]
fn without_the_journal_the_same_streams_diverge() {
    let no_journal = RecvConfig {
        use_journal: false,
        ..RecvConfig::default()
    };
    let mut diverged = 0;
    for seed in 0..6 {
        let mut rng = StdRng::seed_from_u64(seed);
        let stream = musical_stream(&mut rng, 400, true);
        let out = run_with(
            &stream,
            config(seed),
            no_journal,
            link().loss(0.10),
            seed,
            Duration::from_secs(8),
        );
        assert!(out.recv.lost > 0);
        if !out.sent.differences(&out.played).is_empty() {
            diverged += 1;
        }
    }
    assert!(
        diverged >= 4,
        "only {diverged} of 6 lossy runs without the journal ended wrong"
    );
}

#[test]
fn the_loss_runs_really_lose_and_repair() {
    let mut rng = StdRng::seed_from_u64(3);
    let stream = musical_stream(&mut rng, 400, true);
    let out = run(
        &stream,
        config(3),
        link().loss(0.30),
        3,
        Duration::from_secs(8),
    );
    assert!(out.recv.lost > 50, "{:?}", out.recv);
    assert!(
        out.recv.repairs > 20 && out.recv.recovered_events > 20,
        "{:?}",
        out.recv
    );
    assert!(out.send.feedback_accepted > 10, "{:?}", out.send);
    assert!(out.events.iter().any(|e| e.recovered));
}
