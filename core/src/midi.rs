//! [`ShortMessage`]: one MIDI 1.0 message other than System Exclusive.
//!
//! MIDI 1.0 messages are a status byte followed by zero, one or two data
//! bytes (MIDI 1.0 Detailed Specification, table "Summary of status bytes");
//! only System Exclusive is variable-length. Keeping the short ones inline in
//! four bytes lets them travel through fixed-capacity rings between the audio
//! thread and the network worker without ever allocating.

use std::fmt;

/// Why bytes are not a valid [`ShortMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MidiError {
    /// No bytes at all.
    #[error("empty midi message")]
    Empty,
    /// The first byte is a data byte (below 0x80), not a status byte.
    #[error("midi message starts with data byte {0:#04x} instead of a status byte")]
    NoStatus(u8),
    /// 0xF0 / 0xF7 (System Exclusive) are not short messages.
    #[error("status {0:#04x} starts a system exclusive message, which is not a short message")]
    SysEx(u8),
    /// The status needs a different number of data bytes.
    #[error("status {status:#04x} needs {expected} data bytes, got {got}")]
    Length {
        /// The status byte.
        status: u8,
        /// Data bytes the status requires.
        expected: usize,
        /// Data bytes supplied.
        got: usize,
    },
    /// A data byte has its top bit set.
    #[error("data byte {0:#04x} has its top bit set")]
    DataByte(u8),
}

/// A complete MIDI 1.0 message other than System Exclusive: channel voice and
/// mode messages, system common (except SysEx) and system real-time.
///
/// Invariant: `bytes[..len]` is a status byte followed by exactly the number
/// of data bytes that status takes, each below 0x80; unused bytes are zero, so
/// derived equality and hashing compare only the message.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShortMessage {
    bytes: [u8; 3],
    len: u8,
}

/// Data bytes that follow a status byte, or `None` for System Exclusive
/// (0xF0, 0xF7) and for data bytes (below 0x80).
///
/// The undefined system common statuses 0xF4 and 0xF5 and the undefined
/// real-time statuses 0xF9 and 0xFD take no data bytes.
pub const fn data_len(status: u8) -> Option<usize> {
    match status {
        0x80..=0xBF | 0xE0..=0xEF => Some(2),
        0xC0..=0xDF => Some(1),
        0xF1 | 0xF3 => Some(1),
        0xF2 => Some(2),
        0xF0 | 0xF7 => None,
        0xF4..=0xF6 | 0xF8..=0xFF => Some(0),
        _ => None,
    }
}

impl ShortMessage {
    /// Validates and copies a complete message.
    pub fn try_from_slice(b: &[u8]) -> Result<Self, MidiError> {
        let (&status, data) = b.split_first().ok_or(MidiError::Empty)?;
        if status < 0x80 {
            return Err(MidiError::NoStatus(status));
        }
        let expected = data_len(status).ok_or(MidiError::SysEx(status))?;
        if data.len() != expected {
            return Err(MidiError::Length {
                status,
                expected,
                got: data.len(),
            });
        }
        if let Some(&d) = data.iter().find(|&&d| d >= 0x80) {
            return Err(MidiError::DataByte(d));
        }
        let mut bytes = [0u8; 3];
        bytes[..b.len()].copy_from_slice(b);
        Ok(ShortMessage {
            bytes,
            len: b.len() as u8,
        })
    }

    /// Note On. Out-of-range arguments are masked into range.
    pub const fn note_on(channel: u8, key: u8, velocity: u8) -> Self {
        Self::channel3(0x90, channel, key, velocity)
    }

    /// Note Off. Out-of-range arguments are masked into range.
    pub const fn note_off(channel: u8, key: u8, velocity: u8) -> Self {
        Self::channel3(0x80, channel, key, velocity)
    }

    /// Control Change. Out-of-range arguments are masked into range.
    pub const fn control_change(channel: u8, controller: u8, value: u8) -> Self {
        Self::channel3(0xB0, channel, controller, value)
    }

    /// Program Change. Out-of-range arguments are masked into range.
    pub const fn program_change(channel: u8, program: u8) -> Self {
        ShortMessage {
            bytes: [0xC0 | (channel & 0x0F), program & 0x7F, 0],
            len: 2,
        }
    }

    /// Channel Pressure (aftertouch). Out-of-range arguments are masked.
    pub const fn channel_pressure(channel: u8, pressure: u8) -> Self {
        ShortMessage {
            bytes: [0xD0 | (channel & 0x0F), pressure & 0x7F, 0],
            len: 2,
        }
    }

