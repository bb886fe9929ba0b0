//! Chapter C: Control Change (RFC 6295 Appendix A.3; `rtp-midi.md` §4.5).
//!
//! ```text
//! header:            S:1 LEN:7                       (LEN+1 logs follow)
//! value tool:        S:1 NUMBER:7 | A=0:1 VALUE:7
//! toggle/count tool: S:1 NUMBER:7 | A=1:1 T:1 ALT:6   (T=0 toggle, T=1 count)
//! ```
//!
//! Logs are oldest-first. A controller coded by several tools lists them in
//! the order count, value, toggle. The value tool carries the latest value;
//! the toggle tool the number (mod 64) of off/on flips; the count tool the
//! number (mod 64) of commands. Our sender uses value + toggle for the pedals
//! (64-69), count for the value-less controllers (120, 121, 123-127) and
//! value for the rest.

use crate::rtp::DecodeError;

/// Which tool a log uses, with its 7- or 6-bit payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlTool {
    /// Latest controller value (7 bits).
    Value(u8),
    /// Off/on flip count mod 64.
    Toggle(u8),
    /// Command count mod 64.
    Count(u8),
}

/// One Chapter C log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlLog {
    /// S bit: 0 when the logged command was in packet I-1.
    pub s: bool,
    /// Controller number.
    pub number: u8,
    /// Tool and payload.
    pub tool: ControlTool,
}

impl ControlLog {
    fn parse(b: [u8; 2]) -> ControlLog {
        let tool = if b[1] & 0x80 == 0 {
            ControlTool::Value(b[1] & 0x7F)
        } else if b[1] & 0x40 == 0 {
            ControlTool::Toggle(b[1] & 0x3F)
        } else {
            ControlTool::Count(b[1] & 0x3F)
        };
        ControlLog {
            s: b[0] & 0x80 != 0,
            number: b[0] & 0x7F,
            tool,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.s) << 7) | (self.number & 0x7F));
        out.push(match self.tool {
            ControlTool::Value(v) => v & 0x7F,
            ControlTool::Toggle(n) => 0x80 | (n & 0x3F),
            ControlTool::Count(n) => 0xC0 | (n & 0x3F),
        });
    }
}

/// A decoded Chapter C: its S bit and a view of its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChapterC<'a> {
    /// S bit of the chapter header.
    pub s: bool,
    logs: &'a [u8],
}

impl<'a> ChapterC<'a> {
    /// Most logs one chapter can hold.
    pub const MAX_LOGS: usize = 128;

    /// Decodes the chapter at the start of `b`; returns it and its length.
    pub fn parse(b: &'a [u8]) -> Result<(ChapterC<'a>, usize), DecodeError> {
        let h = *b.first().ok_or(DecodeError::truncated("chapter c", 0))?;
        let len = 1 + 2 * (usize::from(h & 0x7F) + 1);
        let logs = b
            .get(1..len)
            .ok_or(DecodeError::truncated("chapter c", b.len()))?;
        Ok((
            ChapterC {
                s: h & 0x80 != 0,
                logs,
            },
            len,
        ))
    }

    /// The logs, oldest first.
    pub fn logs(&self) -> impl Iterator<Item = ControlLog> + 'a {
        self.logs
            .chunks_exact(2)
            .map(|c| ControlLog::parse([c[0], c[1]]))
    }

    /// Number of logs.
    pub fn len(&self) -> usize {
        self.logs.len() / 2
    }

    /// Never true for a decoded chapter (it holds at least one log).
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// Appends a chapter holding `logs` (1 to 128 of them, oldest first);
    /// the header's S bit is 0 if any log's is.
    pub fn encode(out: &mut Vec<u8>, logs: &[ControlLog]) {
        debug_assert!(!logs.is_empty() && logs.len() <= Self::MAX_LOGS);
        let n = logs.len().clamp(1, Self::MAX_LOGS);
        let s = logs.iter().all(|l| l.s);
        out.push((u8::from(s) << 7) | (n - 1) as u8);
        for l in &logs[..n] {
            l.encode(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_5_4() {
        let bytes = [0x81, 0x87, 0x64, 0x81, 0x20];
        let (c, len) = ChapterC::parse(&bytes).unwrap();
        assert_eq!(len, 5);
        let logs: Vec<_> = c.logs().collect();
        assert_eq!(
            logs,
            vec![
                ControlLog {
                    s: true,
                    number: 7,
                    tool: ControlTool::Value(100)
                },
                ControlLog {
                    s: true,
                    number: 1,
                    tool: ControlTool::Value(32)
                },
            ]
        );
        let mut out = Vec::new();
        ChapterC::encode(&mut out, &logs);
        assert_eq!(out, bytes);
    }

    #[test]
    fn all_tools_round_trip() {
        let logs = [
            ControlLog {
                s: false,
                number: 123,
                tool: ControlTool::Count(63),
            },
            ControlLog {
                s: true,
                number: 64,
                tool: ControlTool::Value(127),
            },
            ControlLog {
                s: true,
                number: 64,
                tool: ControlTool::Toggle(5),
            },
        ];
        let mut out = Vec::new();
        ChapterC::encode(&mut out, &logs);
        assert_eq!(out[0], 0x02, "s=0 because one log is from packet I-1");
        let (c, _) = ChapterC::parse(&out).unwrap();
        assert_eq!(c.logs().collect::<Vec<_>>(), logs);
        assert!(ChapterC::parse(&out[..4]).unwrap_err().is_truncated());
    }
}
