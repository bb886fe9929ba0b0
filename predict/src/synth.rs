//! Seeded synthetic melodies for tests, benchmarks and demos.
//!
//! [`motif_tunes`] builds folk-like lines from four four-note motifs over a
//! tonic (eighths, the fourth note held a beat), with the key known. The
//! motifs are shared, so a model trained on one seed predicts another;
//! different seeds give different tunes and tonics.

use crate::features::{Key, Note, NoteSeq, Role};
use jam_core::Beats;

/// The motifs, as scale steps from the tonic in semitones.
const MOTIFS: [[i8; 4]; 4] = [[0, 2, 4, 2], [4, 5, 7, 4], [7, 5, 4, 2], [2, 0, -1, 0]];

/// `lines` melody lines of `motifs` motifs each (`4 * motifs` notes),
/// determined by `seed` alone.
pub fn motif_tunes(seed: u64, lines: usize, motifs: usize) -> Vec<NoteSeq> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    (0..lines)
        .map(|_| {
            let tonic = 60 + rnd(5) as u8;
            let mut notes = Vec::with_capacity(4 * motifs);
            let mut t = Beats::ZERO;
            for _ in 0..motifs {
                let m = MOTIFS[rnd(4) as usize];
                for (i, &step) in m.iter().enumerate() {
                    let duration = if i == 3 {
                        Beats::ONE
                    } else {
                        Beats(Beats::PER_BEAT / 2)
                    };
                    notes.push(Note {
                        onset: t,
                        duration,
                        pitch: tonic.saturating_add_signed(step),
                        velocity: 70 + (i as u8) * 10,
                    });
                    t += duration;
                }
            }
            let mut line = NoteSeq::new(notes, Role::Melody);
            line.key = Some(Key {
                tonic: tonic % 12,
                minor: false,
            });
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunes_depend_on_the_seed_only() {
        assert_eq!(motif_tunes(3, 2, 5), motif_tunes(3, 2, 5));
        assert_ne!(motif_tunes(3, 2, 5), motif_tunes(4, 2, 5));
        let t = &motif_tunes(1, 1, 6)[0];
        assert_eq!(t.notes.len(), 24);
        assert_eq!(t.notes[3].onset, Beats::from_f64(1.5));
        assert_eq!(t.notes[4].onset, Beats::from_f64(2.5));
    }
}
