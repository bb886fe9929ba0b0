//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the stable
//! test that replays their corpus: each feeds arbitrary bytes to a parser
//! and must return without panicking, whatever the bytes.

use crate::Kind;
use crate::format::Header;
use crate::keys::Identity;
use crate::record::RecordDecoder;
use crate::seal::{ChunkPos, Opener, Sealer};

/// The fixed identity the fuzz inputs are sealed for.
pub fn identity() -> Identity {
    Identity::from_secret_bytes([0x5a; 32])
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
