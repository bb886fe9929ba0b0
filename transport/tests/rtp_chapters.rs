//! Single-packet and multi-packet losses, one journal chapter at a time.
//!
//! Each case sends a few packets, drops some, then lets the next packet (a
//! guard) carry the journal. The receiver must end in the sender's exact
//! state, and the repair must have produced the message the chapter
//! protects (so the case really exercised that chapter).

use jam_core::{Micros, ShortMessage};
use jam_transport::clock::{ClockMap, Ticks};
use jam_transport::rtp::{
    MidiState, RecvConfig, RecvEvent, RecvMessage, RecvStream, SendConfig, SendStream,
};

#[derive(Clone)]
enum M {
    S(ShortMessage),
    X(Vec<u8>),
}

fn s(b: &[u8]) -> M {
    M::S(ShortMessage::try_from_slice(b).unwrap())
}

/// Sends `packets` (10 ms apart), dropping the indexes in `drop`, then a
/// guard packet; with `ack_first`, packet 0 is acknowledged first. Returns
/// the sender's state, the state rebuilt from the receiver's events, and
/// the recovered events.
fn scenario(
    packets: &[Vec<M>],
    drop: &[usize],
    ack_first: bool,
) -> (MidiState, MidiState, Vec<RecvEvent>) {
    let mut tx = SendStream::new(SendConfig::new(7, 65_530), Micros::ZERO);
    let mut rx = RecvStream::new(RecvConfig::default());
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let mut now = Micros::ZERO;
    for (i, p) in packets.iter().enumerate() {
        now = Micros::from_millis(10 * i as u64 + 1);
        let t = Ticks::from_local(now);
        for m in p {
            match m {
                M::S(m) => tx.push(t, *m).unwrap(),
                M::X(b) => tx.push_sysex(t, b).unwrap(),
            }
        }
        while tx.poll_transmit(now, &mut buf).is_some() {
            if !drop.contains(&i) {
                rx.handle_packet(now, &ClockMap::IDENTITY, &buf).unwrap();
            }
        }
        if i == 0 && ack_first {
            tx.handle_feedback(now, rx.highest_sequence().unwrap());
        }
    }
    let guard = tx.poll_timeout().expect("a guard is scheduled");
    assert!(guard > now);
    tx.handle_timeout(guard);
    tx.poll_transmit(guard, &mut buf).unwrap();
    rx.handle_packet(guard, &ClockMap::IDENTITY, &buf).unwrap();
    while let Some(e) = rx.poll_event() {
        events.push(e);
    }
    let mut played = MidiState::new();
    for e in &events {
        match &e.message {
            RecvMessage::Short(m) => played.apply(m),
            RecvMessage::SysEx(x) => played.apply_sysex(x.as_bytes()),
        }
    }
    let recovered = events.into_iter().filter(|e| e.recovered).collect();
    (tx.state().clone(), played, recovered)
}

/// Runs a case as a single loss (the last packet dropped) and as a
/// multi-packet loss (the last two dropped), with and without an early
/// acknowledgement, and checks the outcome.
fn check(name: &str, packets: Vec<Vec<M>>, expect: impl Fn(&[RecvEvent]) -> bool) {
    let last = packets.len() - 1;
    for (drop, ack) in [
        (vec![last], false),
        (vec![last], true),
        (vec![last - 1, last], false),
        (vec![last - 1, last], true),
    ] {
        let (sent, played, recovered) = scenario(&packets, &drop, ack);
        let diff = sent.differences(&played);
        assert!(
            diff.is_empty(),
            "{name}: drop {drop:?} ack {ack}: {diff:#?}\nrecovered {recovered:#?}"
        );
        assert!(
            expect(&recovered),
            "{name}: drop {drop:?} ack {ack}: expected repair missing: {recovered:#?}"
        );
    }
}

fn has(status: u8) -> impl Fn(&[RecvEvent]) -> bool {
    move |evs| {
        evs.iter()
            .any(|e| matches!(&e.message, RecvMessage::Short(m) if m.status() == status))
    }
}

