//! Chapter M: the parameter system, RPN and NRPN (RFC 6295 Appendix A.4;
//! `rtp-midi.md` §4.5).
//!
//! ```text
//! header: S:1 P:1 E:1 U:1 W:1 Z:1 LENGTH:10 | [Q:1 PENDING:7 when P=1]
//! log:    S:1 PNUM_LSB:7 | [Q:1 PNUM_MSB:7] | J K L M N T V R | fields in TOC order
//!   J: X:1 ENTRY_MSB:7    K: X:1 ENTRY_LSB:7    N: X:1 COUNT:7
//!   L: G:1 X:1 A_BUTTON:14                      M: G:1 R:1 C_BUTTON:14
//! ```
//!
//! LENGTH counts the whole chapter, header included. `P=1`: the latest
//! parameter command was an RPN (Q=0) or NRPN (Q=1) MSB of value PENDING
//! whose LSB has not come yet. `E=1`: a parameter is selected (a transaction
//! is open). `U`/`W`: every log is an RPN / NRPN. When `Z=1` and `U` or `W`
//! is set, every parameter number is below 128 and the PNUM_MSB octet is
//! absent from every log. Our encoder always writes `Z=0`.
//!
//! The button fields carry a sign bit `G` (1 = negative) and a 14-bit
//! magnitude: the net Data Increment minus Data Decrement count since the
//! last Data Entry for the parameter.

use crate::rtp::{DecodeError, Reader};

/// A value field with its X bit (X=1: a CC 121 followed the logged command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flagged<T> {
    /// The X bit.
    pub x: bool,
    /// The value.
    pub value: T,
}

/// One Chapter M parameter log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ParamLog {
    /// S bit: 0 when a command for this parameter was in packet I-1.
    pub s: bool,
    /// Q bit: an NRPN (else an RPN).
    pub nrpn: bool,
    /// The 14-bit parameter number (MSB << 7 | LSB).
    pub number: u16,
    /// J: latest Data Entry MSB (CC 6).
    pub entry_msb: Option<Flagged<u8>>,
    /// K: latest Data Entry LSB (CC 38).
    pub entry_lsb: Option<Flagged<u8>>,
    /// L: net increments since the latest Data Entry.
    pub a_button: Option<Flagged<i16>>,
    /// M: like `a_button`, without the commands before the latest CC 121.
    pub c_button: Option<i16>,
    /// N: transaction count mod 128.
    pub count: Option<Flagged<u8>>,
    /// T bit: the sender uses the count tool.
    pub t: bool,
    /// V bit: the sender uses the value tool.
    pub v: bool,
}

fn button(v: u16) -> i16 {
    let mag = (v & 0x3FFF) as i16;
    if v & 0x8000 != 0 { -mag } else { mag }
}

fn encode_button(out: &mut Vec<u8>, value: i16, second_flag: bool) {
    let mag = value.unsigned_abs().min(0x3FFF);
    let w = (u16::from(value < 0) << 15) | (u16::from(second_flag) << 14) | mag;
    out.extend_from_slice(&w.to_be_bytes());
}

impl ParamLog {
    fn parse(r: &mut Reader<'_>, short_header: Option<bool>) -> Result<ParamLog, DecodeError> {
        let b0 = r.u8("chapter m log")?;
        let (nrpn, msb) = match short_header {
            Some(nrpn) => (nrpn, 0),
            None => {
                let b1 = r.u8("chapter m log")?;
                (b1 & 0x80 != 0, b1 & 0x7F)
            }
        };
        let toc = r.u8("chapter m log")?;
        let mut log = ParamLog {
            s: b0 & 0x80 != 0,
            nrpn,
            number: (u16::from(msb) << 7) | u16::from(b0 & 0x7F),
            t: toc & 0x04 != 0,
            v: toc & 0x02 != 0,
            ..ParamLog::default()
        };
        let flagged = |o: u8| Flagged {
            x: o & 0x80 != 0,
            value: o & 0x7F,
        };
        if toc & 0x80 != 0 {
            log.entry_msb = Some(flagged(r.u8("chapter m entry msb")?));
        }
        if toc & 0x40 != 0 {
            log.entry_lsb = Some(flagged(r.u8("chapter m entry lsb")?));
        }
        if toc & 0x20 != 0 {
            let w = r.u16("chapter m a-button")?;
            log.a_button = Some(Flagged {
                x: w & 0x4000 != 0,
                value: button(w),
            });
        }
        if toc & 0x10 != 0 {
            log.c_button = Some(button(r.u16("chapter m c-button")?));
        }
        if toc & 0x08 != 0 {
            log.count = Some(flagged(r.u8("chapter m count")?));
        }
        Ok(log)
    }

