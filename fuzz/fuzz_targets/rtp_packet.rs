//! Arbitrary datagrams into the RTP-MIDI packet decoder, the list decoder,
//! the journal decoder and a receiving stream (which applies journals).

#![no_main]

use jam_core::Micros;
use jam_transport::clock::ClockMap;
use jam_transport::rtp::{Packet, RecvConfig, RecvStream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        for c in p.commands() {
            let _ = c;
        }
        if let Some(Ok(j)) = p.journal() {
            for cj in j.channels() {
                let _ = cj;
            }
        }
    }
    // The same bytes as a stream of packets: split on a marker so that one
    // input can hold several datagrams of one stream.
    let mut r = RecvStream::new(RecvConfig::default());
    for (i, d) in data.split(|&b| b == 0xA5).enumerate() {
        let _ = r.handle_packet(Micros::from_millis(i as u64), &ClockMap::IDENTITY, d);
        while r.poll_event().is_some() {}
        let _ = r.poll_feedback(Micros::from_millis(i as u64));
    }
    r.end();
});
