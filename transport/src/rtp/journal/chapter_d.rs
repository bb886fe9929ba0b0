//! Chapter D: simple system commands (RFC 6295 Appendix B.1; `rtp-midi.md`
//! §4.6).
//!
//! ```text
//! TOC: S B G H J K Y Z, then the logs in that order:
//!   B Reset (FF)          S:1 COUNT:7
//!   G Tune Request (F6)   S:1 COUNT:7
//!   H Song Select (F3)    S:1 VALUE:7
//!   J / K (F4 / F5)       S C V L DSZ:2 LENGTH:10 + COUNT:8 if C + VALUE if V + LEGAL if L
//!   Y / Z (F9 / FD)       S C L LENGTH:5 + COUNT:8 if C + LEGAL if L
//! ```
//!
//! COUNT fields count commands of the session history mod 128; VALUE is
//! the latest Song Select. The J/K/Y/Z logs (undefined commands) carry their
//! own LENGTH (header included): this decoder keeps them as raw octets, and
//! our encoder never writes them (our sender refuses undefined commands).

use crate::rtp::DecodeError;

/// A 7-bit count or value with its S bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Counter {
    /// S bit.
    pub s: bool,
    /// Count mod 128, or the value.
    pub value: u8,
}

impl Counter {
    fn parse(o: u8) -> Counter {
        Counter {
            s: o & 0x80 != 0,
            value: o & 0x7F,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.s) << 7) | (self.value & 0x7F));
    }
}

/// A decoded (or to-be-encoded) Chapter D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChapterD<'a> {
    /// S bit of the TOC octet.
    pub s: bool,
    /// B: System Reset count.
    pub reset: Option<Counter>,
    /// G: Tune Request count.
    pub tune: Option<Counter>,
    /// H: latest Song Select value.
    pub song: Option<Counter>,
    /// J, K, Y, Z: raw logs of the undefined commands F4, F5, F9, FD.
    pub undefined: [Option<&'a [u8]>; 4],
}

impl<'a> ChapterD<'a> {
    /// Decodes the chapter at the start of `b`; returns it and its length.
    pub fn parse(b: &'a [u8]) -> Result<(ChapterD<'a>, usize), DecodeError> {
        let toc = *b.first().ok_or(DecodeError::truncated("chapter d", 0))?;
        let mut pos = 1;
        let mut next = |what| -> Result<u8, DecodeError> {
            let o = *b.get(pos).ok_or(DecodeError::truncated(what, pos))?;
            pos += 1;
            Ok(o)
        };
        let mut d = ChapterD {
            s: toc & 0x80 != 0,
            ..ChapterD::default()
        };
        if toc & 0x40 != 0 {
            d.reset = Some(Counter::parse(next("chapter d reset log")?));
        }
        if toc & 0x20 != 0 {
            d.tune = Some(Counter::parse(next("chapter d tune log")?));
        }
        if toc & 0x10 != 0 {
            d.song = Some(Counter::parse(next("chapter d song log")?));
        }
        for (i, bit) in [0x08u8, 0x04, 0x02, 0x01].into_iter().enumerate() {
            if toc & bit == 0 {
                continue;
            }
            let len = if i < 2 {
                let h = b
                    .get(pos..pos + 2)
                    .ok_or(DecodeError::truncated("chapter d command log", pos))?;
                (usize::from(h[0] & 0x03) << 8) | usize::from(h[1])
            } else {
                let h = *b
                    .get(pos)
                    .ok_or(DecodeError::truncated("chapter d command log", pos))?;
                usize::from(h & 0x1F)
            };
            let min = if i < 2 { 2 } else { 1 };
            if len < min {
                return Err(DecodeError::invalid(
                    "chapter d command log length",
                    pos,
                    len as u32,
                ));
            }
            let log = b
                .get(pos..pos + len)
                .ok_or(DecodeError::truncated("chapter d command log", b.len()))?;
            d.undefined[i] = Some(log);
            pos += len;
        }
        Ok((d, pos))
    }

    /// Appends the chapter's TOC and its B, G, H logs (the undefined-command
    /// logs are not written). The TOC's S bit is 0 if any log's is.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let logs = [self.reset, self.tune, self.song];
        let s = logs.iter().flatten().all(|c| c.s);
        out.push(
            (u8::from(s) << 7)
                | (u8::from(self.reset.is_some()) << 6)
                | (u8::from(self.tune.is_some()) << 5)
                | (u8::from(self.song.is_some()) << 4),
        );
        for c in logs.iter().flatten() {
            c.encode(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_undefined_logs() {
        let d = ChapterD {
            s: false,
            reset: Some(Counter { s: true, value: 3 }),
            tune: None,
            song: Some(Counter { s: false, value: 7 }),
            undefined: [None; 4],
        };
        let mut out = Vec::new();
        d.encode(&mut out);
        assert_eq!(out, [0x50, 0x83, 0x07]);
        assert_eq!(ChapterD::parse(&out).unwrap(), (d, 3));
        // TOC with J (F4 log of LENGTH 3: header + COUNT) and Y (F9 log, LENGTH 2).
        let b = [0x8A, 0xC0, 0x03, 0x05, 0xC2, 0x09, 0xEE];
        let (d, len) = ChapterD::parse(&b).unwrap();
        assert_eq!(len, 6);
        assert_eq!(d.undefined[0], Some(&b[1..4]));
        assert_eq!(d.undefined[2], Some(&b[4..6]));
        assert!(ChapterD::parse(&b[..5]).unwrap_err().is_truncated());
        assert!(
            !ChapterD::parse(&[0x08, 0x00, 0x01])
                .unwrap_err()
                .is_truncated()
        );
    }
}
