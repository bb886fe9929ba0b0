//! A sync message from a hostile peer must be rejected or applied, never
//! panic, and on rejection leave the document exactly as it was.
#![no_main]

use jam_core::{Meter, Micros, PeerId, SessionTime, Tempo};
use jam_session_crdt::{Profile, SessionConfig, SessionDoc, SessionSettings};
use libfuzzer_sys::fuzz_target;

fn doc() -> SessionDoc {
    let config = SessionConfig {
        id: [1; 16],
        name: "fuzz".into(),
        created_unix_ms: 0,
        origin: SessionTime(0),
        tempo: Tempo::from_bpm(120.0).unwrap(),
        meter: Meter::FOUR_FOUR,
        settings: SessionSettings::default(),
    };
    let profile = Profile {
        name: "a".into(),
        public_key: [0; 32],
        instrument: String::new(),
    };
    SessionDoc::create(&config, PeerId([1; 16]), &profile, 1).unwrap()
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks an envelope so that most inputs get past the
    // type check: as is, an Automerge sync message (v1 / v2), or a direct
    // change push.
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(data.len() + 1);
    match kind % 4 {
        0 => input.extend_from_slice(rest),
        1 => {
            input.push(0x42);
            input.extend_from_slice(rest);
        }
        2 => {
            input.push(0x43);
            input.extend_from_slice(rest);
        }
        _ => {
            input.push(0x01);
            input.extend_from_slice(rest);
        }
    }
    let mut d = doc();
    let before = d.save();
    if d.receive_sync_message(Micros(0), PeerId([2; 16]), &input).is_err() {
        assert_eq!(d.save(), before, "a rejected message changed the document");
    }
    // Whatever happened, the replica keeps working.
    let _ = d.generate_sync_message(Micros(1), PeerId([2; 16]));
});