fn has_cc(n: u8, v: u8) -> impl Fn(&[RecvEvent]) -> bool {
    move |evs| {
        evs.iter().any(|e| matches!(&e.message, RecvMessage::Short(m) if m.status() & 0xF0 == 0xB0 && m.data1() == n && m.data2() == v))
    }
}

#[test]
fn chapter_p_program_and_bank() {
    let packets = vec![
        vec![s(&[0x90, 60, 100])],
        vec![s(&[0xB1, 0, 3]), s(&[0xB1, 32, 4])],
        vec![s(&[0xC1, 42])],
    ];
    check("P", packets, has(0xC1));
}

#[test]
fn chapter_c_value_tool() {
    let packets = vec![
        vec![s(&[0xB0, 7, 20])],
        vec![s(&[0xB0, 10, 30])],
        vec![s(&[0xB0, 7, 99])],
    ];
    check("C value", packets, has_cc(7, 99));
}

#[test]
fn chapter_c_toggle_tool_restores_the_pedal() {
    let packets = vec![
        vec![s(&[0xB0, 64, 0])],
        vec![s(&[0xB0, 64, 100])],
        vec![s(&[0xB0, 64, 0]), s(&[0xB0, 64, 90])],
    ];
    check("C toggle", packets, has_cc(64, 90));
}

#[test]
fn chapter_c_toggle_tool_damps_a_lost_off_on_pair() {
    // The pedal was down, went up and down again in the lost packet: the
    // receiver must lift it once (damping the notes it held) and put it back.
    let packets = vec![
        vec![s(&[0xB0, 64, 127])],
        vec![s(&[0x90, 1, 1])],
        vec![s(&[0xB0, 64, 0]), s(&[0xB0, 64, 127])],
    ];
    let (sent, played, rec) = scenario(&packets, &[2], true);
    assert!(sent.differences(&played).is_empty());
    assert!(has_cc(64, 0)(&rec), "{rec:#?}");
}

#[test]
fn chapter_c_count_tool_replays_all_notes_off() {
    let packets = vec![
        vec![s(&[0x90, 60, 100]), s(&[0x90, 62, 100])],
        vec![s(&[0xB0, 7, 1])],
        vec![s(&[0xB0, 123, 0])],
    ];
    check("C count", packets, has_cc(123, 0));
}

#[test]
fn chapter_c_reset_all_controllers() {
    let packets = vec![
        vec![s(&[0xB0, 1, 90]), s(&[0xE0, 0, 90]), s(&[0xD0, 33])],
        vec![s(&[0xB0, 11, 40])],
        vec![s(&[0xB0, 121, 0]), s(&[0xB0, 1, 5])],
    ];
    check("C 121", packets, has_cc(121, 0));
}

#[test]
fn chapter_m_rpn_and_nrpn() {
    let packets = vec![
        vec![s(&[0xB0, 7, 1])],
        vec![
            s(&[0xB0, 101, 0]),
            s(&[0xB0, 100, 0]),
            s(&[0xB0, 6, 12]),
            s(&[0xB0, 38, 3]),
        ],
        vec![
            s(&[0xB0, 99, 1]),
            s(&[0xB0, 98, 2]),
            s(&[0xB0, 6, 77]),
            s(&[0xB0, 96, 0]),
            s(&[0xB0, 96, 0]),
        ],
    ];
    check("M", packets, has_cc(6, 77));
}

#[test]
fn chapter_m_null_selection() {
    let packets = vec![
        vec![s(&[0xB0, 101, 0]), s(&[0xB0, 100, 0])],
        vec![s(&[0xB0, 6, 12])],
        vec![
            s(&[0xB0, 101, 127]),
            s(&[0xB0, 100, 127]),
            s(&[0xB0, 6, 50]),
        ],
    ];
    check("M null", packets, has_cc(6, 50));
}

