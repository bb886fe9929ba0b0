//! Chapter V: Active Sense (RFC 6295 Appendix B.2; `rtp-midi.md` §4.6).
//!
//! ```text
//! S:1 COUNT:7      (Active Sense commands in the session history, mod 128)
//! ```

use crate::rtp::DecodeError;

/// A decoded (or to-be-encoded) Chapter V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChapterV {
    /// S bit.
    pub s: bool,
    /// Count mod 128.
    pub count: u8,
}

impl ChapterV {
    /// Octets of the chapter.
    pub const LEN: usize = 1;

    /// Decodes the chapter at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<ChapterV, DecodeError> {
        let o = *b.first().ok_or(DecodeError::truncated("chapter v", 0))?;
        Ok(ChapterV {
            s: o & 0x80 != 0,
            count: o & 0x7F,
        })
    }

    /// Appends the chapter.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.s) << 7) | (self.count & 0x7F));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v = ChapterV {
            s: false,
            count: 100,
        };
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(ChapterV::parse(&out).unwrap(), v);
    }
}
