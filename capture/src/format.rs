//! The sealed-file format (version 1), byte by byte.
//!
//! `.scp` captures and `.agent` files share one container. It follows the
//! construction of the age format v1 (<https://age-encryption.org/v1>): a
//! random 16-byte *file key* wrapped once per recipient with an ephemeral
//! X25519 agreement, a header MAC under a key derived from the file key, and
//! the payload sealed with ChaCha20-Poly1305 in a STREAM of chunks under a
//! key derived from the file key and a random nonce. The differences: a
//! binary header instead of age's text header, our own labels, an encrypted
//! recipient list (so the file can be re-sealed to the remaining recipients
//! on revoke), and length-framed chunks so that a writer may seal a short
//! chunk early (crash tolerance, see "Chunks").
//!
//! All integers are big-endian.
//!
//! # Header
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `6a 61 6d 73 65 61 6c 00` (`"jamseal\0"`) |
//! | 8 | 1 | format version, `0x01` |
//! | 9 | 1 | kind: `0x01` capture (`.scp`), `0x02` agent (`.agent`) |
//! | 10 | 4 | generation: 1 for a new file, +1 on every revoke |
//! | 14 | 2 | `n`, the number of recipient stanzas, 1 ..= [`MAX_RECIPIENTS`] |
//! | 16 | … | `n` stanzas, each: type (1 byte), body length `b` (2 bytes, ≤ [`MAX_STANZA_BODY`]), body (`b` bytes) |
//! | | 16 | recipient-list salt |
//! | | 2 | recipient-list length `l` (= 32·n + 16) |
//! | | `l` | recipient list: the `n` recipients' 32-byte public keys in stanza order, sealed |
//! | | 32 | header MAC over every byte from offset 0 to here |
//! | | 8 | chunk count: 0 if not recorded, else the number of chunks in the finished file with the top bit set (not covered by the MAC, see below) |
//! | | 16 | payload nonce |
//!
//! The payload starts right after the nonce. Offsets inside the payload are
//! counted from there ("payload offsets"), so that changing the header (share)
//! leaves every payload offset valid.
//!
//! **X25519 stanza** (type `0x01`, body 64 bytes): the ephemeral share `E`
//! (32 bytes) then the wrapped file key (32 bytes). The sender draws an
//! ephemeral secret `e`, `E = X25519(e, basepoint)`, `S = X25519(e, R)` for
//! the recipient's public key `R` (refusing an all-zero `S`), then
//! `wrap key = HKDF-SHA256(ikm = S, salt = E || R, info =
//! "jam.togthr/seal/v1/X25519")` and `wrapped = ChaCha20-Poly1305(wrap key,
//! nonce = 0, file key)` (16 bytes of key + 16 of tag). A stanza does not name
//! its recipient: a reader tries its key on every stanza. Stanza types other
//! than `0x01` are skipped by readers of this version.
//!
//! **Recipient list**: `list key = HKDF-SHA256(ikm = file key, salt = list
//! salt, info = "jam.togthr/seal/v1/recipients")`, sealed with
//! ChaCha20-Poly1305 under nonce 0 (the random salt makes every list key
//! single-use). Only someone who can open the file learns who else can; the
//! list is what revoke re-seals to.
//!
//! **Header MAC**: `HMAC-SHA256(key = HKDF-SHA256(ikm = file key, salt =
//! empty, info = "jam.togthr/seal/v1/header"), message = header bytes before
//! the MAC)`. A reader checks it after unwrapping the file key and before
//! reading any payload. The generation and kind are covered, so an older
//! generation cannot be passed off as a newer one without the file key.
//!
//! **Chunk count** is written last by a writer that can seek (0 until then,
//! so a crash never leaves a half-written header). A recorded count `m`
//! is stored as `m | 2^63`: no single bit flip turns it into 0 ("not
//! recorded") or into another valid value that the reader would not
//! check, and any other nonzero value without the top bit, or the top bit
//! alone, is a corrupt header. It is not covered by the MAC; the reader
//! checks it against the final chunk's authenticated counter and reports
//! any mismatch as a modification. Its purpose is the truncation message:
//! "file truncated after 3 of 5 chunks".
//!
//! # Chunks
//!
//! `payload key = HKDF-SHA256(ikm = file key, salt = payload nonce, info =
//! "jam.togthr/seal/v1/payload")`. The payload is a sequence of chunks, each
//! framed as
//!
//! | size | field |
//! |---|---|
//! | 4 | frame word: bit 31 = last-chunk flag, bits 0..=16 = plaintext length `L` ≤ 65 536 ([`CHUNK_SIZE`]), bits 17..=30 zero |
//! | `L` + 16 | ChaCha20-Poly1305 ciphertext and tag |
//! | 16 | only on the last chunk: the locator, chunk index (8) and payload offset of this chunk's frame word (8) |
//!
//! The nonce of chunk `i` (counting from 0) is `i` as an 11-byte big-endian
//! counter followed by `0x01` for the last chunk and `0x00` otherwise, as in
//! age's STREAM. The associated data is the frame word, plus the locator on
//! the last chunk: the length, the flag and the locator are all
//! authenticated. Chunks of any length up to 64 KiB are allowed anywhere:
//! a writer seals a short chunk when its flush policy asks (captures do so at
//! least every second), and a final chunk may be empty.
//!
//! What this gives, and how a reader reports it:
//! - a modified, reordered, removed or duplicated chunk fails its tag
//!   (the counter is in the nonce): "authentication failed in chunk N: the
//!   file was modified";
//! - a file that ends without a last chunk is truncated: every complete
//!   chunk before the cut still opens, and the reader says "file truncated
//!   after N of M chunks" (M from the chunk count if recorded);
//! - bytes after the last chunk are a modification;
//! - the locator at the very end lets a seeking reader find the last chunk
//!   (which holds a capture's index) without reading the whole file.
//!
//! # Share, revoke, repair
//!
//! - **Share** adds a stanza (and a list entry) for a new recipient. Only the
//!   header changes, so the header MAC must be recomputed, which needs the
//!   file key: only someone who can open the file can share it. The payload
//!   bytes are copied unchanged.
//! - **Revoke** draws a new file key and payload nonce, re-seals every chunk
//!   (same chunk lengths, so payload offsets stay valid) for the remaining
//!   recipients, and adds one to the generation. It cannot recall what the
//!   revoked key already has: a copy of an older generation still opens with
//!   it, and anything it decrypted before may have been kept. Revocation
//!   protects the new generation, and every copy made from it, only.
//! - **Repair** of a truncated file writes a new file: the header (chunk
//!   count updated), every complete chunk byte for byte, and a new last
//!   chunk. The damaged file is never modified.