    /// Octets the log takes with the 3-octet header our encoder writes.
    pub fn encoded_len(&self) -> usize {
        3 + usize::from(self.entry_msb.is_some())
            + usize::from(self.entry_lsb.is_some())
            + 2 * usize::from(self.a_button.is_some())
            + 2 * usize::from(self.c_button.is_some())
            + usize::from(self.count.is_some())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.s) << 7) | (self.number & 0x7F) as u8);
        out.push((u8::from(self.nrpn) << 7) | ((self.number >> 7) & 0x7F) as u8);
        let toc = (u8::from(self.entry_msb.is_some()) << 7)
            | (u8::from(self.entry_lsb.is_some()) << 6)
            | (u8::from(self.a_button.is_some()) << 5)
            | (u8::from(self.c_button.is_some()) << 4)
            | (u8::from(self.count.is_some()) << 3)
            | (u8::from(self.t) << 2)
            | (u8::from(self.v) << 1);
        out.push(toc);
        let put =
            |out: &mut Vec<u8>, f: Flagged<u8>| out.push((u8::from(f.x) << 7) | (f.value & 0x7F));
        if let Some(f) = self.entry_msb {
            put(out, f);
        }
        if let Some(f) = self.entry_lsb {
            put(out, f);
        }
        if let Some(f) = self.a_button {
            encode_button(out, f.value, f.x);
        }
        if let Some(v) = self.c_button {
            encode_button(out, v, false);
        }
        if let Some(f) = self.count {
            put(out, f);
        }
    }
}

/// A pending parameter MSB: an RPN or NRPN MSB whose LSB has not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pending {
    /// Q bit: an NRPN MSB (CC 99), else an RPN MSB (CC 101).
    pub nrpn: bool,
    /// The MSB value.
    pub value: u8,
}

/// A decoded Chapter M.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChapterM<'a> {
    /// S bit.
    pub s: bool,
    /// E bit: a parameter is selected (a transaction is open).
    pub e: bool,
    /// U bit: every log is an RPN.
    pub u: bool,
    /// W bit: every log is an NRPN.
    pub w: bool,
    /// Z bit: every parameter number is below 128.
    pub z: bool,
    /// The pending MSB, when P=1.
    pub pending: Option<Pending>,
    logs: &'a [u8],
}

impl<'a> ChapterM<'a> {
    /// Largest LENGTH the 10-bit field can hold.
    pub const MAX_LEN: usize = 1023;

    fn short_header(&self) -> Option<bool> {
        (self.z && (self.u || self.w)).then_some(self.w && !self.u)
    }

    /// Decodes the chapter at the start of `b` (checking every log against
    /// LENGTH); returns it and its length.
    pub fn parse(b: &'a [u8]) -> Result<(ChapterM<'a>, usize), DecodeError> {
        let mut r = Reader::new(b);
        let h = r.u16("chapter m header")?;
        let len = usize::from(h & 0x03FF);
        let body = b
            .get(..len)
            .ok_or(DecodeError::truncated("chapter m", b.len()))?;
        let mut r = Reader::new(body);
        r.take(2, "chapter m header")
            .map_err(|_| DecodeError::invalid("chapter m length", 0, len as u32))?;
        let pending = if h & 0x4000 != 0 {
            let p = r
                .u8("chapter m pending")
                .map_err(|_| DecodeError::invalid("chapter m length", 0, len as u32))?;
            Some(Pending {
                nrpn: p & 0x80 != 0,
                value: p & 0x7F,
            })
        } else {
            None
        };
        let m = ChapterM {
            s: h & 0x8000 != 0,
            e: h & 0x2000 != 0,
            u: h & 0x1000 != 0,
            w: h & 0x0800 != 0,
            z: h & 0x0400 != 0,
            pending,
            logs: &body[r.pos()..],
        };
        let mut lr = Reader::new(m.logs);
        while lr.remaining() > 0 {
            ParamLog::parse(&mut lr, m.short_header()).map_err(|e| {
                if e.is_truncated() {
                    DecodeError::invalid(
                        "chapter m log overruns length",
                        r.pos() + lr.pos(),
                        len as u32,
                    )
                } else {
                    e
                }
            })?;
        }
        Ok((m, len))
    }

