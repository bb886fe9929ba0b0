//! The cryptographic primitives of the sealed format, named as in the
//! format description ([`crate::format`]).
//!
//! - `HKDF-SHA256(ikm, salt, info)` — RFC 5869, always 32 bytes of output;
//! - `HMAC-SHA256(key, message)` — RFC 2104;
//! - `ChaCha20-Poly1305(key, nonce, plaintext, aad)` — RFC 8439, with a
//!   16-byte tag appended to the ciphertext.

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of the random file key, in bytes (as in age).
pub(crate) const FILE_KEY_LEN: usize = 16;
/// Length of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;

/// HKDF info label of the X25519 recipient stanza's wrap key.
pub(crate) const X25519_LABEL: &[u8] = b"jam.togthr/seal/v1/X25519";
/// HKDF info label of the header MAC key.
pub(crate) const HEADER_LABEL: &[u8] = b"jam.togthr/seal/v1/header";
/// HKDF info label of the payload key.
pub(crate) const PAYLOAD_LABEL: &[u8] = b"jam.togthr/seal/v1/payload";
/// HKDF info label of the key that seals the recipient list in the header.
pub(crate) const RECIPIENTS_LABEL: &[u8] = b"jam.togthr/seal/v1/recipients";

/// The random key every recipient stanza wraps; all other keys of a file
/// derive from it. Zeroed on drop.
#[derive(Clone)]
pub(crate) struct FileKey(pub(crate) Zeroizing<[u8; FILE_KEY_LEN]>);

impl FileKey {
    pub(crate) fn random<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut k = Zeroizing::new([0u8; FILE_KEY_LEN]);
        rng.fill_bytes(k.as_mut());
        FileKey(k)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; FILE_KEY_LEN] {
        &self.0
    }

    /// `HMAC key = HKDF-SHA256(ikm = file key, salt = empty, info = HEADER_LABEL)`.
    pub(crate) fn header_mac_key(&self) -> Zeroizing<[u8; 32]> {
        hkdf(&[], HEADER_LABEL, self.as_bytes())
    }

    /// `payload key = HKDF-SHA256(ikm = file key, salt = payload nonce, info = PAYLOAD_LABEL)`.
    pub(crate) fn payload_cipher(&self, nonce: &[u8; 16]) -> PayloadCipher {
        let k = hkdf(nonce, PAYLOAD_LABEL, self.as_bytes());
        PayloadCipher(ChaCha20Poly1305::new(&(*k).into()))
    }

    /// `list key = HKDF-SHA256(ikm = file key, salt = list salt, info = RECIPIENTS_LABEL)`.
    pub(crate) fn list_key(&self, salt: &[u8; 16]) -> Zeroizing<[u8; 32]> {
        hkdf(salt, RECIPIENTS_LABEL, self.as_bytes())
    }
}

/// `HKDF-SHA256(ikm, salt, info)` with 32 bytes of output.
pub(crate) fn hkdf(salt: &[u8], info: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// `HMAC-SHA256(key, message)`.
pub(crate) fn hmac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(message);
    m.finalize().into_bytes().into()
}

/// Compares `tag` with `HMAC-SHA256(key, message)` in constant time.
pub(crate) fn hmac_verify(key: &[u8; 32], message: &[u8], tag: &[u8]) -> bool {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(message);
    m.verify_slice(tag).is_ok()
}

/// `ChaCha20-Poly1305(key, nonce = 0, plaintext)` for single-use keys (the
/// stanza wrap key, the recipient-list key, the key-file key): every key is
/// derived fresh, so the all-zero nonce is never reused under one key.
pub(crate) fn aead_encrypt(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let c = ChaCha20Poly1305::new(&(*key).into());
    let mut buf = plaintext.to_vec();
    let tag = c
        .encrypt_inout_detached(&Nonce::default(), aad, buf.as_mut_slice().into())
        .expect("short messages are within ChaCha20-Poly1305 limits");
    buf.extend_from_slice(&tag);
    buf
}

/// Inverse of [`aead_encrypt`]; `None` if the tag does not verify or the
/// ciphertext does not have the expected plaintext size (age checks the size
/// first, which blocks multi-key attacks on the tag).
pub(crate) fn aead_decrypt(
    key: &[u8; 32],
    aad: &[u8],
    ciphertext: &[u8],
    plaintext_len: usize,
) -> Option<Zeroizing<Vec<u8>>> {
    if ciphertext.len() != plaintext_len + TAG_LEN {
        return None;
    }
    let c = ChaCha20Poly1305::new(&(*key).into());
    let (ct, tag) = ciphertext.split_at(plaintext_len);
    let tag = Tag::try_from(tag).ok()?;
    let mut buf = Zeroizing::new(ct.to_vec());
    c.decrypt_inout_detached(&Nonce::default(), aad, buf.as_mut_slice().into(), &tag)
        .ok()?;
    Some(buf)
}

