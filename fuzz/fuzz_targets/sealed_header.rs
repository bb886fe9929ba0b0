//! Arbitrary bytes as a sealed-file header, then unlocked with a fixed key.
#![no_main]
libfuzzer_sys::fuzz_target!(init: jam_capture::fuzzing::install_panic_hook(), |data: &[u8]| {
    jam_capture::fuzzing::sealed_header(data);
});
