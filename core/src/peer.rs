//! [`PeerId`]: the stable identity of a participant.

use std::fmt;
use std::str::FromStr;

/// A participant's stable identity: 16 random bytes, shown as 32 hex digits.
///
/// It survives reconnects and address changes (unlike an RTP SSRC, which is
/// per stream), so the session document, captures and the engine all key
/// participants by it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerId(pub [u8; 16]);

impl PeerId {
    /// A fresh random id from the given random number generator (seeded in
    /// tests, the operating system's generator otherwise).
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        PeerId(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A short form (first 8 hex digits) for logs and tables.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// Why a string is not a [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePeerIdError {
    /// The string does not have exactly 32 characters.
    #[error("peer id must be 32 hex digits, got {0} characters")]
    Length(usize),
    /// A character is not a hex digit.
    #[error("peer id has a non-hex character at position {0}")]
    NotHex(usize),
}

impl FromStr for PeerId {
    type Err = ParsePeerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return Err(ParsePeerIdError::Length(s.chars().count()));
        }
        let mut out = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(ParsePeerIdError::NotHex(2 * i))?;
            let lo = hex_val(pair[1]).ok_or(ParsePeerIdError::NotHex(2 * i + 1))?;
            out[i] = (hi << 4) | lo;
        }
        Ok(PeerId(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_strings_with_the_position() {
        assert_eq!("abc".parse::<PeerId>(), Err(ParsePeerIdError::Length(3)));
        let s = format!("{}g", "0".repeat(31));
        assert_eq!(s.parse::<PeerId>(), Err(ParsePeerIdError::NotHex(31)));
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(b in any::<[u8; 16]>()) {
            let id = PeerId(b);
            prop_assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
            prop_assert_eq!(id.short().len(), 8);
        }
    }
}
