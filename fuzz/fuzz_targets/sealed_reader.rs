//! A valid header for a fixed key followed by arbitrary payload bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(init: jam_capture::fuzzing::install_panic_hook(), |data: &[u8]| {
    jam_capture::fuzzing::sealed_reader(data);
});
