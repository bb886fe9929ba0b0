//! Sealing and opening: the chunk streams of the sealed format, and the
//! operations that change a sealed file (share, revoke, repair).
//!
//! Two levels, both streaming in constant memory:
//!
//! - [`Sealer`] and [`Opener`] work chunk by chunk. A caller that decides
//!   where chunks end (the capture writer flushes at least every second)
//!   uses these: [`Sealer::seal_chunk`] seals and writes one chunk of up to
//!   64 KiB, [`Opener::next_chunk`] returns the next authenticated chunk.
//! - [`SealWriter`] and [`OpenReader`] are [`Write`] and [`Read`] adapters
//!   for plain byte streams (agents, benchmarks): the writer fills 64 KiB
//!   chunks and `flush()` seals a short one.
//!
//! The caller opens files; these types take any [`Read`] or [`Write`] (and
//! [`Seek`] for the operations that jump: recording the chunk count,
//! seeking to a chunk, finding the last chunk).
//!
//! ```
//! use jam_capture::{Identity, Kind, Opener, SealWriter};
//! use std::io::{Read, Write};
//! # use rand::SeedableRng;
//! # let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let alice = Identity::generate(&mut rng);
//! let mut w = SealWriter::new(Vec::new(), Kind::Agent, &[alice.to_public()], &mut rng)?;
//! w.write_all(b"model bytes")?;
//! let file = w.finish()?;
//!
//! let mut out = Vec::new();
//! Opener::new(&file[..], &[alice])?.into_reader().read_to_end(&mut out)?;
//! assert_eq!(out, b"model bytes");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::Header;
use crate::format::{
    CHUNK_SIZE, FRAME_WORD_LEN, HeaderError, Kind, LAST_FLAG, LEN_MASK, LOCATOR_LEN,
    MAX_RECIPIENTS, ReadHeaderError, STANZA_X25519, Stanza,
};
use crate::keys::{Identity, Recipient};
use crate::primitives::{self, FileKey, PayloadCipher, TAG_LEN};

/// Why a sealed file could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The header is malformed, truncated, of another version or not a sealed
    /// file at all.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// None of the given keys unwraps any stanza.
    #[error("you are not a recipient of this file")]
    NotARecipient,
    /// The file key was unwrapped but the header MAC does not verify.
    #[error("header authentication failed: the file was modified")]
    HeaderModified,
    /// The file is sealed correctly but holds another kind of content.
    #[error("this is an {found} file, not a {expected} file")]
    WrongKind {
        /// What the caller asked for.
        expected: Kind,
        /// What the header says.
        found: Kind,
    },
    /// The file ends before its last chunk. Every chunk before `complete`
    /// opened and authenticated.
    #[error("{}", truncated_message(*complete, *expected, *offset))]
    Truncated {
        /// Chunks that are complete and authentic.
        complete: u64,
        /// Chunks the finished file had, if its header records the count.
        expected: Option<u64>,
        /// Byte offset in the file where the readable part ends.
        offset: u64,
    },
    /// A chunk does not authenticate: modified, reordered, removed or
    /// duplicated.
    #[error("authentication failed in chunk {chunk}: the file was modified")]
    ChunkModified {
        /// The chunk's number, counting from 1.
        chunk: u64,
        /// Byte offset of the chunk in the file.
        offset: u64,
    },
    /// Bytes follow the last chunk.
    #[error("data after the final chunk at byte {offset}: the file was modified")]
    TrailingData {
        /// Byte offset where the extra data starts.
        offset: u64,
    },
    /// The chunk count in the header disagrees with the last chunk.
    #[error(
        "the header records {recorded} chunks but the file has {actual}: the file was modified"
    )]
    ChunkCountMismatch {
        /// What the header says.
        recorded: u64,
        /// What the authenticated last chunk says.
        actual: u64,
    },
    /// The locator at the end of the file does not point at a last chunk.
    #[error(
        "the end of the file does not locate its final chunk: the file was modified or truncated"
    )]
    BadLocator,
    /// Reading was attempted again after an error.
    #[error("reading stopped at an earlier error")]
    Stopped,
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

fn truncated_message(complete: u64, expected: Option<u64>, offset: u64) -> String {
    match expected {
        Some(m) if m > complete => {
            format!("file truncated after {complete} of {m} chunks (readable up to byte {offset})")
        }
        _ => format!(
            "file truncated after {complete} chunks (readable up to byte {offset}); it was not finished, `jam capture repair` can close it"
        ),
    }
}

impl OpenError {
    /// The [`OpenError`] inside an [`io::Error`] returned by [`OpenReader`],
    /// if there is one.
    pub fn from_io(e: &io::Error) -> Option<&OpenError> {
        e.get_ref()?.downcast_ref::<OpenError>()
    }
}

