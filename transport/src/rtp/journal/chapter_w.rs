//! Chapter W: Pitch Wheel (RFC 6295 Appendix A.5; `rtp-midi.md` §4.5).
//!
//! ```text
//! S:1 FIRST:7 | R:1 SECOND:7
//! ```
//!
//! The two data octets (LSB, then MSB) of the most recent C-active pitch
//! wheel command; the 14-bit value is `SECOND << 7 | FIRST`.

use crate::rtp::DecodeError;

/// A decoded (or to-be-encoded) Chapter W.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChapterW {
    /// S bit.
    pub s: bool,
    /// First data octet (LSB).
    pub first: u8,
    /// Reserved bit (sent 0).
    pub r: bool,
    /// Second data octet (MSB).
    pub second: u8,
}

impl ChapterW {
    /// Octets of the chapter.
    pub const LEN: usize = 2;

    /// A chapter for a 14-bit bend value.
    pub const fn new(s: bool, value: u16) -> Self {
        ChapterW {
            s,
            first: (value & 0x7F) as u8,
            r: false,
            second: ((value >> 7) & 0x7F) as u8,
        }
    }

    /// The 14-bit bend value (8192 = centre).
    pub const fn value(&self) -> u16 {
        ((self.second as u16) << 7) | self.first as u16
    }

    /// Decodes the chapter at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<ChapterW, DecodeError> {
        let b = b
            .get(..2)
            .ok_or(DecodeError::truncated("chapter w", b.len()))?;
        Ok(ChapterW {
            s: b[0] & 0x80 != 0,
            first: b[0] & 0x7F,
            r: b[1] & 0x80 != 0,
            second: b[1] & 0x7F,
        })
    }

    /// Appends the chapter.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.s) << 7) | (self.first & 0x7F));
        out.push((u8::from(self.r) << 7) | (self.second & 0x7F));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_5_4() {
        let w = ChapterW::parse(&[0x00, 0x48]).unwrap();
        assert_eq!(w.value(), 9216);
        assert!(!w.s);
        let mut out = Vec::new();
        ChapterW::new(false, 9216).encode(&mut out);
        assert_eq!(out, [0x00, 0x48]);
    }
}
