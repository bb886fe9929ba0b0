//! Captures end to end: writing a session, replay, the document at any
//! time, crash and repair, MIDI export, agents.

mod support;

use std::io::Cursor;
use std::time::Duration;

use automerge::ReadDoc;
use jam_capture::agent::{AgentMeta, TrainingSummary, open_agent, write_agent};
use jam_capture::reader::{CaptureReader, repair_capture, summarize};
use jam_capture::record::Record;
use jam_capture::synth::{Synth, SynthConfig, SynthEvent};
use jam_capture::writer::{CaptureConfig, CaptureWriter};
use jam_capture::{CaptureError, OpenError};
use jam_core::{Beats, Micros};
use support::*;

fn session(secs: u64) -> SynthConfig {
    SynthConfig {
        duration: Duration::from_secs(secs),
        seed: secs,
        ..SynthConfig::default()
    }
}

fn write(config: SynthConfig, cc: CaptureConfig) -> (Vec<u8>, Vec<SynthEvent>) {
    let synth = Synth::new(config.clone());
    let mut w = CaptureWriter::create(
        Cursor::new(Vec::new()),
        &[identity(1).to_public()],
        synth.session_start(),
        cc,
        &mut KatRng::new(1),
    )
    .unwrap();
    let events: Vec<SynthEvent> = Synth::new(config).collect();
    jam_capture::synth::record(synth, &mut w).unwrap();
    (w.finish_and_record_count().unwrap().into_inner(), events)
}