/// Why a sealed file could not be written or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// A sealed file needs at least one recipient.
    #[error("no recipients: a sealed file needs at least one")]
    NoRecipients,
    /// More recipients than the format allows.
    #[error("{0} recipients (at most {MAX_RECIPIENTS})")]
    TooManyRecipients(usize),
    /// A recipient key that nobody could open files for.
    #[error("recipient {0} is a weak key that no one can open files for")]
    WeakRecipient(String),
    /// A chunk larger than 64 KiB was given to [`Sealer::seal_chunk`].
    #[error("chunk of {0} bytes (at most {CHUNK_SIZE})")]
    ChunkTooLarge(usize),
    /// An earlier write failed; the output is incomplete.
    #[error("an earlier write failed; the output is incomplete")]
    Poisoned,
    /// The key to remove is not a recipient.
    #[error("{0} is not a recipient of this file")]
    NotInList(String),
    /// Revoke would leave nobody able to open the file.
    #[error("cannot remove every recipient: nobody could open the file")]
    LastRecipient,
    /// Repair was asked for a file that is complete and authentic.
    #[error("the file is complete and authentic; nothing to repair")]
    NothingToRepair,
    /// Opening the input failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Writing failed.
    #[error("write failed: {0}")]
    Io(#[from] io::Error),
}

/// Bytes of the largest frame: frame word, a full chunk, tag and locator.
const MAX_FRAME_LEN: usize = FRAME_WORD_LEN + CHUNK_SIZE + TAG_LEN + LOCATOR_LEN;

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Builds a complete header (stanzas, sealed list, MAC) for `recipients`.
pub(crate) fn build_header<R: rand_core::CryptoRng + ?Sized>(
    kind: Kind,
    generation: u32,
    recipients: &[Recipient],
    file_key: &FileKey,
    nonce: [u8; 16],
    rng: &mut R,
) -> Result<Header, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(SealError::TooManyRecipients(recipients.len()));
    }
    let mut stanzas = Vec::with_capacity(recipients.len());
    let mut list = Vec::with_capacity(32 * recipients.len());
    for r in recipients {
        let body = r
            .wrap(file_key, rng)
            .ok_or_else(|| SealError::WeakRecipient(r.to_string()))?;
        stanzas.push(Stanza {
            kind: STANZA_X25519,
            body: body.to_vec(),
        });
        list.extend_from_slice(&r.to_bytes());
    }
    let mut list_salt = [0u8; 16];
    rng.fill_bytes(&mut list_salt);
    let list_ct = primitives::aead_encrypt(&file_key.list_key(&list_salt), &[], &list);
    let mut h = Header {
        kind,
        generation,
        stanzas,
        list_salt,
        list_ct,
        mac: [0u8; 32],
        chunk_count: 0,
        nonce,
    };
    h.mac = primitives::hmac(&file_key.header_mac_key(), &h.mac_input());
    Ok(h)
}

/// Position of a sealed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkPos {
    /// The chunk's index, counting from 0.
    pub index: u64,
    /// Payload offset of the chunk's frame word.
    pub offset: u64,
}

/// Writes a sealed file chunk by chunk.
///
/// [`Sealer::new`] writes the header; every [`Sealer::seal_chunk`] seals one
/// non-final chunk and writes it to the output in one `write_all`;
/// [`Sealer::finish`] writes the last chunk. Nothing is buffered here: what
/// `seal_chunk` returned from is in the output's hands (call
/// [`Sealer::flush`] to push it through a buffered writer).
pub struct Sealer<W: Write> {
    out: W,
    cipher: PayloadCipher,
    header_len: u64,
    chunk_count_offset: u64,
    next: u64,
    offset: u64,
    frame: Vec<u8>,
    poisoned: bool,
}

