//! Reading captures: records in time order, the session document at any
//! time, a summary, and repair.
//!
//! [`CaptureReader`] reads records from any [`Read`]; with [`Seek`] it can
//! also find the index in the last chunk and jump to the checkpoint before
//! a time ([`CaptureReader::state_at`]). A truncated capture reads up to its
//! last complete chunk, then returns the truncation error.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Seek, Write};

use jam_core::{Micros, PeerId};

use crate::error::CaptureError;
use crate::format::{Header, Kind};
use crate::keys::{Identity, Recipient};
use crate::record::{
    Index, Record, RecordDecoder, RecordPos, SCHEMA_VERSION, SeekPoint, SessionStart,
};
use crate::seal::{ChunkPos, OpenError, Opener, RepairOutcome};

/// Reads the records of a capture.
pub struct CaptureReader<R: Read> {
    opener: Opener<R>,
    decoder: RecordDecoder,
    queue: VecDeque<(RecordPos, Record)>,
    start: SessionStart,
    index: Option<Index>,
    done: bool,
    seek_from: usize,
}

impl<R: Read> std::fmt::Debug for CaptureReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

fn record_err(chunk: ChunkPos) -> impl Fn(crate::record::RecordError) -> CaptureError {
    move |source| CaptureError::Record {
        chunk: chunk.index.saturating_add(1),
        source,
    }
}

impl<R: Read> CaptureReader<R> {
    /// Opens a capture with whichever of `identities` is a recipient and
    /// reads its session-start record.
    pub fn open(input: R, identities: &[Identity]) -> Result<Self, CaptureError> {
        let opener = Opener::new_of_kind(input, identities, Kind::Capture)?;
        let mut r = CaptureReader {
            opener,
            decoder: RecordDecoder::new(),
            queue: VecDeque::new(),
            start: SessionStart {
                schema_version: 0,
                session_schema: 0,
                recorder: PeerId::default(),
                recorder_name: String::new(),
                wall_clock_unix_micros: 0,
                at: Micros::ZERO,
                tempo_bpm: 0.0,
            },
            index: None,
            done: false,
            seek_from: 0,
        };
        match r.next_raw()? {
            Some((_, Record::SessionStart(s))) => {
                if s.schema_version > SCHEMA_VERSION {
                    return Err(CaptureError::UnsupportedSchema(s.schema_version));
                }
                r.start = s;
                Ok(r)
            }
            _ => Err(CaptureError::NoSessionStart),
        }
    }

    /// The session-start record.
    pub fn session_start(&self) -> &SessionStart {
        &self.start
    }

    /// The authenticated header.
    pub fn header(&self) -> &Header {
        self.opener.header()
    }

    /// Everyone who can open the capture.
    pub fn recipients(&self) -> &[Recipient] {
        self.opener.recipients()
    }

    /// The index, once the last chunk has been read (or found with
    /// [`CaptureReader::read_index`]).
    pub fn index(&self) -> Option<&Index> {
        self.index.as_ref()
    }

    /// Records that a crash cut off (seen so far).
    pub fn lost_records(&self) -> u64 {
        self.decoder.lost()
    }

    /// Chunks read so far (the position of the next one).
    pub fn next_chunk(&self) -> ChunkPos {
        self.opener.next_pos()
    }

    fn next_raw(&mut self) -> Result<Option<(RecordPos, Record)>, CaptureError> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Ok(Some(r));
            }
            if self.done {
                return Ok(None);
            }
            let from = std::mem::take(&mut self.seek_from);
            let queue = &mut self.queue;
            match self.opener.next_chunk()? {
                Some(c) => {
                    let (pos, last) = (c.pos, c.last);
                    self.decoder
                        .push(pos, c.data, from, |p, r| queue.push_back((p, r)))
                        .map_err(record_err(pos))?;
                    if last {
                        self.decoder.finish();
                        self.done = true;
                    }
                }
                None => self.done = true,
            }
        }
    }

    /// The next record in stored (= time) order with its position, or
    /// `Ok(None)` at the end. Checkpoints are returned too; the index is
    /// kept aside ([`CaptureReader::index`]). On a truncated capture every
    /// record of the complete chunks comes first, then the error.
    pub fn next_record(&mut self) -> Result<Option<(RecordPos, Record)>, CaptureError> {
        loop {
            match self.next_raw()? {
                Some((_, Record::Index(i))) => self.index = Some(i),
                other => return Ok(other),
            }
        }
    }

    /// The session document after every change up to and including time
    /// `t`, by reading from the current position (use on a fresh reader, or
    /// [`CaptureReader::state_at`] on a seekable one).
    pub fn state_at_linear(&mut self, t: Micros) -> Result<automerge::Automerge, CaptureError> {
        let mut doc = automerge::Automerge::new();
        apply_until(self, &mut doc, t)?;
        Ok(doc)
    }
}

