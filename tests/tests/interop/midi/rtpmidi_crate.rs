//! Notes and controllers between our `Participant` and the `rtpmidi` crate
//! 0.4.4, both ways, in both session roles (it invites us; we invite it).
//!
//! Its quirks met here, all worked around on the test side (our packets
//! stay RFC 6295):
//! - it reads delta times as LEB128 and adds each command's own delta to
//!   the packet timestamp instead of the running sum (`rtp-midi.md` §7.3,
//!   pitfall 2); a packet of three commands 20 ms apart is shown once, the
//!   other assertions use one command per packet;
//! - it sends and reads pitch-bend data octets MSB first (MIDI sends the
//!   LSB first), so a bend arrives with its halves swapped either way;
//! - it sets its outgoing RTP sequence number to one past the last one it
//!   *received*: its stream only counts 0, 1, 2, ... while it has heard
//!   nothing from us; after our packets it jumps into our sequence space,
//!   which our receiver rightly treats as a huge loss (no journal: J=0).
//!   The tests let it send first, and show the jump once;
//! - it ignores `RS`, so our journal to it is never trimmed (the MTU rule
//!   keeps it bounded);
//! - as initiator it records its pending invitation only after the `IN`
//!   is sent, and never retries: on a multi-threaded runtime our immediate
//!   `OK` can be handled first, is dropped as unexpected, and the session
//!   never starts. These tests run it on a current-thread runtime.

use super::*;
use jam_transport::rtp::recv::RecvStats;
use midi_types::{Channel, MidiMessage, Note, Value7};
use rtpmidi::packets::midi_packets::rtp_midi_message::RtpMidiMessage;
use rtpmidi::sessions::events::event_handling::MidiMessageEvent;

/// The octets of a message as `rtpmidi` hands it to its listener (its
/// `Value14` holds (MSB, LSB); MIDI sends the LSB first).
fn bytes_of(m: &MidiMessage) -> Vec<u8> {
    let ch = |c: &Channel| u8::from(*c);
    match m {
        MidiMessage::NoteOff(c, n, v) => vec![0x80 | ch(c), u8::from(*n), u8::from(*v)],
        MidiMessage::NoteOn(c, n, v) => vec![0x90 | ch(c), u8::from(*n), u8::from(*v)],
        MidiMessage::KeyPressure(c, n, v) => vec![0xA0 | ch(c), u8::from(*n), u8::from(*v)],
        MidiMessage::ControlChange(c, n, v) => vec![0xB0 | ch(c), u8::from(*n), u8::from(*v)],
        MidiMessage::ProgramChange(c, p) => vec![0xC0 | ch(c), u8::from(*p)],
        MidiMessage::ChannelPressure(c, v) => vec![0xD0 | ch(c), u8::from(*v)],
        MidiMessage::PitchBendChange(c, v) => {
            let (msb, lsb): (u8, u8) = (*v).into();
            vec![0xE0 | ch(c), lsb, msb]
        }
        other => panic!("not expected here: {other:?}"),
    }
}

/// Our message as an `rtpmidi` message.
fn to_rtpmidi(m: ShortMessage) -> RtpMidiMessage<'static> {
    let c = Channel::from(m.channel().expect("a channel message"));
    let (a, b) = (m.data1(), m.data2());
    let msg = match m.status() & 0xF0 {
        0x80 => MidiMessage::NoteOff(c, Note::from(a), Value7::from(b)),
        0x90 => MidiMessage::NoteOn(c, Note::from(a), Value7::from(b)),
        0xA0 => MidiMessage::KeyPressure(c, Note::from(a), Value7::from(b)),
        0xB0 => MidiMessage::ControlChange(c, a.into(), Value7::from(b)),
        0xC0 => MidiMessage::ProgramChange(c, a.into()),
        0xD0 => MidiMessage::ChannelPressure(c, Value7::from(a)),
        0xE0 => MidiMessage::PitchBendChange(c, (u16::from(b) << 7 | u16::from(a)).into()),
        _ => panic!("not a channel message: {m:?}"),
    };
    RtpMidiMessage::MidiMessage(msg)
}

