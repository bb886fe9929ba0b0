//! Replays the `secure_frame` fuzz corpus (`fuzz/corpus/secure_frame/`) and
//! every crasher found through the end-to-end frame parser on stable Rust.
//! `JAM_WRITE_CORPUS=1 cargo test -p jam-transport --test secure_fuzz_corpus`
//! regenerates the seeds from real frames (a key frame, key requests and
//! data frames of every channel, each behind its sender byte).

use std::path::{Path, PathBuf};

use jam_core::Micros;
use jam_transport::secure::{self, Channel, Opened};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let (mut a, mut b) = secure::fuzz_pair();
    let put = |name: &str, sender: u8, frame: &[u8]| {
        let mut bytes = vec![sender];
        bytes.extend_from_slice(frame);
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for (name, ch, body) in [
        ("data_control", Channel::Control, &b"\xff\xffIN"[..]),
        (
            "data_rtp",
            Channel::Data,
            &b"\x80\x61\x00\x01\x00\x00\x00\x00\x12\x34\x56\x78\x03\x90\x3c\x64"[..],
        ),
        ("data_reliable", Channel::Reliable, &b"sync"[..]),
        ("data_empty", Channel::Data, &b""[..]),
    ] {
        put(name, 1, &a.seal(2, ch, body).unwrap());
    }
    a.rotate(1_700_000_100);
    while let Some((dest, f)) = a.poll_transmit() {
        if dest == 2 {
            put("key", 1, &f);
        }
    }
    let unknown = a.seal(2, Channel::Data, b"x").unwrap();
    // b does not hold the new epoch yet: it asks for the key.
    assert!(b.open(Micros::ZERO, 1, &unknown).is_err());
    let (_, req) = b.poll_transmit().expect("a key request");
    put("data_unknown_epoch", 1, &unknown);
    put("key_request_from_2_to_1", 1, &req);
    put("truncated", 1, &unknown[..20]);
}

#[test]
fn secure_frame_corpus_and_crashers_replay_without_panics() {
    let corpus = root().join("fuzz/corpus/secure_frame");
    if std::env::var_os("JAM_WRITE_CORPUS").is_some() {
        write_corpus(&corpus);
    }
    let seeds = files(&corpus);
    assert!(seeds.len() >= 8, "seed corpus is checked in");
    for s in &seeds {
        secure::fuzz_one(&std::fs::read(s).unwrap());
    }
    for c in files(&root().join("transport/tests/fuzz-crashers/secure_frame")) {
        secure::fuzz_one(&std::fs::read(c).unwrap());
    }
}

#[test]
fn checked_in_data_seeds_still_open() {
    // The seeds double as vectors: a change of the frame format or the key
    // schedule breaks this test before it breaks a session.
    for name in ["data_control", "data_rtp", "data_reliable", "data_empty"] {
        let bytes = std::fs::read(root().join("fuzz/corpus/secure_frame").join(name)).unwrap();
        let (_, mut b) = secure::fuzz_pair();
        match b.open(Micros::ZERO, u32::from(bytes[0]), &bytes[1..]) {
            Ok(Opened::Data { .. }) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}
