//! [`CaptureWriter`]: records a session into a sealed `.scp` capture.
//!
//! The writer is sans-IO in time: it never reads a clock. Every record
//! carries its time (`at`, the recorder's local monotonic clock), and the
//! driver calls [`CaptureWriter::tick`] with `now` so that records reach the
//! output at least every [`CaptureConfig::flush_interval`] (1 s by default)
//! even when nothing else is appended. A chunk is also sealed whenever 64 KiB
//! of records are waiting. After a crash of the writing process every sealed
//! chunk is in the file and authentic; `jam capture repair` (or
//! [`crate::reader::repair_capture`]) closes the file.
//!
//! Method groups (in the quinn vocabulary):
//! - create: [`CaptureWriter::create`] (writes the header and the
//!   session-start record);
//! - commands: `append_midi`, `append_change`, `append_metadata`,
//!   `append_marker`;
//! - time: [`CaptureWriter::tick`] with `now`, and
//!   [`CaptureWriter::poll_timeout`] for when to call it next;
//! - end: [`CaptureWriter::finish`] (or `finish_and_record_count` on a
//!   seekable output), which writes the index as the last chunk.
//!
//! Times are kept in order: a record whose `at` is earlier than the previous
//! record's is stored with the previous time (so stored order is time order,
//! which replay relies on) and counted in [`CaptureStats::clamped_times`].
//!
//! ```
//! use jam_capture::writer::{CaptureConfig, CaptureWriter};
//! use jam_capture::record::{Direction, MidiEvent, SessionStart, SCHEMA_VERSION};
//! use jam_capture::Identity;
//! use jam_core::{Beats, Micros, PeerId};
//! # use rand::SeedableRng;
//! # let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let me = Identity::generate(&mut rng);
//! let peer = PeerId([1; 16]);
//! let start = SessionStart {
//!     schema_version: SCHEMA_VERSION,
//!     session_schema: 1,
//!     recorder: peer,
//!     recorder_name: "Ada".into(),
//!     wall_clock_unix_micros: 1_700_000_000_000_000,
//!     at: Micros::ZERO,
//!     tempo_bpm: 120.0,
//! };
//! // In a peer: a `std::fs::File` instead of the Vec.
//! let mut w = CaptureWriter::create(Vec::new(), &[me.to_public()], start, CaptureConfig::default(), &mut rng)?;
//! w.append_midi(MidiEvent {
//!     at: Micros::from_millis(10),
//!     participant: peer,
//!     direction: Direction::Out,
//!     sender_time: Micros::from_millis(10),
//!     beat: Beats::ZERO,
//!     bytes: vec![0x90, 60, 100],
//!     recovered: false,
//! })?;
//! // The driver's timer fires: the pending records are sealed and flushed.
//! assert!(w.tick(Micros::from_millis(1010))?);
//! let file: Vec<u8> = w.finish()?;
//! # Ok::<(), jam_capture::CaptureError>(())
//! ```

use std::collections::BTreeSet;
use std::io::{Seek, Write};
use std::time::Duration;

use jam_core::{Beats, Micros, PeerId};

use crate::error::CaptureError;
use crate::format::{CHUNK_SIZE, Kind};
use crate::keys::Recipient;
use crate::record::{
    Checkpoint, ChunkAssembler, DocChange, Index, MAX_SEEK_POINTS, Marker, MetadataChange,
    MidiEvent, Record, RecordPos, SeekPoint, SessionStart,
};
use crate::seal::Sealer;

/// When the writer seals chunks and writes checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Longest time a record waits before its chunk is sealed and flushed.
    pub flush_interval: Duration,
    /// A checkpoint (the whole session document) after this many changes.
    pub checkpoint_every_changes: u32,
    /// A checkpoint at least this often (session time), so that replay
    /// can start near any time.
    pub checkpoint_interval: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            flush_interval: Duration::from_secs(1),
            checkpoint_every_changes: 256,
            checkpoint_interval: Duration::from_secs(30),
        }
    }
}

/// Counts kept while writing; they end up in the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Records written (session start and checkpoints included).
    pub records: u64,
    /// MIDI events written.
    pub midi_events: u64,
    /// Document changes written.
    pub doc_changes: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Chunks sealed so far.
    pub chunks: u64,
    /// Records whose time went backwards and was raised.
    pub clamped_times: u64,
}

