//! System Exclusive messages as a whole, and their reassembly from segments.
//!
//! A SysEx is `F0`, any number of data octets (below 0x80) and a final `F7`.
//! A source that dropped the final `F7` (the next status octet ended the
//! message) is kept as `F0 data..` without it; on the wire it is marked with
//! `F5` in place of `F7` (RFC 6295 §3.2). [`SysEx`] owns such a message,
//! [`SysExRef`] borrows one; both hold exactly these MIDI bytes, so a message
//! round-trips byte for byte.

use super::list::{Segment, SegmentKind};
use std::fmt;

/// Why bytes are not a [`SysEx`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SysExError {
    /// No bytes at all.
    #[error("empty system exclusive message")]
    Empty,
    /// The first octet is not F0.
    #[error("system exclusive message starts with {0:#04x} instead of 0xf0")]
    NoStart(u8),
    /// An octet other than the final F7 has its top bit set.
    #[error("system exclusive message has octet {value:#04x} at offset {offset}")]
    DataByte {
        /// Where the octet is.
        offset: usize,
        /// The octet.
        value: u8,
    },
}

/// A borrowed System Exclusive message: `F0 data.. F7`, or `F0 data..` when
/// the source dropped the final F7.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SysExRef<'a> {
    bytes: &'a [u8],
}

impl<'a> SysExRef<'a> {
    /// Validates `bytes` as a SysEx message.
    pub fn new(bytes: &'a [u8]) -> Result<Self, SysExError> {
        let (&first, rest) = bytes.split_first().ok_or(SysExError::Empty)?;
        if first != 0xF0 {
            return Err(SysExError::NoStart(first));
        }
        let body = match rest.last() {
            Some(0xF7) => &rest[..rest.len() - 1],
            _ => rest,
        };
        if let Some(i) = body.iter().position(|&b| b >= 0x80) {
            return Err(SysExError::DataByte {
                offset: i + 1,
                value: body[i],
            });
        }
        Ok(SysExRef { bytes })
    }

    /// The MIDI bytes, F0 first.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The data octets between F0 and the final F7 (if any).
    pub fn data(&self) -> &'a [u8] {
        let end = if self.is_terminated() {
            self.bytes.len() - 1
        } else {
            self.bytes.len()
        };
        &self.bytes[1..end]
    }

    /// False when the source dropped the final F7.
    pub fn is_terminated(&self) -> bool {
        self.bytes.len() >= 2 && self.bytes[self.bytes.len() - 1] == 0xF7
    }

    /// An owned copy.
    pub fn to_owned(&self) -> SysEx {
        SysEx {
            bytes: self.bytes.to_vec(),
        }
    }

    /// True for the Universal SysEx commands that RFC 6295 Appendix A.1
    /// counts as "Reset State": General MIDI System On (`F0 7E cc 09 01 F7`),
    /// General MIDI System Off (`.. 09 02 ..`), General MIDI 2 System On
    /// (`.. 09 03 ..`), and DLS On / Off (`.. 0A 01 ..` / `.. 0A 02 ..`).
    pub fn is_reset_state(&self) -> bool {
        is_reset_state_data(self.data()) && self.is_terminated()
    }
}

pub(crate) fn is_reset_state_data(data: &[u8]) -> bool {
    matches!(
        data,
        [0x7E, _, 0x09, 0x01..=0x03] | [0x7E, _, 0x0A, 0x01..=0x02]
    )
}

impl fmt::Debug for SysExRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SysEx(")?;
        for (i, b) in self.bytes.iter().enumerate() {
            if i > 0 {
                write!(f, " ")?;
            }
            write!(f, "{b:02X}")?;
        }
        write!(f, ")")
    }
}

/// An owned System Exclusive message; see [`SysExRef`] for the invariant.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SysEx {
    bytes: Vec<u8>,
}

impl SysEx {
    /// Validates and copies `bytes`.
    pub fn new(bytes: &[u8]) -> Result<Self, SysExError> {
        SysExRef::new(bytes).map(|s| s.to_owned())
    }

    /// Borrows it.
    pub fn as_ref(&self) -> SysExRef<'_> {
        SysExRef { bytes: &self.bytes }
    }

    /// The MIDI bytes, F0 first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The data octets between F0 and the final F7 (if any).
    pub fn data(&self) -> &[u8] {
        self.as_ref().data()
    }

    /// False when the source dropped the final F7.
    pub fn is_terminated(&self) -> bool {
        self.as_ref().is_terminated()
    }

    /// The bytes, consuming the message.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl fmt::Debug for SysEx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// What [`Reassembler::push`] made of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reassembly {
    /// A whole message is ready in [`Reassembler::message`].
    Complete,
    /// A segment was stored; more must follow.
    Pending,
    /// A partial message was thrown away (cancel, or a new start).
    Discarded,
    /// A continuation arrived with nothing in progress: ignored.
    Orphan,
}

