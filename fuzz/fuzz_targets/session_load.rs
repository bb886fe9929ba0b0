//! Loading a saved session document from arbitrary bytes never panics.
#![no_main]

use jam_core::PeerId;
use jam_session_crdt::SessionDoc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = SessionDoc::load(data, PeerId([1; 16]), 1) {
        // A document that loads can be read, saved and reloaded.
        let _ = d.snapshot();
        let again = SessionDoc::load(&d.save(), PeerId([1; 16]), 2).expect("saved documents load");
        assert_eq!(again.state(), d.state());
    }
});
