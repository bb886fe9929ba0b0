//! AppleMIDI session commands on the wire, and the demultiplexer that tells
//! them apart from RTP on a shared port.
//!
//! Every session command starts with the signature `FF FF` and a two-octet
//! command code; all integers are big-endian (`rtp-midi.md` §6.1, Apple's
//! "MIDI Network Driver Protocol"):
//!
//! | command | code | layout after signature and code |
//! |---|---|---|
//! | `IN` invitation | `49 4E` | version:32 (=2) · initiator token:32 · sender SSRC:32 · name (UTF-8, NUL-terminated, optional) |
//! | `OK` accept | `4F 4B` | as `IN` (token echoed; the responder's SSRC and name) |
//! | `NO` reject | `4E 4F` | as `IN` (usually without a name) |
//! | `BY` end | `42 59` | version:32 · token:32 · sender SSRC:32 |
//! | `CK` clock sync | `43 4B` | sender SSRC:32 · count:8 · padding:24 · ts1:64 · ts2:64 · ts3:64 |
//! | `RS` receiver feedback | `52 53` | sender SSRC:32 · seq:16 · reserved:16 |
//! | `RL` bitrate limit | `52 4C` | sender SSRC:32 · limit:32 |
//!
//! Decoding is liberal where real peers differ and strict where the meaning
//! would change: names may be absent, long, non-ASCII or invalid UTF-8
//! (decoded lossily) and may lack their terminating NUL; the `RS` low 16 bits
//! and the `CK` padding are ignored (`rtp-midi.md` §6.4, pitfall 6); trailing
//! octets after a fixed-size command are ignored; but a version other than 2
//! or a `CK` count above 2 is an error. An unknown `FF FF` command decodes to
//! [`Command::Unknown`] so a session can ignore it instead of failing
//! (§6.6). Errors keep a short datagram ([`DecodeError::Truncated`]) apart
//! from one that is long enough but wrong.
//!
//! ```
//! use jam_transport::applemidi::packet::{classify, Command, DatagramKind, Invitation};
//!
//! let bytes = [0xFF, 0xFF, 0x49, 0x4E, 0, 0, 0, 2, 0x0B, 0xAD, 0xF0, 0x0D,
//!              0x12, 0x34, 0x56, 0x78, b'j', b'a', b'm', 0];
//! assert_eq!(classify(&bytes), DatagramKind::Command);
//! let cmd = Command::decode(&bytes).unwrap();
//! assert_eq!(
//!     cmd,
//!     Command::Invitation(Invitation { token: 0x0BAD_F00D, ssrc: 0x1234_5678, name: Some("jam".into()) })
//! );
//! assert_eq!(cmd.to_vec(), bytes);
//! ```

use std::fmt;

/// The two octets every session command starts with.
pub const SIGNATURE: [u8; 2] = [0xFF, 0xFF];

/// The only protocol version AppleMIDI defines, carried in `IN`/`OK`/`NO`/`BY`.
pub const PROTOCOL_VERSION: u32 = 2;

/// Command code of `IN` (invitation).
pub const CODE_INVITATION: [u8; 2] = *b"IN";
/// Command code of `OK` (invitation accepted).
pub const CODE_ACCEPT: [u8; 2] = *b"OK";
/// Command code of `NO` (invitation rejected).
pub const CODE_REJECT: [u8; 2] = *b"NO";
/// Command code of `BY` (end of session).
pub const CODE_END: [u8; 2] = *b"BY";
/// Command code of `CK` (clock synchronisation).
pub const CODE_CLOCK_SYNC: [u8; 2] = *b"CK";
/// Command code of `RS` (receiver feedback).
pub const CODE_FEEDBACK: [u8; 2] = *b"RS";
/// Command code of `RL` (bitrate limit).
pub const CODE_BITRATE_LIMIT: [u8; 2] = *b"RL";

