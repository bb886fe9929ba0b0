//! Standard MIDI Files into note lines: never panics; every line it
//! returns has notes in onset order with no negative duration, and a
//! statistical model trains on them and predicts without panicking.
#![no_main]

use jam_predict::Role;
use jam_predict::agent::{Predictor, trigram};
use jam_predict::midi::lines_from_smf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(lines) = lines_from_smf(data, Role::Melody) else { return };
    for line in &lines {
        assert!(!line.notes.is_empty());
        assert!(line.notes.windows(2).all(|w| w[0].onset <= w[1].onset));
        assert!(line.notes.iter().all(|n| n.duration.0 >= 0));
    }
    let model = trigram::train(&lines);
    let mut p = Predictor::from_model_bytes(&model.to_model_bytes()).expect("own model loads");
    for line in lines.iter().take(2) {
        p.begin(line.context());
        for n in line.notes.iter().take(64) {
            let _ = p.predict().expect("trigram predicts");
            p.observe(*n);
        }
    }
});