#[test]
fn chapter_w_pitch_wheel() {
    let packets = vec![
        vec![s(&[0xE3, 0, 64])],
        vec![s(&[0xB3, 7, 1])],
        vec![s(&[0xE3, 0x10, 0x20])],
    ];
    check("W", packets, has(0xE3));
}

#[test]
fn chapter_n_note_off_and_note_on() {
    let packets = vec![
        vec![s(&[0x90, 60, 100]), s(&[0x90, 61, 100])],
        vec![s(&[0xB0, 7, 1])],
        vec![s(&[0x80, 60, 64]), s(&[0x90, 61, 0]), s(&[0x90, 64, 90])],
    ];
    check("N", packets, |evs| has(0x80)(evs) && has(0x90)(evs));
}

#[test]
fn chapter_n_lost_off_on_pair_retriggers() {
    let packets = vec![
        vec![s(&[0x90, 60, 100])],
        vec![s(&[0xB0, 7, 1])],
        vec![s(&[0x80, 60, 64]), s(&[0x90, 60, 50])],
    ];
    check("N retrigger", packets, |evs| {
        has(0x80)(evs) && has(0x90)(evs)
    });
}

#[test]
fn chapter_e_release_velocity() {
    let packets = vec![
        vec![s(&[0x90, 60, 100])],
        vec![s(&[0xB0, 7, 1])],
        vec![s(&[0x80, 60, 20])],
    ];
    check("E", packets, |evs| {
        evs.iter().any(|e| matches!(&e.message, RecvMessage::Short(m) if m.status() == 0x80 && m.data2() == 20))
    });
}

#[test]
fn chapter_t_channel_pressure() {
    let packets = vec![
        vec![s(&[0xD5, 10])],
        vec![s(&[0xB5, 7, 1])],
        vec![s(&[0xD5, 70])],
    ];
    check("T", packets, has(0xD5));
}

#[test]
fn chapter_a_poly_pressure() {
    let packets = vec![
        vec![s(&[0xA4, 60, 10])],
        vec![s(&[0xB4, 7, 1])],
        vec![s(&[0xA4, 60, 90]), s(&[0xA4, 61, 5])],
    ];
    check("A", packets, has(0xA4));
}

#[test]
fn chapter_d_reset_tune_song() {
    let packets = vec![
        vec![s(&[0x90, 60, 100]), s(&[0xB0, 7, 20])],
        vec![s(&[0xF3, 4])],
        vec![s(&[0xFF]), s(&[0xF6]), s(&[0xF3, 9]), s(&[0xB0, 7, 50])],
    ];
    check("D", packets, |evs| {
        has(0xFF)(evs) && has(0xF6)(evs) && has(0xF3)(evs) && has_cc(7, 50)(evs)
    });
}

#[test]
fn chapter_q_sequencer_state() {
    let packets = vec![
        vec![s(&[0xFA]), s(&[0xF8])],
        vec![s(&[0xF8])],
        vec![s(&[0xFC])],
    ];
    check("Q", packets, has(0xFC));
}

#[test]
fn chapter_x_reset_sysex_and_small_sysex() {
    let packets = vec![
        vec![s(&[0x91, 60, 100]), s(&[0xC1, 5])],
        vec![M::X(vec![0xF0, 0x7D, 1, 2, 3, 0xF7])],
        vec![
            M::X(vec![0xF0, 0x7E, 0x7F, 0x09, 0x01, 0xF7]),
            s(&[0xB1, 7, 3]),
        ],
    ];
    check("X", packets, |evs| {
        evs.iter()
            .any(|e| matches!(&e.message, RecvMessage::SysEx(x) if x.as_bytes()[1] == 0x7E))
    });
}

#[test]
fn single_loss_reads_only_s0_elements() {
    // Packet 1 changes CC 7 and is received; packet 2 (lost) changes CC 10.
    // The guard's journal still lists CC 7 (S=1) and CC 10 (S=0). If the
    // receiver applied S=1 logs it would do no harm here, so check the
    // count of recovered messages: exactly one (CC 10).
    let packets = vec![
        vec![s(&[0xB0, 1, 1])],
        vec![s(&[0xB0, 7, 20])],
        vec![s(&[0xB0, 10, 30])],
    ];
    let (sent, played, rec) = scenario(&packets, &[2], false);
    assert!(sent.differences(&played).is_empty());
    assert_eq!(rec.len(), 1, "{rec:#?}");
}