impl<W: Write> fmt::Debug for Sealer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("next_chunk", &self.next)
            .field("payload_offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl<W: Write> Sealer<W> {
    /// Starts a sealed file of `kind` for `recipients`: draws the file key
    /// and nonces from `rng` and writes the header to `out`.
    pub fn new<R: rand_core::CryptoRng + ?Sized>(
        out: W,
        kind: Kind,
        recipients: &[Recipient],
        rng: &mut R,
    ) -> Result<Self, SealError> {
        let file_key = FileKey::random(rng);
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let header = build_header(kind, 1, recipients, &file_key, nonce, rng)?;
        Self::with_header(out, &header, &file_key)
    }

    /// Writes `header` and prepares to seal chunks under `file_key` and the
    /// header's nonce.
    pub(crate) fn with_header(
        mut out: W,
        header: &Header,
        file_key: &FileKey,
    ) -> Result<Self, SealError> {
        let bytes = header.encode();
        out.write_all(&bytes)?;
        Ok(Sealer {
            out,
            cipher: file_key.payload_cipher(&header.nonce),
            header_len: bytes.len() as u64,
            chunk_count_offset: header.chunk_count_offset() as u64,
            next: 0,
            offset: 0,
            frame: vec![0u8; MAX_FRAME_LEN],
            poisoned: false,
        })
    }

    fn write_frame(&mut self, data: &[u8], last: bool) -> Result<ChunkPos, SealError> {
        if self.poisoned {
            return Err(SealError::Poisoned);
        }
        let len = data.len();
        if len > CHUNK_SIZE {
            return Err(SealError::ChunkTooLarge(len));
        }
        let pos = ChunkPos {
            index: self.next,
            offset: self.offset,
        };
        let word = (len as u32) | if last { LAST_FLAG } else { 0 };
        let mut aad = [0u8; FRAME_WORD_LEN + LOCATOR_LEN];
        aad[..4].copy_from_slice(&word.to_be_bytes());
        aad[4..12].copy_from_slice(&pos.index.to_be_bytes());
        aad[12..].copy_from_slice(&pos.offset.to_be_bytes());
        let aad = if last {
            &aad[..]
        } else {
            &aad[..FRAME_WORD_LEN]
        };
        // The frame buffer keeps its full size: the plaintext is encrypted
        // straight from `data` into it, with no copy or zero-fill first.
        let (head, body) = self.frame.split_at_mut(FRAME_WORD_LEN);
        head.copy_from_slice(&word.to_be_bytes());
        let tag = self
            .cipher
            .seal_to(pos.index, last, aad, data, &mut body[..len]);
        body[len..len + TAG_LEN].copy_from_slice(&tag);
        let mut total = FRAME_WORD_LEN + len + TAG_LEN;
        if last {
            self.frame[total..total + LOCATOR_LEN].copy_from_slice(&aad[FRAME_WORD_LEN..]);
            total += LOCATOR_LEN;
        }
        if let Err(e) = self.out.write_all(&self.frame[..total]) {
            self.poisoned = true;
            return Err(e.into());
        }
        self.next += 1;
        self.offset += total as u64;
        Ok(pos)
    }

    /// Seals `data` (at most 64 KiB, may be short or empty) as the next
    /// non-final chunk and writes it.
    pub fn seal_chunk(&mut self, data: &[u8]) -> Result<ChunkPos, SealError> {
        self.write_frame(data, false)
    }

    /// Seals `data` as the last chunk, flushes and returns the output. The
    /// header's chunk count stays 0; see [`Sealer::finish_and_record_count`].
    pub fn finish(mut self, data: &[u8]) -> Result<W, SealError> {
        self.write_frame(data, true)?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Where the next chunk will go.
    pub fn next_pos(&self) -> ChunkPos {
        ChunkPos {
            index: self.next,
            offset: self.offset,
        }
    }

    /// Bytes of header written before the payload.
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The output, mutably (to sync a file, for example). Writing to it
    /// directly corrupts the sealed file.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

impl<W: Write + Seek> Sealer<W> {
    /// Like [`Sealer::finish`], then writes the chunk count into the header
    /// (the only header bytes ever written twice; a crash before this leaves
    /// the count at 0, which readers accept), so that a later truncation can
    /// be reported as "after N of M chunks". The sealed file must start where
    /// the output was when the sealer was created.
    pub fn finish_and_record_count(mut self, data: &[u8]) -> Result<W, SealError> {
        self.write_frame(data, true)?;
        let end = self.header_len + self.offset;
        let back = end - self.chunk_count_offset;
        self.out.seek(SeekFrom::Current(-(back as i64)))?;
        self.out
            .write_all(&crate::format::chunk_count_field(self.next).to_be_bytes())?;
        self.out.seek(SeekFrom::Current(back as i64 - 8))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// An authenticated chunk returned by [`Opener::next_chunk`].
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// Index (from 0) and payload offset.
    pub pos: ChunkPos,
    /// True for the last chunk.
    pub last: bool,
    /// The plaintext.
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Reading,
    Done,
    Stopped,
}

/// Reads a sealed file chunk by chunk.
///
/// [`Opener::new`] reads the header, unwraps the file key with the first
/// identity that can, and checks the header MAC; nothing of the payload is
/// read yet. [`Opener::next_chunk`] then returns each chunk only after its
/// tag verified, and `Ok(None)` after the last one (having checked that
/// nothing follows it).
pub struct Opener<R: Read> {
    input: R,
    header: Header,
    header_len: u64,
    file_key: FileKey,
    recipients: Vec<Recipient>,
    cipher: PayloadCipher,
    next: u64,
    offset: u64,
    /// The frame being read; always [`MAX_FRAME_LEN`] long.
    buf: Vec<u8>,
    /// Length of the last frame read.
    frame_len: usize,
    /// Plaintext length of the last chunk read (in `buf` after the frame
    /// word, unless it was decrypted straight into a caller's buffer).
    data_len: usize,
    state: ReadState,
    base: Option<u64>,
}

impl<R: Read> fmt::Debug for Opener<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("kind", &self.header.kind)
            .field("generation", &self.header.generation)
            .field("next_chunk", &self.next)
            .finish_non_exhaustive()
    }
}

/// Unwraps the file key of `header` with the first identity that can, and
/// checks the MAC; returns the key and the decrypted recipient list.
pub(crate) fn unlock(
    header: &Header,
    identities: &[Identity],
) -> Result<(FileKey, Vec<Recipient>), OpenError> {
    let file_key = header
        .stanzas
        .iter()
        .filter(|s| s.kind == STANZA_X25519)
        .find_map(|s| {
            let body: &[u8; 64] = s.body.as_slice().try_into().ok()?;
            identities.iter().find_map(|id| id.unwrap(body))
        })
        .ok_or(OpenError::NotARecipient)?;
    if !primitives::hmac_verify(&file_key.header_mac_key(), &header.mac_input(), &header.mac) {
        return Err(OpenError::HeaderModified);
    }
    let n = header.stanzas.len();
    let list = primitives::aead_decrypt(
        &file_key.list_key(&header.list_salt),
        &[],
        &header.list_ct,
        32 * n,
    )
    .ok_or(OpenError::HeaderModified)?;
    let recipients = list
        .chunks_exact(32)
        .map(|c| Recipient::from_bytes(c.try_into().expect("32-byte chunks")))
        .collect();
    Ok((file_key, recipients))
}

impl<R: Read> Opener<R> {
    /// Reads and authenticates the header of the sealed file at the current
    /// position of `input`, with whichever of `identities` is a recipient.
    pub fn new(mut input: R, identities: &[Identity]) -> Result<Self, OpenError> {
        let header = Header::read(&mut input).map_err(|e| match e {
            ReadHeaderError::Header(h) => OpenError::Header(h),
            ReadHeaderError::Io(e) => OpenError::Io(e),
        })?;
        let (file_key, recipients) = unlock(&header, identities)?;
        Ok(Opener {
            cipher: file_key.payload_cipher(&header.nonce),
            header_len: header.encoded_len() as u64,
            input,
            header,
            file_key,
            recipients,
            next: 0,
            offset: 0,
            buf: vec![0u8; MAX_FRAME_LEN],
            frame_len: 0,
            data_len: 0,
            state: ReadState::Reading,
            base: None,
        })
    }

    /// Like [`Opener::new`], and fails unless the file is of `kind`.
    pub fn new_of_kind(input: R, identities: &[Identity], kind: Kind) -> Result<Self, OpenError> {
        let o = Self::new(input, identities)?;
        if o.header.kind != kind {
            return Err(OpenError::WrongKind {
                expected: kind,
                found: o.header.kind,
            });
        }
        Ok(o)
    }

    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Everyone who can open this file, in stanza order.
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    /// Length of the header; payload offsets count from here.
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Where the next chunk is expected.
    pub fn next_pos(&self) -> ChunkPos {
        ChunkPos {
            index: self.next,
            offset: self.offset,
        }
    }

    pub(crate) fn file_key(&self) -> &FileKey {
        &self.file_key
    }

    /// The input, positioned wherever reading stopped.
    pub fn into_inner(self) -> R {
        self.input
    }

    /// A [`Read`] adapter over the remaining plaintext.
    pub fn into_reader(self) -> OpenReader<R> {
        OpenReader {
            opener: self,
            pos: 0,
            len: 0,
            started: false,
        }
    }

    fn truncated(&self) -> OpenError {
        OpenError::Truncated {
            complete: self.next,
            expected: (self.header.chunk_count != 0).then_some(self.header.chunk_count),
            offset: self.header_len.saturating_add(self.offset),
        }
    }

    /// The next authenticated chunk, or `Ok(None)` after the last one.
    /// After an error every further call returns [`OpenError::Stopped`].
    pub fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>, OpenError> {
        Ok(self.advance(None)?.map(|(last, _)| Chunk {
            pos: ChunkPos {
                index: self.next - 1,
                offset: self.last_offset(),
            },
            last,
            data: &self.buf[FRAME_WORD_LEN..FRAME_WORD_LEN + self.data_len],
        }))
    }

    /// Reads the next chunk; with `dest` large enough for its plaintext,
    /// decrypts straight into it (returning true as the second value).
    /// Keeps the reading state: done after the last chunk, stopped after
    /// an error.
    fn advance(&mut self, dest: Option<&mut [u8]>) -> Result<Option<(bool, bool)>, OpenError> {
        match self.state {
            ReadState::Done => return Ok(None),
            ReadState::Stopped => return Err(OpenError::Stopped),
            ReadState::Reading => {}
        }
        match self.read_chunk(dest) {
            Ok((last, direct)) => {
                if last {
                    self.state = ReadState::Done;
                }
                Ok(Some((last, direct)))
            }
            Err(e) => {
                self.state = ReadState::Stopped;
                Err(e)
            }
        }
    }

    fn last_offset(&self) -> u64 {
        self.offset - self.frame_len as u64
    }

    /// Reads and checks one frame, and decrypts it into `dest` if that has
    /// room for the whole plaintext, else in place in `buf`; on success
    /// `next` and `offset` point past it. Returns the last flag and whether
    /// the plaintext went to `dest`.
    fn read_chunk(&mut self, dest: Option<&mut [u8]>) -> Result<(bool, bool), OpenError> {
        let modified = |s: &Self| OpenError::ChunkModified {
            chunk: s.next.saturating_add(1),
            offset: s.header_len.saturating_add(s.offset),
        };
        if self.next == u64::MAX {
            // Only a seek (to a position from a capture's index) gets here;
            // no chunk can follow the last possible counter.
            return Err(modified(self));
        }
        // `buf` keeps its full size (MAX_FRAME_LEN): frames are read into
        // it without zero-filling it first.
        let k = read_full(&mut self.input, &mut self.buf[..FRAME_WORD_LEN])?;
        if k < FRAME_WORD_LEN {
            return Err(self.truncated());
        }
        let word = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"));
        let last = word & LAST_FLAG != 0;
        let len = (word & LEN_MASK) as usize;
        if word & !(LAST_FLAG | LEN_MASK) != 0 || len > CHUNK_SIZE {
            return Err(modified(self));
        }
        let frame_len = FRAME_WORD_LEN + len + TAG_LEN + if last { LOCATOR_LEN } else { 0 };
        let k = read_full(&mut self.input, &mut self.buf[FRAME_WORD_LEN..frame_len])?;
        if k < frame_len - FRAME_WORD_LEN {
            return Err(self.truncated());
        }
        let mut aad = [0u8; FRAME_WORD_LEN + LOCATOR_LEN];
        aad[..4].copy_from_slice(&word.to_be_bytes());
        let aad_len = if last {
            let loc = &self.buf[FRAME_WORD_LEN + len + TAG_LEN..frame_len];
            aad[4..].copy_from_slice(loc);
            let index = u64::from_be_bytes(loc[..8].try_into().expect("8 bytes"));
            let offset = u64::from_be_bytes(loc[8..].try_into().expect("8 bytes"));
            if index != self.next || offset != self.offset {
                return Err(modified(self));
            }
            FRAME_WORD_LEN + LOCATOR_LEN
        } else {
            FRAME_WORD_LEN
        };
        let tag: [u8; TAG_LEN] = self.buf[FRAME_WORD_LEN + len..FRAME_WORD_LEN + len + TAG_LEN]
            .try_into()
            .expect("16 bytes");
        let body = &mut self.buf[FRAME_WORD_LEN..];
        let (ok, direct) = match dest {
            Some(d) if d.len() >= len => (
                self.cipher.open_to(
                    self.next,
                    last,
                    &aad[..aad_len],
                    &body[..len],
                    &mut d[..len],
                    &tag,
                ),
                true,
            ),
            _ => (
                self.cipher
                    .open(self.next, last, &aad[..aad_len], &mut body[..len], &tag),
                false,
            ),
        };
        if !ok {
            return Err(modified(self));
        }
        self.data_len = len;
        self.frame_len = frame_len;
        self.next += 1;
        self.offset += frame_len as u64;
        if last {
            let recorded = self.header.chunk_count;
            if recorded != 0 && recorded != self.next {
                return Err(OpenError::ChunkCountMismatch {
                    recorded,
                    actual: self.next,
                });
            }
            let mut probe = [0u8; 1];
            if read_full(&mut self.input, &mut probe)? != 0 {
                return Err(OpenError::TrailingData {
                    offset: self.header_len + self.offset,
                });
            }
        }
        Ok((last, direct))
    }
}

impl<R: Read + Seek> Opener<R> {
    /// Stream position of the start of the sealed file. Computed once, while
    /// the stream still sits right after what was read.
    fn base(&mut self) -> Result<u64, OpenError> {
        if let Some(b) = self.base {
            return Ok(b);
        }
        if self.state == ReadState::Stopped {
            return Err(OpenError::Stopped);
        }
        let here = self.input.stream_position()?;
        let b = here
            .checked_sub(self.header_len.saturating_add(self.offset))
            .ok_or_else(|| {
                OpenError::Io(io::Error::other("stream position before the sealed file"))
            })?;
        self.base = Some(b);
        Ok(b)
    }

    /// Jumps to the chunk at `pos` (an index and payload offset recorded
    /// earlier, for example in a capture's index). A wrong position is
    /// reported as a modification when that chunk is read.
    pub fn seek_to(&mut self, pos: ChunkPos) -> Result<(), OpenError> {
        let start = self.base()?;
        // A position past the end (even past u64::MAX, from a hostile
        // index) reads as a truncation or an I/O error, never a panic.
        let to = start
            .saturating_add(self.header_len)
            .saturating_add(pos.offset);
        self.input.seek(SeekFrom::Start(to))?;
        self.next = pos.index;
        self.offset = pos.offset;
        self.state = ReadState::Reading;
        Ok(())
    }

    /// Finds the last chunk through the locator at the end of the file and
    /// returns it, without reading the chunks before it. Afterwards
    /// [`Opener::next_chunk`] returns `Ok(None)`; [`Opener::seek_to`]
    /// rewinds.
    pub fn last_chunk(&mut self) -> Result<Chunk<'_>, OpenError> {
        let start = self.base()?;
        let end = self.input.seek(SeekFrom::End(0))?;
        let payload_len = end.saturating_sub(start + self.header_len);
        if payload_len < (FRAME_WORD_LEN + TAG_LEN + LOCATOR_LEN) as u64 {
            return Err(OpenError::BadLocator);
        }
        self.input.seek(SeekFrom::End(-(LOCATOR_LEN as i64)))?;
        let mut loc = [0u8; LOCATOR_LEN];
        self.input.read_exact(&mut loc)?;
        let index = u64::from_be_bytes(loc[..8].try_into().expect("8 bytes"));
        let offset = u64::from_be_bytes(loc[8..].try_into().expect("8 bytes"));
        let min_frame = (FRAME_WORD_LEN + TAG_LEN + LOCATOR_LEN) as u64;
        // Every chunk before the last takes at least a frame word and a tag.
        let max_index = offset / (FRAME_WORD_LEN + TAG_LEN) as u64;
        if offset > payload_len - min_frame || index > max_index {
            return Err(OpenError::BadLocator);
        }
        self.seek_to(ChunkPos { index, offset })?;
        match self.next_chunk() {
            Ok(Some(c)) if c.last => {}
            Ok(_) => return Err(OpenError::BadLocator),
            Err(OpenError::Truncated { .. }) => return Err(OpenError::BadLocator),
            Err(e) => return Err(e),
        }
        Ok(Chunk {
            pos: ChunkPos { index, offset },
            last: true,
            data: &self.buf[FRAME_WORD_LEN..FRAME_WORD_LEN + self.data_len],
        })
    }
}

