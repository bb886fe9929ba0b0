//! Byte-exact encode and decode of the worked packets of `rtp-midi.md` §5
//! and the macOS captures, kept in `transport/tests/vectors/`.

use super::journal::{ChannelJournal, ChapterN, Journal, JournalHeader, LengthPatch};
use super::list::{Command, SectionHeader, encode_delta, encode_short};
use super::{Packet, RecvConfig, RecvMessage, RecvStream, RtpHeader, SendConfig, SendStream};
use crate::clock::{ClockMap, Ticks};
use jam_core::{Micros, ShortMessage};

fn hex(text: &str) -> Vec<u8> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|h| u8::from_str_radix(h, 16).expect("hex octet"))
        .collect()
}

const V51: &str = include_str!("../../tests/vectors/sheet-5.1-note-on.hex");
const V52: &str = include_str!("../../tests/vectors/sheet-5.2-z-delta-running-status.hex");
const V53: &str = include_str!("../../tests/vectors/sheet-5.3-journal-chapter-n.hex");
const V54: &str = include_str!("../../tests/vectors/sheet-5.4-guard-chapters-c-w.hex");
const V56: &str = include_str!("../../tests/vectors/macos-5.6-golden.hex");
const V75: &str = include_str!("../../tests/vectors/macos-7.5-no-journal.hex");

/// Every vector must also sit in the fuzz seed corpus.
#[test]
fn every_vector_seeds_the_packet_fuzzer() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/rtp_packet");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    for v in [V51, V52, V53, V54, V56, V75] {
        assert!(
            seeds.contains(&hex(v)),
            "vector missing from {}",
            dir.display()
        );
    }
}

fn shorts(p: &Packet<'_>) -> Vec<(u64, Vec<u8>)> {
    p.commands()
        .map(|c| {
            let c = c.unwrap();
            match c.command {
                Command::Short(m) => (c.offset, m.as_slice().to_vec()),
                Command::SysEx(_) => panic!("no sysex in these vectors"),
            }
        })
        .collect()
}

fn cc(ch: u8, n: u8, v: u8) -> ShortMessage {
    ShortMessage::control_change(ch, n, v)
}

fn at_ticks(t: u64) -> Micros {
    Micros::from_micros(t * 100)
}

#[test]
fn example_5_1_decodes_and_our_sender_writes_it() {
    let bytes = hex(V51);
    let p = Packet::validate(&bytes).unwrap();
    assert_eq!(p.header, RtpHeader::new(4660, 10_000, 0x1234_5678));
    assert!(!p.section.journal && !p.section.z);
    assert_eq!(shorts(&p), vec![(0, vec![0x90, 0x3C, 0x64])]);

    let mut config = SendConfig::new(0x1234_5678, 4660);
    config.journal = false;
    let mut s = SendStream::new(config, Micros::ZERO);
    s.push(Ticks(10_000), ShortMessage::note_on(0, 60, 100))
        .unwrap();
    let mut buf = Vec::new();
    s.poll_transmit(at_ticks(10_000), &mut buf).unwrap();
    assert_eq!(buf, bytes);
}