#[test]
fn recovered_note_ons_older_than_the_y_window_are_skipped() {
    // The Note On in packet 1 is 110 ms old when the guard's journal
    // recovers it: Y=0, so the receiver skips it (and counts it).
    let packets = vec![
        vec![s(&[0xB0, 7, 1])],
        vec![s(&[0x90, 60, 100])],
        vec![s(&[0xB0, 7, 2])],
    ];
    let (sent, played, rec) = scenario(&packets, &[1, 2], false);
    assert_eq!(sent.sounding_count(), 1);
    assert_eq!(played.sounding_count(), 0, "{rec:#?}");
    assert!(!has(0x90)(&rec));
    assert!(has_cc(7, 2)(&rec));
}

// ---------------------------------------------------------------------------
// Stream behaviour around the journal.

fn note_on(ch: u8, n: u8) -> ShortMessage {
    ShortMessage::note_on(ch, n, 100)
}

#[test]
fn guard_packets_back_off_and_stop_when_acknowledged() {
    let mut tx = SendStream::new(SendConfig::new(1, 10), Micros::ZERO);
    let mut buf = Vec::new();
    tx.push(Ticks(0), note_on(0, 60)).unwrap();
    tx.poll_transmit(Micros::ZERO, &mut buf).unwrap();
    let mut gaps = Vec::new();
    let mut last = Micros::ZERO;
    for _ in 0..7 {
        let at = tx.poll_timeout().unwrap();
        gaps.push(at.signed_diff(last) / 1000);
        last = at;
        tx.handle_timeout(at);
        let n = tx.poll_transmit(at, &mut buf).unwrap();
        assert!(n > 15, "a guard carries the journal");
    }
    assert_eq!(gaps, vec![100, 100, 200, 400, 800, 1000, 1000]);
    tx.handle_feedback(last, 10);
    assert_eq!(
        tx.poll_timeout(),
        None,
        "feedback covering the MIDI packet stops the guards"
    );
    assert_eq!(tx.stats().guard_packets, 7);
}

#[test]
fn feedback_that_is_stale_or_from_the_future_is_ignored() {
    let mut tx = SendStream::new(SendConfig::new(1, 65_534), Micros::ZERO);
    let mut buf = Vec::new();
    for i in 0..4u64 {
        tx.push(Ticks(i), note_on(0, 60 + i as u8)).unwrap();
        tx.poll_transmit(Micros::ZERO, &mut buf).unwrap();
    }
    // Sent 65534, 65535, 0, 1.
    tx.handle_feedback(Micros::ZERO, 0);
    tx.handle_feedback(Micros::ZERO, 65_535); // stale
    tx.handle_feedback(Micros::ZERO, 2); // never sent
    let s = tx.stats();
    assert_eq!((s.feedback_accepted, s.feedback_ignored), (1, 2));
    // The next journal's checkpoint is 1 (acked + 1, across the wrap).
    tx.push(Ticks(9), note_on(0, 1)).unwrap();
    tx.poll_transmit(Micros::ZERO, &mut buf).unwrap();
    let p = jam_transport::rtp::Packet::validate(&buf).unwrap();
    assert_eq!(p.journal().unwrap().unwrap().header.checkpoint, 1);
}