/// An `rtpmidi` session with a listener that forwards what it hears as
/// (octets, the timestamp it reports).
async fn listening(
    name: &str,
    ssrc: u32,
) -> (
    Arc<RtpMidiSession>,
    SocketAddr,
    mpsc::UnboundedReceiver<(Vec<u8>, u32)>,
) {
    let (session, control) = start_rtpmidi(name, ssrc).await;
    let (tx, heard) = mpsc::unbounded_channel();
    session
        .add_listener(MidiMessageEvent, move |(m, ts)| {
            let _ = tx.send((bytes_of(&m), ts));
        })
        .await;
    (session, control, heard)
}

async fn heard_n(
    heard: &mut mpsc::UnboundedReceiver<(Vec<u8>, u32)>,
    n: usize,
) -> Vec<(Vec<u8>, u32)> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(wait_for("MIDI at rtpmidi", heard, LIMIT, |x| Some(x.clone())).await);
    }
    got
}

/// Both directions, one command per packet; it sends first (see the module
/// docs on its sequence numbers).
async fn notes_flow_both_ways(
    us: &mut Stack,
    peer: PeerHandle,
    session: &RtpMidiSession,
    heard: &mut mpsc::UnboundedReceiver<(Vec<u8>, u32)>,
) {
    let msgs = notes_and_controllers();
    for &m in &msgs {
        session.send_midi(&to_rtpmidi(m)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = us.played(peer, msgs.len()).await;
    assert_eq!(got.iter().map(short).collect::<Vec<_>>(), msgs);
    let stats = peer_recv_stats(us, peer).await;
    assert_eq!((stats.lost, stats.malformed), (0, 0), "{stats:?}");

    us.send_each(&msgs, Duration::from_millis(3)).await;
    let got = heard_n(heard, msgs.len()).await;
    let octets: Vec<Vec<u8>> = got.iter().map(|(b, _)| b.clone()).collect();
    let want: Vec<Vec<u8>> = msgs.iter().map(|m| m.as_slice().to_vec()).collect();
    assert_eq!(octets, want);
    // One command per packet: it reports each packet's timestamp, which
    // runs with our clock.
    assert!(got.windows(2).all(|w| w[1].1.wrapping_sub(w[0].1) < 1_000));
}

async fn peer_recv_stats(us: &Stack, peer: PeerHandle) -> RecvStats {
    us.driver
        .call(move |p, _| p.peer_stats(peer))
        .await
        .unwrap()
        .expect("joined")
        .recv
}

#[tokio::test]
async fn we_invite_rtpmidi_and_notes_and_controllers_flow_both_ways() {
    let (session, their_control, mut heard) = listening("rtp-midi-rs", 0x5EED_0011).await;
    let mut us = stack("jam", 51).await;
    let peer = us.invite(their_control).await;
    participants_until(&session, "one participant", |n| n == 1).await;
    notes_flow_both_ways(&mut us, peer, &session, &mut heard).await;

    // Its sequence numbers now follow ours: its next packet lands far from
    // its previous one in its own stream.
    let before = peer_recv_stats(&us, peer).await;
    let m = ShortMessage::note_on(4, 50, 50);
    session.send_midi(&to_rtpmidi(m)).await.unwrap();
    let after = loop {
        let s = peer_recv_stats(&us, peer).await;
        if s != before {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // With seed 51 our stream to it numbers its packets more than 2^15
    // "ahead" of its own count, so its next packet is far behind the
    // newest one we hold: a late packet, dropped unplayed (a jump the other
    // way would count as tens of thousands of lost packets instead).
    assert_eq!(
        (after.late_dropped - before.late_dropped, after.packets),
        (1, before.packets),
        "{before:?} -> {after:?}"
    );

    us.driver.call(|p, now| p.close(now)).await.unwrap();
    participants_until(&session, "no participant", |n| n == 0).await;
    session.stop_gracefully().await;
    us.driver.shutdown().await.unwrap();
}

#[tokio::test]
async fn rtpmidi_invites_us_and_notes_and_controllers_flow_both_ways() {
    let mut us = stack("jam", 53).await;
    let (session, _their_control, mut heard) = listening("rtp-midi-rs", 0x5EED_0012).await;
    session.invite_participant(us.driver.control_addr()).await;
    let peer = us.joined().await;
    participants_until(&session, "one participant", |n| n == 1).await;
    notes_flow_both_ways(&mut us, peer, &session, &mut heard).await;

    session.remove_all_participants().await;
    wait_for("Left", &mut us.events, LIMIT, |e| match e {
        ParticipantEvent::Left { peer: p, .. } if *p == peer => Some(()),
        _ => None,
    })
    .await;
    session.stop_gracefully().await;
    us.driver.shutdown().await.unwrap();
}

#[tokio::test]
async fn rtpmidi_misreads_delta_times_and_pitch_bend() {
    let (session, their_control, mut heard) = listening("rtp-midi-rs", 0x5EED_0013).await;
    let mut us = stack("jam", 54).await;
    let mut bob = stack("bob", 55).await;
    let to_rtpmidi_peer = us.invite(their_control).await;
    participants_until(&session, "one participant", |n| n == 1).await;
    let bob_control = bob.driver.control_addr();
    us.invite(bob_control).await;
    let from_us = bob.joined().await;

    // Pitch bend 0x1234 (LSB 0x34, MSB 0x24 on the wire) both ways; it
    // sends first, while its sequence numbers are still its own.
    let bend = ShortMessage::pitch_bend(6, 0x1234);
    assert_eq!(bend.as_slice(), [0xE6, 0x34, 0x24]);
    session.send_midi(&to_rtpmidi(bend)).await.unwrap();
    let got = us.played(to_rtpmidi_peer, 1).await;
    assert_eq!(
        short(&got[0]).as_slice(),
        [0xE6, 0x24, 0x34],
        "it sends the halves swapped"
    );
    us.send_each(&[bend], Duration::ZERO).await;
    let (got, _) = heard_n(&mut heard, 1).await.remove(0);
    assert_eq!(got, [0xE6, 0x24, 0x34], "and reads them swapped");

    // One packet, three commands 20 ms (200 ticks, `81 48`) apart, to both
    // rtpmidi and another of our participants: the same list octets.
    let ms = Duration::from_millis;
    let burst = [
        (ms(40), ShortMessage::note_on(5, 60, 100)),
        (ms(20), ShortMessage::control_change(5, 7, 99)),
        (ms(0), ShortMessage::note_off(5, 60, 0)),
    ];
    us.send_together(&burst).await;
    let at_bob: Vec<RecvEvent> = bob
        .played(from_us, 4)
        .await
        .into_iter()
        .filter(|e| short(e).channel() == Some(5))
        .collect();
    assert_eq!(
        at_bob.iter().map(short).collect::<Vec<_>>(),
        burst.iter().map(|b| b.1).collect::<Vec<_>>()
    );
    let t0 = at_bob[0].time.rtp();
    let ours: Vec<u32> = at_bob
        .iter()
        .map(|e| e.time.rtp().wrapping_sub(t0))
        .collect();
    assert_eq!(ours, [0, 200, 400], "RFC 6295: cumulative deltas");
    let at_rtpmidi = heard_n(&mut heard, 3).await;
    assert_eq!(at_rtpmidi[0].1, t0, "both read the same packet timestamp");
    let theirs: Vec<u32> = at_rtpmidi.iter().map(|h| h.1.wrapping_sub(t0)).collect();
    let leb = jam_tests::pymidi::leb128(&[0x81, 0x48]) as u32;
    assert_eq!(theirs, [0, leb, leb], "LEB128, and not cumulative");
    assert_eq!(
        at_rtpmidi.iter().map(|h| h.0.clone()).collect::<Vec<_>>(),
        burst
            .iter()
            .map(|b| b.1.as_slice().to_vec())
            .collect::<Vec<_>>(),
        "the commands themselves are right"
    );

    us.driver.call(|p, now| p.close(now)).await.unwrap();
    participants_until(&session, "no participant", |n| n == 0).await;
    session.stop_gracefully().await;
    us.driver.shutdown().await.unwrap();
    bob.driver.shutdown().await.unwrap();
}