/// The eight magic bytes at the start of every sealed file.
pub const MAGIC: [u8; 8] = *b"jamseal\0";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Largest plaintext length of one chunk (64 KiB).
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Most recipients one file may have.
pub const MAX_RECIPIENTS: usize = 255;
/// Largest stanza body a reader accepts (for stanza types it does not know).
pub const MAX_STANZA_BODY: usize = 1024;
/// Stanza type of an X25519 recipient.
pub const STANZA_X25519: u8 = 0x01;
/// Bytes of a chunk's frame word.
pub const FRAME_WORD_LEN: usize = 4;
/// Bytes of the locator after the last chunk.
pub const LOCATOR_LEN: usize = 16;
/// Bytes of the fixed header part before the stanzas.
pub(crate) const FIXED_LEN: usize = 16;
/// Bytes after the MAC: chunk count (8) and payload nonce (16).
pub(crate) const TAIL_LEN: usize = 24;
/// The last-chunk flag in the frame word.
pub(crate) const LAST_FLAG: u32 = 1 << 31;
/// The top bit of the chunk-count field: set when a count is recorded.
pub(crate) const COUNT_RECORDED: u64 = 1 << 63;

/// The chunk-count field for `chunks` (0: not recorded).
pub(crate) fn chunk_count_field(chunks: u64) -> u64 {
    if chunks == 0 {
        0
    } else {
        chunks | COUNT_RECORDED
    }
}

