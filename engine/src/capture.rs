//! [`Recording`]: a session captured into a sealed `.scp` file, written on
//! the worker thread.
//!
//! The worker owns the recording while it runs
//! ([`crate::EngineControl::start_capture`]): every event it hands to the
//! network (direction out, with the beat the audio thread stamped) and
//! every event the network delivers (direction in, with the sender's time
//! mapped onto our clock and its beat) goes into the capture as it passes,
//! and each participant's display name as a `name:<peer id>` metadata
//! record. The audio thread never touches it.
//!
//! [`jam_capture::writer::CaptureWriter`] seals and writes a chunk at least
//! every second (or every 64 KiB); the worker ticks it every
//! [`crate::worker::WORKER_TICK`]. A chunk is handed to the operating system
//! as soon as it is sealed, so a crash of the process loses at most the last
//! second; [`Recording::finish`] (also run when the worker stops) writes the
//! index, records the chunk count and syncs the file.
//!
//! A received event's beat is the one the transport carries, else that of
//! its sender time on the session timeline the worker knows (the one the
//! audio thread uses while the host does not play). While a DAW plays with
//! its own transport, received events are placed on the DAW's beats but
//! recorded with the session timeline's.
//!
//! A write error ends the recording: nothing more is appended (the chunks
//! already written stay intact, and `jam capture repair` closes the file),
//! and [`Recording::finish`] reports the error.

use crate::StampedEvent;
use jam_capture::record::{Direction, MidiEvent, SCHEMA_VERSION, SessionStart};
use jam_capture::writer::{CaptureConfig, CaptureStats, CaptureWriter};
use jam_capture::{CaptureError, Recipient};
use jam_core::{Beats, Clock, Micros, MonotonicClock, PeerId, ShortMessage};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Why a recording could not be started or finished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// The capture file could not be created (it must not exist yet).
    #[error("cannot create capture {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The capture writer failed (sealing, writing, syncing).
    #[error("capture {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CaptureError,
    },
    /// Syncing the finished file to disk failed.
    #[error("cannot sync capture {path}: {source}")]
    Sync {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Who records, for the capture's first record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingStart {
    /// The recording participant (the engine's local peer).
    pub recorder: PeerId,
    /// Their display name.
    pub recorder_name: String,
    /// Schema version of the session document, as `jam-session-crdt`
    /// numbers it (its major version).
    pub session_schema: u64,
    /// Tempo at the start, beats per minute.
    pub tempo_bpm: f64,
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    /// The file.
    pub path: PathBuf,
    /// Counts from the writer (records, MIDI events, chunks).
    pub stats: CaptureStats,
}

/// A capture being written. Made off the audio thread with
/// [`Recording::create`], then handed to the worker with
/// [`crate::EngineControl::start_capture`].
///
/// Thread-safe: it is `Send` and owned by one thread. Realtime-safe: no
/// (it allocates and writes files).
pub struct Recording {
    path: PathBuf,
    state: State,
    clock: MonotonicClock,
    recorder: PeerId,
}

/// Writing, or ended early by a write error.
enum State {
    Writing(Box<CaptureWriter<File>>),
    Failed(CaptureError),
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("path", &self.path)
            .field("failed", &matches!(self.state, State::Failed(_)))
            .finish_non_exhaustive()
    }
}