/// Octets of `IN`/`OK`/`NO` before the optional name, and of a whole `BY`.
pub const INVITATION_HEADER_LEN: usize = 16;
/// Octets of a `CK` command.
pub const CLOCK_SYNC_LEN: usize = 36;
/// Octets of an `RS` command.
pub const FEEDBACK_LEN: usize = 12;
/// Octets of an `RL` command.
pub const BITRATE_LIMIT_LEN: usize = 12;

/// What a datagram on an AppleMIDI port is, judged from its first octets
/// (`rtp-midi.md` §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatagramKind {
    /// Starts with `FF FF`: a session command (decode it with
    /// [`Command::decode`]; it may still be truncated or invalid).
    Command,
    /// An RTP version 2 header (`b0 & 0xC0 == 0x80`) of at least 12 octets.
    Rtp,
    /// Neither: drop it.
    Garbage,
}

/// Octets in an RTP header without CSRCs; shorter RTP-looking datagrams are
/// classified as garbage because they cannot even name their SSRC.
pub const RTP_HEADER_LEN: usize = 12;

/// Classifies a datagram received on a control or data port.
pub fn classify(bytes: &[u8]) -> DatagramKind {
    match bytes {
        [0xFF, 0xFF, ..] => DatagramKind::Command,
        [b0, ..] if b0 & 0xC0 == 0x80 && bytes.len() >= RTP_HEADER_LEN => DatagramKind::Rtp,
        _ => DatagramKind::Garbage,
    }
}

/// The SSRC of an RTP packet (octets 8-11), if the datagram is long enough.
pub fn rtp_ssrc(bytes: &[u8]) -> Option<u32> {
    read_u32(bytes, 8)
}

/// The fields of `IN`, `OK` and `NO`: the initiator's token, the sender's
/// own SSRC and its session name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Invitation {
    /// Initiator token: chosen by the initiator, echoed by the responder.
    pub token: u32,
    /// The sender's SSRC (its RTP SSRC for this session).
    pub ssrc: u32,
    /// The sender's session name. `None` when the command ends after the
    /// SSRC. Encoded up to its first NUL character, then a NUL terminator.
    pub name: Option<String>,
}

/// The fields of `BY`. The token is carried but must not be used to
/// validate the command: macOS sends 0 (`rtp-midi.md` pitfall 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct End {
    /// Initiator token (0 from macOS; informational only).
    pub token: u32,
    /// The sender's SSRC.
    pub ssrc: u32,
}

/// A `CK` clock-synchronisation message (`rtp-midi.md` §6.3).
///
/// `count` says how many of the three timestamps are valid, minus one: the
/// initiator sends count 0 with `timestamps[0]`, the responder answers count
/// 1 adding `timestamps[1]`, the initiator closes with count 2 adding
/// `timestamps[2]`. Stamps are 100 µs ticks of the sender's session clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockSync {
    /// The sender's SSRC.
    pub ssrc: u32,
    /// 0, 1 or 2.
    pub count: u8,
    /// ts1 (initiator), ts2 (responder), ts3 (initiator).
    pub timestamps: [u64; 3],
}

/// An `RS` receiver-feedback message: the sender of this command has
/// received (or repaired) the peer's RTP stream up to `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Feedback {
    /// The sender's SSRC.
    pub ssrc: u32,
    /// RTP sequence number, carried in the upper 16 bits of a 32-bit field;
    /// the low 16 bits are sent as zero and ignored (pitfall 6).
    pub seq: u16,
}

/// An `RL` message: the sender asks its peer to keep its rate under `limit`
/// (bits per second assumed; Wireshark calls it "bitrate limit").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BitrateLimit {
    /// The sender's SSRC.
    pub ssrc: u32,
    /// The requested limit.
    pub limit: u32,
}

