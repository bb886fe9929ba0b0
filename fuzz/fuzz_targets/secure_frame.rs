//! End-to-end frames (`jam_transport::secure`): opening arbitrary bytes as a
//! frame from any member never panics, a refused frame changes no key state,
//! and a frame that opened is refused when replayed. The first input byte
//! picks the sender.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jam_transport::secure::fuzz_one(data);
});
