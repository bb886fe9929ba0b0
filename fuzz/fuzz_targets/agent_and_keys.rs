//! Arbitrary bytes as agent metadata, as a sealed agent's payload, and as
//! key file text and public keys.
#![no_main]
libfuzzer_sys::fuzz_target!(init: jam_capture::fuzzing::install_panic_hook(), |data: &[u8]| {
    jam_capture::fuzzing::agent_and_keys(data);
});