/// [`Read`] over the plaintext of a sealed file. Errors are [`io::Error`]s
/// wrapping an [`OpenError`] ([`OpenError::from_io`] gets it back); a
/// truncated or modified file is an error, never a silent short read.
pub struct OpenReader<R: Read> {
    opener: Opener<R>,
    pos: usize,
    len: usize,
    started: bool,
}

impl<R: Read> fmt::Debug for OpenReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenReader")
            .field("opener", &self.opener)
            .finish_non_exhaustive()
    }
}

impl<R: Read> OpenReader<R> {
    /// The chunk-level reader underneath.
    pub fn opener(&self) -> &Opener<R> {
        &self.opener
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.len {
            if self.started && self.opener.state == ReadState::Done {
                return Ok(0);
            }
            self.started = true;
            // A caller's buffer that holds a whole chunk gets the plaintext
            // decrypted straight into it, saving a copy.
            match self.opener.advance(Some(&mut *out)) {
                Ok(Some((_, true))) if self.opener.data_len > 0 => {
                    return Ok(self.opener.data_len);
                }
                Ok(Some((_, true))) => {}
                Ok(Some((_, false))) => {
                    self.len = self.opener.data_len;
                    self.pos = 0;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let n = out.len().min(self.len - self.pos);
        let start = FRAME_WORD_LEN + self.pos;
        out[..n].copy_from_slice(&self.opener.buf[start..start + n]);
        self.pos += n;
        Ok(n)
    }
}

/// [`Write`] adapter that seals a byte stream in 64 KiB chunks.
///
/// `write` fills the current chunk and seals it once it is full and more
/// data follows; `flush` seals the current chunk even if short (so that
/// everything written so far reaches the output and survives a crash of
/// this process) and flushes the output; [`SealWriter::finish`] seals the
/// rest as the last chunk. Dropping the writer without `finish` leaves a
/// truncated file.
pub struct SealWriter<W: Write> {
    sealer: Sealer<W>,
    buf: Vec<u8>,
}

impl<W: Write> fmt::Debug for SealWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealWriter")
            .field("sealer", &self.sealer)
            .finish_non_exhaustive()
    }
}

impl<W: Write> SealWriter<W> {
    /// Starts a sealed file; see [`Sealer::new`].
    pub fn new<R: rand_core::CryptoRng + ?Sized>(
        out: W,
        kind: Kind,
        recipients: &[Recipient],
        rng: &mut R,
    ) -> Result<Self, SealError> {
        Ok(SealWriter {
            sealer: Sealer::new(out, kind, recipients, rng)?,
            buf: Vec::with_capacity(CHUNK_SIZE),
        })
    }