#[test]
fn a_small_mtu_moves_the_checkpoint_and_no_packet_exceeds_it() {
    let mut config = SendConfig::new(1, 0);
    config.mtu = 100;
    let mut tx = SendStream::new(config, Micros::ZERO);
    let mut rx = RecvStream::new(RecvConfig::default());
    let mut buf = Vec::new();
    // Fifteen new held notes per packet and no feedback: the history of a
    // few lost packets alone needs more than 100 octets.
    for step in 0..10u64 {
        let now = Micros::from_millis(step);
        for k in 0..15u64 {
            let idx = step * 15 + k;
            tx.push(
                Ticks::from_local(now),
                note_on((idx % 16) as u8, 20 + (idx / 16) as u8),
            )
            .unwrap();
        }
        while let Some(n) = tx.poll_transmit(now, &mut buf) {
            assert!(n <= 100);
            jam_transport::rtp::Packet::validate(&buf).unwrap();
            if !(3..=6).contains(&step) {
                rx.handle_packet(now, &ClockMap::IDENTITY, &buf).unwrap();
            }
        }
    }
    assert!(tx.stats().checkpoint_advances > 0);
    assert!(rx.stats().uncovered_losses > 0, "{:?}", rx.stats());
    // Whatever the receiver holds, the sender holds.
    while let Some(e) = rx.poll_event() {
        let _ = e;
    }
    for (ch, n, _) in rx.state().sounding() {
        assert!(tx.state().channel(ch).notes[usize::from(n)] > 0);
    }
}

#[test]
fn end_releases_every_note_and_the_pedal() {
    let packets = [vec![
        s(&[0x90, 60, 100]),
        s(&[0x91, 61, 100]),
        s(&[0xB1, 64, 127]),
    ]];
    let mut tx = SendStream::new(SendConfig::new(1, 0), Micros::ZERO);
    let mut rx = RecvStream::new(RecvConfig::default());
    let mut buf = Vec::new();
    for m in &packets[0] {
        if let M::S(m) = m {
            tx.push(Ticks(0), *m).unwrap();
        }
    }
    tx.poll_transmit(Micros::ZERO, &mut buf).unwrap();
    rx.handle_packet(Micros::ZERO, &ClockMap::IDENTITY, &buf)
        .unwrap();
    while rx.poll_event().is_some() {}
    rx.end();
    let ends: Vec<Vec<u8>> = std::iter::from_fn(|| rx.poll_event())
        .map(|e| match e.message {
            RecvMessage::Short(m) => m.as_slice().to_vec(),
            RecvMessage::SysEx(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        ends,
        vec![
            vec![0x80, 60, 64],
            vec![0xB0, 64, 0],
            vec![0x81, 61, 64],
            vec![0xB1, 64, 0]
        ]
    );
    assert_eq!(rx.state().sounding_count(), 0);
}

#[test]
fn duplicates_and_late_packets_are_dropped_and_counted() {
    let mut tx = SendStream::new(SendConfig::new(1, 0), Micros::ZERO);
    let mut rx = RecvStream::new(RecvConfig::default());
    let mut buf = Vec::new();
    let mut sent = Vec::new();
    for i in 0..3u8 {
        tx.push(Ticks(u64::from(i)), note_on(0, 60 + i)).unwrap();
        tx.poll_transmit(Micros::ZERO, &mut buf).unwrap();
        sent.push(buf.clone());
    }
    let c = ClockMap::IDENTITY;
    rx.handle_packet(Micros::ZERO, &c, &sent[0]).unwrap();
    rx.handle_packet(Micros::ZERO, &c, &sent[2]).unwrap(); // 1 lost, repaired
    rx.handle_packet(Micros::ZERO, &c, &sent[2]).unwrap(); // duplicate
    rx.handle_packet(Micros::ZERO, &c, &sent[1]).unwrap(); // late
    let st = rx.stats();
    assert_eq!(
        (
            st.packets,
            st.lost,
            st.duplicates,
            st.late_dropped,
            st.repairs
        ),
        (2, 1, 1, 1, 2)
    );
    let notes: Vec<u8> = std::iter::from_fn(|| rx.poll_event())
        .filter_map(|e| match e.message {
            RecvMessage::Short(m) if m.is_note_on() => Some(m.data1()),
            _ => None,
        })
        .collect();
    assert_eq!(notes, vec![60, 61, 62], "61 recovered once, never replayed");
}
