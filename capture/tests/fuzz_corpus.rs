//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) and every crasher
//! found so far (`tests/fuzz-crashers/<target>/`) through the same entry
//! points the fuzz targets use. `JAM_UPDATE_CORPUS=1` rewrites the seeds.

use std::path::PathBuf;

use jam_capture::agent::{AgentMeta, TrainingSummary, write_agent};
use jam_capture::fuzzing;
use jam_capture::keys::{KdfParams, encode_key_file};

/// Every target in `fuzz/fuzz_targets/`.
const TARGETS: [&str; 5] = [
    "sealed_header",
    "sealed_reader",
    "capture_records",
    "capture_replay",
    "agent_and_keys",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "sealed_header" => {
            let v = root().join("tests").join("vectors");
            let mut out = vec![("fixed_header".to_string(), fuzzing::fixed_header())];
            for e in std::fs::read_dir(v).unwrap() {
                let p = e.unwrap().path();
                out.push((
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                ));
            }
            out
        }
        "sealed_reader" => {
            let cap = fuzzing::seed_capture();
            let hl = fuzzing::fixed_header().len();
            assert_eq!(
                &cap[..hl],
                &fuzzing::fixed_header()[..],
                "seed capture shares the fixed header"
            );
            vec![
                ("capture_payload".into(), cap[hl..].to_vec()),
                ("truncated_payload".into(), cap[hl..hl + 40].to_vec()),
            ]
        }
        "capture_replay" => vec![
            (
                "seed_capture".into(),
                fuzzing::plaintext_pieces(&fuzzing::seed_capture()),
            ),
            (
                "short_session".into(),
                fuzzing::plaintext_pieces(&fuzzing::seed_session()),
            ),
        ],
        "agent_and_keys" => {
            let id = fuzzing::identity();
            let meta = AgentMeta {
                owner: id.to_public(),
                owner_name: "seed".into(),
                kind: "markov-v1".into(),
                version: 2,
                created_unix_micros: 1_700_000_000_000_000,
                training: TrainingSummary {
                    captures: 1,
                    events: 10,
                    duration_micros: 60_000_000,
                    participants: vec![jam_core::PeerId([4; 16])],
                    description: "seed".into(),
                },
            };
            let agent = write_agent(
                Vec::new(),
                &meta,
                &mut &b"model"[..],
                &[id.to_public()],
                &mut fuzzing::Fixed(0),
            )
            .unwrap();
            let small = KdfParams {
                m_kib: 8,
                t: 1,
                p: 1,
            };
            let plain = encode_key_file(&id, None, small, &mut fuzzing::Fixed(0)).unwrap();
            let locked = encode_key_file(&id, Some("pass"), small, &mut fuzzing::Fixed(0)).unwrap();
            vec![
                ("agent".into(), fuzzing::plaintext_pieces(&agent)),
                ("key_file".into(), plain.as_bytes().to_vec()),
                ("key_file_protected".into(), locked.as_bytes().to_vec()),
                ("public_key".into(), id.to_public().to_string().into_bytes()),
            ]
        }
        _ => {
            let mut b = vec![0u8];
            jam_capture::record::Record::Marker(jam_capture::record::Marker {
                at: jam_core::Micros(1),
                beat: jam_core::Beats::ONE,
                label: "seed".into(),
            })
            .encode(&mut b);
            vec![("one_marker".into(), b)]
        }
    }
}

fn run(target: &str, data: &[u8]) {
    match target {
        "sealed_header" => fuzzing::sealed_header(data),
        "sealed_reader" => fuzzing::sealed_reader(data),
        "capture_replay" => fuzzing::capture_replay(data),
        "agent_and_keys" => fuzzing::agent_and_keys(data),
        _ => fuzzing::capture_records(data),
    }
}

#[test]
fn corpus_and_crashers_replay_without_panics() {
    let mut panicked = Vec::new();
    for target in TARGETS {
        let corpus = root().join("..").join("fuzz").join("corpus").join(target);
        if std::env::var_os("JAM_UPDATE_CORPUS").is_some() {
            std::fs::create_dir_all(&corpus).unwrap();
            for (name, bytes) in seeds(target) {
                std::fs::write(corpus.join(name), bytes).unwrap();
            }
        }
        let mut n = 0;
        for dir in [
            corpus,
            root().join("tests").join("fuzz-crashers").join(target),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let p = e.unwrap().path();
                let bytes = std::fs::read(&p).unwrap();
                if std::panic::catch_unwind(|| run(target, &bytes)).is_err() {
                    panicked.push(p.display().to_string());
                }
                n += 1;
            }
        }
        assert!(n > 0, "no corpus for {target}");
    }
    assert!(panicked.is_empty(), "these inputs panic: {panicked:#?}");
}

/// The crashers of `capture_replay` made automerge panic inside a change;
/// the reader reports that as an error about the document.
#[test]
fn automerge_panics_become_document_errors() {
    let dir = root().join("tests/fuzz-crashers/capture_replay");
    let mut seen = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let (file, repaired) = fuzzing::capture_files(&data);
        let mut results = Vec::new();
        for f in std::iter::once(file).chain(repaired) {
            let mut r = jam_capture::reader::CaptureReader::open(
                std::io::Cursor::new(&f[..]),
                &[fuzzing::identity()],
            )
            .unwrap();
            for t in [0, 1_000_000, 30_000_000, u64::MAX] {
                results.push(r.state_at(jam_core::Micros(t)).map(|_| ()));
            }
        }
        assert!(
            results.iter().any(|r| matches!(
                r,
                Err(jam_capture::CaptureError::Document(m)) if m.starts_with("automerge failed")
            )),
            "{results:?}"
        );
        seen += 1;
    }
    assert!(seen > 0);
}

#[test]
fn the_seed_capture_reads_fully() {
    let cap = fuzzing::seed_capture();
    let mut r = jam_capture::reader::CaptureReader::open(&cap[..], &[fuzzing::identity()]).unwrap();
    let mut n = 0;
    while r.next_record().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 4);
}
