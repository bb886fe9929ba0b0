//! Capture records: what a `.scp` payload holds, and how records are laid
//! into chunks.
//!
//! # Record frame
//!
//! Every record is `type (1 byte) | body length (LEB128) | body`. Bodies use
//! LEB128 for unsigned integers and times (`Micros`), zigzag LEB128 for
//! signed ones (`Beats`), 16 raw bytes for a `PeerId`, and a LEB128 length
//! before byte strings and UTF-8 text. A body must be consumed exactly.
//!
//! | type | record | body |
//! |---|---|---|
//! | `0x01` | [`SessionStart`] | schema (u16 BE), session-document schema, recorder id, recorder name, wall clock (µs since the Unix epoch, zigzag), `at`, tempo (f64 BE bits) |
//! | `0x02` | [`MidiEvent`] | `at`, participant, direction (0 in, 1 out), sender time, beat, flags (bit 0 recovered), MIDI bytes |
//! | `0x03` | [`DocChange`] | `at`, Automerge change bytes |
//! | `0x04` | [`MetadataChange`] | `at`, beat, key, value |
//! | `0x05` | [`Marker`] | `at`, beat, label |
//! | `0x06` | [`Checkpoint`] | `at`, changes so far, saved Automerge document |
//! | `0x07` | [`Index`] | see [`Index`]; only in the last chunk |
//!
//! Unknown types are refused: the session-start record's schema number
//! says which types to expect, and a newer schema is refused up front.
//!
//! # Records in chunks
//!
//! A chunk's plaintext is `continuation length (LEB128) | that many bytes
//! finishing the record the previous chunk started | whole records | the
//! start of a record that the next chunk finishes`. So a record larger than a
//! chunk spans several, and a reader that starts at any chunk knows where
//! the first record of that chunk begins. After a crash the last record may
//! be incomplete: the repaired file's last chunk starts with a continuation
//! length of 0, and a reader drops the incomplete record and counts it
//! ([`RecordDecoder::lost`]).

use jam_core::{Beats, Micros, PeerId};

use crate::codec::{CodecError, Dec, Enc, var_len};
use crate::format::CHUNK_SIZE;
use crate::seal::ChunkPos;

/// The record schema this build writes; readers refuse newer ones.
pub const SCHEMA_VERSION: u16 = 1;
/// Largest record body accepted (a saved session document must fit).
pub const MAX_RECORD_LEN: usize = 16 << 20;
/// Most seek points an index holds; more are thinned so that the index fits
/// in the last chunk.
pub const MAX_SEEK_POINTS: usize = 1500;

const T_START: u8 = 0x01;
const T_MIDI: u8 = 0x02;
const T_CHANGE: u8 = 0x03;
const T_META: u8 = 0x04;
const T_MARKER: u8 = 0x05;
const T_CHECKPOINT: u8 = 0x06;
const T_INDEX: u8 = 0x07;

/// The first record of every capture: who recorded, when, in which schema.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStart {
    /// Record schema of this capture ([`SCHEMA_VERSION`] when written).
    pub schema_version: u16,
    /// Schema version of the session document (as `jam-session-crdt`
    /// numbers it), so replay knows how to read the document.
    pub session_schema: u64,
    /// The participant whose machine recorded.
    pub recorder: PeerId,
    /// Their display name.
    pub recorder_name: String,
    /// Wall-clock start, microseconds since the Unix epoch.
    pub wall_clock_unix_micros: i64,
    /// Local clock at the start; every record's `at` is on this clock.
    pub at: Micros,
    /// Tempo at the start, in beats per minute.
    pub tempo_bpm: f64,
}

/// Whether a MIDI event was received from a participant or sent by the
/// recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from `participant`.
    In,
    /// Sent by the recorder (`participant` is the recorder).
    Out,
}

/// A MIDI event as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MidiEvent {
    /// Recorder's local clock when recorded.
    pub at: Micros,
    /// Who played it.
    pub participant: PeerId,
    /// Received or sent.
    pub direction: Direction,
    /// The sender's clock time stamped on the event.
    pub sender_time: Micros,
    /// Its position on the shared timeline.
    pub beat: Beats,
    /// The MIDI message bytes (a short message, or a whole system exclusive
    /// message).
    pub bytes: Vec<u8>,
    /// True if it was rebuilt from the recovery journal, not received.
    pub recovered: bool,
}