/// Rebuilds SysEx messages from segments, across fields and packets.
/// A cancel or a new start discards what is in progress; so does
/// [`Reassembler::discard`], which a receiver calls when packets were lost.
#[derive(Debug, Default)]
pub(crate) struct Reassembler {
    buf: Vec<u8>,
    active: bool,
}

impl Reassembler {
    pub(crate) fn push(&mut self, seg: &Segment<'_>) -> Reassembly {
        use SegmentKind::*;
        match seg.kind {
            Complete | CompleteUnterminated => {
                self.buf.clear();
                self.buf.push(0xF0);
                self.buf.extend_from_slice(seg.data);
                if seg.kind == Complete {
                    self.buf.push(0xF7);
                }
                self.active = false;
                Reassembly::Complete
            }
            First => {
                let discarded = self.active;
                self.buf.clear();
                self.buf.push(0xF0);
                self.buf.extend_from_slice(seg.data);
                self.active = true;
                if discarded {
                    Reassembly::Discarded
                } else {
                    Reassembly::Pending
                }
            }
            Middle if self.active => {
                self.buf.extend_from_slice(seg.data);
                Reassembly::Pending
            }
            Last | LastUnterminated if self.active => {
                self.buf.extend_from_slice(seg.data);
                if seg.kind == Last {
                    self.buf.push(0xF7);
                }
                self.active = false;
                Reassembly::Complete
            }
            Cancel if self.active => {
                self.active = false;
                self.buf.clear();
                Reassembly::Discarded
            }
            Cancel => Reassembly::Pending,
            Middle | Last | LastUnterminated => Reassembly::Orphan,
        }
    }

    /// The message completed by the last [`Reassembler::push`].
    pub(crate) fn message(&self) -> &[u8] {
        &self.buf
    }

    /// Throws away a partial message; true if there was one.
    pub(crate) fn discard(&mut self) -> bool {
        let was = self.active;
        self.active = false;
        self.buf.clear();
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_messages() {
        assert!(SysExRef::new(&[0xF0, 1, 2, 0xF7]).unwrap().is_terminated());
        assert!(!SysExRef::new(&[0xF0, 1, 2]).unwrap().is_terminated());
        assert_eq!(SysExRef::new(&[0xF0, 0xF7]).unwrap().data(), &[] as &[u8]);
        assert_eq!(SysExRef::new(&[]), Err(SysExError::Empty));
        assert_eq!(SysExRef::new(&[0x90]), Err(SysExError::NoStart(0x90)));
        assert_eq!(
            SysExRef::new(&[0xF0, 1, 0xF8, 0xF7]),
            Err(SysExError::DataByte {
                offset: 2,
                value: 0xF8
            })
        );
        assert!(
            SysExRef::new(&[0xF0, 0x7E, 0x7F, 0x09, 0x01, 0xF7])
                .unwrap()
                .is_reset_state()
        );
        assert!(
            !SysExRef::new(&[0xF0, 0x7E, 0x7F, 0x09, 0x04, 0xF7])
                .unwrap()
                .is_reset_state()
        );
    }

    #[test]
    fn reassembles_and_discards() {
        let mut r = Reassembler::default();
        let seg = |kind, data| Segment { kind, data };
        assert_eq!(r.push(&seg(SegmentKind::First, &[1])), Reassembly::Pending);
        assert_eq!(r.push(&seg(SegmentKind::Middle, &[2])), Reassembly::Pending);
        assert_eq!(r.push(&seg(SegmentKind::Last, &[3])), Reassembly::Complete);
        assert_eq!(r.message(), &[0xF0, 1, 2, 3, 0xF7]);
        assert_eq!(r.push(&seg(SegmentKind::First, &[1])), Reassembly::Pending);
        assert_eq!(
            r.push(&seg(SegmentKind::Cancel, &[])),
            Reassembly::Discarded
        );
        assert_eq!(r.push(&seg(SegmentKind::Last, &[3])), Reassembly::Orphan);
        assert_eq!(r.push(&seg(SegmentKind::First, &[1])), Reassembly::Pending);
        assert!(r.discard());
        assert_eq!(
            r.push(&seg(SegmentKind::LastUnterminated, &[3])),
            Reassembly::Orphan
        );
    }
}
