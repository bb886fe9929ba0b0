//! RTP-MIDI codec throughput: encode, decode with and without the journal,
//! decode with journal repair under a loss pattern, and the `rtpmidi` crate
//! (0.4.4) parsing the same journal-less packets in the same run.
//!
//! `rtpmidi` keeps its packet parser crate-private; its public parse
//! function is `MidiEvent::from_be_bytes`, which its own command iterator
//! calls in a loop. The comparison runs that loop over the MIDI list (after
//! skipping the 12-octet RTP header and the command section header), while
//! our side decodes the whole packet (header, section header, list).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jam_core::{Micros, ShortMessage};
use jam_transport::clock::{ClockMap, Ticks};
use jam_transport::rtp::list::{Command, ListDecoder};
use jam_transport::rtp::{Packet, RecvConfig, RecvStream, SendConfig, SendStream};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::hint::black_box;

const PACKETS: usize = 1000;

/// Three commands per packet, as a keyboard player produces them.
fn commands(rng: &mut StdRng) -> Vec<Vec<ShortMessage>> {
    (0..PACKETS)
        .map(|_| {
            let ch = rng.random_range(0..4u8);
            (0..3)
                .map(|_| match rng.random_range(0..4u32) {
                    0 => ShortMessage::note_on(
                        ch,
                        rng.random_range(40..90),
                        rng.random_range(1..128),
                    ),
                    1 => ShortMessage::note_off(ch, rng.random_range(40..90), 64),
                    2 => ShortMessage::control_change(
                        ch,
                        rng.random_range(0..32),
                        rng.random_range(0..128),
                    ),
                    _ => ShortMessage::pitch_bend(ch, rng.random_range(0..16384)),
                })
                .collect()
        })
        .collect()
}

/// Packets from a SendStream; with `journal`, the receiver acknowledges
/// every tenth packet (so journals hold about ten packets of history).
fn packets(journal: bool) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(1);
    let mut config = SendConfig::new(0x1234_5678, 1);
    config.journal = journal;
    let mut s = SendStream::new(config, Micros::ZERO);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for (i, p) in commands(&mut rng).iter().enumerate() {
        let now = Micros::from_millis(10 * i as u64);
        for m in p {
            s.push(Ticks::from_local(now), *m).unwrap();
        }
        while s.poll_transmit(now, &mut buf).is_some() {
            out.push(buf.clone());
        }
        if journal && i % 10 == 9 {
            s.handle_feedback(now, s.next_sequence().wrapping_sub(1));
        }
    }
    out
}

fn decode_list(p: &[u8]) -> usize {
    let p = Packet::decode(p).unwrap();
    let mut n = 0;
    for c in p.commands() {
        if let Ok(c) = c
            && let Command::Short(m) = c.command
        {
            n += usize::from(m.status());
        }
    }
    n
}

fn decode_with_journal(p: &[u8]) -> usize {
    let p = Packet::decode(p).unwrap();
    let mut n = 0;
    for c in p.commands().flatten() {
        black_box(&c);
        n += 1;
    }
    if let Some(Ok(j)) = p.journal() {
        for cj in j.channels() {
            black_box(&cj);
            n += cj.len;
        }
    }
    n
}

/// The MIDI list of a packet and its Z bit, found the same way for both
/// list decoders compared.
fn list_of(p: &[u8]) -> (&[u8], bool) {
    let header = p[12];
    let (len, off) = if header & 0x80 != 0 {
        ((usize::from(header & 0x0F) << 8) | usize::from(p[13]), 14)
    } else {
        (usize::from(header & 0x0F), 13)
    };
    (&p[off..off + len], header & 0x20 != 0)
}

/// Our list decoder over a packet's MIDI list.
fn jam_list(p: &[u8]) -> usize {
    let (list, z) = list_of(p);
    let mut n = 0;
    for c in ListDecoder::new(list, z).flatten() {
        black_box(&c);
        n += 1;
    }
    n
}

/// The `rtpmidi` crate's command-list loop over the same MIDI list.
fn rtpmidi_list(p: &[u8]) -> usize {
    use rtpmidi::packets::midi_packets::midi_event::MidiEvent;
    let (mut data, mut delta) = list_of(p);
    let mut running = None;
    let mut n = 0;
    while !data.is_empty() {
        let status_at = if delta { 1 } else { 0 };
        if let Some(&b) = data.get(status_at)
            && (0x80..0xF0).contains(&b)
        {
            running = Some(b);
        }
        match MidiEvent::from_be_bytes(data, delta, running) {
            Ok((event, rest)) => {
                black_box(&event);
                n += 1;
                data = rest;
                delta = true;
            }
            Err(_) => break,
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let plain = packets(false);
    let journalled = packets(true);
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(PACKETS as u64));

    g.bench_function("encode (3 commands, journal)", |b| {
        let mut rng = StdRng::seed_from_u64(2);
        let cmds = commands(&mut rng);
        b.iter(|| {
            let mut s = SendStream::new(SendConfig::new(1, 1), Micros::ZERO);
            let mut buf = Vec::with_capacity(1500);
            let mut total = 0;
            for (i, p) in cmds.iter().enumerate() {
                let now = Micros::from_millis(10 * i as u64);
                for m in p {
                    s.push(Ticks::from_local(now), *m).unwrap();
                }
                total += s.poll_transmit(now, &mut buf).unwrap();
                if i % 10 == 9 {
                    s.handle_feedback(now, s.next_sequence().wrapping_sub(1));
                }
            }
            black_box(total)
        })
    });

    g.bench_function("decode packet, no journal", |b| {
        b.iter(|| {
            plain
                .iter()
                .map(|p| decode_list(black_box(p)))
                .sum::<usize>()
        })
    });
    g.bench_function("midi list (jam)", |b| {
        b.iter(|| plain.iter().map(|p| jam_list(black_box(p))).sum::<usize>())
    });
    g.bench_function("midi list (rtpmidi 0.4.4)", |b| {
        b.iter(|| {
            plain
                .iter()
                .map(|p| rtpmidi_list(black_box(p)))
                .sum::<usize>()
        })
    });
    g.bench_function("decode with journal", |b| {
        b.iter(|| {
            journalled
                .iter()
                .map(|p| decode_with_journal(black_box(p)))
                .sum::<usize>()
        })
    });
    g.bench_function("receive with repair (every 5th packet lost)", |b| {
        b.iter(|| {
            let mut r = RecvStream::new(RecvConfig::default());
            let mut events = 0;
            for (i, p) in journalled.iter().enumerate() {
                if i % 5 == 4 {
                    continue;
                }
                let now = Micros::from_millis(10 * i as u64);
                r.handle_packet(now, &ClockMap::IDENTITY, black_box(p))
                    .unwrap();
                while r.poll_event().is_some() {
                    events += 1;
                }
            }
            assert!(r.stats().repairs > 100);
            events
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