/// Records a session into a sealed capture; see the [module docs](self).
pub struct CaptureWriter<W: Write> {
    sealer: Sealer<W>,
    chunks: ChunkAssembler,
    /// Time of the oldest record not yet sealed.
    oldest_unsealed: Option<Micros>,
    last_at: Micros,
    first_at: Micros,
    config: CaptureConfig,
    doc: automerge::Automerge,
    /// The document as saved in the last checkpoint (empty before the
    /// first), and the changes applied since: enough to rebuild `doc` if
    /// automerge fails half-way through a change.
    checkpoint_doc: Vec<u8>,
    since_checkpoint: Vec<Vec<u8>>,
    changes_since_checkpoint: u32,
    last_checkpoint_at: Micros,
    participants: BTreeSet<PeerId>,
    seek_points: Vec<SeekPoint>,
    stats: CaptureStats,
    frame: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a capture sealed for `recipients`: writes the header and the
    /// session-start record, and seals that first chunk at once, so even a
    /// capture that crashes in its first second says who recorded it.
    pub fn create<G: rand_core::CryptoRng + ?Sized>(
        out: W,
        recipients: &[Recipient],
        start: SessionStart,
        config: CaptureConfig,
        rng: &mut G,
    ) -> Result<Self, CaptureError> {
        let sealer = Sealer::new(out, Kind::Capture, recipients, rng)?;
        let at = start.at;
        let mut w = CaptureWriter {
            sealer,
            chunks: ChunkAssembler::new(),
            oldest_unsealed: None,
            last_at: at,
            first_at: at,
            config,
            doc: automerge::Automerge::new(),
            checkpoint_doc: Vec::new(),
            since_checkpoint: Vec::new(),
            changes_since_checkpoint: 0,
            last_checkpoint_at: at,
            participants: BTreeSet::new(),
            seek_points: Vec::new(),
            stats: CaptureStats::default(),
            frame: Vec::new(),
        };
        w.write_record(&Record::SessionStart(start))?;
        w.flush()?;
        Ok(w)
    }

    /// Counts so far.
    pub fn stats(&self) -> &CaptureStats {
        &self.stats
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        self.sealer.get_ref()
    }

    /// The output, mutably: for example to `sync_data` a file after
    /// [`CaptureWriter::tick`] returned true. Writing to it corrupts the
    /// capture.
    pub fn get_mut(&mut self) -> &mut W {
        self.sealer.get_mut()
    }

    fn clamp(&mut self, at: Micros) -> Micros {
        if at < self.last_at {
            self.stats.clamped_times += 1;
            self.last_at
        } else {
            self.last_at = at;
            at
        }
    }

    fn write_record(&mut self, r: &Record) -> Result<RecordPos, CaptureError> {
        if self.chunks.is_full() {
            self.seal_current()?;
        }
        let pos = RecordPos {
            chunk: self.sealer.next_pos(),
            in_chunk: self.chunks.next_offset(),
        };
        self.frame.clear();
        r.encode(&mut self.frame);
        let sealer = &mut self.sealer;
        let stats = &mut self.stats;
        self.chunks.push(&self.frame, |c| {
            sealer.seal_chunk(c)?;
            stats.chunks += 1;
            Ok::<(), CaptureError>(())
        })?;
        self.stats.records += 1;
        if self.chunks.is_empty() {
            // Everything went out in full chunks.
            self.sealer.flush()?;
            self.oldest_unsealed = None;
        } else if self.oldest_unsealed.is_none() {
            self.oldest_unsealed = Some(r.at());
        }
        Ok(pos)
    }

    fn seal_current(&mut self) -> Result<(), CaptureError> {
        if !self.chunks.is_empty() {
            let c = self.chunks.take();
            self.sealer.seal_chunk(&c)?;
            self.stats.chunks += 1;
        }
        self.sealer.flush()?;
        self.oldest_unsealed = None;
        Ok(())
    }

