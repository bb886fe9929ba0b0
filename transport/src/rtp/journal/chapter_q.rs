//! Chapter Q: sequencer state (RFC 6295 Appendix B.3; `rtp-midi.md` §4.6).
//!
//! ```text
//! S:1 N:1 D:1 C:1 T:1 TOP:3 | CLOCK:16 if C=1 | TIMETOOLS:24 if T=1
//! ```
//!
//! Protects Song Position Pointer (F2), Clock (F8), Start (FA), Continue
//! (FB) and Stop (FC). `N=1`: the sequencer runs (a Start or Continue is more
//! recent than any Stop). With `C=1` the song position is `65536 * TOP +
//! CLOCK` MIDI clocks. Our sender sets `D=1` when the latest command that
//! moved the position was a Clock (the position has been played), `D=0`
//! after a Song Position Pointer or Start, and never writes TIMETOOLS.

use crate::rtp::DecodeError;

/// A decoded (or to-be-encoded) Chapter Q.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChapterQ {
    /// S bit.
    pub s: bool,
    /// N bit: the sequencer is running.
    pub n: bool,
    /// D bit.
    pub d: bool,
    /// TOP: bits 16-18 of the position.
    pub top: u8,
    /// CLOCK: bits 0-15 of the position, when C=1.
    pub clock: Option<u16>,
    /// TIMETOOLS, when T=1 (24 bits).
    pub timetools: Option<u32>,
}

impl ChapterQ {
    /// The song position in MIDI clocks, when coded.
    pub fn position(&self) -> Option<u32> {
        self.clock
            .map(|c| (u32::from(self.top & 7) << 16) | u32::from(c))
    }

    /// Decodes the chapter at the start of `b`; returns it and its length.
    pub fn parse(b: &[u8]) -> Result<(ChapterQ, usize), DecodeError> {
        let h = *b.first().ok_or(DecodeError::truncated("chapter q", 0))?;
        let mut len = 1;
        let mut q = ChapterQ {
            s: h & 0x80 != 0,
            n: h & 0x40 != 0,
            d: h & 0x20 != 0,
            top: h & 0x07,
            clock: None,
            timetools: None,
        };
        if h & 0x10 != 0 {
            let c = b
                .get(1..3)
                .ok_or(DecodeError::truncated("chapter q clock", b.len()))?;
            q.clock = Some(u16::from_be_bytes([c[0], c[1]]));
            len += 2;
        }
        if h & 0x08 != 0 {
            let t = b
                .get(len..len + 3)
                .ok_or(DecodeError::truncated("chapter q timetools", b.len()))?;
            q.timetools = Some(u32::from_be_bytes([0, t[0], t[1], t[2]]));
            len += 3;
        }
        Ok((q, len))
    }

    /// Appends the chapter.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(
            (u8::from(self.s) << 7)
                | (u8::from(self.n) << 6)
                | (u8::from(self.d) << 5)
                | (u8::from(self.clock.is_some()) << 4)
                | (u8::from(self.timetools.is_some()) << 3)
                | (self.top & 0x07),
        );
        if let Some(c) = self.clock {
            out.extend_from_slice(&c.to_be_bytes());
        }
        if let Some(t) = self.timetools {
            out.extend_from_slice(&t.to_be_bytes()[1..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let q = ChapterQ {
            s: true,
            n: true,
            d: true,
            top: 1,
            clock: Some(0x2345),
            timetools: None,
        };
        let mut out = Vec::new();
        q.encode(&mut out);
        assert_eq!(out, [0xF1, 0x23, 0x45]);
        assert_eq!(ChapterQ::parse(&out).unwrap(), (q, 3));
        assert_eq!(q.position(), Some(0x1_2345));
        let t = ChapterQ {
            timetools: Some(0x010203),
            ..ChapterQ::default()
        };
        let mut out = Vec::new();
        t.encode(&mut out);
        assert_eq!(ChapterQ::parse(&out).unwrap(), (t, 4));
        assert!(ChapterQ::parse(&[0x10, 1]).unwrap_err().is_truncated());
    }
}
