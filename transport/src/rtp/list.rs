//! The MIDI command section: its header, delta times and the MIDI list
//! (RFC 6295 §3; `rtp-midi.md` §3).
//!
//! ```text
//! short (B=0):  B:1 J:1 Z:1 P:1 LEN:4
//! long  (B=1):  B:1 J:1 Z:1 P:1 LEN_hi:4 | LEN_lo:8
//! list := [delta0 if Z=1] cmd0 { delta cmd }* [delta]      (exactly LEN octets)
//! ```
//!
//! Delta times are 1-4 octets, seven value bits each, most significant group
//! first, bit 7 set on every octet but the last: the Standard MIDI File order,
//! **not** LEB128 (`rtp-midi.md` §8.2 lists decoders that got this wrong).
//! Deltas are cumulative: command `k` sits at `RTP timestamp + delta_0 + ... +
//! delta_k`. Non-minimal forms (`80 00`) are accepted; the encoder writes the
//! minimal form.
//!
//! Commands: every MIDI 1.0 command, with running status (a channel status
//! sets it, 0xF0-0xF7 clear it, real-time octets leave it alone; it starts
//! cleared in every list, so the first channel command carries its status).
//! System Exclusive travels whole (`F0 .. F7`) or as segments (first `F0 ..
//! F0`, middle `F7 .. F0`, last `F7 .. F7`, cancel `F7 F4`, and `F5` in place
//! of the final `F7` when the source dropped it); see [`SegmentKind`].
//!
//! [`ListDecoder`] walks a list without allocating; [`validate_list`] checks a
//! whole list first, so a receiver can refuse a broken packet before acting on
//! any of it. [`encode_short`], [`encode_delta`] and [`SectionHeader::encode`]
//! are the encoder's building blocks.

use super::DecodeError;
use jam_core::ShortMessage;
use jam_core::midi::data_len;

/// Longest MIDI list a command section can announce (12-bit LEN).
pub const MAX_LIST_LEN: usize = 4095;

/// Largest delta time (28 bits in four octets).
pub const MAX_DELTA: u32 = 0x0FFF_FFFF;

/// The 1- or 2-octet MIDI command section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SectionHeader {
    /// J: a recovery journal follows the MIDI list.
    pub journal: bool,
    /// Z: the list starts with a delta time for command 0.
    pub z: bool,
    /// P: "phantom" status (the source omitted the first status octet).
    /// Always 0 from our sender.
    pub phantom: bool,
    /// LEN: octets in the MIDI list.
    pub len: usize,
}

impl SectionHeader {
    /// Octets the header takes for a list of `len` octets (B=0 up to 15).
    pub const fn encoded_len(len: usize) -> usize {
        if len <= 15 { 1 } else { 2 }
    }

    /// Appends the header, in the short form when LEN fits. `len` above
    /// [`MAX_LIST_LEN`] is a caller bug and is clamped.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let flags =
            (u8::from(self.journal) << 6) | (u8::from(self.z) << 5) | (u8::from(self.phantom) << 4);
        let len = self.len.min(MAX_LIST_LEN);
        debug_assert!(self.len <= MAX_LIST_LEN, "list longer than 4095 octets");
        if len <= 15 {
            out.push(flags | len as u8);
        } else {
            out.push(0x80 | flags | (len >> 8) as u8);
            out.push(len as u8);
        }
    }

    /// Decodes the header at the start of an RTP payload; returns it and its
    /// size in octets.
    pub fn decode(payload: &[u8]) -> Result<(SectionHeader, usize), DecodeError> {
        let b0 = *payload
            .first()
            .ok_or(DecodeError::truncated("command section header", 0))?;
        let (len, size) = if b0 & 0x80 != 0 {
            let b1 = *payload
                .get(1)
                .ok_or(DecodeError::truncated("command section header", 1))?;
            ((usize::from(b0 & 0x0F) << 8) | usize::from(b1), 2)
        } else {
            (usize::from(b0 & 0x0F), 1)
        };
        let h = SectionHeader {
            journal: b0 & 0x40 != 0,
            z: b0 & 0x20 != 0,
            phantom: b0 & 0x10 != 0,
            len,
        };
        Ok((h, size))
    }
}