    /// Seals and flushes whatever is waiting, now.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.seal_current()
    }

    /// After an append at `at`: seal if the oldest waiting record is due.
    fn after_append(&mut self, at: Micros) -> Result<(), CaptureError> {
        self.tick(at).map(|_| ())
    }

    /// Appends a MIDI event.
    pub fn append_midi(&mut self, mut ev: MidiEvent) -> Result<(), CaptureError> {
        ev.at = self.clamp(ev.at);
        let at = ev.at;
        self.participants.insert(ev.participant);
        self.write_record(&Record::Midi(ev))?;
        self.stats.midi_events += 1;
        self.after_append(at)
    }

    /// Appends an Automerge change to the session document (as
    /// `automerge::Change::raw_bytes` gives it). Bytes that are not a change,
    /// or that automerge cannot apply, are refused and nothing is written
    /// (the writer's copy of the document is rebuilt from the last
    /// checkpoint if automerge failed half-way). Writes a checkpoint when
    /// due.
    pub fn append_change(&mut self, at: Micros, change: &[u8]) -> Result<(), CaptureError> {
        let parsed =
            crate::doc::parse_change(change.to_vec()).map_err(CaptureError::InvalidChange)?;
        if let Err(e) = crate::doc::apply(&mut self.doc, parsed) {
            // The document may be half-changed: rebuild it from what was
            // recorded, so the next checkpoint holds exactly the recorded
            // changes.
            self.doc = self.rebuild_doc();
            return Err(CaptureError::InvalidChange(e));
        }
        self.since_checkpoint.push(change.to_vec());
        let at = self.clamp(at);
        self.write_record(&Record::DocChange(DocChange {
            at,
            bytes: change.to_vec(),
        }))?;
        self.stats.doc_changes += 1;
        self.changes_since_checkpoint += 1;
        if self.changes_since_checkpoint >= self.config.checkpoint_every_changes {
            self.checkpoint(at)?;
        }
        self.after_append(at)
    }

    /// Appends a metadata change (see [`MetadataChange`] for the keys that
    /// replay understands).
    pub fn append_metadata(
        &mut self,
        at: Micros,
        beat: Beats,
        key: &str,
        value: &str,
    ) -> Result<(), CaptureError> {
        let at = self.clamp(at);
        self.write_record(&Record::Metadata(MetadataChange {
            at,
            beat,
            key: key.to_string(),
            value: value.to_string(),
        }))?;
        self.after_append(at)
    }

    /// Appends a marker.
    pub fn append_marker(
        &mut self,
        at: Micros,
        beat: Beats,
        label: &str,
    ) -> Result<(), CaptureError> {
        let at = self.clamp(at);
        self.write_record(&Record::Marker(Marker {
            at,
            beat,
            label: label.to_string(),
        }))?;
        self.after_append(at)
    }

    /// The document from the last checkpoint and the changes since.
    fn rebuild_doc(&self) -> automerge::Automerge {
        let mut doc = if self.checkpoint_doc.is_empty() {
            automerge::Automerge::new()
        } else {
            crate::doc::load(&self.checkpoint_doc)
                .expect("a document this writer saved loads again")
        };
        for c in &self.since_checkpoint {
            let c = crate::doc::parse_change(c.clone()).expect("the change parsed before");
            crate::doc::apply(&mut doc, c).expect("the change applied before");
        }
        doc
    }

    fn checkpoint(&mut self, at: Micros) -> Result<(), CaptureError> {
        let doc = self.doc.save();
        let r = Record::Checkpoint(Checkpoint {
            at,
            changes: self.stats.doc_changes,
            doc,
        });
        let pos = self.write_record(&r)?;
        if let Record::Checkpoint(c) = r {
            self.checkpoint_doc = c.doc;
        }
        self.since_checkpoint.clear();
        self.seek_points.push(SeekPoint { at, pos });
        self.stats.checkpoints += 1;
        self.changes_since_checkpoint = 0;
        self.last_checkpoint_at = at;
        Ok(())
    }

    /// The time at which [`CaptureWriter::tick`] must next be called, or
    /// `None` while nothing waits to be sealed and no checkpoint is due.
    pub fn poll_timeout(&self) -> Option<Micros> {
        let flush = self.oldest_unsealed.map(|t| t + self.config.flush_interval);
        let cp = (self.changes_since_checkpoint > 0)
            .then(|| self.last_checkpoint_at + self.config.checkpoint_interval);
        match (flush, cp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances the writer's notion of time: writes a checkpoint if one is
    /// due, and seals and flushes the waiting records if the oldest has
    /// waited [`CaptureConfig::flush_interval`]. Returns true if a chunk was
    /// sealed and flushed (a good moment to `sync_data` a file).
    pub fn tick(&mut self, now: Micros) -> Result<bool, CaptureError> {
        if self.changes_since_checkpoint > 0
            && now.saturating_duration_since(self.last_checkpoint_at)
                >= self.config.checkpoint_interval
        {
            let at = self.clamp(now);
            self.checkpoint(at)?;
        }
        match self.oldest_unsealed {
            Some(t) if now.saturating_duration_since(t) >= self.config.flush_interval => {
                self.seal_current()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn index(&self) -> Index {
        let mut seek_points = self.seek_points.clone();
        while seek_points.len() > MAX_SEEK_POINTS {
            // Keep every other one (and the last): seeking gets coarser,
            // never wrong.
            let last = *seek_points.last().expect("not empty");
            seek_points = seek_points.into_iter().step_by(2).collect();
            if seek_points.last() != Some(&last) {
                seek_points.push(last);
            }
        }
        Index {
            records: self.stats.records,
            midi_events: self.stats.midi_events,
            doc_changes: self.stats.doc_changes,
            first_at: self.first_at,
            last_at: self.last_at,
            participants: self.participants.iter().copied().collect(),
            seek_points,
        }
    }

    fn final_chunk(&mut self) -> Result<Vec<u8>, CaptureError> {
        self.seal_current()?;
        let mut last = vec![0u8];
        Record::Index(self.index()).encode(&mut last);
        debug_assert!(
            last.len() <= CHUNK_SIZE,
            "MAX_SEEK_POINTS keeps the index in one chunk"
        );
        Ok(last)
    }

    /// Seals what waits, writes the index as the last chunk, and returns the
    /// output.
    pub fn finish(mut self) -> Result<W, CaptureError> {
        let last = self.final_chunk()?;
        Ok(self.sealer.finish(&last)?)
    }
}

impl<W: Write + Seek> CaptureWriter<W> {
    /// Like [`CaptureWriter::finish`], and records the chunk count in the
    /// header so that a later truncation is reported as "after N of M
    /// chunks".
    pub fn finish_and_record_count(mut self) -> Result<W, CaptureError> {
        let last = self.final_chunk()?;
        Ok(self.sealer.finish_and_record_count(&last)?)
    }
}
