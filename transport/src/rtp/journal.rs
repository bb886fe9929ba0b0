//! The recovery journal: its header, the system journal and the channel
//! journals (RFC 6295 §4-6; `rtp-midi.md` §4.1-4.6). One file per chapter
//! lives under `journal/`.
//!
//! ```text
//! journal header:  S:1 Y:1 A:1 H:1 TOTCHAN:4 | CHECKPOINT_SEQ:16
//! system journal:  S:1 D:1 V:1 Q:1 F:1 X:1 LENGTH:10 | chapters D V Q F X
//! channel journal: S:1 CHAN:4 H:1 LENGTH:10 | P C M W N E T A | chapters in that order
//! ```
//!
//! `Y=1`: a system journal follows the header. `A=1`: `TOTCHAN+1` channel
//! journals follow it. Every LENGTH counts its whole structure, header
//! included; a decoder skips what it does not understand with it.
//! [`Journal::parse`] checks the whole journal in one pass without
//! allocating; the accessors then walk the already-checked bytes.
//!
//! The S bits implement single-packet-loss recovery (`rtp-midi.md` §4.2):
//! an element codes S=0 when its command sat in packet I-1, and S=0
//! propagates up through every enclosing header.

pub mod chapter_a;
pub mod chapter_c;
pub mod chapter_d;
pub mod chapter_e;
pub mod chapter_f;
pub mod chapter_m;
pub mod chapter_n;
pub mod chapter_p;
pub mod chapter_q;
pub mod chapter_t;
pub mod chapter_v;
pub mod chapter_w;
pub mod chapter_x;

pub use chapter_a::{ChapterA, PolyLog};
pub use chapter_c::{ChapterC, ControlLog, ControlTool};
pub use chapter_d::{ChapterD, Counter};
pub use chapter_e::{ChapterE, ExtraLog, NoteExtra};
pub use chapter_f::ChapterF;
pub use chapter_m::{ChapterM, Flagged, ParamLog, Pending};
pub use chapter_n::{ChapterN, NoteLog, NoteSet};
pub use chapter_p::ChapterP;
pub use chapter_q::ChapterQ;
pub use chapter_t::ChapterT;
pub use chapter_v::ChapterV;
pub use chapter_w::ChapterW;
pub use chapter_x::{ChapterX, SysExLog};

use super::{DecodeError, Reader};

/// Largest value of the 10-bit LENGTH fields.
pub const MAX_LENGTH: usize = 1023;

/// The 3-octet journal header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct JournalHeader {
    /// S bit: 0 when anything in the journal codes a command of packet I-1.
    pub s: bool,
    /// Y bit: a system journal follows.
    pub y: bool,
    /// A bit: channel journals follow.
    pub a: bool,
    /// H bit: enhanced Chapter C in use on some channel (needs SDP; 0 here).
    pub h: bool,
    /// TOTCHAN: channel journals minus one.
    pub totchan: u8,
    /// Sequence number of the checkpoint packet.
    pub checkpoint: u16,
}

impl JournalHeader {
    /// Octets of the header.
    pub const LEN: usize = 3;

    /// Decodes the header at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<JournalHeader, DecodeError> {
        let b = b
            .get(..3)
            .ok_or(DecodeError::truncated("journal header", b.len()))?;
        Ok(JournalHeader {
            s: b[0] & 0x80 != 0,
            y: b[0] & 0x40 != 0,
            a: b[0] & 0x20 != 0,
            h: b[0] & 0x10 != 0,
            totchan: b[0] & 0x0F,
            checkpoint: u16::from_be_bytes([b[1], b[2]]),
        })
    }

    /// Appends the header.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(
            (u8::from(self.s) << 7)
                | (u8::from(self.y) << 6)
                | (u8::from(self.a) << 5)
                | (u8::from(self.h) << 4)
                | (self.totchan & 0x0F),
        );
        out.extend_from_slice(&self.checkpoint.to_be_bytes());
    }
}

