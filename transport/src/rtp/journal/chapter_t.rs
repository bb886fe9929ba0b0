//! Chapter T: Channel Aftertouch (RFC 6295 Appendix A.8; `rtp-midi.md` §4.5).
//!
//! ```text
//! S:1 PRESSURE:7
//! ```
//!
//! The most recent N-active and C-active Channel Pressure (0xD0) command.

use crate::rtp::DecodeError;

/// A decoded (or to-be-encoded) Chapter T.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChapterT {
    /// S bit.
    pub s: bool,
    /// Pressure.
    pub pressure: u8,
}

impl ChapterT {
    /// Octets of the chapter.
    pub const LEN: usize = 1;

    /// Decodes the chapter at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<ChapterT, DecodeError> {
        let o = *b.first().ok_or(DecodeError::truncated("chapter t", 0))?;
        Ok(ChapterT {
            s: o & 0x80 != 0,
            pressure: o & 0x7F,
        })
    }

    /// Appends the chapter.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.s) << 7) | (self.pressure & 0x7F));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = ChapterT {
            s: true,
            pressure: 99,
        };
        let mut out = Vec::new();
        t.encode(&mut out);
        assert_eq!(out, [0x80 | 99]);
        assert_eq!(ChapterT::parse(&out).unwrap(), t);
        assert!(ChapterT::parse(&[]).unwrap_err().is_truncated());
    }
}
