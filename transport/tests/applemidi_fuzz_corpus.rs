//! Replays the `applemidi_packet` fuzz corpus (`fuzz/corpus/applemidi_packet/`)
//! and every crasher ever found (`tests/fuzz-crashers/applemidi/`) through
//! the same checks as the fuzz target, on stable Rust, in every test run.

use jam_core::Micros;
use jam_transport::applemidi::packet::{Command, DatagramKind, Invitation, classify};
use jam_transport::applemidi::{Endpoint, EndpointConfig, Port};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

fn joined_endpoint() -> Endpoint {
    let mut ep = Endpoint::new(EndpointConfig::new("fuzz", 1), Micros::ZERO);
    let invitation = Command::Invitation(Invitation {
        token: 0x0BAD_F00D,
        ssrc: 0x1234_5678,
        name: Some("jam".into()),
    })
    .to_vec();
    ep.handle_datagram(Micros::ZERO, Port::Control, control(), &invitation);
    ep.handle_datagram(Micros::ZERO, Port::Data, data(), &invitation);
    while ep.poll_transmit().is_some() {}
    while ep.poll_event().is_some() {}
    assert_eq!(ep.peers().count(), 1, "the fixture session joined");
    ep
}

fn control() -> SocketAddr {
    ([127, 0, 0, 7], 6000).into()
}

fn data() -> SocketAddr {
    ([127, 0, 0, 7], 6001).into()
}

/// The fuzz target's checks; panics on a violation.
fn check(bytes: &[u8]) {
    let _ = classify(bytes);
    if let Ok(cmd) = Command::decode(bytes) {
        assert_eq!(Command::decode(&cmd.to_vec()).as_ref(), Ok(&cmd));
    }
    let mut ep = joined_endpoint();
    let t = Micros::from_secs(1);
    ep.handle_datagram(t, Port::Control, control(), bytes);
    ep.handle_datagram(t, Port::Data, data(), bytes);
    while ep.poll_transmit().is_some() {}
    while ep.poll_event().is_some() {}
    if let Some(deadline) = ep.poll_timeout() {
        ep.handle_timeout(deadline);
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/applemidi_packet");
    let inputs = files(&dir);
    assert!(
        inputs.len() >= 14,
        "the seed corpus is checked in ({} files)",
        inputs.len()
    );
    let mut commands = 0;
    for path in &inputs {
        let bytes = std::fs::read(path).expect("read corpus file");
        if classify(&bytes) == DatagramKind::Command && Command::decode(&bytes).is_ok() {
            commands += 1;
        }
        check(&bytes);
    }
    assert!(
        commands >= 12,
        "the seeds include the sheet's session packets"
    );
}

#[test]
fn fuzz_crashers_replay_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-crashers/applemidi");
    for path in files(&dir) {
        let bytes = std::fs::read(&path).expect("read crasher");
        check(&bytes);
    }
}

#[test]
fn sheet_seeds_decode_to_what_their_names_say() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/applemidi_packet");
    for (name, code) in [
        ("in", *b"IN"),
        ("ok", *b"OK"),
        ("no", *b"NO"),
        ("ck0", *b"CK"),
        ("rs", *b"RS"),
        ("rl", *b"RL"),
        ("by", *b"BY"),
    ] {
        let bytes = std::fs::read(dir.join(name)).expect("seed present");
        assert_eq!(
            Command::decode(&bytes).map(|c| c.code()),
            Ok(code),
            "{name}"
        );
    }
}