#[test]
fn example_5_2_decodes_with_cumulative_deltas_and_encodes() {
    let bytes = hex(V52);
    let p = Packet::validate(&bytes).unwrap();
    assert_eq!(p.header.timestamp, 10_100);
    assert!(p.section.z);
    assert_eq!(
        shorts(&p),
        vec![(5, vec![0x90, 0x3C, 0x64]), (245, vec![0x90, 0x40, 0x5A])]
    );

    let mut list = Vec::new();
    let mut running = 0;
    encode_delta(&mut list, 5);
    encode_short(
        &mut list,
        &ShortMessage::note_on(0, 60, 100),
        &mut running,
        true,
    );
    encode_delta(&mut list, 240);
    encode_short(
        &mut list,
        &ShortMessage::note_on(0, 64, 90),
        &mut running,
        true,
    );
    let mut out = Vec::new();
    RtpHeader::new(4661, 10_100, 0x1234_5678).encode(&mut out);
    SectionHeader {
        journal: false,
        z: true,
        phantom: false,
        len: list.len(),
    }
    .encode(&mut out);
    out.extend_from_slice(&list);
    assert_eq!(out, bytes);

    // The receiver reports the second note at 10100 + 5 + 240, not LEB128's 14337.
    let mut r = RecvStream::new(RecvConfig::default());
    r.handle_packet(at_ticks(10_100), &ClockMap::IDENTITY, &bytes)
        .unwrap();
    let times: Vec<u64> = std::iter::from_fn(|| r.poll_event())
        .map(|e| e.time.0)
        .collect();
    assert_eq!(times, vec![10_105, 10_345]);
}

#[test]
fn example_5_3_decodes_and_our_sender_writes_it() {
    let bytes = hex(V53);
    let p = Packet::validate(&bytes).unwrap();
    let j = p.journal().unwrap().unwrap();
    assert_eq!(j.header.checkpoint, 4662);
    let cj = j.channels().next().unwrap();
    let n = cj.n().unwrap();
    assert!(!n.b);
    assert!(n.offs().contains(60));

    // History: 4661 (acknowledged) Note On 60, 4662 Note On 62/80,
    // 4663 Note Off 60, then this packet 4664 plays Note On 67/100.
    let mut s = SendStream::new(SendConfig::new(0x1234_5678, 4661), Micros::ZERO);
    let mut buf = Vec::new();
    for (t, m) in [
        (9_900, ShortMessage::note_on(0, 60, 100)),
        (10_000, ShortMessage::note_on(0, 62, 80)),
        (10_100, ShortMessage::note_off(0, 60, 64)),
    ] {
        s.push(Ticks(t), m).unwrap();
        s.poll_transmit(at_ticks(t), &mut buf).unwrap();
        if t == 9_900 {
            s.handle_feedback(at_ticks(t), 4661);
        }
    }
    s.push(Ticks(10_200), ShortMessage::note_on(0, 67, 100))
        .unwrap();
    s.poll_transmit(at_ticks(10_200), &mut buf).unwrap();
    assert_eq!(buf, bytes);
}

#[test]
fn example_5_4_decodes_and_our_sender_writes_it() {
    let bytes = hex(V54);
    let p = Packet::validate(&bytes).unwrap();
    assert_eq!(p.section.len, 0);
    let j = p.journal().unwrap().unwrap();
    let cj = j.channels().next().unwrap();
    assert_eq!(cj.channel, 2);
    assert_eq!(cj.w().unwrap().value(), 9216);
    assert_eq!(cj.c().unwrap().len(), 2);

    let mut s = SendStream::new(SendConfig::new(0x1234_5678, 4668), Micros::ZERO);
    let mut buf = Vec::new();
    for (t, m) in [
        (9_000, cc(2, 7, 50)),
        (9_100, cc(2, 7, 100)),
        (9_200, cc(2, 1, 32)),
        (9_300, ShortMessage::pitch_bend(2, 9216)),
    ] {
        s.push(Ticks(t), m).unwrap();
        s.poll_transmit(at_ticks(t), &mut buf).unwrap();
        if t == 9_000 {
            s.handle_feedback(at_ticks(t), 4668);
        }
    }
    // The guard packet 100 ms after the last MIDI.
    assert_eq!(s.poll_timeout(), Some(at_ticks(10_300)));
    s.handle_timeout(at_ticks(10_300));
    s.poll_transmit(at_ticks(10_300), &mut buf).unwrap();
    assert_eq!(buf, bytes);
}

