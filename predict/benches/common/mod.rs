//! What both agent benchmarks share: the chorale corpus, and a small
//! synthetic one for test mode.

use jam_predict::midi::lines_from_smf;
use jam_predict::{NoteSeq, Role};
use std::path::{Path, PathBuf};

/// The chorale sopranos as (train, test) lines, split as
/// `predict/corpus/chorales.txt` says: from `$JAM_CHORALES`, else
/// `target/chorales` (extracted there first with the project venv's
/// music21 by `tests/python/extract_chorales.py`). `None`, after a loud
/// notice (a failure in CI), when music21 is not available.
#[allow(dead_code, reason = "the quality benchmark uses the grouped split")]
pub(crate) fn chorales() -> Option<(Vec<NoteSeq>, Vec<NoteSeq>)> {
    let (train, test) = chorales_grouped()?;
    Some((train.into_iter().flat_map(|(_, l)| l).collect(), test))
}

/// A training file's melody fingerprint and its lines.
pub(crate) type Melody = (String, Vec<NoteSeq>);

/// As [`chorales`], with each training file's lines tagged with its
/// melody fingerprint (from `chorales.txt`), so that a validation split can
/// be carved from the training files without splitting a melody.
pub(crate) fn chorales_grouped() -> Option<(Vec<Melody>, Vec<NoteSeq>)> {
    let root = jam_tests::workspace_root();
    let dir = std::env::var_os("JAM_CHORALES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/chorales"));
    let list = std::fs::read_to_string(root.join("predict/corpus/chorales.txt"))
        .expect("predict/corpus/chorales.txt is checked in");
    let wanted: Vec<(&str, &str, &str)> = list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?, w.next()?, w.next().unwrap_or("")))
        })
        .collect();
    let path = |name: &str, split: &str| dir.join(split).join(format!("{name}.mid"));
    if wanted.iter().any(|(n, s, _)| !path(n, s).is_file()) {
        let python = jam_tests::require_python(&["music21"])?;
        eprintln!("extracting the chorales into {} (once)", dir.display());
        let ok = std::process::Command::new(python)
            .arg(root.join("tests/python/extract_chorales.py"))
            .arg(&dir)
            .status()
            .expect("run extract_chorales.py")
            .success();
        assert!(ok, "extract_chorales.py failed");
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (name, split, fingerprint) in wanted {
        let lines = read(&path(name, split));
        match split {
            "train" => train.push((fingerprint.to_string(), lines)),
            "test" => test.extend(lines),
            other => panic!("unknown split {other} in chorales.txt"),
        }
    }
    Some((train, test))
}

fn read(p: &Path) -> Vec<NoteSeq> {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    lines_from_smf(&bytes, Role::Melody).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A small synthetic corpus of motif-built tunes (test mode, and when the
/// chorales are not available).
pub(crate) fn synthetic(seed: u64, lines: usize) -> Vec<NoteSeq> {
    jam_predict::synth::motif_tunes(seed, lines, 8)
}