/// Octets of the minimal encoding of delta time `v` (1-4).
pub const fn delta_len(v: u32) -> usize {
    if v < 0x80 {
        1
    } else if v < 0x4000 {
        2
    } else if v < 0x20_0000 {
        3
    } else {
        4
    }
}

/// Appends delta time `v` in its minimal form. Values above [`MAX_DELTA`]
/// are a caller bug and are clamped.
pub fn encode_delta(out: &mut Vec<u8>, v: u32) {
    debug_assert!(v <= MAX_DELTA, "delta {v} needs more than 28 bits");
    let v = v.min(MAX_DELTA);
    let n = delta_len(v);
    for i in (1..n).rev() {
        out.push(0x80 | ((v >> (7 * i)) & 0x7F) as u8);
    }
    out.push((v & 0x7F) as u8);
}

/// Decodes a delta time at `buf[pos..]`; returns the value and its length.
pub fn decode_delta(buf: &[u8], pos: usize) -> Result<(u32, usize), DecodeError> {
    let mut v = 0u32;
    for i in 0..4 {
        let o = *buf
            .get(pos + i)
            .ok_or(DecodeError::truncated("delta time", pos + i))?;
        v = (v << 7) | u32::from(o & 0x7F);
        if o & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(DecodeError::invalid(
        "delta time longer than 4 octets",
        pos,
        v,
    ))
}

/// How a System Exclusive command field relates to the whole SysEx
/// (RFC 6295 §3.2; `rtp-midi.md` §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// `F0 data F7`: a whole SysEx in one field.
    Complete,
    /// `F0 data F5`: a whole SysEx whose source dropped the final F7.
    CompleteUnterminated,
    /// `F0 data F0`: the first segment of a longer SysEx.
    First,
    /// `F7 data F0`: a middle segment.
    Middle,
    /// `F7 data F7`: the last segment.
    Last,
    /// `F7 data F5`: the last segment of a SysEx whose source dropped F7.
    LastUnterminated,
    /// `F7 F4` (or any field ending in F4): abort the SysEx in progress.
    Cancel,
}

impl SegmentKind {
    /// The octet that opens a field of this kind.
    pub const fn head(self) -> u8 {
        match self {
            SegmentKind::Complete | SegmentKind::CompleteUnterminated | SegmentKind::First => 0xF0,
            _ => 0xF7,
        }
    }

    /// The octet that closes a field of this kind.
    pub const fn tail(self) -> u8 {
        match self {
            SegmentKind::Complete | SegmentKind::Last => 0xF7,
            SegmentKind::CompleteUnterminated | SegmentKind::LastUnterminated => 0xF5,
            SegmentKind::First | SegmentKind::Middle => 0xF0,
            SegmentKind::Cancel => 0xF4,
        }
    }

    fn from_ends(head: u8, tail: u8) -> Option<SegmentKind> {
        Some(match (head, tail) {
            (_, 0xF4) => SegmentKind::Cancel,
            (0xF0, 0xF7) => SegmentKind::Complete,
            (0xF0, 0xF5) => SegmentKind::CompleteUnterminated,
            (0xF0, 0xF0) => SegmentKind::First,
            (0xF7, 0xF0) => SegmentKind::Middle,
            (0xF7, 0xF7) => SegmentKind::Last,
            (0xF7, 0xF5) => SegmentKind::LastUnterminated,
            _ => return None,
        })
    }
}

/// One SysEx command field: its kind and the data octets between its head
/// and tail (all below 0x80).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment<'a> {
    /// Which part of a SysEx this field is.
    pub kind: SegmentKind,
    /// Data octets (no head, no tail).
    pub data: &'a [u8],
}

impl Segment<'_> {
    /// Octets the field takes: head + data + tail.
    pub fn encoded_len(&self) -> usize {
        self.data.len() + 2
    }

    /// Appends the field.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind.head());
        out.extend_from_slice(self.data);
        out.push(self.kind.tail());
    }
}

/// One decoded command field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command<'a> {
    /// Any MIDI 1.0 command except System Exclusive (running status already
    /// resolved).
    Short(ShortMessage),
    /// A System Exclusive command or segment.
    SysEx(Segment<'a>),
}

