//! Chapter F: MIDI Time Code tape position (RFC 6295 Appendix B.4;
//! `rtp-midi.md` §4.6).
//!
//! ```text
//! S:1 C:1 P:1 Q:1 D:1 POINT:3 | COMPLETE:32 if C=1 | PARTIAL:32 if P=1
//! ```
//!
//! Our sender does not protect MTC (F1 quarter frames travel unprotected);
//! this decoder reads the chapter so that a receiver can skip it.

use crate::rtp::DecodeError;

/// A decoded Chapter F.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChapterF {
    /// S bit.
    pub s: bool,
    /// Q bit: COMPLETE holds quarter-frame nibbles.
    pub q: bool,
    /// D bit.
    pub d: bool,
    /// POINT field.
    pub point: u8,
    /// COMPLETE field, when C=1.
    pub complete: Option<u32>,
    /// PARTIAL field, when P=1.
    pub partial: Option<u32>,
}

impl ChapterF {
    /// Decodes the chapter at the start of `b`; returns it and its length.
    pub fn parse(b: &[u8]) -> Result<(ChapterF, usize), DecodeError> {
        let h = *b.first().ok_or(DecodeError::truncated("chapter f", 0))?;
        let mut len = 1;
        let mut word = |what| -> Result<u32, DecodeError> {
            let w = b
                .get(len..len + 4)
                .ok_or(DecodeError::truncated(what, b.len()))?;
            len += 4;
            Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        };
        let complete = if h & 0x40 != 0 {
            Some(word("chapter f complete")?)
        } else {
            None
        };
        let partial = if h & 0x20 != 0 {
            Some(word("chapter f partial")?)
        } else {
            None
        };
        Ok((
            ChapterF {
                s: h & 0x80 != 0,
                q: h & 0x10 != 0,
                d: h & 0x08 != 0,
                point: h & 0x07,
                complete,
                partial,
            },
            len,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lengths() {
        assert_eq!(ChapterF::parse(&[0x00]).unwrap().1, 1);
        let (f, len) = ChapterF::parse(&[0xE3, 0, 0, 0, 1, 0, 0, 0, 2]).unwrap();
        assert_eq!(
            (len, f.complete, f.partial, f.point),
            (9, Some(1), Some(2), 3)
        );
        assert!(ChapterF::parse(&[0x40, 0, 0]).unwrap_err().is_truncated());
    }
}
