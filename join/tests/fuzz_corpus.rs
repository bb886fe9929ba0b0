//! Replays the `member_stream` fuzz target's seed corpus and every crasher
//! found so far (`join/tests/fuzz-crashers/member_stream/`) through the
//! same entry point on stable Rust: nothing may panic, and the seeds that
//! hold a well-formed member list still parse.

use std::path::{Path, PathBuf};

use jam_join::sse::{SseDecoder, fuzz_member_stream};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn member_stream_corpus_and_crashers_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = files(&root.join("../fuzz/corpus/member_stream"));
    assert!(corpus.len() >= 5, "seed corpus missing");
    let crashers = files(&root.join("tests/fuzz-crashers/member_stream"));
    for path in corpus.iter().chain(&crashers) {
        fuzz_member_stream(&std::fs::read(path).unwrap());
    }
    for (seed, members) in [("one_member", 1), ("empty_list_keepalive", 0)] {
        let bytes = std::fs::read(root.join("../fuzz/corpus/member_stream").join(seed)).unwrap();
        let events = SseDecoder::new().push(&bytes[1..]).unwrap();
        let list = events
            .iter()
            .find(|e| e.event == "members")
            .unwrap_or_else(|| panic!("{seed}: {events:?}"));
        let parsed = jam_join::parse_member_list(&list.data).unwrap();
        assert_eq!(parsed.len(), members, "{seed}");
    }
}
