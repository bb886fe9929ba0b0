//! Arbitrary bytes as capture chunk plaintexts (split at 0xff 0xff).
#![no_main]
libfuzzer_sys::fuzz_target!(init: jam_capture::fuzzing::install_panic_hook(), |data: &[u8]| {
    jam_capture::fuzzing::capture_records(data);
});
