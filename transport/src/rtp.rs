//! RTP-MIDI (RFC 6295): the payload codec and the recovery journal.
//!
//! The wire format, byte for byte, is `rtp-midi.md` §2-5 (with RFC 6295 and
//! RFC 4696 behind it):
//!
//! - [`header`]: the RTP header (tolerant decoder, M=0/PT=97 encoder);
//! - [`list`]: the MIDI command section: header, delta times, running
//!   status, SysEx segments; [`sysex`] holds whole SysEx messages and their
//!   reassembly;
//! - [`packet`]: a whole packet split into its parts;
//! - [`journal`]: the recovery journal, one file per chapter;
//! - [`send`]: [`SendStream`], which packetizes commands, builds journals
//!   from the checkpoint history, sends guard packets and trims on feedback;
//! - [`recv`]: [`RecvStream`], which detects gaps, repairs them from the
//!   journal before playing, reassembles SysEx and produces `RS` feedback;
//! - [`state`]: [`MidiState`], what a MIDI stream leaves behind, to compare
//!   "what the sender played" with "what the receiver played".
//!
//! Decoders never panic and never allocate; their errors
//! ([`DecodeError`]) are small `Copy` values that keep "truncated" apart
//! from "invalid". The two stream types are sans-IO: time comes in as
//! `now`, sequence numbers and SSRCs from the caller's configuration, and
//! nothing here reads a clock or a global random number generator.
//!
//! ```
//! use jam_core::{Micros, ShortMessage};
//! use jam_transport::clock::{ClockMap, Ticks};
//! use jam_transport::rtp::{RecvConfig, RecvMessage, RecvStream, SendConfig, SendStream};
//!
//! let mut tx = SendStream::new(SendConfig::new(0x1234_5678, 4660), Micros::ZERO);
//! let mut rx = RecvStream::new(RecvConfig::default());
//! let now = Micros::from_secs(1);
//! tx.push(Ticks::from_local(now), ShortMessage::note_on(0, 60, 100)).unwrap();
//! let mut buf = Vec::new();
//! while tx.poll_transmit(now, &mut buf).is_some() {
//!     rx.handle_packet(now, &ClockMap::IDENTITY, &buf).unwrap();
//! }
//! let e = rx.poll_event().unwrap();
//! assert_eq!(e.message, RecvMessage::Short(ShortMessage::note_on(0, 60, 100)));
//! assert_eq!(e.time, Ticks::from_local(now));
//! // Feedback for the sender's journal: an `RS` with this sequence number.
//! assert_eq!(rx.poll_feedback(now), Some(4660));
//! ```
//!
//! How the journal stays within the MTU is described in [`send`].
//!
//! Not here: the AppleMIDI session layer (`IN`/`OK`/`NO`/`BY`/`CK`/`RS`
//! packets, clock sync, sockets). It carries these streams' packets and
//! feedback; the streams never see a socket.

pub mod header;
pub mod journal;
pub mod list;
pub mod packet;
pub mod recv;
pub mod send;
pub mod state;
pub mod sysex;
#[cfg(test)]
pub(crate) mod vector_tests;

pub use header::RtpHeader;
pub use packet::Packet;
pub use recv::{RecvConfig, RecvError, RecvEvent, RecvMessage, RecvStats, RecvStream};
pub use send::{PushError, SendConfig, SendStats, SendStream};
pub use state::MidiState;
pub use sysex::{SysEx, SysExError, SysExRef};

/// Why bytes could not be decoded. Small and `Copy`: decoders return it on
/// the hot path. "The input ended too early" ([`DecodeError::Truncated`]) is
/// kept apart from "a field holds a value the format forbids"
/// ([`DecodeError::Invalid`]). Offsets count from the start of the structure
/// handed to the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a structure.
    #[error("truncated {what} at offset {offset}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Where the input ran out.
        offset: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {what} at offset {offset}: {value:#x}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Where the field is.
        offset: usize,
        /// The offending value.
        value: u32,
    },
}

impl DecodeError {
    pub(crate) const fn truncated(what: &'static str, offset: usize) -> Self {
        DecodeError::Truncated { what, offset }
    }

    pub(crate) const fn invalid(what: &'static str, offset: usize, value: u32) -> Self {
        DecodeError::Invalid {
            what,
            offset,
            value,
        }
    }

    /// True when more input would have been needed (as opposed to invalid
    /// input).
    pub const fn is_truncated(&self) -> bool {
        matches!(self, DecodeError::Truncated { .. })
    }

    /// The same error with its offset moved by `base` (for errors of a
    /// nested structure reported against the outer one).
    pub const fn shifted(self, base: usize) -> Self {
        match self {
            DecodeError::Truncated { what, offset } => DecodeError::Truncated {
                what,
                offset: offset + base,
            },
            DecodeError::Invalid {
                what,
                offset,
                value,
            } => DecodeError::Invalid {
                what,
                offset: offset + base,
                value,
            },
        }
    }
}

/// A bounds-checked cursor over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(DecodeError::truncated(what, self.buf.len())),
        }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}
