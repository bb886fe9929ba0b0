//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the stable
//! test that replays their corpus: each feeds arbitrary bytes to a parser
//! and must return without panicking, whatever the bytes.

use std::io::Cursor;

use jam_core::Micros;

use crate::Kind;
use crate::format::{CHUNK_SIZE, Header};
use crate::keys::Identity;
use crate::reader::{CaptureReader, repair_capture, summarize};
use crate::record::RecordDecoder;
use crate::seal::{ChunkPos, Opener, Sealer};

/// [`crate::hide_caught_panics`], under the name the fuzz targets use in
/// their `init`: the fuzzer's hook aborts on every panic, which would turn
/// the panics this crate catches into crashes.
pub fn install_panic_hook() {
    crate::hide_caught_panics();
}

/// The fixed identity the fuzz inputs are sealed for.
pub fn identity() -> Identity {
    // Deriving the public key is a scalar multiplication: do it once.
    static ID: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    ID.get_or_init(|| Identity::from_secret_bytes([0x5a; 32]))
        .clone()
}

/// Parses `data` as a header and tries to unlock it with [`identity`].
pub fn sealed_header(data: &[u8]) {
    let _ = Header::decode(data);
    if let Ok(mut o) = Opener::new(data, &[identity()]) {
        while let Ok(Some(_)) = o.next_chunk() {}
    }
}

/// Constant "randomness" for reproducible fuzz seeds.
pub struct Fixed(pub u8);
impl rand_core::TryRng for Fixed {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.0 = self.0.wrapping_add(1);
        Ok(u32::from(self.0))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 = self.0.wrapping_add(1);
        Ok(u64::from(self.0))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for d in dst {
            self.0 = self.0.wrapping_add(1);
            *d = self.0;
        }
        Ok(())
    }
}
impl rand_core::TryCryptoRng for Fixed {}

/// A fixed, valid header sealed for [`identity`] (deterministic: the
/// randomness is a constant stream), so that fuzzing reaches the chunks.
pub fn fixed_header() -> Vec<u8> {
    let s = Sealer::new(
        Vec::new(),
        Kind::Capture,
        &[identity().to_public()],
        &mut Fixed(0),
    )
    .expect("sealing to a valid key works");
    s.get_ref().clone()
}

/// Opens `fixed_header() ++ data` and reads every chunk and record.
pub fn sealed_reader(data: &[u8]) {
    let mut file = fixed_header();
    file.extend_from_slice(data);
    if let Ok(mut r) = crate::reader::CaptureReader::open(&file[..], &[identity()]) {
        while let Ok(Some(_)) = r.next_record() {}
    }
    if let Ok(mut o) = Opener::new(std::io::Cursor::new(&file[..]), &[identity()]) {
        let _ = o.last_chunk();
    }
}

/// Splits `data` at every `0xff 0xff` into chunk plaintexts and decodes
/// their records.
pub fn capture_records(data: &[u8]) {
    let mut d = RecordDecoder::new();
    let mut start = 0;
    let mut i = 0;
    let mut index = 0;
    while i <= data.len() {
        let end = i == data.len() || (i + 1 < data.len() && data[i] == 0xff && data[i + 1] == 0xff);
        if end {
            let pos = ChunkPos {
                index,
                offset: start as u64,
            };
            if d.push(pos, &data[start..i], 0, |_, _| {}).is_err() {
                return;
            }
            index += 1;
            start = (i + 2).min(data.len());
            i += 2;
        } else {
            i += 1;
        }
    }
    d.finish();
    let _ = crate::record::Record::decode_frame(data);
}

/// A small capture sealed for [`identity`] with the same header as
/// [`fixed_header`]; its payload (the bytes after that header) is the seed of
/// the `sealed_reader` target.
pub fn seed_capture() -> Vec<u8> {
    use crate::record::{Direction, MidiEvent, SCHEMA_VERSION, SessionStart};
    use jam_core::{Beats, Micros, PeerId};
    let start = SessionStart {
        schema_version: SCHEMA_VERSION,
        session_schema: 1,
        recorder: PeerId([1; 16]),
        recorder_name: "seed".into(),
        wall_clock_unix_micros: 0,
        at: Micros::ZERO,
        tempo_bpm: 120.0,
    };
    let mut w = crate::writer::CaptureWriter::create(
        Vec::new(),
        &[identity().to_public()],
        start,
        crate::writer::CaptureConfig::default(),
        &mut Fixed(0),
    )
    .expect("writing to memory works");
    for i in 0..3u8 {
        w.append_midi(MidiEvent {
            at: Micros(u64::from(i) * 1000),
            participant: PeerId([2; 16]),
            direction: Direction::In,
            sender_time: Micros(0),
            beat: Beats(i64::from(i)),
            bytes: vec![0x90, 60 + i, 100],
            recovered: i == 1,
        })
        .expect("writing to memory works");
        w.flush().expect("writing to memory works");
    }
    w.append_marker(Micros(5000), Beats::ONE, "seed")
        .expect("writing to memory works");
    w.finish().expect("writing to memory works")
}

