//! The RTP header (RFC 3550 §5.1; `rtp-midi.md` §2).
//!
//! ```text
//! V:2 P:1 X:1 CC:4 | M:1 PT:7 | SEQ:16 | TIMESTAMP:32 | SSRC:32
//! ```
//!
//! AppleMIDI peers always send the plain 12-octet form with V=2, P=X=CC=0,
//! PT=97. The encoder writes exactly that, with M=0 (**interop**: rtpMIDI for
//! Windows was reported to drop packets with M=1). The decoder is tolerant the
//! way RFC 3550 asks: it skips `4*CC` CSRC octets, a header extension and
//! trailing padding, and it masks the M bit off the payload type.

use super::{DecodeError, Reader};

/// The payload type AppleMIDI uses for RTP-MIDI (a dynamic type, fixed by
/// convention because AppleMIDI has no SDP).
pub const PAYLOAD_TYPE: u8 = 97;

/// The fields of an RTP header that RTP-MIDI uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpHeader {
    /// The M bit. Sent as 0; ignored on receive (`rtp-midi.md` §8.1).
    pub marker: bool,
    /// Payload type (7 bits), 97 for AppleMIDI.
    pub payload_type: u8,
    /// Sequence number, +1 per packet of a stream.
    pub sequence: u16,
    /// Low 32 bits of the sender's 100 µs session clock.
    pub timestamp: u32,
    /// Synchronisation source: identifies the stream.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Octets in the header as we send it.
    pub const LEN: usize = 12;

    /// A header as our sender writes it: M=0, PT=97.
    pub const fn new(sequence: u16, timestamp: u32, ssrc: u32) -> Self {
        RtpHeader {
            marker: false,
            payload_type: PAYLOAD_TYPE,
            sequence,
            timestamp,
            ssrc,
        }
    }

    /// Appends the 12-octet header (V=2, no padding, extension or CSRC).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0x80);
        out.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7F));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
    }

    /// Decodes the header of a whole RTP packet and returns it with the
    /// payload (CSRC list, extension and padding removed).
    pub fn decode(packet: &[u8]) -> Result<(RtpHeader, &[u8]), DecodeError> {
        // Fast path: the plain form every AppleMIDI peer sends.
        if let Some((h, payload)) = packet.split_first_chunk::<12>()
            && h[0] == 0x80
        {
            let header = RtpHeader {
                marker: h[1] & 0x80 != 0,
                payload_type: h[1] & 0x7F,
                sequence: u16::from_be_bytes([h[2], h[3]]),
                timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            };
            return Ok((header, payload));
        }
        let mut r = Reader::new(packet);
        let b0 = r.u8("rtp header")?;
        if b0 >> 6 != 2 {
            return Err(DecodeError::invalid("rtp version", 0, u32::from(b0 >> 6)));
        }
        let b1 = r.u8("rtp header")?;
        let sequence = r.u16("rtp header")?;
        let timestamp = r.u32("rtp header")?;
        let ssrc = r.u32("rtp header")?;
        let csrc_count = usize::from(b0 & 0x0F);
        r.take(4 * csrc_count, "rtp csrc list")?;
        if b0 & 0x10 != 0 {
            let _profile = r.u16("rtp header extension")?;
            let words = usize::from(r.u16("rtp header extension")?);
            r.take(4 * words, "rtp header extension")?;
        }
        let start = r.pos();
        let mut end = packet.len();
        if b0 & 0x20 != 0 {
            let pad = usize::from(packet[end - 1]);
            if pad == 0 || pad > end - start {
                return Err(DecodeError::invalid(
                    "rtp padding count",
                    end - 1,
                    pad as u32,
                ));
            }
            end -= pad;
        }
        let header = RtpHeader {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7F,
            sequence,
            timestamp,
            ssrc,
        };
        Ok((header, &packet[start..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_applemidi_form_and_decodes_it_back() {
        let h = RtpHeader::new(0x1234, 10_000, 0x1234_5678);
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(
            out,
            [
                0x80, 0x61, 0x12, 0x34, 0, 0, 0x27, 0x10, 0x12, 0x34, 0x56, 0x78
            ]
        );
        out.extend_from_slice(&[0x03, 0x90, 0x3C, 0x64]);
        let (back, payload) = RtpHeader::decode(&out).unwrap();
        assert_eq!(back, h);
        assert_eq!(payload, &[0x03, 0x90, 0x3C, 0x64]);
    }

    #[test]
    fn masks_the_marker_bit() {
        let p = [0x80, 0xE1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0x40];
        let (h, payload) = RtpHeader::decode(&p).unwrap();
        assert!(h.marker);
        assert_eq!(h.payload_type, 97);
        assert_eq!(payload, &[0x40]);
    }

    #[test]
    fn skips_csrc_extension_and_padding() {
        let mut p = vec![0x80 | 0x20 | 0x10 | 2, 0x61, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]); // two CSRCs
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // one-word extension
        p.extend_from_slice(&[0x01, 0xAA]); // payload
        p.extend_from_slice(&[0, 0, 3]); // three octets of padding
        let (_, payload) = RtpHeader::decode(&p).unwrap();
        assert_eq!(payload, &[0x01, 0xAA]);
    }

    #[test]
    fn keeps_truncated_apart_from_invalid() {
        assert!(
            RtpHeader::decode(&[0x80, 0x61, 0])
                .unwrap_err()
                .is_truncated()
        );
        let bad_version = [0x40, 0x61, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        assert!(!RtpHeader::decode(&bad_version).unwrap_err().is_truncated());
        let bad_padding = [0xA0, 0x61, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0x00, 9];
        assert!(!RtpHeader::decode(&bad_padding).unwrap_err().is_truncated());
    }
}