/// A command and its offset from the packet's RTP timestamp (the sum of all
/// delta times up to and including its own), in 100 µs ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimedCommand<'a> {
    /// Ticks after the RTP timestamp.
    pub offset: u64,
    /// The command.
    pub command: Command<'a>,
}

/// Iterates over the commands of a MIDI list without allocating. Yields an
/// error at most once, then stops.
#[derive(Debug, Clone)]
pub struct ListDecoder<'a> {
    list: &'a [u8],
    pos: usize,
    need_delta: bool,
    running: u8,
    offset: u64,
}

impl<'a> ListDecoder<'a> {
    /// A decoder over `list` (exactly LEN octets); `z` is the header's Z bit.
    pub fn new(list: &'a [u8], z: bool) -> Self {
        ListDecoder {
            list,
            pos: 0,
            need_delta: z,
            running: 0,
            offset: 0,
        }
    }

    #[inline(always)]
    fn next_command(&mut self) -> Result<Option<TimedCommand<'a>>, DecodeError> {
        let list = self.list;
        let mut pos = self.pos;
        if pos >= list.len() {
            return Ok(None);
        }
        if self.need_delta {
            let b = list[pos];
            if b < 0x80 {
                self.offset += u64::from(b);
                pos += 1;
            } else {
                let (d, n) = decode_delta(list, pos)?;
                self.offset += u64::from(d);
                pos += n;
            }
            self.pos = pos;
            if pos >= list.len() {
                return Ok(None); // time padding: a list may end with a delta
            }
        }
        self.need_delta = true;
        // Hot path: a channel message, with its status or running status.
        let b = list[pos];
        let (status, start) = if (0x80..0xF0).contains(&b) {
            self.running = b;
            (b, pos + 1)
        } else if b < 0x80 && self.running != 0 {
            (self.running, pos)
        } else {
            return self.other_command(pos).map(Some);
        };
        let n = if status & 0xE0 == 0xC0 { 1 } else { 2 };
        let Some(data) = list.get(start..start + n) else {
            return Err(DecodeError::truncated("midi command", list.len()));
        };
        let (a, b2) = (data[0], if n == 2 { data[1] } else { 0 });
        if (a | b2) & 0x80 != 0 {
            let (i, v) = if a & 0x80 != 0 { (0, a) } else { (1, b2) };
            return Err(DecodeError::invalid(
                "midi data octet",
                start + i,
                u32::from(v),
            ));
        }
        self.pos = start + n;
        Ok(Some(TimedCommand {
            offset: self.offset,
            command: Command::Short(channel_message(status, a, b2)),
        }))
    }

    /// Everything but channel messages: real-time, SysEx, system common,
    /// and a data octet with no running status.
    #[cold]
    #[inline(never)]
    fn other_command(&mut self, at: usize) -> Result<TimedCommand<'a>, DecodeError> {
        let b = self.list[at];
        let command = if b >= 0xF8 {
            self.pos = at + 1;
            Command::Short(short(&[b], at)?)
        } else if b == 0xF0 || b == 0xF7 {
            self.running = 0;
            let rest = &self.list[at + 1..];
            let n = rest
                .iter()
                .position(|&o| o >= 0x80)
                .ok_or(DecodeError::truncated(
                    "system exclusive field",
                    self.list.len(),
                ))?;
            let tail = rest[n];
            let kind = SegmentKind::from_ends(b, tail).ok_or(DecodeError::invalid(
                "system exclusive terminator",
                at + 1 + n,
                u32::from(tail),
            ))?;
            self.pos = at + n + 2;
            Command::SysEx(Segment {
                kind,
                data: &rest[..n],
            })
        } else if b >= 0xF0 {
            self.running = 0;
            let n = data_len(b).unwrap_or(0);
            let data = self
                .list
                .get(at + 1..at + 1 + n)
                .ok_or(DecodeError::truncated("midi command", self.list.len()))?;
            if let Some(i) = data.iter().position(|&d| d >= 0x80) {
                return Err(DecodeError::invalid(
                    "midi data octet",
                    at + 1 + i,
                    u32::from(data[i]),
                ));
            }
            let mut bytes = [b, 0, 0];
            bytes[1..=n].copy_from_slice(data);
            self.pos = at + 1 + n;
            Command::Short(short(&bytes[..=n], at)?)
        } else {
            return Err(DecodeError::invalid(
                "data octet without running status",
                at,
                u32::from(b),
            ));
        };
        Ok(TimedCommand {
            offset: self.offset,
            command,
        })
    }
}

