//! [`ByteWriter`]: the byte writer behind the project's binary formats
//! (capture records and headers, key files, agent metadata, player
//! models): big-endian fixed integers, unsigned and zigzag LEB128 varints,
//! and varint-length-prefixed byte strings.
//!
//! One writer, so that every format lays out the same value the same way.
//! The readers stay with their formats: each has its own errors (where the
//! bytes went wrong, which value) and rules (a capture refuses varints that
//! are not minimally encoded).
//!
//! ```
//! use jam_core::bytes::ByteWriter;
//!
//! let mut w = ByteWriter::new();
//! w.u16(0x0102).var(300).str("hi");
//! assert_eq!(w.buf, [0x01, 0x02, 0xac, 0x02, 2, b'h', b'i']);
//! ```

/// Appends encoded values to a byte vector ([`ByteWriter::buf`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ByteWriter {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl ByteWriter {
    /// An empty writer.
    pub fn new() -> Self {
        ByteWriter { buf: Vec::new() }
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Two bytes, big-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// Four bytes, big-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// Eight bytes, big-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// Sixteen bytes, big-endian.
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// An IEEE 754 single, little-endian (as tensors are stored).
    pub fn f32_le(&mut self, v: f32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// The bytes as they are.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// Unsigned LEB128, minimally encoded (1 to 10 bytes).
    pub fn var(&mut self, mut v: u64) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return self;
            }
            self.buf.push(byte | 0x80);
        }
    }

    /// A signed value as zigzag LEB128 (0, -1, 1, -2, ... as 0, 1, 2, 3).
    pub fn svar(&mut self, v: i64) -> &mut Self {
        self.var(((v << 1) ^ (v >> 63)) as u64)
    }

    /// A varint length, then the bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.var(b.len() as u64);
        self.raw(b)
    }

    /// A string as [`ByteWriter::bytes`] of its UTF-8.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
}

/// The encoded length of `v` as an unsigned LEB128 varint
/// ([`ByteWriter::var`]).
pub fn var_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut w = ByteWriter::new();
        w.var(0)
            .var(127)
            .var(128)
            .svar(-1)
            .svar(1)
            .f32_le(1.0)
            .u128(1);
        let mut want = vec![0, 0x7f, 0x80, 0x01, 1, 2, 0, 0, 0x80, 0x3f];
        want.extend_from_slice(&1u128.to_be_bytes());
        assert_eq!(w.buf, want);
        let mut w = ByteWriter::new();
        w.var(u64::MAX);
        assert_eq!(w.buf.len(), 10);
        assert_eq!(w.buf[9], 1);
    }

    proptest! {
        #[test]
        fn var_len_is_the_written_length(v in any::<u64>()) {
            let mut w = ByteWriter::new();
            w.var(v);
            prop_assert_eq!(w.buf.len(), var_len(v));
        }
    }
}