    /// Seals what is buffered as the last chunk and returns the output.
    pub fn finish(self) -> Result<W, SealError> {
        self.sealer.finish(&self.buf)
    }

    /// The chunk-level writer underneath.
    pub fn sealer(&self) -> &Sealer<W> {
        &self.sealer
    }
}

impl<W: Write + Seek> SealWriter<W> {
    /// Like [`SealWriter::finish`], recording the chunk count in the header
    /// ([`Sealer::finish_and_record_count`]).
    pub fn finish_and_record_count(self) -> Result<W, SealError> {
        self.sealer.finish_and_record_count(&self.buf)
    }
}

fn to_io(e: SealError) -> io::Error {
    match e {
        SealError::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.len() == CHUNK_SIZE {
            self.sealer.seal_chunk(&self.buf).map_err(to_io)?;
            self.buf.clear();
        }
        if self.buf.is_empty() && data.len() > CHUNK_SIZE {
            // A whole chunk with more data after it: seal it straight from
            // the caller's bytes (the same chunk the buffer would give).
            self.sealer.seal_chunk(&data[..CHUNK_SIZE]).map_err(to_io)?;
            return Ok(CHUNK_SIZE);
        }
        let n = data.len().min(CHUNK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.sealer.seal_chunk(&self.buf).map_err(to_io)?;
            self.buf.clear();
        }
        self.sealer.flush()
    }
}

/// What [`share`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareOutcome {
    /// Recipients added.
    pub added: Vec<Recipient>,
    /// Recipients asked for who already had access (left as they were).
    pub already: Vec<Recipient>,
    /// Everyone who can open the output.
    pub recipients: Vec<Recipient>,
}