/// An Automerge change to the session document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocChange {
    /// Recorder's local clock when applied.
    pub at: Micros,
    /// The change as `automerge::Change::raw_bytes` gives it.
    pub bytes: Vec<u8>,
}

/// A change of free-form metadata (track names, tempo for export, notes).
/// Keys the replay layer understands: `tempo_bpm` (value: a decimal number,
/// applied at `beat`) and `name:<peer id>` (a participant's display name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataChange {
    /// Recorder's local clock.
    pub at: Micros,
    /// Position on the timeline it applies from.
    pub beat: Beats,
    /// What changed.
    pub key: String,
    /// The new value.
    pub value: String,
}

/// A marker the musicians set ("chorus", "take 2").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Recorder's local clock.
    pub at: Micros,
    /// Position on the timeline.
    pub beat: Beats,
    /// The label.
    pub label: String,
}

/// The whole session document at a moment: replay loads the latest one
/// before the wanted time and applies only the changes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Recorder's local clock.
    pub at: Micros,
    /// Changes recorded before this checkpoint.
    pub changes: u64,
    /// `automerge::Automerge::save` output.
    pub doc: Vec<u8>,
}

/// Where a record's frame starts: the chunk and the offset in its plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordPos {
    /// The chunk.
    pub chunk: ChunkPos,
    /// Byte offset of the frame in the chunk's plaintext.
    pub in_chunk: u32,
}

/// A place replay can start from: a checkpoint record and its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeekPoint {
    /// The checkpoint's time.
    pub at: Micros,
    /// Where the checkpoint record starts.
    pub pos: RecordPos,
}

/// The last record of a finished capture: totals and seek points.
///
/// Body: records, MIDI events, doc changes, first `at`, last `at`, count and
/// participant ids, count and seek points (`at`, chunk index, payload
/// offset, offset in chunk).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Index {
    /// Records before the index (the session start included).
    pub records: u64,
    /// MIDI events among them.
    pub midi_events: u64,
    /// Document changes among them.
    pub doc_changes: u64,
    /// Time of the first record.
    pub first_at: Micros,
    /// Time of the last record.
    pub last_at: Micros,
    /// Everyone with a MIDI event, sorted.
    pub participants: Vec<PeerId>,
    /// Checkpoints in time order.
    pub seek_points: Vec<SeekPoint>,
}

/// One capture record.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Record {
    /// See [`SessionStart`].
    SessionStart(SessionStart),
    /// See [`MidiEvent`].
    Midi(MidiEvent),
    /// See [`DocChange`].
    DocChange(DocChange),
    /// See [`MetadataChange`].
    Metadata(MetadataChange),
    /// See [`Marker`].
    Marker(Marker),
    /// See [`Checkpoint`].
    Checkpoint(Checkpoint),
    /// See [`Index`].
    Index(Index),
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record type is not one this build knows.
    #[error("unknown record type {0:#04x}")]
    UnknownType(u8),
    /// The body ends early.
    #[error("record of type {0:#04x} is cut short")]
    Truncated(u8),
    /// A field is invalid.
    #[error("record of type {kind:#04x} is invalid: {why}")]
    Invalid {
        /// The record type.
        kind: u8,
        /// What is wrong.
        why: &'static str,
    },
    /// The body has bytes after its last field.
    #[error("record of type {0:#04x} has {1} bytes after its last field")]
    TrailingBytes(u8, usize),
    /// The length prefix exceeds [`MAX_RECORD_LEN`].
    #[error("record of {0} bytes (at most {MAX_RECORD_LEN})")]
    TooLong(u64),
    /// A chunk's continuation length runs past the chunk.
    #[error("continuation of {0} bytes in a chunk of {1}")]
    BadContinuation(u64, usize),
    /// A chunk continues a record although none was started.
    #[error("chunk continues a record that no earlier chunk started")]
    Orphan,
}

fn peer(d: &mut Dec<'_>) -> Result<PeerId, CodecError> {
    Ok(PeerId(d.array()?))
}

impl Record {
    /// The record's time on the recorder's clock (`last_at` for the index).
    pub fn at(&self) -> Micros {
        match self {
            Record::SessionStart(r) => r.at,
            Record::Midi(r) => r.at,
            Record::DocChange(r) => r.at,
            Record::Metadata(r) => r.at,
            Record::Marker(r) => r.at,
            Record::Checkpoint(r) => r.at,
            Record::Index(r) => r.last_at,
        }
    }

