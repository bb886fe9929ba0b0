//! Small byte codec shared by the header, the records and the agent
//! metadata: big-endian integers, LEB128 varints and length-prefixed byte
//! strings. Writing is [`jam_core::bytes::ByteWriter`]'s; decoding is here
//! and never panics; it reports "ran out of bytes" apart from "bytes are
//! there but wrong", and refuses varints that are not minimally encoded.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodecError {
    /// The input ended before the value did.
    #[error("input ends before the value does")]
    Truncated,
    /// The bytes are present but not a valid value.
    #[error("{0}")]
    Invalid(&'static str),
}

/// The writer is jam-core's, shared with the player-model formats.
pub(crate) use jam_core::bytes::{ByteWriter as Enc, var_len};

/// Reads encoded values from a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Dec<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Dec<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Dec { rest: b }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < n {
            return Err(CodecError::Truncated);
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn var(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let byte = self.u8()?;
            let part = u64::from(byte & 0x7f);
            if i == 9 && part > 1 {
                return Err(CodecError::Invalid("varint overflows 64 bits"));
            }
            v |= part << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(CodecError::Invalid("varint is not minimally encoded"));
                }
                return Ok(v);
            }
        }
        Err(CodecError::Invalid("varint longer than 10 bytes"))
    }

    pub(crate) fn svar(&mut self) -> Result<i64, CodecError> {
        let u = self.var()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.var()?;
        let n = usize::try_from(n).map_err(|_| CodecError::Truncated)?;
        self.take(n)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CodecError::Invalid("text is not UTF-8"))
    }

    pub(crate) fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError::Invalid("flag byte is neither 0 nor 1")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(v in any::<u64>(), s in any::<i64>()) {
            let mut e = Enc::new();
            e.var(v).svar(s);
            prop_assert_eq!(e.buf.len(), var_len(v) + var_len(((s << 1) ^ (s >> 63)) as u64));
            let mut d = Dec::new(&e.buf);
            prop_assert_eq!(d.var().unwrap(), v);
            prop_assert_eq!(d.svar().unwrap(), s);
            prop_assert!(d.is_empty());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Dec::new(&b);
            let _ = d.var();
            let _ = d.str();
            let _ = d.bytes();
            let _ = d.u64();
        }
    }

    #[test]
    fn rejects_overlong_and_unterminated_varints() {
        assert_eq!(Dec::new(&[0x80]).var(), Err(CodecError::Truncated));
        assert!(matches!(
            Dec::new(&[0x80, 0x00]).var(),
            Err(CodecError::Invalid(_))
        ));
        assert!(matches!(
            Dec::new(&[0xff; 11]).var(),
            Err(CodecError::Invalid(_))
        ));
        assert_eq!(Dec::new(&[0xff; 9]).var(), Err(CodecError::Truncated));
    }
}