/// A decoded system journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SystemJournal<'a> {
    /// S bit.
    pub s: bool,
    /// Chapter D: reset, tune request, song select, undefined commands.
    pub d: Option<ChapterD<'a>>,
    /// Chapter V: active sense.
    pub v: Option<ChapterV>,
    /// Chapter Q: sequencer state.
    pub q: Option<ChapterQ>,
    /// Chapter F: MIDI time code.
    pub f: Option<ChapterF>,
    /// Chapter X: System Exclusive.
    pub x: Option<ChapterX<'a>>,
    /// LENGTH: octets of the whole system journal.
    pub len: usize,
}

impl<'a> SystemJournal<'a> {
    /// Decodes a system journal at the start of `b`.
    pub fn parse(b: &'a [u8]) -> Result<SystemJournal<'a>, DecodeError> {
        let mut r = Reader::new(b);
        let h = r.u16("system journal header")?;
        let len = usize::from(h & 0x03FF);
        if len < 2 {
            return Err(DecodeError::invalid("system journal length", 0, len as u32));
        }
        let body = b
            .get(..len)
            .ok_or(DecodeError::truncated("system journal", b.len()))?;
        let mut sj = SystemJournal {
            s: h & 0x8000 != 0,
            len,
            ..SystemJournal::default()
        };
        let mut pos = 2;
        let overrun = |e: DecodeError, at: usize| {
            if e.is_truncated() {
                DecodeError::invalid("system chapter overruns length", at, len as u32)
            } else {
                e.shifted(at)
            }
        };
        if h & 0x4000 != 0 {
            let (d, n) = ChapterD::parse(&body[pos..]).map_err(|e| overrun(e, pos))?;
            sj.d = Some(d);
            pos += n;
        }
        if h & 0x2000 != 0 {
            sj.v = Some(ChapterV::parse(&body[pos..]).map_err(|e| overrun(e, pos))?);
            pos += ChapterV::LEN;
        }
        if h & 0x1000 != 0 {
            let (q, n) = ChapterQ::parse(&body[pos..]).map_err(|e| overrun(e, pos))?;
            sj.q = Some(q);
            pos += n;
        }
        if h & 0x0800 != 0 {
            let (f, n) = ChapterF::parse(&body[pos..]).map_err(|e| overrun(e, pos))?;
            sj.f = Some(f);
            pos += n;
        }
        if h & 0x0400 != 0 {
            sj.x = Some(ChapterX::parse(&body[pos..]).map_err(|e| overrun(e, pos))?);
        }
        Ok(sj)
    }
}

/// A decoded, checked channel journal: its header fields, and its chapters
/// through the accessors ([`ChannelJournal::p`] ... [`ChannelJournal::a`]),
/// which decode on demand from the checked bytes (the struct stays small, so
/// walking journals copies little).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelJournal<'a> {
    /// S bit.
    pub s: bool,
    /// Channel 0-15.
    pub channel: u8,
    /// H bit: Chapter C uses the enhanced coding (not understood here).
    pub h: bool,
    /// LENGTH: octets of the whole channel journal.
    pub len: usize,
    body: &'a [u8],
    /// Offset of each chapter (TOC order P C M W N E T A), 0 when absent.
    at: [u16; 8],
}

