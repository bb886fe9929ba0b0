//! Chapter X: System Exclusive (RFC 6295 Appendix B.5; `rtp-midi.md` §4.6).
//!
//! Chapter X has no header and no length: it is a list of logs that runs to
//! the end of the system journal.
//!
//! ```text
//! log: S:1 T:1 C:1 F:1 D:1 L:1 STA:2 | TCOUNT:8 if T | COUNT:8 if C
//!      | FIRST if F (1-4 octets, delta-time coding) | DATA if D
//! ```
//!
//! STA: 0 unfinished, 1 cancelled, 2 dropped-F7, 3 finished. DATA holds the
//! command's data octets followed by its closing status octet (F7 for a
//! finished command, F5 for a dropped-F7 one): "the last octet has its top
//! bit set". With `L=1` this decoder takes DATA to run to the end of the
//! chapter. Our sender writes, for each complete SysEx it protects, one log
//! with `C=1` (COUNT = the number of complete SysEx commands in the session
//! history up to and including this one, mod 256), `D=1`, `L=0` and STA 3 or
//! 2, and never writes TCOUNT or FIRST.

use crate::rtp::list::decode_delta;
use crate::rtp::{DecodeError, Reader};

/// SysEx status codes (the STA field).
pub mod sta {
    /// The logged command was not finished.
    pub const UNFINISHED: u8 = 0;
    /// The logged command was cancelled.
    pub const CANCELLED: u8 = 1;
    /// The logged command ended without its F7 (coded with F5).
    pub const DROPPED_F7: u8 = 2;
    /// The logged command ended with F7.
    pub const FINISHED: u8 = 3;
}

/// One Chapter X log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SysExLog<'a> {
    /// S bit.
    pub s: bool,
    /// TCOUNT field, when T=1.
    pub tcount: Option<u8>,
    /// COUNT field, when C=1.
    pub count: Option<u8>,
    /// FIRST field, when F=1.
    pub first: Option<u32>,
    /// DATA field (data octets and the closing status octet), when D=1.
    pub data: Option<&'a [u8]>,
    /// L bit.
    pub l: bool,
    /// STA field (see [`sta`]).
    pub sta: u8,
}

impl<'a> SysExLog<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<SysExLog<'a>, DecodeError> {
        let h = r.u8("chapter x log")?;
        let mut log = SysExLog {
            s: h & 0x80 != 0,
            l: h & 0x04 != 0,
            sta: h & 0x03,
            ..SysExLog::default()
        };
        if h & 0x40 != 0 {
            log.tcount = Some(r.u8("chapter x tcount")?);
        }
        if h & 0x20 != 0 {
            log.count = Some(r.u8("chapter x count")?);
        }
        if h & 0x10 != 0 {
            let (v, n) = decode_delta(r.rest(), 0).map_err(|e| e.shifted(r.pos()))?;
            r.take(n, "chapter x first")?;
            log.first = Some(v);
        }
        if h & 0x08 != 0 {
            let rest = r.rest();
            let n = if log.l {
                rest.len()
            } else {
                rest.iter().position(|&o| o >= 0x80).map(|i| i + 1).ok_or(
                    DecodeError::truncated("chapter x data", r.pos() + rest.len()),
                )?
            };
            log.data = Some(r.take(n, "chapter x data")?);
        }
        Ok(log)
    }

    /// The SysEx data octets of DATA, without the closing status octet.
    pub fn body(&self) -> Option<&'a [u8]> {
        self.data.map(|d| match d.last() {
            Some(&o) if o >= 0x80 => &d[..d.len() - 1],
            _ => d,
        })
    }

    /// Octets the log takes.
    pub fn encoded_len(&self) -> usize {
        1 + usize::from(self.tcount.is_some())
            + usize::from(self.count.is_some())
            + self.first.map_or(0, crate::rtp::list::delta_len)
            + self.data.map_or(0, <[u8]>::len)
    }

    /// Appends the log.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(
            (u8::from(self.s) << 7)
                | (u8::from(self.tcount.is_some()) << 6)
                | (u8::from(self.count.is_some()) << 5)
                | (u8::from(self.first.is_some()) << 4)
                | (u8::from(self.data.is_some()) << 3)
                | (u8::from(self.l) << 2)
                | (self.sta & 0x03),
        );
        if let Some(t) = self.tcount {
            out.push(t);
        }
        if let Some(c) = self.count {
            out.push(c);
        }
        if let Some(f) = self.first {
            crate::rtp::list::encode_delta(out, f);
        }
        if let Some(d) = self.data {
            out.extend_from_slice(d);
        }
    }
}

/// A decoded Chapter X: the logs up to the end of the system journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChapterX<'a> {
    logs: &'a [u8],
}

impl<'a> ChapterX<'a> {
    /// Decodes (and checks) the logs that fill `b`.
    pub fn parse(b: &'a [u8]) -> Result<ChapterX<'a>, DecodeError> {
        let mut r = Reader::new(b);
        if r.remaining() == 0 {
            return Err(DecodeError::truncated("chapter x", 0));
        }
        while r.remaining() > 0 {
            SysExLog::parse(&mut r)?;
        }
        Ok(ChapterX { logs: b })
    }

    /// The logs, oldest first.
    pub fn logs(&self) -> impl Iterator<Item = SysExLog<'a>> + 'a {
        let mut r = Reader::new(self.logs);
        std::iter::from_fn(move || {
            if r.remaining() == 0 {
                return None;
            }
            SysExLog::parse(&mut r).ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_list_of_logs() {
        let a = [0x7E, 0x7F, 0x09, 0x01, 0xF7];
        let b = [0x01, 0x02, 0xF5];
        let logs = [
            SysExLog {
                s: true,
                count: Some(4),
                data: Some(&a),
                sta: sta::FINISHED,
                ..SysExLog::default()
            },
            SysExLog {
                s: false,
                count: Some(5),
                data: Some(&b),
                sta: sta::DROPPED_F7,
                ..SysExLog::default()
            },
            SysExLog {
                s: true,
                tcount: Some(1),
                first: Some(300),
                sta: sta::CANCELLED,
                ..SysExLog::default()
            },
        ];
        let mut out = Vec::new();
        for l in &logs {
            l.encode(&mut out);
        }
        assert_eq!(
            out.len(),
            logs.iter().map(SysExLog::encoded_len).sum::<usize>()
        );
        let x = ChapterX::parse(&out).unwrap();
        assert_eq!(x.logs().collect::<Vec<_>>(), logs);
        assert_eq!(logs[0].body(), Some(&a[..4]));
        assert!(
            ChapterX::parse(&[0x28, 0x01, 0x02])
                .unwrap_err()
                .is_truncated()
        );
    }
}