    /// Polyphonic key pressure. Out-of-range arguments are masked.
    pub const fn poly_pressure(channel: u8, key: u8, pressure: u8) -> Self {
        Self::channel3(0xA0, channel, key, pressure)
    }

    /// Pitch bend with a 14-bit value (8192 = centre). Masked into range.
    pub const fn pitch_bend(channel: u8, value: u16) -> Self {
        Self::channel3(
            0xE0,
            channel,
            (value & 0x7F) as u8,
            ((value >> 7) & 0x7F) as u8,
        )
    }

    const fn channel3(kind: u8, channel: u8, a: u8, b: u8) -> Self {
        ShortMessage {
            bytes: [kind | (channel & 0x0F), a & 0x7F, b & 0x7F],
            len: 3,
        }
    }

    /// The message bytes (status first).
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The status byte.
    pub const fn status(&self) -> u8 {
        self.bytes[0]
    }

    /// The channel (0-15) of a channel message, `None` for system messages.
    pub const fn channel(&self) -> Option<u8> {
        if self.bytes[0] < 0xF0 {
            Some(self.bytes[0] & 0x0F)
        } else {
            None
        }
    }

    /// First data byte (0 when absent).
    pub const fn data1(&self) -> u8 {
        self.bytes[1]
    }

    /// Second data byte (0 when absent).
    pub const fn data2(&self) -> u8 {
        self.bytes[2]
    }

    /// True for Note On with a non-zero velocity.
    pub const fn is_note_on(&self) -> bool {
        self.bytes[0] & 0xF0 == 0x90 && self.bytes[2] != 0
    }

    /// True for Note Off, including Note On with velocity 0 (which means
    /// Note Off everywhere in MIDI 1.0).
    pub const fn is_note_off(&self) -> bool {
        let kind = self.bytes[0] & 0xF0;
        kind == 0x80 || (kind == 0x90 && self.bytes[2] == 0)
    }

    /// The same message moved to another channel (system messages are
    /// returned unchanged).
    pub const fn with_channel(mut self, channel: u8) -> Self {
        if self.bytes[0] < 0xF0 {
            self.bytes[0] = (self.bytes[0] & 0xF0) | (channel & 0x0F);
        }
        self
    }

    /// True for System Real-Time messages (0xF8-0xFF), which may appear
    /// anywhere in a MIDI stream, even inside another message.
    pub const fn is_realtime(&self) -> bool {
        self.bytes[0] >= 0xF8
    }
}

impl TryFrom<&[u8]> for ShortMessage {
    type Error = MidiError;
    fn try_from(b: &[u8]) -> Result<Self, MidiError> {
        Self::try_from_slice(b)
    }
}

impl fmt::Debug for ShortMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShortMessage(")?;
        for (i, b) in self.as_slice().iter().enumerate() {
            if i > 0 {
                write!(f, " ")?;
            }
            write!(f, "{b:02X}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_what_is_not_a_short_message() {
        assert_eq!(ShortMessage::try_from_slice(&[]), Err(MidiError::Empty));
        assert_eq!(
            ShortMessage::try_from_slice(&[0x3C]),
            Err(MidiError::NoStatus(0x3C))
        );
        assert_eq!(
            ShortMessage::try_from_slice(&[0xF0, 1, 0xF7]),
            Err(MidiError::SysEx(0xF0))
        );
        assert_eq!(
            ShortMessage::try_from_slice(&[0x90, 60]),
            Err(MidiError::Length {
                status: 0x90,
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            ShortMessage::try_from_slice(&[0x90, 60, 0x80]),
            Err(MidiError::DataByte(0x80))
        );
    }

    #[test]
    fn constructors_mask_and_classify() {
        let m = ShortMessage::note_on(17, 200, 100);
        assert_eq!(m.as_slice(), &[0x91, 72, 100]);
        assert!(m.is_note_on());
        assert!(ShortMessage::note_on(0, 60, 0).is_note_off());
        assert_eq!(ShortMessage::pitch_bend(2, 8192).as_slice(), &[0xE2, 0, 64]);
        assert_eq!(
            ShortMessage::try_from_slice(&[0xF8]).unwrap().channel(),
            None
        );
        assert!(ShortMessage::try_from_slice(&[0xFE]).unwrap().is_realtime());
        assert_eq!(m.with_channel(5).channel(), Some(5));
    }

    proptest! {
        #[test]
        fn any_bytes_either_parse_exactly_or_error(b in proptest::collection::vec(any::<u8>(), 0..5)) {
            if let Ok(m) = ShortMessage::try_from_slice(&b) {
                prop_assert_eq!(m.as_slice(), &b[..]);
            }
        }
    }
}
