//! Agent model bytes: decoding never panics; a decoded model encodes back
//! to the same bytes; a decoded statistical or trigram model predicts
//! without panicking. The input is tried as it is and, to get past the
//! checksum, as the body of each model kind with a valid header
//! (`jam_predict::fuzzing::agent_model_framed`, which the corpus replay
//! test runs too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jam_predict::fuzzing::agent_model_framed(data);
});
