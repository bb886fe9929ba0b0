//! Replays the `direct_probe` fuzz target's seed corpus through
//! `Probe::decode` on stable Rust: nothing panics, well-formed seeds decode
//! and re-encode to the same bytes, and the malformed ones (named
//! `truncated_*`) are refused.

use std::path::Path;

use jam_transport::direct::{Probe, ProbeKind};

#[test]
fn direct_probe_corpus_decodes_as_named() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/direct_probe");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("seed corpus") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let decoded = Probe::decode(&bytes);
        if name.starts_with("truncated") {
            assert!(decoded.is_err(), "{name}");
        } else {
            let p = decoded.unwrap_or_else(|e| panic!("seed {name}: {e}"));
            assert_eq!(&p.encode()[..], &bytes[..], "{name}");
            let want = if name == "ack" {
                ProbeKind::Ack
            } else {
                ProbeKind::Probe
            };
            assert_eq!(p.kind, want, "{name}");
        }
        seen += 1;
    }
    assert!(seen >= 5, "seed corpus missing");
}
