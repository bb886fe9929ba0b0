//! Direct-path probes: decoding never panics, and a decoded probe
//! re-encodes to the same bytes.
#![no_main]

use jam_transport::direct::Probe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Probe::decode(data) {
        assert_eq!(&p.encode()[..], data, "a probe re-encodes to the same bytes");
    }
});