/// The length bits of the frame word.
pub(crate) const LEN_MASK: u32 = (1 << 17) - 1;

/// What a sealed file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A session capture (`.scp`): capture records.
    Capture,
    /// An agent (`.agent`): agent metadata and model bytes.
    Agent,
}

impl Kind {
    /// The kind's byte in the header.
    pub fn to_byte(self) -> u8 {
        match self {
            Kind::Capture => 0x01,
            Kind::Agent => 0x02,
        }
    }

    /// The kind for a header byte, if known.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x01 => Some(Kind::Capture),
            0x02 => Some(Kind::Agent),
            _ => None,
        }
    }

    /// The usual file name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Capture => "scp",
            Kind::Agent => "agent",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Capture => "capture",
            Kind::Agent => "agent",
        })
    }
}

/// One recipient stanza as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stanza {
    pub(crate) kind: u8,
    pub(crate) body: Vec<u8>,
}

/// A parsed header. Nothing in it is trusted before the MAC is checked
/// ([`crate::seal::Opener`] does that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Capture or agent.
    pub kind: Kind,
    /// 1 for a new file, +1 on every revoke.
    pub generation: u32,
    pub(crate) stanzas: Vec<Stanza>,
    pub(crate) list_salt: [u8; 16],
    pub(crate) list_ct: Vec<u8>,
    pub(crate) mac: [u8; 32],
    /// Chunks in the finished file, 0 if not recorded (unauthenticated until
    /// the last chunk is read).
    pub chunk_count: u64,
    pub(crate) nonce: [u8; 16],
}

/// Why header bytes are not a valid header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The input ended inside the header.
    #[error("file truncated in the header (after {0} bytes)")]
    Truncated(usize),
    /// The magic bytes are wrong: not a sealed file at all.
    #[error("not a jam sealed file (the first bytes are not \"jamseal\")")]
    NotSealed,
    /// A format version this build does not read.
    #[error("unsupported format version {0} (this build reads version 1)")]
    UnknownVersion(u8),
    /// A kind byte this build does not know.
    #[error("unknown file kind {0:#04x}")]
    UnknownKind(u8),
    /// A field holds an impossible value.
    #[error("corrupt header: {0}")]
    Corrupt(String),
}

