//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) and every crasher
//! found so far (`tests/fuzz-crashers/<target>/`) through the same entry
//! points the fuzz targets use. `JAM_UPDATE_CORPUS=1` rewrites the seeds.

use std::path::PathBuf;

use jam_capture::fuzzing;

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
        _ => fuzzing::capture_records(data),
    }
}

#[test]
fn corpus_and_crashers_replay_without_panics() {
    for target in ["sealed_header", "sealed_reader", "capture_records"] {
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
                run(target, &std::fs::read(&p).unwrap());
                n += 1;
            }
        }
        assert!(n > 0, "no corpus for {target}");
    }
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
