//! Byte encoding shared by the model formats: big-endian fixed integers,
//! LEB128 variable integers (written by [`jam_core::bytes::ByteWriter`]),
//! and a reader that says where and why bytes are bad instead of panicking.

use super::ModelError;

/// The writer is jam-core's, shared with the capture formats.
pub(crate) use jam_core::bytes::ByteWriter as Enc;

/// Reads encoded values; every failure names the offset.
#[derive(Debug)]
pub(crate) struct Dec<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Dec { data, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn invalid(&self, what: impl Into<String>) -> ModelError {
        ModelError::Invalid {
            offset: self.pos,
            what: what.into(),
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        if self.remaining() < n {
            return Err(ModelError::Truncated {
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ModelError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ModelError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u128(&mut self) -> Result<u128, ModelError> {
        let b = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(u128::from_be_bytes(a))
    }

    pub(crate) fn f32(&mut self) -> Result<f32, ModelError> {
        let b = self.take(4)?;
        let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if !v.is_finite() {
            return Err(self.invalid(format!("non-finite number {v}")));
        }
        Ok(v)
    }

    pub(crate) fn var(&mut self) -> Result<u64, ModelError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let part = u64::from(byte & 0x7F);
            if shift == 63 && part > 1 {
                return Err(self.invalid("variable-length integer overflows 64 bits"));
            }
            v |= part << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.invalid("variable-length integer longer than 10 bytes"))
    }

    /// A variable integer that must be at most `max`.
    pub(crate) fn var_max(&mut self, max: u64, what: &str) -> Result<u64, ModelError> {
        let v = self.var()?;
        if v > max {
            return Err(self.invalid(format!("{what} {v} is above {max}")));
        }
        Ok(v)
    }

    /// A count of items that each take at least `min_bytes`: refuses counts
    /// the remaining bytes cannot hold (so hostile input cannot make us
    /// allocate).
    pub(crate) fn count(&mut self, min_bytes: usize, what: &str) -> Result<usize, ModelError> {
        let n = self.var()?;
        let room = (self.remaining() / min_bytes.max(1)) as u64;
        if n > room {
            return Err(self.invalid(format!(
                "{what} count {n} needs more than the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], ModelError> {
        let n = self.count(1, "byte string")?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_overlong_ones_are_refused() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            let mut e = Enc::default();
            e.var(v);
            assert_eq!(Dec::new(&e.buf).var().unwrap(), v);
        }
        assert!(Dec::new(&[0xFF; 11]).var().is_err());
        assert!(Dec::new(&[0x80]).var().is_err());
    }
}
