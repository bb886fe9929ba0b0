//! Chapter N: Note Off and Note On (RFC 6295 Appendix A.6; `rtp-midi.md` §4.5).
//!
//! ```text
//! header:   B:1 LEN:7 | LOW:4 HIGH:4
//! LEN logs: S:1 NOTENUM:7 | Y:1 VELOCITY:7       (oldest-first, VELOCITY never 0)
//! OFFBITS:  HIGH-LOW+1 octets when LOW <= HIGH; octet k covers notes
//!           8*(LOW+k) .. 8*(LOW+k)+7, most significant bit = lowest note
//! ```
//!
//! A note whose latest checkpoint-history event is an N-active Note On has a
//! log; one whose latest event is a Note Off has its OFFBITS bit set; never
//! both. `(LOW, HIGH) = (15, 0)` or `(15, 1)` means no OFFBITS; any other
//! `LOW > HIGH` is invalid. LEN=127 with (15, 0) means 128 logs. The encoder
//! writes `0xF1` for "no OFFBITS" (`0xF0` only with 128 logs) and trims
//! LOW/HIGH so the first and last OFFBITS octets hold a set bit.
//!
//! `B` is the S bit of the OFFBITS (0 when packet I-1 held a Note Off on
//! this channel); `Y` advises the receiver to play (1) or skip (0) a
//! recovered Note On.

use crate::rtp::DecodeError;

/// One Chapter N note log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NoteLog {
    /// S bit: 0 when the Note On was in packet I-1.
    pub s: bool,
    /// Note number.
    pub note: u8,
    /// Y bit: the sender advises playing the Note On if it was lost.
    pub y: bool,
    /// Velocity (never 0 from a conforming sender).
    pub velocity: u8,
}

/// A set of note numbers, one bit per note, in OFFBITS order (octet `n/8`,
/// bit `0x80 >> (n % 8)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NoteSet(pub [u8; 16]);

impl NoteSet {
    /// Adds a note.
    pub fn insert(&mut self, note: u8) {
        let n = usize::from(note & 0x7F);
        self.0[n / 8] |= 0x80 >> (n % 8);
    }

    /// True if the note is in the set.
    pub fn contains(&self, note: u8) -> bool {
        let n = usize::from(note & 0x7F);
        self.0[n / 8] & (0x80 >> (n % 8)) != 0
    }

    /// True if no note is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&o| o == 0)
    }
}

/// A decoded Chapter N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChapterN<'a> {
    /// B bit: the S bit of the OFFBITS.
    pub b: bool,
    /// LOW field.
    pub low: u8,
    /// HIGH field.
    pub high: u8,
    logs: &'a [u8],
    offbits: &'a [u8],
}

impl<'a> ChapterN<'a> {
    /// Decodes the chapter at the start of `b`; returns it and its length.
    pub fn parse(b: &'a [u8]) -> Result<(ChapterN<'a>, usize), DecodeError> {
        let h = b
            .get(..2)
            .ok_or(DecodeError::truncated("chapter n header", b.len()))?;
        let (low, high) = (h[1] >> 4, h[1] & 0x0F);
        let mut logs = usize::from(h[0] & 0x7F);
        let octets = if low <= high {
            usize::from(high - low) + 1
        } else if low == 15 && high <= 1 {
            if logs == 127 && high == 0 {
                logs = 128;
            }
            0
        } else {
            return Err(DecodeError::invalid(
                "chapter n low/high",
                1,
                u32::from(h[1]),
            ));
        };
        let len = 2 + 2 * logs + octets;
        let body = b
            .get(2..len)
            .ok_or(DecodeError::truncated("chapter n", b.len()))?;
        Ok((
            ChapterN {
                b: h[0] & 0x80 != 0,
                low,
                high,
                logs: &body[..2 * logs],
                offbits: &body[2 * logs..],
            },
            len,
        ))
    }

