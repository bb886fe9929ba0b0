//! Standard MIDI Files into note lines: never panics; every line it
//! returns has notes in onset order with no negative duration, and a
//! statistical model trains on them and predicts without panicking
//! (`jam_predict::fuzzing::midi_lines`, which the corpus replay test runs
//! too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jam_predict::fuzzing::midi_lines(data);
});