#[test]
fn golden_macos_packet_decodes_and_round_trips() {
    let bytes = hex(V56);
    let p = Packet::validate(&bytes).unwrap();
    assert_eq!(
        (p.header.sequence, p.header.timestamp, p.header.ssrc),
        (0x429A, 0x51D2_DC87, 0x47D8_1096)
    );
    assert_eq!(
        shorts(&p),
        vec![(0, vec![0x90, 0x3E, 0x31]), (10, vec![0x90, 0x40, 0x3B])]
    );
    let j = p.journal().unwrap().unwrap();
    assert_eq!(j.len, 3 + 9 + 6);
    assert_eq!(j.header.checkpoint, 17020);
    assert!(!j.header.s && j.header.a && !j.header.y);
    let cjs: Vec<ChannelJournal<'_>> = j.channels().collect();
    assert_eq!(cjs.len(), 2);
    let n0 = cjs[0].n().unwrap();
    assert_eq!(
        n0.logs()
            .map(|l| (l.s, l.note, l.y, l.velocity))
            .collect::<Vec<_>>(),
        vec![(false, 60, false, 37)]
    );
    let offs: Vec<u8> = (0..128).filter(|&k| n0.offs().contains(k)).collect();
    assert_eq!(offs, vec![52, 53, 55, 57, 59]);
    assert_eq!((cjs[1].channel, cjs[1].s), (9, true));
    let offs9: Vec<u8> = (0..128)
        .filter(|&k| cjs[1].n().unwrap().offs().contains(k))
        .collect();
    assert_eq!(offs9, vec![36, 37, 38]);

    // Re-encode every part with our encoders.
    let mut out = Vec::new();
    p.header.encode(&mut out);
    let mut list = Vec::new();
    let mut running = 0;
    let mut last = 0;
    for (i, c) in p.commands().enumerate() {
        let c = c.unwrap();
        if i > 0 {
            encode_delta(&mut list, (c.offset - last) as u32);
        }
        last = c.offset;
        let Command::Short(m) = c.command else {
            unreachable!()
        };
        encode_short(&mut list, &m, &mut running, true);
    }
    SectionHeader {
        len: list.len(),
        ..p.section
    }
    .encode(&mut out);
    out.extend_from_slice(&list);
    j.header.encode(&mut out);
    for cj in &cjs {
        let patch = LengthPatch::begin(&mut out, 3);
        let n = cj.n().unwrap();
        let logs: Vec<_> = n.logs().collect();
        assert!(ChapterN::encode(&mut out, n.b, &logs, &n.offs()));
        assert!(patch.finish_channel(&mut out, cj.s, cj.channel, 0x08));
    }
    assert_eq!(out, bytes);
}

#[test]
fn golden_macos_stream_plays_through_a_receiver() {
    // The J=0 packet (seq 0x42A0) after the journalled one (0x429A): a gap
    // that the J=0 packet cannot cover.
    let clock = ClockMap::IDENTITY;
    let mut r = RecvStream::new(RecvConfig::default());
    let now = Micros::from_secs(1);
    r.handle_packet(now, &clock, &hex(V56)).unwrap();
    r.handle_packet(now, &clock, &hex(V75)).unwrap();
    let notes: Vec<_> = std::iter::from_fn(|| r.poll_event())
        .filter_map(|e| match e.message {
            RecvMessage::Short(m) if !e.recovered => Some(m.as_slice().to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(
        notes,
        vec![
            vec![0x90, 0x3E, 0x31],
            vec![0x90, 0x40, 0x3B],
            vec![0x90, 0x34, 0x46]
        ]
    );
    assert_eq!(r.stats().uncovered_losses, 1);
    assert_eq!(r.stats().lost, 5);
}

#[test]
fn journal_header_round_trips() {
    let h = JournalHeader {
        s: true,
        y: true,
        a: true,
        h: false,
        totchan: 15,
        checkpoint: 0xBEEF,
    };
    let mut out = Vec::new();
    h.encode(&mut out);
    assert_eq!(JournalHeader::parse(&out).unwrap(), h);
    assert!(Journal::parse(&out).is_err());
}