fn midi_of(events: &[SynthEvent]) -> Vec<jam_capture::record::MidiEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            SynthEvent::Midi(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_session_replays_in_order_with_its_index() {
    let (file, events) = write(session(120), CaptureConfig::default());
    let mut r = CaptureReader::open(&file[..], &[identity(1)]).unwrap();
    assert_eq!(r.session_start().tempo_bpm, 120.0);
    let mut midi = Vec::new();
    let mut last = Micros::ZERO;
    let mut checkpoints = 0;
    while let Some((_, rec)) = r.next_record().unwrap() {
        assert!(rec.at() >= last, "records out of time order");
        last = rec.at();
        match rec {
            Record::Midi(m) => midi.push(m),
            Record::Checkpoint(_) => checkpoints += 1,
            _ => {}
        }
    }
    assert_eq!(midi, midi_of(&events));
    let index = r
        .index()
        .expect("a finished capture ends with its index")
        .clone();
    assert_eq!(index.midi_events, midi.len() as u64);
    assert_eq!(index.participants.len(), 4);
    assert_eq!(index.seek_points.len(), checkpoints);
    assert!(checkpoints >= 3, "a checkpoint at least every 30 s");
    // The index is also found from the end, without reading everything.
    let mut s = CaptureReader::open(Cursor::new(&file[..]), &[identity(1)]).unwrap();
    assert_eq!(s.read_index().unwrap(), index);
    let (sum, err) = summarize(&file[..], &[identity(1)]).unwrap();
    assert!(err.is_none());
    assert!(sum.finished);
    assert_eq!(sum.records["midi"], midi.len() as u64);
}

#[test]
fn the_document_at_any_time_matches_a_full_replay() {
    let cc = CaptureConfig {
        checkpoint_every_changes: 4,
        ..CaptureConfig::default()
    };
    let (file, events) = write(session(90), cc);
    let changes: Vec<Micros> = events
        .iter()
        .filter_map(|e| {
            if let SynthEvent::Change(t, _) = e {
                Some(*t)
            } else {
                None
            }
        })
        .collect();
    let mut seek = CaptureReader::open(Cursor::new(&file[..]), &[identity(1)]).unwrap();
    for t in [
        0,
        1,
        4_999_999,
        5_000_000,
        33_333_333,
        60_000_000,
        89_000_000,
        200_000_000,
    ] {
        let t = Micros(t);
        let fast = seek.state_at(t).unwrap();
        let mut lin = CaptureReader::open(&file[..], &[identity(1)]).unwrap();
        let slow = lin.state_at_linear(t).unwrap();
        let mut a = fast.get_heads();
        let mut b = slow.get_heads();
        a.sort();
        b.sort();
        assert_eq!(a, b, "at {t}");
        let expected = changes.iter().filter(|&&c| c <= t).count();
        assert_eq!(fast.get_changes(&[]).len(), expected, "at {t}");
        if expected > 0 {
            let edits = fast.get(automerge::ROOT, "edits").unwrap();
            if expected > 1 {
                assert_eq!(edits.unwrap().0.as_i64(), Some(expected as i64), "at {t}");
            }
        }
    }
}

#[test]
fn a_crashed_capture_reads_every_complete_chunk_and_repairs() {
    let config = session(20);
    let synth = Synth::new(config.clone());
    let start = synth.session_start();
    let mut w = CaptureWriter::create(
        Vec::new(),
        &[identity(1).to_public()],
        start,
        CaptureConfig::default(),
        &mut KatRng::new(3),
    )
    .unwrap();
    // A big record that spans chunks, then the session.
    w.append_metadata(Micros(1), Beats::ZERO, "notes", &"x".repeat(150_000))
        .unwrap();
    let mut snapshots = Vec::new();
    for e in synth {
        let at = e.at();
        if w.tick(at).unwrap() {
            snapshots.push(w.get_ref().clone());
        }
        match e {
            SynthEvent::Midi(m) => w.append_midi(m).unwrap(),
            SynthEvent::Change(t, b) => w.append_change(t, &b).unwrap(),
            SynthEvent::Metadata(t, b, k, v) => w.append_metadata(t, b, &k, &v).unwrap(),
            SynthEvent::Marker(t, b, l) => w.append_marker(t, b, &l).unwrap(),
        }
    }
    assert!(
        snapshots.len() >= 15,
        "the 1 s policy sealed {} times in 20 s",
        snapshots.len()
    );
    let crashed = w.get_ref().clone();
    // Cut in the middle of the last chunk being written, as a crash would.
    let mut cut = crashed.clone();
    cut.extend_from_slice(&[1, 2, 3]);
    for file in snapshots.iter().chain([&cut]) {
        let mut r = CaptureReader::open(&file[..], &[identity(1)]).unwrap();
        let mut n = 0u64;
        let err = loop {
            match r.next_record() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("a crashed capture cannot end cleanly"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                err,
                CaptureError::Open(OpenError::Truncated { expected: None, .. })
            ),
            "{err}"
        );
        let mut fixed = Cursor::new(Vec::new());
        let rep = repair_capture(&file[..], &mut fixed, &[identity(1)], false).unwrap();
        assert_eq!(
            rep.records,
            n + 1,
            "repair keeps every record that was readable"
        );
        let fixed = fixed.into_inner();
        let (sum, err) = summarize(&fixed[..], &[identity(1)]).unwrap();
        assert!(err.is_none(), "{err:?}");
        assert!(sum.finished);
        assert_eq!(sum.records.values().sum::<u64>(), n + 1);
        assert_eq!(
            &fixed[..file.len() - 3 * usize::from(file == &cut)][..100],
            &file[..100]
        );
    }
    // The big record was cut by the first snapshot? Then it counts as lost.
    let first = &snapshots[0];
    let mut r = CaptureReader::open(&first[..], &[identity(1)]).unwrap();
    while let Ok(Some(_)) = r.next_record() {}
    let mut fixed = Cursor::new(Vec::new());
    let rep = repair_capture(&first[..], &mut fixed, &[identity(1)], false).unwrap();
    assert!(rep.lost_records <= 1);
}

#[test]
fn a_record_larger_than_a_chunk_round_trips() {
    let start = Synth::new(session(1)).session_start();
    let mut w = CaptureWriter::create(
        Vec::new(),
        &[identity(1).to_public()],
        start,
        CaptureConfig::default(),
        &mut KatRng::new(3),
    )
    .unwrap();
    let big = "y".repeat(300_000);
    w.append_marker(Micros(5), Beats::ZERO, "before").unwrap();
    w.append_metadata(Micros(6), Beats::ONE, "big", &big)
        .unwrap();
    w.append_marker(Micros(7), Beats::ZERO, "after").unwrap();
    let file = w.finish().unwrap();
    let mut r = CaptureReader::open(&file[..], &[identity(1)]).unwrap();
    let recs: Vec<Record> = std::iter::from_fn(|| r.next_record().unwrap().map(|x| x.1)).collect();
    assert_eq!(recs.len(), 3);
    assert!(matches!(&recs[1], Record::Metadata(m) if m.value == big));
}

#[test]
fn invalid_changes_are_refused_and_times_stay_in_order() {
    let start = Synth::new(session(1)).session_start();
    let mut w = CaptureWriter::create(
        Vec::new(),
        &[identity(1).to_public()],
        start,
        CaptureConfig::default(),
        &mut KatRng::new(3),
    )
    .unwrap();
    assert!(matches!(
        w.append_change(Micros(1), b"not a change"),
        Err(CaptureError::InvalidChange(_))
    ));
    w.append_marker(Micros(100), Beats::ZERO, "a").unwrap();
    w.append_marker(Micros(50), Beats::ZERO, "b").unwrap();
    assert_eq!(w.stats().clamped_times, 1);
    assert_eq!(w.poll_timeout(), Some(Micros(100) + Duration::from_secs(1)));
    assert!(!w.tick(Micros(500_000)).unwrap());
    assert!(w.tick(Micros(1_000_100)).unwrap());
    assert_eq!(w.poll_timeout(), None);
}

#[test]
fn midi_export_has_one_track_per_participant() {
    let (file, events) = write(session(30), CaptureConfig::default());
    let mut out = Vec::new();
    let sum = jam_capture::export::export_midi(&file[..], &[identity(1)], &mut out).unwrap();
    let smf = midly::Smf::parse(&out).unwrap();
    assert_eq!(smf.tracks.len(), 5);
    assert_eq!(sum.tracks.len(), 4);
    let notes: usize = smf.tracks[1..]
        .iter()
        .map(|t| {
            t.iter()
                .filter(|e| matches!(e.kind, midly::TrackEventKind::Midi { .. }))
                .count()
        })
        .sum();
    assert_eq!(notes, midi_of(&events).len());
    assert!(smf.tracks[0].iter().any(|e| matches!(e.kind, midly::TrackEventKind::Meta(midly::MetaMessage::Tempo(t)) if t.as_int() == 500_000)));
    let names: Vec<String> = smf.tracks[1..]
        .iter()
        .filter_map(|t| match t[0].kind {
            midly::TrackEventKind::Meta(midly::MetaMessage::TrackName(n)) => {
                Some(String::from_utf8_lossy(n).into_owned())
            }
            _ => None,
        })
        .collect();
    assert!(names.iter().all(|n| n.starts_with("player ")), "{names:?}");
}

#[test]
fn agents_round_trip_share_and_revoke() {
    let (owner, friend) = (identity(1), identity(2));
    let meta = AgentMeta {
        owner: owner.to_public(),
        owner_name: "Ada".into(),
        kind: "markov-v1".into(),
        version: 3,
        created_unix_micros: 1_700_000_000_000_000,
        training: TrainingSummary {
            captures: 2,
            events: 1234,
            duration_micros: 3_600_000_000,
            participants: vec![jam_core::PeerId([5; 16])],
            description: "two rehearsals".into(),
        },
    };
    let model = data(200_000, 9);
    let file = write_agent(
        Vec::new(),
        &meta,
        &mut &model[..],
        &[owner.to_public()],
        &mut KatRng::new(5),
    )
    .unwrap();
    let a = open_agent(&file[..], std::slice::from_ref(&owner)).unwrap();
    assert_eq!(a.meta, meta);
    assert_eq!(a.read_model().unwrap(), model);
    assert!(matches!(
        open_agent(&file[..], std::slice::from_ref(&friend)),
        Err(CaptureError::Open(OpenError::NotARecipient))
    ));

    let mut shared = Vec::new();
    jam_capture::share(
        &file[..],
        &mut shared,
        std::slice::from_ref(&owner),
        &[friend.to_public()],
        &mut KatRng::new(6),
    )
    .unwrap();
    assert_eq!(
        open_agent(&shared[..], std::slice::from_ref(&friend))
            .unwrap()
            .read_model()
            .unwrap(),
        model
    );
    let mut revoked = Vec::new();
    jam_capture::revoke(
        &shared[..],
        &mut revoked,
        std::slice::from_ref(&owner),
        &[friend.to_public()],
        &mut KatRng::new(7),
    )
    .unwrap();
    assert!(open_agent(&revoked[..], std::slice::from_ref(&friend)).is_err());
    assert_eq!(
        open_agent(&revoked[..], std::slice::from_ref(&owner))
            .unwrap()
            .meta
            .version,
        3
    );
    // An authentic agent file that ends inside its metadata says so.
    for payload in [&b"\x00\x00"[..], &b"\x00\x00\x00\x10short"[..]] {
        let short = seal(payload, &[owner.to_public()], 8);
        match open_agent(&short[..], std::slice::from_ref(&owner)) {
            Err(CaptureError::AgentMeta(m)) => assert!(m.contains("ends inside"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // A capture is not an agent.
    let (cap, _) = write(session(1), CaptureConfig::default());
    assert!(matches!(
        open_agent(&cap[..], std::slice::from_ref(&owner)),
        Err(CaptureError::Open(OpenError::WrongKind { .. }))
    ));
}

/// The document changes of the `capture_replay` fuzz crashers, one of which
/// makes automerge 0.12 panic while applying it.
fn crasher_changes() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fuzz-crashers")
        .join("capture_replay");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let (file, repaired) = jam_capture::fuzzing::capture_files(&data);
        for f in std::iter::once(file).chain(repaired) {
            let id = jam_capture::fuzzing::identity();
            let mut r = CaptureReader::open(&f[..], std::slice::from_ref(&id)).unwrap();
            while let Ok(Some((_, rec))) = r.next_record() {
                if let Record::DocChange(c) = rec {
                    out.push(c.bytes);
                }
            }
        }
    }
    out
}

#[test]
fn a_change_automerge_cannot_apply_is_refused_and_recording_goes_on() {
    let start = Synth::new(session(1)).session_start();
    let mut w = CaptureWriter::create(
        Cursor::new(Vec::new()),
        &[identity(1).to_public()],
        start,
        CaptureConfig {
            checkpoint_every_changes: 2,
            ..CaptureConfig::default()
        },
        &mut KatRng::new(3),
    )
    .unwrap();
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for (i, c) in crasher_changes().into_iter().enumerate() {
        match w.append_change(Micros(i as u64), &c) {
            Ok(()) => accepted.push(c),
            Err(CaptureError::InvalidChange(m)) if m.starts_with("automerge failed") => {
                refused += 1
            }
            Err(CaptureError::InvalidChange(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "the crasher's change no longer fails");
    assert!(!accepted.is_empty());
    let file = w.finish_and_record_count().unwrap().into_inner();
    // The capture holds exactly the accepted changes, and its checkpoints
    // agree with them.
    let mut expected = automerge::Automerge::new();
    for c in &accepted {
        expected
            .apply_changes([automerge::Change::from_bytes(c.clone()).unwrap()])
            .unwrap();
    }
    let mut r = CaptureReader::open(Cursor::new(&file[..]), &[identity(1)]).unwrap();
    let got = r.state_at(Micros(u64::MAX)).unwrap();
    let (mut a, mut b) = (got.get_heads(), expected.get_heads());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(got.save(), expected.save());
}
