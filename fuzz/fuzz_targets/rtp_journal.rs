//! Arbitrary bytes as a recovery journal, wrapped in a valid RTP-MIDI
//! envelope (header with J=1 and a one-command list) so that the receiver
//! applies it after a simulated loss.

#![no_main]

use jam_core::Micros;
use jam_transport::clock::ClockMap;
use jam_transport::rtp::journal::Journal;
use jam_transport::rtp::{RecvConfig, RecvStream};
use libfuzzer_sys::fuzz_target;

fn packet(seq: u16, journal: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x61];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x27, 0x10, 0x12, 0x34, 0x56, 0x78]);
    p.extend_from_slice(&[0x43, 0x90, 0x3C, 0x64]);
    p.extend_from_slice(journal);
    p
}

fuzz_target!(|data: &[u8]| {
    if let Ok(j) = Journal::parse(data) {
        if let Some(sj) = j.system {
            if let Some(x) = sj.x {
                x.logs().for_each(drop);
            }
        }
        for cj in j.channels() {
            if let Some(c) = cj.c() {
                c.logs().for_each(drop);
            }
            if let Some(m) = cj.m() {
                m.logs().for_each(drop);
            }
            if let Some(n) = cj.n() {
                n.logs().for_each(drop);
                let _ = n.offs();
            }
            if let Some(e) = cj.e() {
                e.logs().for_each(drop);
            }
            if let Some(a) = cj.a() {
                a.logs().for_each(drop);
            }
        }
    }
    // First packet (seeds state), then single and multi-packet losses.
    let mut r = RecvStream::new(RecvConfig::default());
    let clock = ClockMap::IDENTITY;
    for (i, seq) in [100u16, 102, 105, 106].into_iter().enumerate() {
        let _ = r.handle_packet(Micros::from_millis(i as u64), &clock, &packet(seq, data));
        while r.poll_event().is_some() {}
    }
});
