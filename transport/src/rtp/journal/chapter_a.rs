//! Chapter A: Poly Aftertouch (RFC 6295 Appendix A.9; `rtp-midi.md` §4.5).
//!
//! ```text
//! header: S:1 LEN:7                   (LEN+1 logs follow)
//! log:    S:1 NOTENUM:7 | X:1 PRESSURE:7
//! ```
//!
//! One log per note for the C-active Polyphonic Key Pressure (0xA0) commands
//! in the checkpoint history, oldest first. `X=1` when a CC 120 or 123-127
//! followed the logged command.

use crate::rtp::DecodeError;

/// One Chapter A log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolyLog {
    /// S bit.
    pub s: bool,
    /// Note number.
    pub note: u8,
    /// X bit: an all-notes-off class command followed.
    pub x: bool,
    /// Pressure.
    pub pressure: u8,
}

/// A decoded Chapter A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChapterA<'a> {
    /// S bit of the chapter header.
    pub s: bool,
    logs: &'a [u8],
}

impl<'a> ChapterA<'a> {
    /// Decodes the chapter at the start of `b`; returns it and its length.
    pub fn parse(b: &'a [u8]) -> Result<(ChapterA<'a>, usize), DecodeError> {
        let h = *b.first().ok_or(DecodeError::truncated("chapter a", 0))?;
        let len = 1 + 2 * (usize::from(h & 0x7F) + 1);
        let logs = b
            .get(1..len)
            .ok_or(DecodeError::truncated("chapter a", b.len()))?;
        Ok((
            ChapterA {
                s: h & 0x80 != 0,
                logs,
            },
            len,
        ))
    }

    /// The logs, oldest first.
    pub fn logs(&self) -> impl Iterator<Item = PolyLog> + 'a {
        self.logs.chunks_exact(2).map(|c| PolyLog {
            s: c[0] & 0x80 != 0,
            note: c[0] & 0x7F,
            x: c[1] & 0x80 != 0,
            pressure: c[1] & 0x7F,
        })
    }

    /// Appends a chapter with 1 to 128 logs.
    pub fn encode(out: &mut Vec<u8>, logs: &[PolyLog]) {
        debug_assert!(!logs.is_empty() && logs.len() <= 128);
        let n = logs.len().clamp(1, 128);
        let s = logs.iter().all(|l| l.s);
        out.push((u8::from(s) << 7) | (n - 1) as u8);
        for l in &logs[..n] {
            out.push((u8::from(l.s) << 7) | (l.note & 0x7F));
            out.push((u8::from(l.x) << 7) | (l.pressure & 0x7F));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let logs = [PolyLog {
            s: false,
            note: 60,
            x: true,
            pressure: 5,
        }];
        let mut out = Vec::new();
        ChapterA::encode(&mut out, &logs);
        assert_eq!(out, [0x00, 0x3C, 0x85]);
        let (a, len) = ChapterA::parse(&out).unwrap();
        assert_eq!(len, 3);
        assert_eq!(a.logs().collect::<Vec<_>>(), logs);
    }
}
