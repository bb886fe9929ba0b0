"""Extracts the soprano lines (the chorale melodies) of the Bach chorales in
music21's core corpus to Standard MIDI Files, for jam-predict's prediction
quality benchmark.

    python extract_chorales.py OUT_DIR          # the pieces in chorales.txt
    python extract_chorales.py --make-list      # rewrite chorales.txt

Run it with the project venv's Python (`cargo xtask venv` installs music21
from tests/requirements.txt). Each MIDI file holds one track: the soprano
with ties merged, its key signature (the key of the first measure), its
time signature and 120 BPM. Nothing generated here is committed; only the
list is.

The list (predict/corpus/chorales.txt) names each piece and its split. Harmonisations of
the same melody share one transposition-invariant fingerprint (intervals
and durations of the soprano); all of them go to the same split, so no test
melody is ever seen in training. A fingerprint is in the test split when the
first byte of its SHA-256 is below 26 (about one in ten).
"""

import hashlib
import pathlib
import sys

from music21 import corpus, key, meter, midi, stream, tempo

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
LIST = ROOT / "predict" / "corpus" / "chorales.txt"


def soprano(name):
    score = corpus.parse("bach/" + name)
    named = [
        p
        for p in score.parts
        if str(p.partName or p.id or "").lower().startswith("soprano")
    ]
    if named:
        part = named[0]
    elif len(score.parts) == 4:
        part = score.parts[0]
    else:
        return None
    return part.stripTies(inPlace=False)


def fingerprint(part):
    notes = [n for n in part.flatten().notes if n.isNote]
    if len(notes) < 8:
        return None
    steps = []
    for a, b in zip(notes, notes[1:]):
        steps.append(f"{b.pitch.midi - a.pitch.midi}:{float(b.offset - a.offset)}")
    return hashlib.sha256(",".join(steps).encode()).hexdigest()


def make_list():
    names = sorted(
        {
            pathlib.Path(str(p)).stem
            for p in corpus.getComposer("bach")
            if pathlib.Path(str(p)).suffix in (".mxl", ".xml", ".krn")
            and "choraleAnalyses" not in str(p)
        }
    )
    rows = []
    for name in names:
        try:
            part = soprano(name)
        except Exception as e:  # an encoding music21 cannot read
            print(f"skip {name}: {e}", file=sys.stderr)
            continue
        if part is None:
            print(f"skip {name}: no soprano part", file=sys.stderr)
            continue
        fp = fingerprint(part)
        if fp is None:
            print(f"skip {name}: too short", file=sys.stderr)
            continue
        split = "test" if int(fp[:2], 16) < 26 else "train"
        rows.append(f"{name} {split} {fp[:16]}")
    header = (
        "# Bach chorale sopranos from music21's core corpus (music21 10.5.1).\n"
        "# name split melody-fingerprint; made by tests/python/extract_chorales.py --make-list\n"
    )
    LIST.write_text(header + "\n".join(rows) + "\n")
    print(f"{len(rows)} pieces, {sum(r.split()[1] == 'test' for r in rows)} in test")


def first_key(part):
    for k in part.recurse().getElementsByClass(key.KeySignature):
        return k
    return key.KeySignature(0)


def write_midi(part, target):
    out = stream.Part()
    ks = first_key(part)
    if isinstance(ks, key.Key):
        out.insert(0, key.Key(ks.tonic, ks.mode))
    else:
        out.insert(0, key.KeySignature(ks.sharps))
    ts = next(iter(part.recurse().getElementsByClass(meter.TimeSignature)), None)
    out.insert(0, ts if ts is not None else meter.TimeSignature("4/4"))
    out.insert(0, tempo.MetronomeMark(number=120))
    for n in part.flatten().notes:
        if n.isNote:
            out.insert(n.offset, n)
    mf = midi.translate.streamToMidiFile(out)
    mf.open(str(target), "wb")
    mf.write()
    mf.close()


def extract(out_dir):
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = 0
    for line in LIST.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, split = line.split()[:2]
        target = out / split / f"{name}.mid"
        if target.exists():
            continue
        target.parent.mkdir(exist_ok=True)
        part = soprano(name)
        tmp = target.with_suffix(".tmp")
        write_midi(part, tmp)
        tmp.rename(target)
        done += 1
    print(f"wrote {done} files to {out}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-list"]:
        make_list()
    elif len(sys.argv) == 2:
        extract(sys.argv[1])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