    fn type_byte(&self) -> u8 {
        match self {
            Record::SessionStart(_) => T_START,
            Record::Midi(_) => T_MIDI,
            Record::DocChange(_) => T_CHANGE,
            Record::Metadata(_) => T_META,
            Record::Marker(_) => T_MARKER,
            Record::Checkpoint(_) => T_CHECKPOINT,
            Record::Index(_) => T_INDEX,
        }
    }

    fn encode_body(&self, e: &mut Enc) {
        match self {
            Record::SessionStart(s) => {
                e.u16(s.schema_version)
                    .var(s.session_schema)
                    .raw(&s.recorder.0)
                    .str(&s.recorder_name)
                    .svar(s.wall_clock_unix_micros)
                    .var(s.at.0)
                    .u64(s.tempo_bpm.to_bits());
            }
            Record::Midi(m) => {
                e.var(m.at.0)
                    .raw(&m.participant.0)
                    .u8(match m.direction {
                        Direction::In => 0,
                        Direction::Out => 1,
                    })
                    .var(m.sender_time.0)
                    .svar(m.beat.0)
                    .u8(u8::from(m.recovered))
                    .bytes(&m.bytes);
            }
            Record::DocChange(c) => {
                e.var(c.at.0).bytes(&c.bytes);
            }
            Record::Metadata(m) => {
                e.var(m.at.0).svar(m.beat.0).str(&m.key).str(&m.value);
            }
            Record::Marker(m) => {
                e.var(m.at.0).svar(m.beat.0).str(&m.label);
            }
            Record::Checkpoint(c) => {
                e.var(c.at.0).var(c.changes).bytes(&c.doc);
            }
            Record::Index(i) => {
                e.var(i.records)
                    .var(i.midi_events)
                    .var(i.doc_changes)
                    .var(i.first_at.0)
                    .var(i.last_at.0)
                    .var(i.participants.len() as u64);
                for p in &i.participants {
                    e.raw(&p.0);
                }
                e.var(i.seek_points.len() as u64);
                for s in &i.seek_points {
                    e.var(s.at.0)
                        .var(s.pos.chunk.index)
                        .var(s.pos.chunk.offset)
                        .var(u64::from(s.pos.in_chunk));
                }
            }
        }
    }

