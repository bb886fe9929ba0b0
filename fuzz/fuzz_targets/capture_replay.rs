//! Arbitrary records in an authentic capture (sealed for a fixed key), read
//! every way a reader does, then cut short and repaired.
#![no_main]
libfuzzer_sys::fuzz_target!(init: jam_capture::fuzzing::install_panic_hook(), |data: &[u8]| {
    jam_capture::fuzzing::capture_replay(data);
});