macro_rules! chapter_accessor {
    ($(#[$doc:meta])* $name:ident, $i:expr, $ty:ty, $parse:expr) => {
        $(#[$doc])*
        pub fn $name(&self) -> Option<$ty> {
            let o = usize::from(self.at[$i]);
            if o == 0 {
                return None;
            }
            $parse(&self.body[o..]).ok()
        }
    };
}

impl<'a> ChannelJournal<'a> {
    /// Decodes and checks a channel journal at the start of `b`. Chapters
    /// must fit in LENGTH; octets LENGTH leaves after the last chapter are
    /// skipped.
    pub fn parse(b: &'a [u8]) -> Result<ChannelJournal<'a>, DecodeError> {
        let h = b
            .get(..3)
            .ok_or(DecodeError::truncated("channel journal header", b.len()))?;
        let len = (usize::from(h[0] & 0x03) << 8) | usize::from(h[1]);
        if len < 3 {
            return Err(DecodeError::invalid(
                "channel journal length",
                0,
                len as u32,
            ));
        }
        let body = b
            .get(..len)
            .ok_or(DecodeError::truncated("channel journal", b.len()))?;
        let toc = h[2];
        let mut at = [0u16; 8];
        let mut pos = 3;
        let overrun = |e: DecodeError, at: usize| {
            if e.is_truncated() {
                DecodeError::invalid("channel chapter overruns length", at, len as u32)
            } else {
                e.shifted(at)
            }
        };
        for (i, at) in at.iter_mut().enumerate() {
            if toc & (0x80 >> i) == 0 {
                continue;
            }
            let rest = &body[pos..];
            let n = match i {
                0 => ChapterP::parse(rest).map(|_| ChapterP::LEN),
                1 => ChapterC::parse(rest).map(|c| c.1),
                2 => ChapterM::parse(rest).map(|c| c.1),
                3 => ChapterW::parse(rest).map(|_| ChapterW::LEN),
                4 => ChapterN::parse(rest).map(|c| c.1),
                5 => ChapterE::parse(rest).map(|c| c.1),
                6 => ChapterT::parse(rest).map(|_| ChapterT::LEN),
                _ => ChapterA::parse(rest).map(|c| c.1),
            }
            .map_err(|e| overrun(e, pos))?;
            *at = pos as u16;
            pos += n;
        }
        Ok(ChannelJournal {
            s: h[0] & 0x80 != 0,
            channel: (h[0] >> 3) & 0x0F,
            h: h[0] & 0x04 != 0,
            len,
            body,
            at,
        })
    }

    chapter_accessor!(
        /// Chapter P.
        p, 0, ChapterP, ChapterP::parse
    );
    chapter_accessor!(
        /// Chapter C.
        c, 1, ChapterC<'a>, |b| ChapterC::parse(b).map(|c| c.0)
    );
    chapter_accessor!(
        /// Chapter M.
        m, 2, ChapterM<'a>, |b| ChapterM::parse(b).map(|c| c.0)
    );
    chapter_accessor!(
        /// Chapter W.
        w, 3, ChapterW, ChapterW::parse
    );
    chapter_accessor!(
        /// Chapter N.
        n, 4, ChapterN<'a>, |b| ChapterN::parse(b).map(|c| c.0)
    );
    chapter_accessor!(
        /// Chapter E.
        e, 5, ChapterE<'a>, |b| ChapterE::parse(b).map(|c| c.0)
    );
    chapter_accessor!(
        /// Chapter T.
        t, 6, ChapterT, ChapterT::parse
    );
    chapter_accessor!(
        /// Chapter A.
        a, 7, ChapterA<'a>, |b| ChapterA::parse(b).map(|c| c.0)
    );
}

/// A decoded, fully checked recovery journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Journal<'a> {
    /// The journal header.
    pub header: JournalHeader,
    /// The system journal, when Y=1.
    pub system: Option<SystemJournal<'a>>,
    channels: &'a [u8],
    count: usize,
    /// Octets the whole journal takes.
    pub len: usize,
}

impl<'a> Journal<'a> {
    /// Decodes and checks a journal at the start of `b` (octets after it
    /// are ignored).
    pub fn parse(b: &'a [u8]) -> Result<Journal<'a>, DecodeError> {
        let header = JournalHeader::parse(b)?;
        let mut pos = JournalHeader::LEN;
        let system = if header.y {
            let sj = SystemJournal::parse(&b[pos..]).map_err(|e| e.shifted(pos))?;
            pos += sj.len;
            Some(sj)
        } else {
            None
        };
        let start = pos;
        let count = if header.a {
            usize::from(header.totchan) + 1
        } else {
            0
        };
        for _ in 0..count {
            let cj = ChannelJournal::parse(&b[pos..]).map_err(|e| e.shifted(pos))?;
            pos += cj.len;
        }
        Ok(Journal {
            header,
            system,
            channels: &b[start..pos],
            count,
            len: pos,
        })
    }

    /// The channel journals, in the order they were sent.
    pub fn channels(&self) -> impl Iterator<Item = ChannelJournal<'a>> + 'a {
        let mut rest = self.channels;
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let cj = ChannelJournal::parse(rest).ok()?;
            rest = &rest[cj.len..];
            Some(cj)
        })
    }

    /// Number of channel journals.
    pub fn channel_count(&self) -> usize {
        self.count
    }
}

/// Writes a structure whose 10-bit LENGTH is only known after its body:
/// reserves the header, then patches it.
#[derive(Debug)]
pub(crate) struct LengthPatch {
    start: usize,
}

impl LengthPatch {
    /// Reserves `header_len` octets at the end of `out`.
    pub(crate) fn begin(out: &mut Vec<u8>, header_len: usize) -> Self {
        let start = out.len();
        out.resize(start + header_len, 0);
        LengthPatch { start }
    }

    /// Octets written since `begin`, header included.
    pub(crate) fn len(&self, out: &[u8]) -> usize {
        out.len() - self.start
    }

    /// Patches a channel journal header. Returns false when LENGTH would not
    /// fit in 10 bits.
    pub(crate) fn finish_channel(self, out: &mut [u8], s: bool, channel: u8, toc: u8) -> bool {
        let len = self.len(out);
        if len > MAX_LENGTH {
            return false;
        }
        out[self.start] = (u8::from(s) << 7) | ((channel & 0x0F) << 3) | (len >> 8) as u8;
        out[self.start + 1] = len as u8;
        out[self.start + 2] = toc;
        true
    }

    /// Patches a system journal header (`toc` holds the D V Q F X bits in
    /// their places in the first octet, 0x40..0x04). Returns false when
    /// LENGTH would not fit.
    pub(crate) fn finish_system(self, out: &mut [u8], s: bool, toc: u8) -> bool {
        let len = self.len(out);
        if len > MAX_LENGTH {
            return false;
        }
        out[self.start] = (u8::from(s) << 7) | (toc & 0x7C) | (len >> 8) as u8;
        out[self.start + 1] = len as u8;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_5_3_journal() {
        let b = [
            0x20, 0x12, 0x36, 0x00, 0x08, 0x08, 0x01, 0x77, 0xBE, 0xD0, 0x08,
        ];
        let j = Journal::parse(&b).unwrap();
        assert_eq!(j.len, b.len());
        assert_eq!(j.header.checkpoint, 4662);
        assert!(!j.header.s && j.header.a && !j.header.y);
        let cjs: Vec<_> = j.channels().collect();
        assert_eq!(cjs.len(), 1);
        assert_eq!((cjs[0].channel, cjs[0].len, cjs[0].s), (0, 8, false));
        assert!(cjs[0].n().is_some() && cjs[0].c().is_none());
    }

    #[test]
    fn empty_journal_and_system_journal() {
        let j = Journal::parse(&[0x80, 0x00, 0x01]).unwrap();
        assert_eq!((j.len, j.channel_count()), (3, 0));
        // Y=1: system journal with chapter D (reset count 2) and V.
        let b = [0xC0, 0x00, 0x01, 0xE0, 0x05, 0xC0, 0x82, 0x81];
        let j = Journal::parse(&b).unwrap();
        let sj = j.system.unwrap();
        assert_eq!(sj.d.unwrap().reset.unwrap().value, 2);
        assert_eq!(sj.v.unwrap().count, 1);
    }

    #[test]
    fn lengths_are_checked() {
        // Channel journal LENGTH 5 but chapter N needs 5 octets after the 3-octet header.
        let b = [0x20, 0, 1, 0x80, 0x05, 0x08, 0x01, 0xF1, 0x3C, 0x40];
        assert!(!Journal::parse(&b).unwrap_err().is_truncated());
        // Truncated before the channel journal ends.
        let b = [0x20, 0, 1, 0x80, 0x08, 0x08, 0x01];
        assert!(Journal::parse(&b).unwrap_err().is_truncated());
        // LENGTH below the header size.
        assert!(
            !Journal::parse(&[0x20, 0, 1, 0x80, 0x02, 0x00])
                .unwrap_err()
                .is_truncated()
        );
    }
}