    /// Appends the record's frame (type, length, body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Enc::new();
        self.encode_body(&mut body);
        out.push(self.type_byte());
        let mut len = Enc::new();
        len.var(body.buf.len() as u64);
        out.extend_from_slice(&len.buf);
        out.extend_from_slice(&body.buf);
    }

    /// Decodes one record body of type `kind`.
    pub fn decode_body(kind: u8, body: &[u8]) -> Result<Record, RecordError> {
        let map = |e: CodecError| match e {
            CodecError::Truncated => RecordError::Truncated(kind),
            CodecError::Invalid(why) => RecordError::Invalid { kind, why },
        };
        let mut d = Dec::new(body);
        let d = &mut d;
        let r = (|| -> Result<Record, CodecError> {
            Ok(match kind {
                T_START => Record::SessionStart(SessionStart {
                    schema_version: d.u16()?,
                    session_schema: d.var()?,
                    recorder: peer(d)?,
                    recorder_name: d.str()?.to_string(),
                    wall_clock_unix_micros: d.svar()?,
                    at: Micros(d.var()?),
                    tempo_bpm: f64::from_bits(d.u64()?),
                }),
                T_MIDI => Record::Midi(MidiEvent {
                    at: Micros(d.var()?),
                    participant: peer(d)?,
                    direction: match d.u8()? {
                        0 => Direction::In,
                        1 => Direction::Out,
                        _ => return Err(CodecError::Invalid("direction is neither in nor out")),
                    },
                    sender_time: Micros(d.var()?),
                    beat: Beats(d.svar()?),
                    recovered: d.bool()?,
                    bytes: d.bytes()?.to_vec(),
                }),
                T_CHANGE => Record::DocChange(DocChange {
                    at: Micros(d.var()?),
                    bytes: d.bytes()?.to_vec(),
                }),
                T_META => Record::Metadata(MetadataChange {
                    at: Micros(d.var()?),
                    beat: Beats(d.svar()?),
                    key: d.str()?.to_string(),
                    value: d.str()?.to_string(),
                }),
                T_MARKER => Record::Marker(Marker {
                    at: Micros(d.var()?),
                    beat: Beats(d.svar()?),
                    label: d.str()?.to_string(),
                }),
                T_CHECKPOINT => Record::Checkpoint(Checkpoint {
                    at: Micros(d.var()?),
                    changes: d.var()?,
                    doc: d.bytes()?.to_vec(),
                }),
                T_INDEX => {
                    let mut i = Index {
                        records: d.var()?,
                        midi_events: d.var()?,
                        doc_changes: d.var()?,
                        first_at: Micros(d.var()?),
                        last_at: Micros(d.var()?),
                        ..Index::default()
                    };
                    let n = d.var()?;
                    if n > (d.rest.len() / 16) as u64 {
                        return Err(CodecError::Truncated);
                    }
                    for _ in 0..n {
                        i.participants.push(peer(d)?);
                    }
                    let n = d.var()?;
                    if n > (d.rest.len() / 4) as u64 {
                        return Err(CodecError::Truncated);
                    }
                    for _ in 0..n {
                        let at = Micros(d.var()?);
                        let index = d.var()?;
                        let offset = d.var()?;
                        let in_chunk = u32::try_from(d.var()?)
                            .map_err(|_| CodecError::Invalid("offset in chunk too large"))?;
                        i.seek_points.push(SeekPoint {
                            at,
                            pos: RecordPos {
                                chunk: ChunkPos { index, offset },
                                in_chunk,
                            },
                        });
                    }
                    Record::Index(i)
                }
                _ => return Err(CodecError::Invalid("unknown")),
            })
        })();
        let r = match r {
            Err(CodecError::Invalid("unknown")) => return Err(RecordError::UnknownType(kind)),
            other => other.map_err(map)?,
        };
        if !d.is_empty() {
            return Err(RecordError::TrailingBytes(kind, d.rest.len()));
        }
        Ok(r)
    }

    /// Decodes one frame from the start of `bytes`: `Ok(None)` if the frame
    /// is not complete yet, otherwise the record and the frame's length.
    pub fn decode_frame(bytes: &[u8]) -> Result<Option<(Record, usize)>, RecordError> {
        let Some((&kind, rest)) = bytes.split_first() else {
            return Ok(None);
        };
        let mut d = Dec::new(rest);
        let len = match d.var() {
            Ok(l) => l,
            Err(CodecError::Truncated) => return Ok(None),
            Err(CodecError::Invalid(why)) => return Err(RecordError::Invalid { kind, why }),
        };
        if len > MAX_RECORD_LEN as u64 {
            return Err(RecordError::TooLong(len));
        }
        let head = 1 + var_len(len);
        let total = head + len as usize;
        if bytes.len() < total {
            return Ok(None);
        }
        Ok(Some((Self::decode_body(kind, &bytes[head..total])?, total)))
    }
}

/// Lays record frames into chunk plaintexts (the writer's side of "records
/// in chunks"). Full chunks come out of [`ChunkAssembler::push`]; the
/// current short chunk from [`ChunkAssembler::take`].
#[derive(Debug)]
pub(crate) struct ChunkAssembler {
    cur: Vec<u8>,
}

impl ChunkAssembler {
    pub(crate) fn new() -> Self {
        let mut cur = Vec::with_capacity(CHUNK_SIZE);
        cur.push(0);
        ChunkAssembler { cur }
    }

    /// True if the current chunk holds no record bytes.
    pub(crate) fn is_empty(&self) -> bool {
        self.cur.len() == 1 && self.cur[0] == 0
    }

    /// Offset in the current chunk where the next frame starts (when the
    /// chunk is not full).
    pub(crate) fn next_offset(&self) -> u32 {
        self.cur.len() as u32
    }

    /// True if the current chunk has no room left.
    pub(crate) fn is_full(&self) -> bool {
        self.cur.len() == CHUNK_SIZE
    }

    /// Adds a frame; calls `full` with each chunk it fills.
    pub(crate) fn push<E>(
        &mut self,
        mut frame: &[u8],
        mut full: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.is_full() {
            full(&self.cur)?;
            self.cur.clear();
            self.cur.push(0);
        }
        let room = CHUNK_SIZE - self.cur.len();
        if frame.len() <= room {
            self.cur.extend_from_slice(frame);
            return Ok(());
        }
        self.cur.extend_from_slice(&frame[..room]);
        frame = &frame[room..];
        while !frame.is_empty() {
            full(&self.cur)?;
            self.cur.clear();
            // The next chunk starts with how much of this frame it carries.
            let cont = if frame.len() + var_len(frame.len() as u64) <= CHUNK_SIZE {
                frame.len()
            } else {
                CHUNK_SIZE - var_len(CHUNK_SIZE as u64)
            };
            let mut e = Enc::new();
            e.var(cont as u64);
            self.cur.extend_from_slice(&e.buf);
            self.cur.extend_from_slice(&frame[..cont]);
            frame = &frame[cont..];
        }
        Ok(())
    }