/// A channel message from its status and data octets (all checked).
#[inline(always)]
fn channel_message(status: u8, a: u8, b: u8) -> ShortMessage {
    let ch = status & 0x0F;
    match status & 0xF0 {
        0x80 => ShortMessage::note_off(ch, a, b),
        0x90 => ShortMessage::note_on(ch, a, b),
        0xA0 => ShortMessage::poly_pressure(ch, a, b),
        0xB0 => ShortMessage::control_change(ch, a, b),
        0xC0 => ShortMessage::program_change(ch, a),
        0xD0 => ShortMessage::channel_pressure(ch, a),
        _ => ShortMessage::pitch_bend(ch, (u16::from(b) << 7) | u16::from(a)),
    }
}

#[inline]
fn short(bytes: &[u8], at: usize) -> Result<ShortMessage, DecodeError> {
    ShortMessage::try_from_slice(bytes)
        .map_err(|_| DecodeError::invalid("midi command", at, u32::from(bytes[0])))
}

impl<'a> Iterator for ListDecoder<'a> {
    type Item = Result<TimedCommand<'a>, DecodeError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_command() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                // Stop for good: nothing after a broken command is trusted.
                self.pos = self.list.len();
                self.need_delta = false;
                Some(Err(e))
            }
        }
    }
}

/// Checks a whole MIDI list; returns the number of commands.
pub fn validate_list(list: &[u8], z: bool) -> Result<usize, DecodeError> {
    let mut n = 0;
    for c in ListDecoder::new(list, z) {
        c?;
        n += 1;
    }
    Ok(n)
}

/// Octets [`encode_short`] would append for `msg` given the running status.
pub fn short_len(msg: &ShortMessage, running: u8, use_running_status: bool) -> usize {
    let s = msg.as_slice();
    if use_running_status && s[0] < 0xF0 && s[0] == running {
        s.len() - 1
    } else {
        s.len()
    }
}