/// Gives `new` recipients access to the sealed file read from `input`,
/// writing the result to `output`: the file key is wrapped for each new
/// recipient, the header MAC recomputed (which needs the file key, so one
/// of `identities` must be a recipient), and the payload bytes copied
/// unchanged. Works on a file of any size in constant memory; the payload
/// is copied, not checked (use a reader for that).
pub fn share<R: Read, W: Write, G: rand_core::CryptoRng + ?Sized>(
    input: R,
    mut output: W,
    identities: &[Identity],
    new: &[Recipient],
    rng: &mut G,
) -> Result<ShareOutcome, SealError> {
    let opener = Opener::new(input, identities)?;
    let file_key = opener.file_key().clone();
    let mut header = opener.header().clone();
    let mut recipients = opener.recipients().to_vec();
    let mut added = Vec::new();
    let mut already = Vec::new();
    for r in new {
        if recipients.contains(r) || added.contains(r) {
            already.push(*r);
        } else {
            added.push(*r);
        }
    }
    if recipients.len() + added.len() > MAX_RECIPIENTS {
        return Err(SealError::TooManyRecipients(recipients.len() + added.len()));
    }
    for r in &added {
        let body = r
            .wrap(&file_key, rng)
            .ok_or_else(|| SealError::WeakRecipient(r.to_string()))?;
        header.stanzas.push(Stanza {
            kind: STANZA_X25519,
            body: body.to_vec(),
        });
    }
    recipients.extend_from_slice(&added);
    let list: Vec<u8> = recipients.iter().flat_map(|r| r.to_bytes()).collect();
    rng.fill_bytes(&mut header.list_salt);
    header.list_ct = primitives::aead_encrypt(&file_key.list_key(&header.list_salt), &[], &list);
    header.mac = primitives::hmac(&file_key.header_mac_key(), &header.mac_input());
    output.write_all(&header.encode())?;
    let mut input = opener.into_inner();
    io::copy(&mut input, &mut output)?;
    output.flush()?;
    Ok(ShareOutcome {
        added,
        already,
        recipients,
    })
}

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// The new generation (old + 1).
    pub generation: u32,
    /// Everyone who can open the output.
    pub recipients: Vec<Recipient>,
    /// Chunks re-sealed.
    pub chunks: u64,
}