fn apply_until<R: Read>(
    r: &mut CaptureReader<R>,
    doc: &mut automerge::Automerge,
    t: Micros,
) -> Result<(), CaptureError> {
    while let Some((_, rec)) = r.next_record()? {
        if rec.at() > t {
            break;
        }
        if let Record::DocChange(c) = rec {
            let change = crate::doc::parse_change(c.bytes).map_err(CaptureError::Document)?;
            crate::doc::apply(doc, change).map_err(CaptureError::Document)?;
        }
    }
    Ok(())
}

impl<R: Read + Seek> CaptureReader<R> {
    /// Finds the index through the locator at the end of the file, without
    /// reading the records before it. Afterwards reading continues from
    /// wherever [`CaptureReader::seek`] or [`CaptureReader::rewind`] puts it.
    pub fn read_index(&mut self) -> Result<Index, CaptureError> {
        if let Some(i) = &self.index {
            return Ok(i.clone());
        }
        let last = self.opener.last_chunk()?;
        let pos = last.pos;
        let mut found = None;
        RecordDecoder::at_seek()
            .push(pos, last.data, 0, |_, r| {
                if let Record::Index(i) = r {
                    found = Some(i);
                }
            })
            .map_err(record_err(pos))?;
        self.done = true;
        self.queue.clear();
        let i = found.ok_or(CaptureError::Open(OpenError::BadLocator))?;
        self.index = Some(i.clone());
        Ok(i)
    }

    /// Continues reading at the record that starts at `pos`.
    pub fn seek(&mut self, pos: RecordPos) -> Result<(), CaptureError> {
        self.opener.seek_to(pos.chunk)?;
        self.decoder = RecordDecoder::at_seek();
        self.queue.clear();
        self.done = false;
        self.seek_from = pos.in_chunk as usize;
        Ok(())
    }

    /// Continues reading at the first record (the session start).
    pub fn rewind(&mut self) -> Result<(), CaptureError> {
        self.opener.seek_to(ChunkPos::default())?;
        self.decoder = RecordDecoder::new();
        self.queue.clear();
        self.done = false;
        self.seek_from = 0;
        Ok(())
    }

    /// The session document after every change up to and including time
    /// `t`: loads the last checkpoint at or before `t` (found through the
    /// index) and applies only the changes after it. A capture without an
    /// index (not finished) is read from the start.
    pub fn state_at(&mut self, t: Micros) -> Result<automerge::Automerge, CaptureError> {
        let seek: Option<SeekPoint> = match self.read_index() {
            Ok(i) => i.seek_points.iter().rev().find(|s| s.at <= t).copied(),
            Err(CaptureError::Open(_)) => None,
            Err(e) => return Err(e),
        };
        let mut doc = match seek {
            Some(sp) => {
                self.seek(sp.pos)?;
                match self.next_record()? {
                    Some((_, Record::Checkpoint(c))) if c.at <= t => {
                        crate::doc::load(&c.doc).map_err(CaptureError::Document)?
                    }
                    _ => {
                        return Err(CaptureError::Document(format!(
                            "the index points at a record that is not a checkpoint at or before {t}"
                        )));
                    }
                }
            }
            None => {
                self.rewind()?;
                automerge::Automerge::new()
            }
        };
        apply_until(self, &mut doc, t)?;
        Ok(doc)
    }
}

/// What a full read of a capture found; see [`summarize`].
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSummary {
    /// The session start.
    pub start: SessionStart,
    /// Generation of the sealed file.
    pub generation: u32,
    /// Everyone who can open it.
    pub recipients: Vec<Recipient>,
    /// Chunks read (complete ones, if truncated).
    pub chunks: u64,
    /// Records read, by kind name.
    pub records: BTreeMap<&'static str, u64>,
    /// Time of the first and last record.
    pub first_at: Micros,
    /// See `first_at`.
    pub last_at: Micros,
    /// Everyone with a MIDI event.
    pub participants: BTreeSet<PeerId>,
    /// Markers with their times.
    pub markers: Vec<(Micros, String)>,
    /// True if the capture ended with its index (finished or repaired).
    pub finished: bool,
    /// Records cut off by a crash.
    pub lost_records: u64,
}