/// Appends `msg`, omitting its status octet when `use_running_status` is set
/// and it equals the running status, and updates `running` the way a
/// decoder will (channel status sets it, system common clears it, real-time
/// leaves it). Start every list with `running = 0`.
pub fn encode_short(
    out: &mut Vec<u8>,
    msg: &ShortMessage,
    running: &mut u8,
    use_running_status: bool,
) {
    let s = msg.as_slice();
    let status = s[0];
    if use_running_status && status < 0xF0 && status == *running {
        out.extend_from_slice(&s[1..]);
    } else {
        out.extend_from_slice(s);
    }
    if status < 0xF0 {
        *running = status;
    } else if status < 0xF8 {
        *running = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn commands(list: &[u8], z: bool) -> Vec<(u64, Vec<u8>)> {
        ListDecoder::new(list, z)
            .map(|c| {
                let c = c.unwrap();
                let bytes = match c.command {
                    Command::Short(m) => m.as_slice().to_vec(),
                    Command::SysEx(s) => {
                        let mut v = Vec::new();
                        s.encode(&mut v);
                        v
                    }
                };
                (c.offset, bytes)
            })
            .collect()
    }

    #[test]
    fn delta_examples_from_the_sheet() {
        for (v, enc) in [
            (5u32, &[0x05][..]),
            (240, &[0x81, 0x70]),
            (10_000, &[0xCE, 0x10]),
            (0x4000, &[0x81, 0x80, 0x00]),
            (MAX_DELTA, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            encode_delta(&mut out, v);
            assert_eq!(out, enc, "{v}");
            assert_eq!(decode_delta(enc, 0).unwrap(), (v, enc.len()));
        }
        assert_eq!(
            decode_delta(&[0x80, 0x00], 0).unwrap(),
            (0, 2),
            "non-minimal form"
        );
        assert!(decode_delta(&[0x81], 0).unwrap_err().is_truncated());
        assert!(
            !decode_delta(&[0x81, 0x81, 0x81, 0x81, 0x01], 0)
                .unwrap_err()
                .is_truncated()
        );
    }

    #[test]
    fn z_list_with_running_status_example_5_2() {
        let list = [0x05, 0x90, 0x3C, 0x64, 0x81, 0x70, 0x40, 0x5A];
        assert_eq!(
            commands(&list, true),
            vec![(5, vec![0x90, 0x3C, 0x64]), (245, vec![0x90, 0x40, 0x5A])]
        );
    }

    #[test]
    fn running_status_survives_real_time_and_dies_at_system_common() {
        // Note On, delta, clock, delta, running-status data: allowed.
        let list = [0x90, 60, 1, 0x00, 0xF8, 0x00, 61, 2];
        let c = commands(&list, false);
        assert_eq!(c[2].1, vec![0x90, 61, 2]);
        // After a song select the running status is gone.
        let list = [0x90, 60, 1, 0x00, 0xF3, 5, 0x00, 61, 2];
        let err = validate_list(&list, false).unwrap_err();
        assert!(!err.is_truncated());
    }

    #[test]
    fn first_channel_command_must_carry_its_status() {
        assert!(validate_list(&[0x3C, 0x40], false).is_err());
    }

    #[test]
    fn sysex_fields_of_every_kind() {
        let list = [
            0xF0, 1, 2, 0xF7, 0, 0xF0, 3, 0xF0, 0, 0xF7, 4, 0xF0, 0, 0xF7, 5, 0xF7, 0, 0xF7, 0xF4,
            0, 0xF0, 6, 0xF5, 0, 0xF7, 0xF5,
        ];
        let kinds: Vec<SegmentKind> = ListDecoder::new(&list, false)
            .map(|c| match c.unwrap().command {
                Command::SysEx(s) => s.kind,
                Command::Short(m) => panic!("unexpected {m:?}"),
            })
            .collect();
        use SegmentKind::*;
        assert_eq!(
            kinds,
            vec![
                Complete,
                First,
                Middle,
                Last,
                Cancel,
                CompleteUnterminated,
                LastUnterminated
            ]
        );
    }

    #[test]
    fn list_may_end_with_a_delta_and_be_a_lone_delta() {
        assert_eq!(commands(&[0x90, 60, 1, 0x10], false).len(), 1);
        assert_eq!(commands(&[0x10], true).len(), 0);
    }

    #[test]
    fn truncation_is_not_invalidity() {
        assert!(
            validate_list(&[0x90, 60], false)
                .unwrap_err()
                .is_truncated()
        );
        assert!(
            validate_list(&[0xF0, 1, 2], false)
                .unwrap_err()
                .is_truncated()
        );
        assert!(
            !validate_list(&[0xF0, 1, 0xF8], false)
                .unwrap_err()
                .is_truncated()
        );
        assert!(
            !validate_list(&[0x90, 60, 0x80], false)
                .unwrap_err()
                .is_truncated()
        );
    }

    #[test]
    fn section_header_both_forms() {
        for (h, enc) in [
            (
                SectionHeader {
                    journal: false,
                    z: false,
                    phantom: false,
                    len: 3,
                },
                vec![0x03],
            ),
            (
                SectionHeader {
                    journal: true,
                    z: true,
                    phantom: false,
                    len: 8,
                },
                vec![0x68],
            ),
            (
                SectionHeader {
                    journal: true,
                    z: false,
                    phantom: true,
                    len: 300,
                },
                vec![0xD1, 0x2C],
            ),
        ] {
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(out, enc);
            assert_eq!(SectionHeader::decode(&enc).unwrap(), (h, enc.len()));
        }
        // A long header may carry a short length.
        assert_eq!(SectionHeader::decode(&[0x80, 0x03]).unwrap().0.len, 3);
    }

    proptest! {
        #[test]
        fn delta_round_trips(v in 0u32..=MAX_DELTA) {
            let mut out = Vec::new();
            encode_delta(&mut out, v);
            prop_assert_eq!(out.len(), delta_len(v));
            prop_assert_eq!(decode_delta(&out, 0).unwrap(), (v, out.len()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(list in proptest::collection::vec(any::<u8>(), 0..64), z in any::<bool>()) {
            let _ = validate_list(&list, z);
            for c in ListDecoder::new(&list, z) { let _ = c; }
        }
    }
}