impl Header {
    /// Bytes covered by the MAC.
    pub(crate) fn mac_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.stanzas.len() * 67 + self.list_ct.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&(self.stanzas.len() as u16).to_be_bytes());
        for s in &self.stanzas {
            out.push(s.kind);
            out.extend_from_slice(&(s.body.len() as u16).to_be_bytes());
            out.extend_from_slice(&s.body);
        }
        out.extend_from_slice(&self.list_salt);
        out.extend_from_slice(&(self.list_ct.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.list_ct);
        out
    }

    /// The whole header as written, through the payload nonce.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.mac_input();
        out.extend_from_slice(&self.mac);
        out.extend_from_slice(&chunk_count_field(self.chunk_count).to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Offset of the chunk-count field from the start of the header.
    pub(crate) fn chunk_count_offset(&self) -> usize {
        self.encoded_len() - TAIL_LEN
    }

    /// Length of the encoded header; the payload starts here.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN
            + self.stanzas.iter().map(|s| 3 + s.body.len()).sum::<usize>()
            + 16
            + 2
            + self.list_ct.len()
            + 32
            + TAIL_LEN
    }

    /// Number of recipient stanzas.
    pub fn recipient_count(&self) -> usize {
        self.stanzas.len()
    }

    /// Parses a header from the start of `bytes`; returns it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(Header, usize), HeaderError> {
        let mut r = bytes;
        let h = Self::read(&mut r).map_err(|e| match e {
            ReadHeaderError::Header(h) => h,
            ReadHeaderError::Io(_) => unreachable_io(),
        })?;
        let len = h.encoded_len();
        Ok((h, len))
    }

    /// Reads a header from `input`, consuming exactly its bytes.
    pub(crate) fn read<R: std::io::Read>(input: &mut R) -> Result<Header, ReadHeaderError> {
        let mut got = 0usize;
        let mut take = |n: usize, input: &mut R| -> Result<Vec<u8>, ReadHeaderError> {
            let mut b = vec![0u8; n];
            let k = crate::seal::read_full(input, &mut b)?;
            got += k;
            if k < n {
                return Err(HeaderError::Truncated(got).into());
            }
            Ok(b)
        };
        let fixed = take(FIXED_LEN, input)?;
        if fixed[..8] != MAGIC {
            return Err(HeaderError::NotSealed.into());
        }
        if fixed[8] != VERSION {
            return Err(HeaderError::UnknownVersion(fixed[8]).into());
        }
        let kind = Kind::from_byte(fixed[9]).ok_or(HeaderError::UnknownKind(fixed[9]))?;
        let generation = u32::from_be_bytes(fixed[10..14].try_into().expect("4 bytes"));
        let n = usize::from(u16::from_be_bytes(
            fixed[14..16].try_into().expect("2 bytes"),
        ));
        if n == 0 || n > MAX_RECIPIENTS {
            return Err(HeaderError::Corrupt(format!(
                "{n} recipient stanzas (must be 1 to {MAX_RECIPIENTS})"
            ))
            .into());
        }
        let mut stanzas = Vec::with_capacity(n);
        for i in 0..n {
            let head = take(3, input)?;
            let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
            if len > MAX_STANZA_BODY {
                return Err(HeaderError::Corrupt(format!(
                    "stanza {} has a {len}-byte body (at most {MAX_STANZA_BODY})",
                    i + 1
                ))
                .into());
            }
            if head[0] == STANZA_X25519 && len != 64 {
                return Err(HeaderError::Corrupt(format!(
                    "X25519 stanza {} has a {len}-byte body (must be 64)",
                    i + 1
                ))
                .into());
            }
            let body = take(len, input)?;
            stanzas.push(Stanza {
                kind: head[0],
                body,
            });
        }
        let salt = take(18, input)?;
        let list_salt: [u8; 16] = salt[..16].try_into().expect("16 bytes");
        let list_len = usize::from(u16::from_be_bytes([salt[16], salt[17]]));
        if list_len != 32 * n + 16 {
            return Err(HeaderError::Corrupt(format!(
                "recipient list of {list_len} bytes for {n} stanzas (must be {})",
                32 * n + 16
            ))
            .into());
        }
        let list_ct = take(list_len, input)?;
        let tail = take(32 + TAIL_LEN, input)?;
        let count = u64::from_be_bytes(tail[32..40].try_into().expect("8 bytes"));
        let chunk_count = match count {
            0 => 0,
            c if c & COUNT_RECORDED != 0 && c != COUNT_RECORDED => c & !COUNT_RECORDED,
            c => {
                return Err(HeaderError::Corrupt(format!(
                    "chunk-count field {c:#018x} is neither 0 nor a recorded count"
                ))
                .into());
            }
        };
        Ok(Header {
            kind,
            generation,
            stanzas,
            list_salt,
            list_ct,
            mac: tail[..32].try_into().expect("32 bytes"),
            chunk_count,
            nonce: tail[40..56].try_into().expect("16 bytes"),
        })
    }
}

fn unreachable_io() -> HeaderError {
    // Reading from a byte slice never fails with an I/O error; a short slice
    // reports `Truncated` through `read_full`.
    HeaderError::Truncated(0)
}

/// Header reading fails either on the bytes or on the I/O below them.
#[derive(Debug)]
pub(crate) enum ReadHeaderError {
    Header(HeaderError),
    Io(std::io::Error),
}

impl From<HeaderError> for ReadHeaderError {
    fn from(e: HeaderError) -> Self {
        ReadHeaderError::Header(e)
    }
}

impl From<std::io::Error> for ReadHeaderError {
    fn from(e: std::io::Error) -> Self {
        ReadHeaderError::Io(e)
    }
}