/// One AppleMIDI session command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// `IN`: an invitation to join a session.
    Invitation(Invitation),
    /// `OK`: the invitation is accepted.
    Accept(Invitation),
    /// `NO`: the invitation is rejected.
    Reject(Invitation),
    /// `BY`: the session ends.
    End(End),
    /// `CK`: one step of a clock-synchronisation exchange.
    ClockSync(ClockSync),
    /// `RS`: receiver feedback.
    Feedback(Feedback),
    /// `RL`: bitrate limit.
    BitrateLimit(BitrateLimit),
    /// An `FF FF` command whose code we do not know; ignore it.
    Unknown {
        /// The two-octet command code.
        code: [u8; 2],
    },
}

/// Why a datagram is not a valid session command.
///
/// Small and `Copy` so the receive path can count errors without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The datagram ends before the command does.
    #[error("session command truncated: {got} octets, at least {needed} needed")]
    Truncated {
        /// Octets needed for the shortest valid form.
        needed: usize,
        /// Octets received.
        got: usize,
    },
    /// The datagram does not start with `FF FF`.
    #[error("not a session command: starts with {0:#06x} instead of 0xffff")]
    BadSignature(u16),
    /// `IN`/`OK`/`NO`/`BY` with a protocol version other than 2.
    #[error("unsupported protocol version {version} in {code} (only 2 exists)")]
    UnsupportedVersion {
        /// The command code.
        code: CodeName,
        /// The version received.
        version: u32,
    },
    /// A `CK` whose count is not 0, 1 or 2.
    #[error("clock sync count {0} out of range (0..=2)")]
    BadClockSyncCount(u8),
}

impl DecodeError {
    /// True when more octets could have made the command valid (the
    /// datagram was cut short), false when its content is wrong.
    pub fn is_truncated(&self) -> bool {
        matches!(self, DecodeError::Truncated { .. })
    }
}

/// A two-octet command code, shown as its ASCII letters in messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeName(pub [u8; 2]);

impl fmt::Display for CodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            if b.is_ascii_graphic() {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodeName({self})")
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

fn need(bytes: &[u8], needed: usize) -> Result<(), DecodeError> {
    if bytes.len() < needed {
        Err(DecodeError::Truncated {
            needed,
            got: bytes.len(),
        })
    } else {
        Ok(())
    }
}

/// Reads version, token and SSRC of `IN`/`OK`/`NO`/`BY`, checking the version.
fn decode_header(bytes: &[u8], code: [u8; 2]) -> Result<(u32, u32), DecodeError> {
    need(bytes, INVITATION_HEADER_LEN)?;
    let version = read_u32(bytes, 4).unwrap_or_default();
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            code: CodeName(code),
            version,
        });
    }
    let token = read_u32(bytes, 8).unwrap_or_default();
    let ssrc = read_u32(bytes, 12).unwrap_or_default();
    Ok((token, ssrc))
}

