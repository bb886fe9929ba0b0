//! Known-answer vectors: fixed keys and fixed randomness give fixed bytes,
//! so any change to the format shows up here and has to be deliberate.
//! Regenerate with `JAM_UPDATE_VECTORS=1 cargo test -p jam-capture --test vectors`
//! only when the format version changes.

mod support;

use std::io::{Cursor, Write};
use std::path::PathBuf;

use jam_capture::reader::CaptureReader;
use jam_capture::record::{Record, SCHEMA_VERSION, SessionStart};
use jam_capture::writer::{CaptureConfig, CaptureWriter};
use jam_capture::{Kind, OpenError, SealWriter};
use jam_core::{Beats, Micros, PeerId};
use support::*;

const PAYLOAD: &[u8] = b"jam.togthr known answer";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("vectors")
}

fn agent_vector() -> Vec<u8> {
    let mut rng = KatRng::new(2024);
    let mut w = SealWriter::new(
        Vec::new(),
        Kind::Agent,
        &[identity(1).to_public(), identity(2).to_public()],
        &mut rng,
    )
    .unwrap();
    w.write_all(PAYLOAD).unwrap();
    w.finish().unwrap()
}

fn capture_vector() -> Vec<u8> {
    let start = SessionStart {
        schema_version: SCHEMA_VERSION,
        session_schema: 1,
        recorder: PeerId([0x11; 16]),
        recorder_name: "Ada".into(),
        wall_clock_unix_micros: 1_700_000_000_000_000,
        at: Micros::ZERO,
        tempo_bpm: 96.0,
    };
    let mut w = CaptureWriter::create(
        Cursor::new(Vec::new()),
        &[identity(1).to_public()],
        start,
        CaptureConfig::default(),
        &mut KatRng::new(2025),
    )
    .unwrap();
    w.append_midi(jam_capture::record::MidiEvent {
        at: Micros(1000),
        participant: PeerId([0x22; 16]),
        direction: jam_capture::record::Direction::In,
        sender_time: Micros(900),
        beat: Beats(250_000),
        bytes: vec![0x90, 60, 100],
        recovered: false,
    })
    .unwrap();
    w.append_marker(Micros(2000), Beats::ONE, "verse").unwrap();
    w.finish_and_record_count().unwrap().into_inner()
}

fn check(name: &str, bytes: &[u8]) {
    let path = dir().join(name);
    if std::env::var_os("JAM_UPDATE_VECTORS").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        expected == bytes,
        "{name}: the sealed format changed (bytes differ from the checked-in vector)"
    );
}

#[test]
fn sealing_with_fixed_keys_and_randomness_gives_the_checked_in_bytes() {
    check("ok_agent_two_recipients.jamseal", &agent_vector());
    check("ok_capture_small.scp", &capture_vector());
}

#[test]
fn checked_in_vectors_open_to_their_contents() {
    let agent = std::fs::read(dir().join("ok_agent_two_recipients.jamseal")).unwrap();
    assert_eq!(open(&agent, &[identity(1)]).unwrap(), PAYLOAD);
    assert_eq!(open(&agent, &[identity(2)]).unwrap(), PAYLOAD);
    assert!(matches!(
        open(&agent, &[identity(3)]),
        Err(OpenError::NotARecipient)
    ));
    let cap = std::fs::read(dir().join("ok_capture_small.scp")).unwrap();
    let mut r = CaptureReader::open(&cap[..], &[identity(1)]).unwrap();
    assert_eq!(r.session_start().recorder_name, "Ada");
    let recs: Vec<Record> = std::iter::from_fn(|| r.next_record().unwrap().map(|x| x.1)).collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(r.index().unwrap().midi_events, 1);
}

/// Must-fail vectors: each file name says what is wrong, and the test says
/// which error it must give.
#[test]
fn failing_vectors_give_their_errors() {
    let cases: [(&str, &str); 4] = [
        (
            "fail_header_mac.jamseal",
            "header authentication failed: the file was modified",
        ),
        (
            "fail_chunk_modified.jamseal",
            "authentication failed in chunk 1: the file was modified",
        ),
        ("fail_truncated.jamseal", "file truncated after 0 chunks"),
        (
            "fail_version_9.jamseal",
            "unsupported format version 9 (this build reads version 1)",
        ),
    ];
    let good = agent_vector();
    let (_, hl) = jam_capture::Header::decode(&good).unwrap();
    for (name, expect) in cases {
        let mut b = good.clone();
        match name {
            "fail_header_mac.jamseal" => b[12] ^= 0x01,
            "fail_chunk_modified.jamseal" => b[hl + 6] ^= 0x80,
            "fail_truncated.jamseal" => b.truncate(hl + 10),
            _ => b[8] = 9,
        }
        check(name, &b);
        let e = open(&b, &[identity(1)]).unwrap_err().to_string();
        assert!(e.starts_with(expect), "{name}: {e}");
    }
}