    /// The current chunk (short), leaving an empty one behind. Only call
    /// when no frame is half-written (always true between `push` calls).
    pub(crate) fn take(&mut self) -> Vec<u8> {
        let out = std::mem::replace(&mut self.cur, Vec::with_capacity(CHUNK_SIZE));
        self.cur.push(0);
        out
    }
}

/// Turns chunk plaintexts back into records (the reader's side of "records
/// in chunks"). Sans-IO: feed chunks in order with [`RecordDecoder::push`].
#[derive(Debug, Default)]
pub struct RecordDecoder {
    pending: Vec<u8>,
    pending_pos: RecordPos,
    lost: u64,
    skip_continuation: bool,
}

impl RecordDecoder {
    /// A decoder for a capture read from its first chunk.
    pub fn new() -> Self {
        RecordDecoder::default()
    }

    /// A decoder that starts at a record boundary inside some chunk (after
    /// a seek): the chunk's continuation is skipped.
    pub fn at_seek() -> Self {
        RecordDecoder {
            skip_continuation: true,
            ..Self::default()
        }
    }

    /// Records that were cut off by a crash and dropped.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// True if a record is waiting for the rest of its bytes.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Decodes the records in one chunk's plaintext, starting at `from`
    /// (0 for a whole chunk), and passes each with its position to `out`.
    pub fn push(
        &mut self,
        pos: ChunkPos,
        chunk: &[u8],
        from: usize,
        mut out: impl FnMut(RecordPos, Record),
    ) -> Result<(), RecordError> {
        let mut d = Dec::new(chunk);
        let cont = d
            .var()
            .map_err(|_| RecordError::BadContinuation(u64::MAX, chunk.len()))?;
        let head = chunk.len() - d.rest.len();
        if cont > d.rest.len() as u64 {
            return Err(RecordError::BadContinuation(cont, chunk.len()));
        }
        let cont = cont as usize;
        let mut at = head + cont;
        if self.skip_continuation {
            self.skip_continuation = false;
            at = at.max(from);
        } else if cont > 0 {
            if self.pending.is_empty() {
                return Err(RecordError::Orphan);
            }
            self.pending.extend_from_slice(&chunk[head..head + cont]);
            match Record::decode_frame(&self.pending)? {
                Some((r, n)) if n == self.pending.len() => {
                    out(self.pending_pos, r);
                    self.pending.clear();
                }
                Some(_) => return Err(RecordError::BadContinuation(cont as u64, chunk.len())),
                None if at == chunk.len() => return Ok(()),
                None => return Err(RecordError::BadContinuation(cont as u64, chunk.len())),
            }
        } else if !self.pending.is_empty() {
            // The chunk that would have finished it was lost in a crash.
            self.pending.clear();
            self.lost += 1;
        }
        while at < chunk.len() {
            match Record::decode_frame(&chunk[at..])? {
                Some((r, n)) => {
                    out(
                        RecordPos {
                            chunk: pos,
                            in_chunk: at as u32,
                        },
                        r,
                    );
                    at += n;
                }
                None => {
                    self.pending.extend_from_slice(&chunk[at..]);
                    self.pending_pos = RecordPos {
                        chunk: pos,
                        in_chunk: at as u32,
                    };
                    break;
                }
            }
        }
        Ok(())
    }