fn decode_invitation(bytes: &[u8], code: [u8; 2]) -> Result<Invitation, DecodeError> {
    let (token, ssrc) = decode_header(bytes, code)?;
    let rest = &bytes[INVITATION_HEADER_LEN..];
    let name = if rest.is_empty() {
        None
    } else {
        // Up to the first NUL, or to the end when a peer forgot it.
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    Ok(Invitation { token, ssrc, name })
}

impl Command {
    /// Decodes one session command from a whole datagram.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        need(bytes, 4)?;
        if bytes[..2] != SIGNATURE {
            return Err(DecodeError::BadSignature(u16::from_be_bytes([
                bytes[0], bytes[1],
            ])));
        }
        let code = [bytes[2], bytes[3]];
        Ok(match code {
            CODE_INVITATION => Command::Invitation(decode_invitation(bytes, code)?),
            CODE_ACCEPT => Command::Accept(decode_invitation(bytes, code)?),
            CODE_REJECT => Command::Reject(decode_invitation(bytes, code)?),
            CODE_END => {
                let (token, ssrc) = decode_header(bytes, code)?;
                Command::End(End { token, ssrc })
            }
            CODE_CLOCK_SYNC => {
                need(bytes, CLOCK_SYNC_LEN)?;
                let count = bytes[8];
                if count > 2 {
                    return Err(DecodeError::BadClockSyncCount(count));
                }
                Command::ClockSync(ClockSync {
                    ssrc: read_u32(bytes, 4).unwrap_or_default(),
                    count,
                    timestamps: [
                        read_u64(bytes, 12).unwrap_or_default(),
                        read_u64(bytes, 20).unwrap_or_default(),
                        read_u64(bytes, 28).unwrap_or_default(),
                    ],
                })
            }
            CODE_FEEDBACK => {
                need(bytes, FEEDBACK_LEN)?;
                Command::Feedback(Feedback {
                    ssrc: read_u32(bytes, 4).unwrap_or_default(),
                    seq: u16::from_be_bytes([bytes[8], bytes[9]]),
                })
            }
            CODE_BITRATE_LIMIT => {
                need(bytes, BITRATE_LIMIT_LEN)?;
                Command::BitrateLimit(BitrateLimit {
                    ssrc: read_u32(bytes, 4).unwrap_or_default(),
                    limit: read_u32(bytes, 8).unwrap_or_default(),
                })
            }
            code => Command::Unknown { code },
        })
    }

    /// The two-octet command code.
    pub fn code(&self) -> [u8; 2] {
        match self {
            Command::Invitation(_) => CODE_INVITATION,
            Command::Accept(_) => CODE_ACCEPT,
            Command::Reject(_) => CODE_REJECT,
            Command::End(_) => CODE_END,
            Command::ClockSync(_) => CODE_CLOCK_SYNC,
            Command::Feedback(_) => CODE_FEEDBACK,
            Command::BitrateLimit(_) => CODE_BITRATE_LIMIT,
            Command::Unknown { code } => *code,
        }
    }

    /// The sender SSRC the command carries (`None` for unknown commands).
    pub fn ssrc(&self) -> Option<u32> {
        match self {
            Command::Invitation(i) | Command::Accept(i) | Command::Reject(i) => Some(i.ssrc),
            Command::End(e) => Some(e.ssrc),
            Command::ClockSync(c) => Some(c.ssrc),
            Command::Feedback(f) => Some(f.ssrc),
            Command::BitrateLimit(l) => Some(l.ssrc),
            Command::Unknown { .. } => None,
        }
    }

    /// Appends the encoded command to `out`. Encoding cannot fail.
    ///
    /// An unknown command encodes as its signature and code only. A name is
    /// written up to its first NUL character, then terminated with NUL.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&SIGNATURE);
        out.extend_from_slice(&self.code());
        let header = |out: &mut Vec<u8>, token: u32, ssrc: u32| {
            out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
            out.extend_from_slice(&token.to_be_bytes());
            out.extend_from_slice(&ssrc.to_be_bytes());
        };
        match self {
            Command::Invitation(i) | Command::Accept(i) | Command::Reject(i) => {
                header(out, i.token, i.ssrc);
                if let Some(name) = &i.name {
                    let bytes = name.as_bytes();
                    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                    out.extend_from_slice(&bytes[..end]);
                    out.push(0);
                }
            }
            Command::End(e) => header(out, e.token, e.ssrc),
            Command::ClockSync(c) => {
                out.extend_from_slice(&c.ssrc.to_be_bytes());
                out.extend_from_slice(&[c.count, 0, 0, 0]);
                for t in c.timestamps {
                    out.extend_from_slice(&t.to_be_bytes());
                }
            }
            Command::Feedback(f) => {
                out.extend_from_slice(&f.ssrc.to_be_bytes());
                out.extend_from_slice(&f.seq.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Command::BitrateLimit(l) => {
                out.extend_from_slice(&l.ssrc.to_be_bytes());
                out.extend_from_slice(&l.limit.to_be_bytes());
            }
            Command::Unknown { .. } => {}
        }
    }

    /// The encoded command in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CLOCK_SYNC_LEN);
        self.encode(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses the hex notation of `rtp-midi.md` §5.5.
    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    const SI: u32 = 0x1234_5678;
    const SR: u32 = 0x9ABC_DEF0;
    const TOKEN: u32 = 0x0BAD_F00D;

    fn check(wire: &str, cmd: Command) {
        let bytes = hex(wire);
        assert_eq!(classify(&bytes), DatagramKind::Command);
        assert_eq!(Command::decode(&bytes), Ok(cmd.clone()), "decoding {wire}");
        assert_eq!(cmd.to_vec(), bytes, "encoding {cmd:?}");
    }

    #[test]
    fn sheet_vector_in() {
        check(
            "FF FF 49 4E 00 00 00 02 0B AD F0 0D 12 34 56 78 6A 61 6D 00",
            Command::Invitation(Invitation {
                token: TOKEN,
                ssrc: SI,
                name: Some("jam".into()),
            }),
        );
    }

    #[test]
    fn sheet_vector_ok() {
        check(
            "FF FF 4F 4B 00 00 00 02 0B AD F0 0D 9A BC DE F0 70 65 65 72 00",
            Command::Accept(Invitation {
                token: TOKEN,
                ssrc: SR,
                name: Some("peer".into()),
            }),
        );
    }

    #[test]
    fn sheet_vector_no() {
        check(
            "FF FF 4E 4F 00 00 00 02 0B AD F0 0D 9A BC DE F0",
            Command::Reject(Invitation {
                token: TOKEN,
                ssrc: SR,
                name: None,
            }),
        );
    }

    #[test]
    fn sheet_vectors_ck0_ck1_ck2() {
        check(
            "FF FF 43 4B 12 34 56 78 00 00 00 00 00 00 00 00 00 0F 42 40
             00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
            Command::ClockSync(ClockSync {
                ssrc: SI,
                count: 0,
                timestamps: [1_000_000, 0, 0],
            }),
        );
        check(
            "FF FF 43 4B 9A BC DE F0 01 00 00 00 00 00 00 00 00 0F 42 40
             00 00 00 00 00 4C 4B 54 00 00 00 00 00 00 00 00",
            Command::ClockSync(ClockSync {
                ssrc: SR,
                count: 1,
                timestamps: [1_000_000, 5_000_020, 0],
            }),
        );
        check(
            "FF FF 43 4B 12 34 56 78 02 00 00 00 00 00 00 00 00 0F 42 40
             00 00 00 00 00 4C 4B 54 00 00 00 00 00 0F 42 68",
            Command::ClockSync(ClockSync {
                ssrc: SI,
                count: 2,
                timestamps: [1_000_000, 5_000_020, 1_000_040],
            }),
        );
    }

    #[test]
    fn sheet_vector_rs() {
        check(
            "FF FF 52 53 9A BC DE F0 12 38 00 00",
            Command::Feedback(Feedback {
                ssrc: SR,
                seq: 4664,
            }),
        );
    }

    #[test]
    fn sheet_vector_rl() {
        check(
            "FF FF 52 4C 9A BC DE F0 00 00 7A 12",
            Command::BitrateLimit(BitrateLimit {
                ssrc: SR,
                limit: 31_250,
            }),
        );
    }

    #[test]
    fn sheet_vector_by() {
        check(
            "FF FF 42 59 00 00 00 02 0B AD F0 0D 12 34 56 78",
            Command::End(End {
                token: TOKEN,
                ssrc: SI,
            }),
        );
    }

    #[test]
    fn rs_low_half_is_ignored_on_receive() {
        // Pitfall 6: a captured RS carried non-zero octets there.
        let cmd = Command::decode(&hex("FF FF 52 53 9A BC DE F0 12 38 AB CD")).unwrap();
        assert_eq!(
            cmd,
            Command::Feedback(Feedback {
                ssrc: SR,
                seq: 0x1238
            })
        );
    }

    #[test]
    fn rtpmidid_style_rs_reads_the_upper_half() {
        // rtpmidid writes the sequence number as a plain 32-bit integer; we
        // follow Wireshark and read the upper half, which is 0 then.
        let cmd = Command::decode(&hex("FF FF 52 53 9A BC DE F0 00 00 12 38")).unwrap();
        assert_eq!(cmd, Command::Feedback(Feedback { ssrc: SR, seq: 0 }));
    }

    #[test]
    fn by_with_token_zero_decodes() {
        // macOS ends sessions with token 0 (pitfall 7).
        let cmd = Command::decode(&hex("FF FF 42 59 00 00 00 02 00 00 00 00 12 34 56 78")).unwrap();
        assert_eq!(cmd, Command::End(End { token: 0, ssrc: SI }));
    }

    #[test]
    fn names_are_optional_long_non_ascii_and_lossy() {
        let long = "h".repeat(300) + "/client-128";
        for name in [String::new(), "Mike\u{2019}s Mac".to_string(), long] {
            let cmd = Command::Invitation(Invitation {
                token: 1,
                ssrc: 2,
                name: Some(name.clone()),
            });
            assert_eq!(Command::decode(&cmd.to_vec()).unwrap(), cmd);
        }
        // Invalid UTF-8 is replaced, not refused.
        let mut bytes = hex("FF FF 49 4E 00 00 00 02 00 00 00 01 00 00 00 02");
        bytes.extend_from_slice(&[b'a', 0xFF, b'b', 0]);
        let Command::Invitation(inv) = Command::decode(&bytes).unwrap() else {
            panic!("not an invitation")
        };
        assert_eq!(inv.name.as_deref(), Some("a\u{FFFD}b"));
        // A missing NUL terminator still gives the name.
        let mut bytes = hex("FF FF 4F 4B 00 00 00 02 00 00 00 01 00 00 00 02");
        bytes.extend_from_slice(b"peer");
        let Command::Accept(inv) = Command::decode(&bytes).unwrap() else {
            panic!("not an accept")
        };
        assert_eq!(inv.name.as_deref(), Some("peer"));
    }

    #[test]
    fn names_stop_at_the_first_nul_both_ways() {
        let cmd = Command::Invitation(Invitation {
            token: 1,
            ssrc: 2,
            name: Some("ab\0cd".into()),
        });
        let bytes = cmd.to_vec();
        assert_eq!(&bytes[16..], b"ab\0");
        let mut bytes = bytes;
        bytes.extend_from_slice(b"junk\0");
        let Command::Invitation(inv) = Command::decode(&bytes).unwrap() else {
            panic!("not an invitation")
        };
        assert_eq!(inv.name.as_deref(), Some("ab"));
    }

    #[test]
    fn unknown_commands_decode_as_unknown() {
        assert_eq!(
            Command::decode(&hex("FF FF 5A 5A 01 02 03")),
            Ok(Command::Unknown { code: *b"ZZ" })
        );
        assert_eq!(
            Command::decode(&hex("FF FF 00 00")),
            Ok(Command::Unknown { code: [0, 0] })
        );
    }

    #[test]
    fn truncated_and_invalid_are_kept_apart() {
        let by = hex("FF FF 42 59 00 00 00 02 0B AD F0 0D 12 34 56 78");
        for len in 0..by.len() {
            let e = Command::decode(&by[..len]).unwrap_err();
            assert!(e.is_truncated(), "{len}: {e}");
        }
        let mut v3 = by.clone();
        v3[7] = 3;
        let e = Command::decode(&v3).unwrap_err();
        assert_eq!(
            e,
            DecodeError::UnsupportedVersion {
                code: CodeName(*b"BY"),
                version: 3
            }
        );
        assert!(!e.is_truncated());
        assert_eq!(
            e.to_string(),
            "unsupported protocol version 3 in BY (only 2 exists)"
        );
        let mut ck = hex("FF FF 43 4B 12 34 56 78 00 00 00 00 00 00 00 00 00 0F 42 40
             00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
        ck[8] = 3;
        assert_eq!(Command::decode(&ck), Err(DecodeError::BadClockSyncCount(3)));
        assert_eq!(
            Command::decode(&ck[..35]),
            Err(DecodeError::Truncated {
                needed: 36,
                got: 35
            })
        );
        assert_eq!(
            Command::decode(&hex("80 61 00 01")),
            Err(DecodeError::BadSignature(0x8061))
        );
    }

    #[test]
    fn classify_tells_commands_rtp_and_garbage_apart() {
        assert_eq!(classify(&[0xFF, 0xFF]), DatagramKind::Command);
        let rtp = hex("80 61 12 38 00 00 27 10 12 34 56 78 03 90 3C 64");
        assert_eq!(classify(&rtp), DatagramKind::Rtp);
        assert_eq!(rtp_ssrc(&rtp), Some(0x1234_5678));
        // M=1 still counts as RTP (pitfall 1).
        assert_eq!(
            classify(&hex("80 E1 00 00 00 00 00 00 00 00 00 01")),
            DatagramKind::Rtp
        );
        assert_eq!(classify(&rtp[..11]), DatagramKind::Garbage);
        assert_eq!(classify(&[]), DatagramKind::Garbage);
        assert_eq!(classify(&[0xFF]), DatagramKind::Garbage);
        assert_eq!(
            classify(&hex("40 61 00 00 00 00 00 00 00 00 00 01")),
            DatagramKind::Garbage
        );
        assert_eq!(
            classify(&hex("C0 61 00 00 00 00 00 00 00 00 00 01")),
            DatagramKind::Garbage
        );
    }

    fn name() -> impl Strategy<Value = Option<String>> + Clone {
        proptest::option::of("[^\u{0}]{0,80}")
    }

    fn command() -> impl Strategy<Value = Command> {
        let inv = (any::<u32>(), any::<u32>(), name()).prop_map(|(token, ssrc, name)| Invitation {
            token,
            ssrc,
            name,
        });
        prop_oneof![
            inv.clone().prop_map(Command::Invitation),
            inv.clone().prop_map(Command::Accept),
            inv.prop_map(Command::Reject),
            (any::<u32>(), any::<u32>())
                .prop_map(|(token, ssrc)| Command::End(End { token, ssrc })),
            (any::<u32>(), 0u8..=2, any::<[u64; 3]>()).prop_map(|(ssrc, count, timestamps)| {
                Command::ClockSync(ClockSync {
                    ssrc,
                    count,
                    timestamps,
                })
            }),
            (any::<u32>(), any::<u16>())
                .prop_map(|(ssrc, seq)| Command::Feedback(Feedback { ssrc, seq })),
            (any::<u32>(), any::<u32>())
                .prop_map(|(ssrc, limit)| Command::BitrateLimit(BitrateLimit { ssrc, limit })),
            any::<[u8; 2]>()
                .prop_filter("known codes", |c| Command::decode(&[
                    0xFF, 0xFF, c[0], c[1]
                ])
                .is_ok_and(|d| matches!(d, Command::Unknown { .. })))
                .prop_map(|code| Command::Unknown { code }),
        ]
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(cmd in command()) {
            let bytes = cmd.to_vec();
            prop_assert_eq!(classify(&bytes), DatagramKind::Command);
            prop_assert_eq!(Command::decode(&bytes), Ok(cmd));
        }

        #[test]
        fn decode_never_panics_and_reencodes_stably(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = classify(&bytes);
            if let Ok(cmd) = Command::decode(&bytes) {
                let again = cmd.to_vec();
                prop_assert_eq!(Command::decode(&again), Ok(cmd));
            }
        }

        #[test]
        fn decode_of_commands_with_a_signature_never_panics(
            code in any::<[u8; 2]>(),
            rest in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut bytes = vec![0xFF, 0xFF, code[0], code[1]];
            bytes.extend_from_slice(&rest);
            let _ = Command::decode(&bytes);
        }
    }
}
