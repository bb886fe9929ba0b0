//! Replays the `reliable_frame` fuzz corpus and crashers on stable Rust.
//! `JAM_WRITE_CORPUS=1 cargo test -p jam-transport --test fuzz_corpus`
//! regenerates the seeds from real frames.

use jam_core::Micros;
use jam_transport::reliable::{Frame, Reliable, ReliableConfig};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The fuzz target's checks.
fn check(data: &[u8]) {
    if let Ok(f) = Frame::decode(data) {
        assert_eq!(f.encode(), data);
    }
    let mut r = Reliable::new(ReliableConfig::default(), 7);
    for (i, dgram) in data.split(|b| *b == 0xFF).enumerate() {
        let _ = r.handle_datagram(Micros(i as u64 * 1_000), dgram);
        while r.poll_transmit(Micros(i as u64 * 1_000)).is_some() {}
        while r.poll_event().is_some() {}
    }
    r.handle_timeout(Micros(10_000_000));
    while r.poll_transmit(Micros(10_000_000)).is_some() {}
}

fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut a = Reliable::new(ReliableConfig::default(), 3);
    let mut b = Reliable::new(ReliableConfig::default(), 4);
    a.send(&vec![5u8; 3000]).unwrap();
    a.send(b"short").unwrap();
    let mut n = 0;
    while let Some(d) = a.poll_transmit(Micros(0)) {
        b.handle_datagram(Micros(0), &d).unwrap();
        std::fs::write(dir.join(format!("seed-data-{n}")), &d).unwrap();
        n += 1;
    }
    while let Some(d) = b.poll_transmit(Micros(0)) {
        std::fs::write(dir.join(format!("seed-ack-{n}")), &d).unwrap();
        n += 1;
    }
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

#[test]
fn reliable_frame_corpus_and_crashers_replay_without_panics() {
    let corpus = root().join("fuzz/corpus/reliable_frame");
    if std::env::var_os("JAM_WRITE_CORPUS").is_some() {
        write_corpus(&corpus);
    }
    let seeds = files(&corpus);
    assert!(!seeds.is_empty(), "seed corpus is checked in");
    for s in seeds {
        check(&s);
    }
    for c in files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-crashers")) {
        check(&c);
    }
}
