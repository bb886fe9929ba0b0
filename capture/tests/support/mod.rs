//! Shared helpers for the capture crate's integration tests.
#![allow(dead_code, unreachable_pub)]

use jam_capture::{Identity, Kind, Opener, Recipient, SealWriter};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// A deterministic "random" generator for known-answer vectors: SHA-256 of
/// (seed, counter) blocks. Never use outside tests.
pub struct KatRng {
    seed: u64,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl KatRng {
    pub fn new(seed: u64) -> Self {
        KatRng {
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }
}

impl rand_core::TryRng for KatRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for d in dst {
            if self.used == 32 {
                let mut h = Sha256::new();
                h.update(self.seed.to_be_bytes());
                h.update(self.counter.to_be_bytes());
                self.block = h.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *d = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}
impl rand_core::TryCryptoRng for KatRng {}

/// A fixed identity from a one-byte seed.
pub fn identity(n: u8) -> Identity {
    Identity::from_secret_bytes([n; 32])
}

/// Seals `data` for `to` with the Write adapter.
pub fn seal(data: &[u8], to: &[Recipient], seed: u64) -> Vec<u8> {
    let mut w = SealWriter::new(Vec::new(), Kind::Agent, to, &mut KatRng::new(seed)).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// Opens and reads a whole sealed file.
pub fn open(file: &[u8], ids: &[Identity]) -> Result<Vec<u8>, jam_capture::OpenError> {
    let mut r = Opener::new(file, ids)?.into_reader();
    let mut out = Vec::new();
    match r.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => {
            let inner = e.into_inner().expect("reader errors wrap an OpenError");
            Err(*inner
                .downcast::<jam_capture::OpenError>()
                .expect("an OpenError"))
        }
    }
}

/// Deterministic test data.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Splits a sealed payload (starting at `payload`) into its chunk frames.
pub fn frames(file: &[u8], payload: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = payload;
    while at + 4 <= file.len() {
        let word = u32::from_be_bytes(file[at..at + 4].try_into().unwrap());
        let last = word & (1 << 31) != 0;
        let len = (word & ((1 << 17) - 1)) as usize;
        let end = at + 4 + len + 16 + if last { 16 } else { 0 };
        out.push(at..end.min(file.len()));
        at = end;
    }
    out
}