/// The STREAM construction's chunk cipher: ChaCha20-Poly1305 under the
/// payload key, nonce = 11-byte big-endian chunk counter || last-chunk flag.
pub(crate) struct PayloadCipher(ChaCha20Poly1305);

/// The 12-byte STREAM nonce of chunk `counter`.
pub(crate) fn stream_nonce(counter: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

impl PayloadCipher {
    /// Encrypts `input` into `out` (same length) in one pass and returns
    /// the tag. Sealing straight from the caller's bytes into the output
    /// frame saves the copy an in-place encryption would need.
    pub(crate) fn seal_to(
        &self,
        counter: u64,
        last: bool,
        aad: &[u8],
        input: &[u8],
        out: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let nonce = Nonce::from(stream_nonce(counter, last));
        let buf = InOutBuf::new(input, out).expect("input and output have the same length");
        self.0
            .encrypt_inout_detached(&nonce, aad, buf)
            .expect("a 64 KiB chunk is within ChaCha20-Poly1305 limits")
            .into()
    }

    /// Decrypts `buf` in place; `false` if the tag does not verify.
    pub(crate) fn open(
        &self,
        counter: u64,
        last: bool,
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        let nonce = Nonce::from(stream_nonce(counter, last));
        self.0
            .decrypt_inout_detached(&nonce, aad, buf.into(), &Tag::from(*tag))
            .is_ok()
    }

    /// Decrypts `input` into `out` (same length); `false`, with `out`
    /// untouched, if the tag does not verify (the tag is checked before
    /// anything is decrypted).
    pub(crate) fn open_to(
        &self,
        counter: u64,
        last: bool,
        aad: &[u8],
        input: &[u8],
        out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        let nonce = Nonce::from(stream_nonce(counter, last));
        let buf = InOutBuf::new(input, out).expect("input and output have the same length");
        self.0
            .decrypt_inout_detached(&nonce, aad, buf, &Tag::from(*tag))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_matches_rfc5869_test_case_1() {
        // RFC 5869 A.1, first 32 bytes of the OKM.
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let okm = hkdf(&salt, &info, &ikm);
        let expected = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf";
        let hex: String = okm.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn aead_rejects_wrong_size_and_wrong_key() {
        let k = [7u8; 32];
        let ct = aead_encrypt(&k, b"aad", b"sixteen byte key");
        assert_eq!(
            &**aead_decrypt(&k, b"aad", &ct, 16).unwrap(),
            b"sixteen byte key"
        );
        assert!(aead_decrypt(&k, b"aad", &ct, 15).is_none());
        assert!(aead_decrypt(&[8u8; 32], b"aad", &ct, 16).is_none());
        assert!(aead_decrypt(&k, b"other", &ct, 16).is_none());
    }

    #[test]
    fn sealing_to_a_buffer_matches_the_rfc_8439_construction_in_place() {
        let c = PayloadCipher(ChaCha20Poly1305::new(&[9u8; 32].into()));
        let plain: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut ct = vec![0u8; plain.len()];
        let tag = c.seal_to(5, true, b"aad", &plain, &mut ct);
        // The same bytes as the one-shot AEAD with the STREAM nonce.
        let mut whole = plain.clone();
        let t2 =
            c.0.encrypt_inout_detached(
                &Nonce::from(stream_nonce(5, true)),
                b"aad",
                whole.as_mut_slice().into(),
            )
            .unwrap();
        assert_eq!(ct, whole);
        assert_eq!(tag, <[u8; 16]>::from(t2));
        let mut back = vec![0u8; ct.len()];
        assert!(c.open_to(5, true, b"aad", &ct, &mut back, &tag));
        assert_eq!(back, plain);
        // A wrong counter, flag or tag fails and leaves the output alone.
        let mut untouched = vec![0xeeu8; ct.len()];
        assert!(!c.open_to(6, true, b"aad", &ct, &mut untouched, &tag));
        assert!(!c.open_to(5, false, b"aad", &ct, &mut untouched, &tag));
        assert!(untouched.iter().all(|&b| b == 0xee));
        let mut in_place = ct.clone();
        assert!(c.open(5, true, b"aad", &mut in_place, &tag));
        assert_eq!(in_place, plain);
    }

    #[test]
    fn stream_nonce_layout() {
        assert_eq!(stream_nonce(1, false), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(
            stream_nonce(0x0102, true),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 1]
        );
    }
}
