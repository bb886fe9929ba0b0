//! Replays the relay fuzz targets' seed corpus and every crasher ever found
//! through the parsers on stable Rust: nothing may panic, and the checked-in
//! seeds for well-formed packets must still decode (they double as golden
//! vectors for the wire format; their tags were computed independently of
//! this crate, with Python's hmac module).

use std::path::{Path, PathBuf};

use jam_transport::relay::{HelloKey, Packet, ServerSecret, Ticket};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn relay_packet_corpus_and_crashers_never_panic() {
    let corpus = files(&root().join("fuzz/corpus/relay_packet"));
    assert!(corpus.len() >= 10, "seed corpus missing");
    let crashers = files(&root().join("transport/tests/fuzz-crashers/relay_packet"));
    let secret = ServerSecret([3; 32]);
    for path in corpus.iter().chain(&crashers) {
        let bytes = std::fs::read(path).unwrap();
        let decoded = Packet::decode(&bytes);
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("truncated") {
            assert!(decoded.is_err(), "{name}");
            continue;
        }
        if corpus.contains(path) {
            let packet = decoded.unwrap_or_else(|e| panic!("seed {name} no longer decodes: {e}"));
            // Control seeds carry tags made with the hello key of the
            // seeds' ticket under secret [3; 32].
            if let Packet::Hello(_, hello) = packet {
                let key = hello
                    .ticket
                    .verify(&secret, 0)
                    .expect("seed ticket verifies");
                key.verify(&bytes).expect("seed hello tag verifies");
            }
        }
    }
}

#[test]
fn control_seed_tags_match_the_python_reference() {
    let dir = root().join("fuzz/corpus/relay_packet");
    let hello = std::fs::read(dir.join("hello_addrs")).unwrap();
    let Ok(Packet::Hello(_, h)) = Packet::decode(&hello) else {
        panic!("hello seed")
    };
    let key: HelloKey = h.ticket.verify(&ServerSecret([3; 32]), 0).unwrap();
    for seed in ["keepalive", "keepalive_ack", "leave", "hello_ack"] {
        let bytes = std::fs::read(dir.join(seed)).unwrap();
        key.verify(&bytes).unwrap_or_else(|e| panic!("{seed}: {e}"));
    }
}

#[test]
fn relay_ticket_corpus_and_crashers_never_panic() {
    let corpus = files(&root().join("fuzz/corpus/relay_ticket"));
    assert!(corpus.len() >= 4);
    let crashers = files(&root().join("transport/tests/fuzz-crashers/relay_ticket"));
    for path in corpus.iter().chain(&crashers) {
        let bytes = std::fs::read(path).unwrap();
        let _ = Ticket::decode(&bytes).map(|t| t.verify(&ServerSecret([1; 32]), 0));
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let _ = Ticket::from_hex(s);
        }
    }
    let valid = std::fs::read(root().join("fuzz/corpus/relay_ticket/valid")).unwrap();
    assert!(
        Ticket::decode(&valid)
            .unwrap()
            .verify(&ServerSecret([3; 32]), 0)
            .is_ok()
    );
}