/// The kind name of a record, as `jam capture replay` prints it.
pub fn record_kind(r: &Record) -> &'static str {
    match r {
        Record::SessionStart(_) => "session-start",
        Record::Midi(_) => "midi",
        Record::DocChange(_) => "doc-change",
        Record::Metadata(_) => "metadata",
        Record::Marker(_) => "marker",
        Record::Checkpoint(_) => "checkpoint",
        Record::Index(_) => "index",
    }
}

/// Reads a whole capture, checking every chunk, and sums it up. On a
/// truncated or modified capture returns what was read so far together
/// with the error.
pub fn summarize<R: Read>(
    input: R,
    identities: &[Identity],
) -> Result<(CaptureSummary, Option<CaptureError>), CaptureError> {
    let mut r = CaptureReader::open(input, identities)?;
    let mut s = CaptureSummary {
        start: r.session_start().clone(),
        generation: r.header().generation,
        recipients: r.recipients().to_vec(),
        chunks: 0,
        records: BTreeMap::from([("session-start", 1)]),
        first_at: r.session_start().at,
        last_at: r.session_start().at,
        participants: BTreeSet::new(),
        markers: Vec::new(),
        finished: false,
        lost_records: 0,
    };
    let err = loop {
        match r.next_record() {
            Ok(Some((_, rec))) => {
                *s.records.entry(record_kind(&rec)).or_default() += 1;
                s.last_at = s.last_at.max(rec.at());
                match rec {
                    Record::Midi(m) => {
                        s.participants.insert(m.participant);
                    }
                    Record::Marker(m) => s.markers.push((m.at, m.label)),
                    _ => {}
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    s.chunks = r.next_chunk().index;
    s.finished = err.is_none() && r.index().is_some();
    s.lost_records = r.lost_records();
    Ok((s, err))
}

/// What [`repair_capture`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRepair {
    /// The container-level outcome.
    pub sealed: RepairOutcome,
    /// Records kept.
    pub records: u64,
    /// Records cut off by the crash (a record whose last chunk was lost).
    pub lost_records: u64,
}

/// Repairs a truncated capture into `output`: every complete chunk is kept
/// byte for byte and a new last chunk holds an index rebuilt from the
/// records that survived. `input` is not modified. See
/// [`crate::seal::repair`] for `salvage`.
pub fn repair_capture<R: Read, W: Write + Seek>(
    input: R,
    output: W,
    identities: &[Identity],
    salvage: bool,
) -> Result<CaptureRepair, CaptureError> {
    struct Scan {
        decoder: RecordDecoder,
        index: Index,
        participants: BTreeSet<PeerId>,
        first: Option<Micros>,
        bad: Option<CaptureError>,
    }
    let scan = std::cell::RefCell::new(Scan {
        decoder: RecordDecoder::new(),
        index: Index::default(),
        participants: BTreeSet::new(),
        first: None,
        bad: None,
    });
    let sealed = crate::seal::repair(
        input,
        output,
        identities,
        salvage,
        |pos, data| {
            let mut guard = scan.borrow_mut();
            let s = &mut *guard;
            if s.bad.is_some() {
                return;
            }
            let (index, participants, first) = (&mut s.index, &mut s.participants, &mut s.first);
            let res = s.decoder.push(pos, data, 0, |p, r| {
                index.records += 1;
                first.get_or_insert(r.at());
                index.last_at = index.last_at.max(r.at());
                match &r {
                    Record::Midi(m) => {
                        index.midi_events += 1;
                        participants.insert(m.participant);
                    }
                    Record::DocChange(_) => index.doc_changes += 1,
                    Record::Checkpoint(c) => index.seek_points.push(SeekPoint { at: c.at, pos: p }),
                    _ => {}
                }
            });
            if let Err(e) = res {
                s.bad = Some(record_err(pos)(e));
            }
        },
        || {
            let s = scan.borrow();
            let mut last = vec![0u8];
            let mut i = s.index.clone();
            i.first_at = s.first.unwrap_or_default();
            i.participants = s.participants.iter().copied().collect();
            while i.seek_points.len() > crate::record::MAX_SEEK_POINTS {
                i.seek_points = i.seek_points.into_iter().step_by(2).collect();
            }
            Record::Index(i).encode(&mut last);
            last
        },
    )?;
    let mut s = scan.into_inner();
    if let Some(e) = s.bad {
        return Err(e);
    }
    s.decoder.finish();
    Ok(CaptureRepair {
        sealed,
        records: s.index.records,
        lost_records: s.decoder.lost(),
    })
}
