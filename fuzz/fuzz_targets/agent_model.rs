//! Agent model bytes: decoding never panics; a decoded model encodes back
//! to the same bytes; a decoded statistical or trigram model predicts
//! without panicking. The input is tried as it is and, to get past the
//! checksum, as the body of each model kind with a valid header.
#![no_main]

use jam_core::Beats;
use jam_predict::agent::{AgentKind, DecodedModel, Predictor, SeqContext, decode_model, frame_model};
use jam_predict::{Note, Role};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(model) = decode_model(bytes) else { return };
    let again = match &model {
        DecodedModel::Markov(m) => m.to_model_bytes(),
        DecodedModel::Trigram(m) => m.to_model_bytes(),
        DecodedModel::Neural(m) => m.to_model_bytes(),
    };
    assert_eq!(again, bytes, "decoding then encoding changes the model");
    if matches!(model, DecodedModel::Neural(_)) {
        // Checked graph; running it needs a runtime, which the fuzzer skips.
        return;
    }
    let mut p = Predictor::new(model.into_agent().expect("statistical models always load"));
    p.begin(SeqContext { role: Role::Harmony, ..SeqContext::default() });
    for (i, pitch) in [0u8, 127, 60, 61, 200, 60].into_iter().enumerate() {
        let _ = p.predict().expect("statistical models always predict");
        p.observe(Note {
            onset: Beats(i as i64 * 250_000),
            duration: Beats(i as i64 * 1_000_000 - 1),
            pitch,
            velocity: pitch,
        });
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    for kind in [AgentKind::Markov, AgentKind::Trigram, AgentKind::Neural] {
        check(&frame_model(kind, data));
    }
});