/// Takes access away from `remove`: reads the sealed file from `input`
/// (one of `identities` must open it), and writes to `output` a new
/// generation sealed under a fresh file key and nonce for the remaining
/// recipients, chunk for chunk (same plaintext lengths, so payload offsets
/// such as a capture's index stay valid).
///
/// What this cannot do: a removed key still opens every copy of an earlier
/// generation, and whatever was decrypted before cannot be recalled.
/// Revocation protects the new generation only, so the old file must be
/// replaced wherever it is kept.
pub fn revoke<R: Read, W: Write, G: rand_core::CryptoRng + ?Sized>(
    input: R,
    output: W,
    identities: &[Identity],
    remove: &[Recipient],
    rng: &mut G,
) -> Result<RevokeOutcome, SealError> {
    let mut opener = Opener::new(input, identities)?;
    for r in remove {
        if !opener.recipients().contains(r) {
            return Err(SealError::NotInList(r.to_string()));
        }
    }
    let remaining: Vec<Recipient> = opener
        .recipients()
        .iter()
        .filter(|r| !remove.contains(r))
        .copied()
        .collect();
    if remaining.is_empty() {
        return Err(SealError::LastRecipient);
    }
    let file_key = FileKey::random(rng);
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    let old = opener.header();
    let generation = old.generation.saturating_add(1);
    let mut header = build_header(old.kind, generation, &remaining, &file_key, nonce, rng)?;
    header.chunk_count = old.chunk_count;
    let mut sealer = Sealer::with_header(output, &header, &file_key)?;
    loop {
        let chunk = opener
            .next_chunk()?
            .ok_or(SealError::Open(OpenError::Stopped))?;
        if chunk.last {
            let data = chunk.data.to_vec();
            let chunks = sealer.next_pos().index + 1;
            sealer.finish(&data)?;
            return Ok(RevokeOutcome {
                generation,
                recipients: remaining,
                chunks,
            });
        }
        sealer.seal_chunk(chunk.data)?;
    }
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairOutcome {
    /// Complete chunks kept (copied byte for byte).
    pub kept_chunks: u64,
    /// Bytes of the input after the last complete chunk, left out.
    pub dropped_from: u64,
    /// Why the input was not a finished file.
    pub reason: String,
}

/// Makes a finished file out of a truncated one: reads `input` (one of
/// `identities` must open it), calls `on_chunk` with each complete chunk's
/// position and plaintext, and writes to `output` the header (chunk count
/// recorded), every complete chunk byte for byte, and a new last chunk
/// holding `last(…)`. The input is never modified.
///
/// With `salvage` a chunk that fails authentication is treated like the
/// end of the file (for a file whose tail was overwritten, for example by
/// a file system that zero-fills after a power loss); without it that is an
/// error. A complete, authentic input is [`SealError::NothingToRepair`].
pub fn repair<R, W, F, L>(
    input: R,
    output: W,
    identities: &[Identity],
    salvage: bool,
    mut on_chunk: F,
    last: L,
) -> Result<RepairOutcome, SealError>
where
    R: Read,
    W: Write + Seek,
    F: FnMut(ChunkPos, &[u8]),
    L: FnOnce() -> Vec<u8>,
{
    let mut opener = Opener::new(input, identities)?;
    let file_key = opener.file_key().clone();
    let mut header = opener.header().clone();
    header.chunk_count = 0;
    // Same file key and nonce: re-sealing a chunk's plaintext at its index
    // gives back exactly the bytes that were read.
    let mut sealer = Sealer::with_header(output, &header, &file_key)?;
    let reason = loop {
        match opener.next_chunk() {
            Ok(Some(c)) if c.last => return Err(SealError::NothingToRepair),
            Ok(Some(c)) => {
                on_chunk(c.pos, c.data);
                sealer.seal_chunk(c.data)?;
            }
            Ok(None) => return Err(SealError::NothingToRepair),
            Err(e @ OpenError::Truncated { .. }) => break e.to_string(),
            Err(e @ OpenError::ChunkModified { .. }) if salvage => break e.to_string(),
            Err(e) => return Err(e.into()),
        }
    };
    let kept = sealer.next_pos();
    let data = last();
    if data.len() > CHUNK_SIZE {
        return Err(SealError::ChunkTooLarge(data.len()));
    }
    sealer.finish_and_record_count(&data)?;
    Ok(RepairOutcome {
        kept_chunks: kept.index,
        dropped_from: opener.header_len() + kept.offset,
        reason,
    })
}