    /// The logs, oldest first.
    pub fn logs(&self) -> impl Iterator<Item = ParamLog> + 'a {
        let mut r = Reader::new(self.logs);
        let short = self.short_header();
        std::iter::from_fn(move || {
            if r.remaining() == 0 {
                return None;
            }
            ParamLog::parse(&mut r, short).ok()
        })
    }

    /// Appends a chapter with the given header fields and logs (Z=0, U/W
    /// derived from the logs). Returns false, leaving `out` unchanged, when
    /// the chapter would exceed [`ChapterM::MAX_LEN`].
    pub fn encode(
        out: &mut Vec<u8>,
        s: bool,
        e: bool,
        pending: Option<Pending>,
        logs: &[ParamLog],
    ) -> bool {
        let len = 2
            + usize::from(pending.is_some())
            + logs.iter().map(ParamLog::encoded_len).sum::<usize>();
        if len > Self::MAX_LEN {
            return false;
        }
        let u = !logs.is_empty() && logs.iter().all(|l| !l.nrpn);
        let w = !logs.is_empty() && logs.iter().all(|l| l.nrpn);
        let h = (u16::from(s) << 15)
            | (u16::from(pending.is_some()) << 14)
            | (u16::from(e) << 13)
            | (u16::from(u) << 12)
            | (u16::from(w) << 11)
            | len as u16;
        out.extend_from_slice(&h.to_be_bytes());
        if let Some(p) = pending {
            out.push((u8::from(p.nrpn) << 7) | (p.value & 0x7F));
        }
        for l in logs {
            l.encode(out);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let logs = [
            ParamLog {
                s: true,
                nrpn: false,
                number: 0,
                entry_msb: Some(Flagged {
                    x: false,
                    value: 12,
                }),
                entry_lsb: Some(Flagged {
                    x: false,
                    value: 50,
                }),
                a_button: Some(Flagged {
                    x: false,
                    value: -3,
                }),
                v: true,
                ..ParamLog::default()
            },
            ParamLog {
                s: false,
                nrpn: true,
                number: 0x1234 & 0x3FFF,
                c_button: Some(100),
                count: Some(Flagged { x: true, value: 9 }),
                t: true,
                ..ParamLog::default()
            },
        ];
        let mut out = Vec::new();
        assert!(ChapterM::encode(
            &mut out,
            false,
            true,
            Some(Pending {
                nrpn: true,
                value: 3
            }),
            &logs
        ));
        let (m, len) = ChapterM::parse(&out).unwrap();
        assert_eq!(len, out.len());
        assert!(m.e && !m.s && !m.u && !m.w);
        assert_eq!(
            m.pending,
            Some(Pending {
                nrpn: true,
                value: 3
            })
        );
        assert_eq!(m.logs().collect::<Vec<_>>(), logs);
    }

    #[test]
    fn short_log_headers_when_z_and_u() {
        // S=1 P=0 E=0 U=1 W=0 Z=1, LENGTH 5: one log `81 82 82` (no PNUM_MSB).
        let b = [0x94, 0x05, 0x81, 0x82, 0x82];
        let (m, _) = ChapterM::parse(&b).unwrap();
        let logs: Vec<_> = m.logs().collect();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].number, 1);
        assert!(!logs[0].nrpn);
        assert_eq!(logs[0].entry_msb, Some(Flagged { x: true, value: 2 }));
    }

    #[test]
    fn rejects_logs_that_overrun_length() {
        // LENGTH 4 but the log header alone needs 3 octets after the 2-octet header.
        let b = [0x80, 0x04, 0x01, 0x00, 0x80, 0x05];
        assert!(!ChapterM::parse(&b).unwrap_err().is_truncated());
        assert!(
            ChapterM::parse(&[0x80, 0x09, 0x01])
                .unwrap_err()
                .is_truncated()
        );
    }
}
