//! Chapter P: Program Change (RFC 6295 Appendix A.2; `rtp-midi.md` §4.5).
//!
//! ```text
//! S:1 PROGRAM:7 | B:1 BANK_MSB:7 | X:1 BANK_LSB:7
//! ```
//!
//! PROGRAM is the most recent active Program Change. `B=1` when an active
//! Bank Select MSB (CC 0) came before it; then BANK_MSB/BANK_LSB are the bank
//! in force at that Program Change. `X=1` when a Reset All Controllers
//! (CC 121) came between that CC 0 and the Program Change.

use crate::rtp::DecodeError;

/// A decoded (or to-be-encoded) Chapter P.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChapterP {
    /// S bit: 0 when the Program Change was in packet I-1.
    pub s: bool,
    /// Program number.
    pub program: u8,
    /// B bit: the bank fields are meaningful.
    pub b: bool,
    /// Bank Select MSB in force at the Program Change.
    pub bank_msb: u8,
    /// X bit: a CC 121 came between the CC 0 and the Program Change.
    pub x: bool,
    /// Bank Select LSB in force at the Program Change.
    pub bank_lsb: u8,
}

impl ChapterP {
    /// Octets of the chapter.
    pub const LEN: usize = 3;

    /// Decodes the chapter at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<ChapterP, DecodeError> {
        let b = b
            .get(..3)
            .ok_or(DecodeError::truncated("chapter p", b.len()))?;
        Ok(ChapterP {
            s: b[0] & 0x80 != 0,
            program: b[0] & 0x7F,
            b: b[1] & 0x80 != 0,
            bank_msb: b[1] & 0x7F,
            x: b[2] & 0x80 != 0,
            bank_lsb: b[2] & 0x7F,
        })
    }

    /// Appends the chapter.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.s) << 7) | (self.program & 0x7F));
        out.push((u8::from(self.b) << 7) | (self.bank_msb & 0x7F));
        out.push((u8::from(self.x) << 7) | (self.bank_lsb & 0x7F));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = ChapterP {
            s: false,
            program: 5,
            b: true,
            bank_msb: 2,
            x: false,
            bank_lsb: 9,
        };
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out, [0x05, 0x82, 0x09]);
        assert_eq!(ChapterP::parse(&out).unwrap(), p);
        assert!(ChapterP::parse(&out[..2]).unwrap_err().is_truncated());
    }
}