    /// Call at the end of the records: a record still waiting was cut off.
    pub fn finish(&mut self) {
        if !self.pending.is_empty() {
            self.pending.clear();
            self.lost += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Record> {
        let p = PeerId([7; 16]);
        vec![
            Record::SessionStart(SessionStart {
                schema_version: SCHEMA_VERSION,
                session_schema: 3,
                recorder: p,
                recorder_name: "Ada".into(),
                wall_clock_unix_micros: 1_700_000_000_000_000,
                at: Micros(5),
                tempo_bpm: 121.5,
            }),
            Record::Midi(MidiEvent {
                at: Micros(10),
                participant: p,
                direction: Direction::In,
                sender_time: Micros(9),
                beat: Beats(-3),
                bytes: vec![0x90, 60, 100],
                recovered: true,
            }),
            Record::DocChange(DocChange {
                at: Micros(11),
                bytes: vec![1, 2, 3],
            }),
            Record::Metadata(MetadataChange {
                at: Micros(12),
                beat: Beats(4_000_000),
                key: "tempo_bpm".into(),
                value: "90".into(),
            }),
            Record::Marker(Marker {
                at: Micros(13),
                beat: Beats(0),
                label: "chorus".into(),
            }),
            Record::Checkpoint(Checkpoint {
                at: Micros(14),
                changes: 1,
                doc: vec![9; 40],
            }),
            Record::Index(Index {
                records: 6,
                midi_events: 1,
                doc_changes: 1,
                first_at: Micros(5),
                last_at: Micros(14),
                participants: vec![p],
                seek_points: vec![SeekPoint {
                    at: Micros(14),
                    pos: RecordPos {
                        chunk: ChunkPos {
                            index: 0,
                            offset: 0,
                        },
                        in_chunk: 77,
                    },
                }],
            }),
        ]
    }

    #[test]
    fn every_record_type_round_trips() {
        for r in samples() {
            let mut b = Vec::new();
            r.encode(&mut b);
            let (back, n) = Record::decode_frame(&b).unwrap().unwrap();
            assert_eq!(back, r);
            assert_eq!(n, b.len());
            // Every strict prefix is "not complete yet", never an error.
            for k in 0..b.len() {
                assert_eq!(
                    Record::decode_frame(&b[..k]).unwrap(),
                    None,
                    "{r:?} cut at {k}"
                );
            }
        }
    }

    #[test]
    fn unknown_types_and_trailing_bytes_are_refused() {
        assert_eq!(
            Record::decode_frame(&[0x7f, 0]),
            Err(RecordError::UnknownType(0x7f))
        );
        let mut b = Vec::new();
        Record::Marker(Marker {
            at: Micros(1),
            beat: Beats(0),
            label: "x".into(),
        })
        .encode(&mut b);
        b[1] += 1;
        b.push(0);
        assert_eq!(
            Record::decode_frame(&b),
            Err(RecordError::TrailingBytes(0x05, 1))
        );
    }

    fn assemble(frames: &[Vec<u8>], flush_after: &[usize]) -> Vec<Vec<u8>> {
        let mut a = ChunkAssembler::new();
        let mut chunks = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            a.push(f, |c| {
                chunks.push(c.to_vec());
                Ok::<(), ()>(())
            })
            .unwrap();
            if flush_after.contains(&i) && !a.is_empty() {
                chunks.push(a.take());
            }
        }
        if !a.is_empty() {
            chunks.push(a.take());
        }
        chunks
    }

    fn decode_all(chunks: &[Vec<u8>]) -> (Vec<Record>, u64) {
        let mut d = RecordDecoder::new();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() <= CHUNK_SIZE);
            d.push(
                ChunkPos {
                    index: i as u64,
                    offset: 0,
                },
                c,
                0,
                |_, r| out.push(r),
            )
            .unwrap();
        }
        d.finish();
        (out, d.lost())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn records_survive_any_chunking(
            sizes in proptest::collection::vec(0usize..150_000, 1..12),
            flush_after in proptest::collection::vec(0usize..12, 0..5),
        ) {
            let records: Vec<Record> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| Record::DocChange(DocChange { at: Micros(i as u64), bytes: vec![i as u8; n] }))
                .collect();
            let frames: Vec<Vec<u8>> = records.iter().map(|r| { let mut b = Vec::new(); r.encode(&mut b); b }).collect();
            let chunks = assemble(&frames, &flush_after);
            let (back, lost) = decode_all(&chunks);
            prop_assert_eq!(back, records.clone());
            prop_assert_eq!(lost, 0);
            // Losing the tail chunks loses at most the one record they
            // were carrying on top of the records they held.
            for keep in 0..chunks.len() {
                let (back, lost) = decode_all(&chunks[..keep]);
                prop_assert!(lost <= 1);
                prop_assert_eq!(&records[..back.len()], &back[..]);
            }
        }

        #[test]
        fn decoding_arbitrary_chunks_never_panics(c in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut d = RecordDecoder::new();
            let _ = d.push(ChunkPos::default(), &c, 0, |_, _| {});
            let _ = d.push(ChunkPos::default(), &c, 0, |_, _| {});
        }
    }
}