impl Recording {
    /// Creates `path` (refusing to replace a file) and starts a capture
    /// sealed for `recipients`. `clock` must be the clock the engine's
    /// blocks and the transport read: every record's time is on it.
    pub fn create<G: rand_core::CryptoRng + ?Sized>(
        path: &Path,
        recipients: &[Recipient],
        start: RecordingStart,
        clock: MonotonicClock,
        rng: &mut G,
    ) -> Result<Recording, RecordingError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| RecordingError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        let wall_clock_unix_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let session_start = SessionStart {
            schema_version: SCHEMA_VERSION,
            session_schema: start.session_schema,
            recorder: start.recorder,
            recorder_name: start.recorder_name,
            wall_clock_unix_micros,
            at: clock.now(),
            tempo_bpm: start.tempo_bpm,
        };
        let writer = CaptureWriter::create(
            file,
            recipients,
            session_start,
            CaptureConfig::default(),
            rng,
        );
        match writer {
            Ok(w) => Ok(Recording {
                path: path.to_path_buf(),
                state: State::Writing(Box::new(w)),
                clock,
                recorder: start.recorder,
            }),
            Err(source) => {
                // Nothing useful was written: do not leave a broken file.
                let _ = std::fs::remove_file(path);
                Err(RecordingError::Write {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }

    /// The clock every record's time is on.
    pub(crate) fn clock(&self) -> &MonotonicClock {
        &self.clock
    }

    /// The capture file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts so far (zero after a write error ended the recording).
    pub fn stats(&self) -> CaptureStats {
        match &self.state {
            State::Writing(w) => w.stats().clone(),
            State::Failed(_) => CaptureStats::default(),
        }
    }

    fn with_writer(
        &mut self,
        f: impl FnOnce(&mut CaptureWriter<File>) -> Result<(), CaptureError>,
    ) {
        let State::Writing(w) = &mut self.state else {
            return;
        };
        if let Err(e) = f(w) {
            tracing::error!(path = %self.path.display(), "capture stopped: {e}");
            // Keep what is written; append nothing after a failed write.
            self.state = State::Failed(e);
        }
    }

    /// Records an event this participant played and the worker sent.
    pub(crate) fn sent(&mut self, e: &StampedEvent) {
        let ev = MidiEvent {
            at: e.sent_at,
            participant: self.recorder,
            direction: Direction::Out,
            sender_time: e.sent_at,
            beat: e.beat,
            bytes: e.msg.as_slice().to_vec(),
            recovered: false,
        };
        self.with_writer(|w| w.append_midi(ev));
    }

    /// Records an event received from `peer`.
    pub(crate) fn received(&mut self, r: Incoming) {
        let ev = MidiEvent {
            at: r.arrival,
            participant: r.peer,
            direction: Direction::In,
            sender_time: r.sent_at,
            beat: r.beat,
            bytes: r.msg.as_slice().to_vec(),
            recovered: r.recovered,
        };
        self.with_writer(|w| w.append_midi(ev));
    }

    /// Records one change of the session document (from
    /// `SessionDoc::take_new_changes`), so the capture holds the session
    /// state too.
    pub(crate) fn session_change(&mut self, change: &[u8]) {
        let at = self.clock.now();
        self.with_writer(|w| w.append_change(at, change));
    }

    /// Records a participant's display name (`name:<peer id>`), as replay
    /// and MIDI export read it.
    pub(crate) fn peer_name(&mut self, peer: PeerId, name: &str, beat: Beats) {
        let at = self.clock.now();
        let key = format!("name:{peer}");
        self.with_writer(|w| w.append_metadata(at, beat, &key, name));
    }

    /// Seals and writes the waiting records when they are due (at least
    /// every second). Call it often; it is cheap when nothing is due.
    pub(crate) fn tick(&mut self) {
        let now = self.clock.now();
        self.with_writer(|w| w.tick(now).map(|_| ()));
    }

    /// Writes the index and the chunk count, and syncs the file. Reports
    /// the error that ended the recording early, if one did.
    pub fn finish(self) -> Result<RecordingSummary, RecordingError> {
        let path = self.path;
        let w = match self.state {
            State::Writing(w) => w,
            State::Failed(source) => return Err(RecordingError::Write { path, source }),
        };
        let stats = w.stats().clone();
        let file = w
            .finish_and_record_count()
            .map_err(|source| RecordingError::Write {
                path: path.clone(),
                source,
            })?;
        file.sync_all().map_err(|source| RecordingError::Sync {
            path: path.clone(),
            source,
        })?;
        Ok(RecordingSummary { path, stats })
    }
}

/// A received event as the recording takes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming {
    pub(crate) peer: PeerId,
    pub(crate) msg: ShortMessage,
    pub(crate) sent_at: Micros,
    pub(crate) beat: Beats,
    pub(crate) arrival: Micros,
    pub(crate) recovered: bool,
}
