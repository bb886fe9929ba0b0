//! Chapter E: Note Command Extras (RFC 6295 Appendix A.7; `rtp-midi.md` §4.5).
//!
//! ```text
//! header: S:1 LEN:7                   (LEN+1 logs follow, at most 128)
//! log:    S:1 NOTENUM:7 | V:1 COUNT_VEL:7
//! ```
//!
//! `V=1`: the release velocity of the note's latest N-active Note Off (coded
//! when it is not 64). `V=0`: the note's reference count (Note On +1, Note
//! Off -1, never below 0, saturating at 127), coded when a note ends on a
//! Note Off with count > 0 or on a Note On with count > 1.

use crate::rtp::DecodeError;

/// What an extras log carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoteExtra {
    /// V=1: release velocity of the latest Note Off.
    Release(u8),
    /// V=0: reference count.
    Count(u8),
}

/// One Chapter E log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtraLog {
    /// S bit.
    pub s: bool,
    /// Note number.
    pub note: u8,
    /// Release velocity or reference count.
    pub extra: NoteExtra,
}

/// A decoded Chapter E.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChapterE<'a> {
    /// S bit of the chapter header.
    pub s: bool,
    logs: &'a [u8],
}

impl<'a> ChapterE<'a> {
    /// Decodes the chapter at the start of `b`; returns it and its length.
    pub fn parse(b: &'a [u8]) -> Result<(ChapterE<'a>, usize), DecodeError> {
        let h = *b.first().ok_or(DecodeError::truncated("chapter e", 0))?;
        let len = 1 + 2 * (usize::from(h & 0x7F) + 1);
        let logs = b
            .get(1..len)
            .ok_or(DecodeError::truncated("chapter e", b.len()))?;
        Ok((
            ChapterE {
                s: h & 0x80 != 0,
                logs,
            },
            len,
        ))
    }

    /// The logs.
    pub fn logs(&self) -> impl Iterator<Item = ExtraLog> + 'a {
        self.logs.chunks_exact(2).map(|c| ExtraLog {
            s: c[0] & 0x80 != 0,
            note: c[0] & 0x7F,
            extra: if c[1] & 0x80 != 0 {
                NoteExtra::Release(c[1] & 0x7F)
            } else {
                NoteExtra::Count(c[1] & 0x7F)
            },
        })
    }

    /// Appends a chapter with 1 to 128 logs.
    pub fn encode(out: &mut Vec<u8>, logs: &[ExtraLog]) {
        debug_assert!(!logs.is_empty() && logs.len() <= 128);
        let n = logs.len().clamp(1, 128);
        let s = logs.iter().all(|l| l.s);
        out.push((u8::from(s) << 7) | (n - 1) as u8);
        for l in &logs[..n] {
            out.push((u8::from(l.s) << 7) | (l.note & 0x7F));
            out.push(match l.extra {
                NoteExtra::Release(v) => 0x80 | (v & 0x7F),
                NoteExtra::Count(c) => c & 0x7F,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let logs = [
            ExtraLog {
                s: true,
                note: 60,
                extra: NoteExtra::Release(20),
            },
            ExtraLog {
                s: false,
                note: 61,
                extra: NoteExtra::Count(2),
            },
        ];
        let mut out = Vec::new();
        ChapterE::encode(&mut out, &logs);
        assert_eq!(out, [0x01, 0xBC, 0x94, 0x3D, 0x02]);
        let (e, len) = ChapterE::parse(&out).unwrap();
        assert_eq!(len, 5);
        assert_eq!(e.logs().collect::<Vec<_>>(), logs);
    }
}