    /// The note logs, oldest first.
    pub fn logs(&self) -> impl Iterator<Item = NoteLog> + 'a {
        self.logs.chunks_exact(2).map(|c| NoteLog {
            s: c[0] & 0x80 != 0,
            note: c[0] & 0x7F,
            y: c[1] & 0x80 != 0,
            velocity: c[1] & 0x7F,
        })
    }

    /// Number of note logs.
    pub fn log_count(&self) -> usize {
        self.logs.len() / 2
    }

    /// The notes whose OFFBITS bit is set.
    pub fn offs(&self) -> NoteSet {
        let mut set = NoteSet::default();
        for (k, &o) in self.offbits.iter().enumerate() {
            let i = usize::from(self.low) + k;
            if i < 16 {
                set.0[i] = o;
            }
        }
        set
    }

    /// Appends a chapter with `logs` (at most 128, oldest first) and the
    /// Note Off set `offs` (must be empty with 128 logs). Returns false,
    /// leaving `out` unchanged, when the arguments cannot be coded or there
    /// is nothing to code (a chapter with no log and no OFFBITS is not
    /// allowed).
    pub fn encode(out: &mut Vec<u8>, b: bool, logs: &[NoteLog], offs: &NoteSet) -> bool {
        let first = offs.0.iter().position(|&o| o != 0);
        let last = offs.0.iter().rposition(|&o| o != 0);
        if logs.len() > 128
            || (logs.len() == 128 && first.is_some())
            || (logs.is_empty() && first.is_none())
        {
            return false;
        }
        let len_field = if logs.len() == 128 {
            127
        } else {
            logs.len() as u8
        };
        out.push((u8::from(b) << 7) | len_field);
        match (first, last) {
            (Some(lo), Some(hi)) => out.push(((lo as u8) << 4) | hi as u8),
            _ if logs.len() == 128 => out.push(0xF0),
            _ => out.push(0xF1),
        }
        for l in logs {
            out.push((u8::from(l.s) << 7) | (l.note & 0x7F));
            out.push((u8::from(l.y) << 7) | (l.velocity & 0x7F));
        }
        if let (Some(lo), Some(hi)) = (first, last) {
            out.extend_from_slice(&offs.0[lo..=hi]);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_5_3() {
        let bytes = [0x01, 0x77, 0xBE, 0xD0, 0x08];
        let (n, len) = ChapterN::parse(&bytes).unwrap();
        assert_eq!(len, 5);
        assert!(!n.b);
        let logs: Vec<_> = n.logs().collect();
        assert_eq!(
            logs,
            vec![NoteLog {
                s: true,
                note: 62,
                y: true,
                velocity: 80
            }]
        );
        let offs = n.offs();
        assert!(offs.contains(60));
        assert_eq!((0..128).filter(|&k| offs.contains(k)).count(), 1);
        let mut out = Vec::new();
        assert!(ChapterN::encode(&mut out, false, &logs, &offs));
        assert_eq!(out, bytes);
    }

    #[test]
    fn golden_macos_offbits() {
        // From the macOS capture (§5.6): LOW=6 HIGH=7, OFFBITS 0D 50.
        let bytes = [0x81, 0x67, 0x3C, 0x25, 0x0D, 0x50];
        let (n, _) = ChapterN::parse(&bytes).unwrap();
        let offs = n.offs();
        let notes: Vec<u8> = (0..128).filter(|&k| offs.contains(k)).collect();
        assert_eq!(notes, vec![52, 53, 55, 57, 59]);
    }

    #[test]
    fn no_offbits_forms_and_128_logs() {
        let logs: Vec<NoteLog> = (0..128)
            .map(|n| NoteLog {
                s: true,
                note: n,
                y: false,
                velocity: 1,
            })
            .collect();
        let mut out = Vec::new();
        assert!(ChapterN::encode(&mut out, true, &logs, &NoteSet::default()));
        assert_eq!(&out[..2], &[0xFF, 0xF0]);
        let (n, len) = ChapterN::parse(&out).unwrap();
        assert_eq!((n.log_count(), len), (128, 258));
        // LEN=127 with (15,1) means 127 logs.
        out[1] = 0xF1;
        let (n, _) = ChapterN::parse(&out).unwrap();
        assert_eq!(n.log_count(), 127);
        // Nothing to code.
        assert!(!ChapterN::encode(
            &mut Vec::new(),
            true,
            &[],
            &NoteSet::default()
        ));
    }

    #[test]
    fn rejects_bad_low_high() {
        let e = ChapterN::parse(&[0x80, 0x52, 0, 0, 0]).unwrap_err();
        assert!(!e.is_truncated());
        assert!(
            ChapterN::parse(&[0x81, 0xF1, 0x3C])
                .unwrap_err()
                .is_truncated()
        );
    }
}