/// Splits `data` into chunk plaintexts: each piece is a 2-byte big-endian
/// length (capped at 64 KiB) and that many bytes; a length that runs past
/// the end takes the rest. At least one piece (the last chunk).
pub fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(CHUNK_SIZE);
        rest = &rest[2..];
        let n = len.min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    if out.is_empty() {
        out.push(rest);
    }
    out
}

/// The inverse of [`pieces`], for building seeds.
pub fn join_pieces<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&(c.len() as u16).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// Seals `chunks` for [`identity`] as an authentic file of `kind`; returns
/// it and the length of the file before its last chunk.
fn seal_pieces(kind: Kind, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut s = Sealer::new(Vec::new(), kind, &[identity().to_public()], &mut Fixed(0))
        .expect("sealing to a valid key works");
    let (last, rest) = chunks.split_last().expect("at least one piece");
    for c in rest {
        s.seal_chunk(c).expect("writing to memory works");
    }
    let before_last = s.get_ref().len();
    (
        s.finish(last).expect("writing to memory works"),
        before_last,
    )
}

/// [`pieces`] of `data` sealed for [`identity`] as an authentic capture,
/// and the capture [`repair_capture`] makes of it with its last chunk cut
/// off (if repair accepts it).
pub fn capture_files(data: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let (file, before_last) = seal_pieces(Kind::Capture, &pieces(data));
    let mut fixed = Cursor::new(Vec::new());
    let repaired = repair_capture(&file[..before_last], &mut fixed, &[identity()], false)
        .ok()
        .map(|_| fixed.into_inner());
    (file, repaired)
}

/// Everything a reader does with a capture: replay, the index, the
/// document at several times, the summary and the MIDI export.
fn read_capture(file: &[u8]) {
    let ids = [identity()];
    if let Ok(mut r) = CaptureReader::open(file, &ids) {
        while let Ok(Some(_)) = r.next_record() {}
    }
    if let Ok(mut r) = CaptureReader::open(Cursor::new(file), &ids) {
        let _ = r.read_index();
        for t in [0, 1_000_000, 30_000_000, u64::MAX] {
            let _ = r.state_at(Micros(t));
        }
    }
    let _ = summarize(file, &ids);
    let _ = crate::export::export_midi(file, &ids, std::io::sink());
}

/// Seals arbitrary chunk plaintexts ([`pieces`]) into an authentic capture
/// and reads it every way a reader does; then cuts off its last chunk,
/// repairs that and reads the repaired file. Content like this comes from
/// anyone who can open a file (a collaborator it was shared with), so it is
/// as hostile as a modified file but passes authentication.
pub fn capture_replay(data: &[u8]) {
    let (file, repaired) = capture_files(data);
    read_capture(&file);
    if let Some(r) = repaired {
        read_capture(&r);
    }
}

/// Agent metadata from arbitrary bytes, the same bytes sealed as an agent
/// and opened, and as text: a key file, a secret key line, a public key.
pub fn agent_and_keys(data: &[u8]) {
    let _ = crate::agent::AgentMeta::decode(data);
    let (file, _) = seal_pieces(Kind::Agent, &pieces(data));
    if let Ok(a) = crate::agent::open_agent(&file[..], &[identity()]) {
        let _ = a.verify();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        // No passphrase: a protected key stops before the (slow) KDF.
        let _ = crate::keys::decode_key_file(text, None);
        let _ = crate::keys::key_file_is_encrypted(text);
        let _ = Identity::from_secret_string(text);
        let _ = text.parse::<crate::Recipient>();
    }
}

/// The chunk plaintexts of a file sealed for [`identity`], joined as
/// [`pieces`] reads them (a seed for the targets that seal their input).
pub fn plaintext_pieces(file: &[u8]) -> Vec<u8> {
    let mut o = Opener::new(file, &[identity()]).expect("sealed for the fuzz identity");
    let mut chunks = Vec::new();
    while let Some(c) = o.next_chunk().expect("an authentic file") {
        chunks.push(c.data.to_vec());
    }
    join_pieces(chunks.iter().map(Vec::as_slice))
}

/// A short synthetic session (four players, document changes, a
/// checkpoint every 4 changes) sealed for [`identity`].
pub fn seed_session() -> Vec<u8> {
    use crate::synth::{Synth, SynthConfig};
    let synth = Synth::new(SynthConfig {
        duration: std::time::Duration::from_secs(15),
        density: 0.25,
        ..SynthConfig::default()
    });
    let mut w = crate::writer::CaptureWriter::create(
        Cursor::new(Vec::new()),
        &[identity().to_public()],
        synth.session_start(),
        crate::writer::CaptureConfig {
            checkpoint_every_changes: 4,
            ..crate::writer::CaptureConfig::default()
        },
        &mut Fixed(0),
    )
    .expect("writing to memory works");
    crate::synth::record(synth, &mut w).expect("writing to memory works");
    w.finish_and_record_count()
        .expect("writing to memory works")
        .into_inner()
}
