//! Reliable-channel frames: decoding never panics, a decoded frame encodes
//! back to the same bytes, and feeding frames to a channel never panics.
#![no_main]

use jam_core::Micros;
use jam_transport::reliable::{Frame, Reliable, ReliableConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Frame::decode(data) {
        assert_eq!(f.encode(), data);
    }
    // Split the input into several datagrams at 0xFF bytes and feed them
    // to one channel end, as a hostile peer would.
    let mut r = Reliable::new(ReliableConfig::default(), 7);
    for (i, dgram) in data.split(|b| *b == 0xFF).enumerate() {
        let _ = r.handle_datagram(Micros(i as u64 * 1_000), dgram);
        while r.poll_transmit(Micros(i as u64 * 1_000)).is_some() {}
        while r.poll_event().is_some() {}
    }
    r.handle_timeout(Micros(10_000_000));
    while r.poll_transmit(Micros(10_000_000)).is_some() {}
});
