//! A whole RTP-MIDI packet: RTP header, MIDI command section, journal
//! (RFC 6295 §2; `rtp-midi.md` §2-3).
//!
//! [`Packet::decode`] splits a packet into its parts without looking inside
//! the list or the journal; [`Packet::commands`] and [`Packet::journal`]
//! decode those on demand, and [`Packet::validate`] checks everything.

use super::DecodeError;
use super::header::RtpHeader;
use super::journal::Journal;
use super::list::{ListDecoder, SectionHeader, validate_list};

/// A decoded RTP-MIDI packet, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The RTP header.
    pub header: RtpHeader,
    /// The MIDI command section header.
    pub section: SectionHeader,
    /// The MIDI list (exactly LEN octets).
    pub list: &'a [u8],
    /// Everything after the list when J=1 (the journal and anything after
    /// it), `None` when J=0.
    pub journal_bytes: Option<&'a [u8]>,
}

impl<'a> Packet<'a> {
    /// Splits a datagram into header, list and journal octets. Octets after
    /// the list of a J=0 packet are ignored.
    pub fn decode(datagram: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let (header, payload) = RtpHeader::decode(datagram)?;
        let base = datagram.len() - payload.len();
        let (section, hlen) = SectionHeader::decode(payload).map_err(|e| e.shifted(base))?;
        let list = payload
            .get(hlen..hlen + section.len)
            .ok_or(DecodeError::truncated("midi list", datagram.len()))?;
        let rest = &payload[hlen + section.len..];
        let journal_bytes = if section.journal {
            if rest.is_empty() {
                return Err(DecodeError::truncated("journal", datagram.len()));
            }
            Some(rest)
        } else {
            None
        };
        Ok(Packet {
            header,
            section,
            list,
            journal_bytes,
        })
    }

    /// The commands of the MIDI list.
    pub fn commands(&self) -> ListDecoder<'a> {
        ListDecoder::new(self.list, self.section.z)
    }

    /// The journal, when J=1.
    pub fn journal(&self) -> Option<Result<Journal<'a>, DecodeError>> {
        self.journal_bytes.map(Journal::parse)
    }

    /// Decodes a datagram and checks its list and journal.
    pub fn validate(datagram: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let p = Packet::decode(datagram)?;
        validate_list(p.list, p.section.z)?;
        if let Some(j) = p.journal() {
            j?;
        }
        Ok(p)
    }
}
