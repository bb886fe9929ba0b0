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
//!
//! **The record switch.** A host can record with a switch instead
//! ([`crate::EngineRt::set_record`], the plugin's `record` parameter): the
//! audio thread only stores the switch in an atomic, and the worker, at its
//! next tick, starts a capture in the folder of the [`CaptureTarget`]
//! ([`crate::EngineControl::set_capture_target`]) named by the UTC date and
//! time and the session's name or address ([`CaptureTarget::label`],
//! [`capture_file_name`], never an existing file:
//! `_2`, `_3`, ... is added), sealed to the owner of the target's key file
//! ([`Recording::create_in`]). When the switch goes off, the worker
//! finishes it. A capture that cannot start (no key file, no folder, a
//! folder it cannot write to) or that a write error ends (disk full) leaves
//! the switch on but nothing recording until it is turned off and on
//! again; the reason is in [`CaptureStatus::error`]
//! ([`crate::EngineControl::capture_status`]).

use crate::StampedEvent;
use crate::key_file::{KeyFileError, read_identity};
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
    /// No capture folder is set.
    #[error("no capture folder is set")]
    NoFolder,
    /// No key file is set: a capture is sealed to its owner.
    #[error("no key file is set (a capture is sealed to the key file's owner)")]
    NoKeyFile,
    /// The key file cannot be used.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The capture folder does not exist and cannot be made.
    #[error("cannot use capture folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the record switch writes captures, and for whom. Set by the host
/// with [`crate::EngineControl::set_capture_target`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaptureTarget {
    /// The folder the captures go into (made if missing).
    pub folder: Option<PathBuf>,
    /// The secret key file whose owner can open the captures.
    pub key_file: Option<PathBuf>,
    /// The recording participant's display name.
    pub recorder_name: String,
    /// The session's address (or any label), for the file name when
    /// nothing names the session (see [`CaptureTarget::label`]).
    pub session: String,
    /// The session's name as the host knows it (a `jamd` session's name),
    /// for the file name before all else.
    pub session_name: Option<String>,
}

impl CaptureTarget {
    /// What a capture's file name carries of the session: the name the
    /// host gave ([`CaptureTarget::session_name`]), else the name in the
    /// session document (`document_name`), else the address
    /// ([`CaptureTarget::session`]); blank names do not count.
    pub fn label<'a>(&'a self, document_name: Option<&'a str>) -> &'a str {
        [self.session_name.as_deref(), document_name]
            .into_iter()
            .flatten()
            .find(|n| !n.trim().is_empty())
            .unwrap_or(&self.session)
    }
}

/// The capture as the worker last saw it, for the user interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaptureStatus {
    /// A capture is being written.
    pub recording: bool,
    /// The file being written, else the last one written.
    pub path: Option<PathBuf>,
    /// MIDI events in it so far (at the end, for the last one).
    pub events: u64,
    /// Why the last capture could not start or ended early, until the
    /// next one starts.
    pub error: Option<String>,
}

/// Wall-clock time since the Unix epoch, zero for a clock set before it:
/// for the capture's start record and its file name, never for timing.
fn since_unix_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The name of the `attempt`-th (from 1) capture file for a session started
/// at `unix_secs` (UTC): `2026-11-21_142510_<session>.scp`, then `_2`,
/// `_3`, ... before the extension. The session label keeps ASCII letters,
/// digits, `.` and `-` (others become `-`, at most 40 of them), so the name
/// is valid on every file system.
pub fn capture_file_name(unix_secs: i64, session: &str, attempt: u32) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut label: String = session
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let trimmed = label.trim_matches(['-', '.']).to_string();
    label = if trimmed.is_empty() {
        "session".to_string()
    } else {
        trimmed
    };
    let suffix = if attempt > 1 {
        format!("_{attempt}")
    } else {
        String::new()
    };
    format!(
        "{y:04}-{m:02}-{d:02}_{:02}{:02}{:02}_{label}{suffix}.scp",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Year, month, day of a day count from 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// How many names [`Recording::create_in`] tries before giving up.
const MAX_NAME_ATTEMPTS: u32 = 1000;

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

/// Writing, or ended early by a write error (with the counts it had).
enum State {
    Writing(Box<CaptureWriter<File>>),
    Failed(CaptureError, CaptureStats),
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("path", &self.path)
            .field("failed", &self.failed())
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
        let wall_clock_unix_micros =
            i64::try_from(since_unix_epoch().as_micros()).unwrap_or(i64::MAX);
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

    /// Starts a capture in `target`'s folder (made if missing) under a new
    /// [`capture_file_name`] for the current date and time and the
    /// session's [`CaptureTarget::label`] (`document_name`: the session
    /// document's name, if one is known), sealed to the owner of `target`'s
    /// key file. `recorder` and `tempo_bpm` go into the first record as in
    /// [`Recording::create`].
    pub fn create_in<G: rand_core::CryptoRng + ?Sized>(
        target: &CaptureTarget,
        document_name: Option<&str>,
        recorder: PeerId,
        tempo_bpm: f64,
        clock: MonotonicClock,
        rng: &mut G,
    ) -> Result<Recording, RecordingError> {
        let folder = target.folder.as_ref().ok_or(RecordingError::NoFolder)?;
        let key_file = target.key_file.as_ref().ok_or(RecordingError::NoKeyFile)?;
        let owner = read_identity(key_file)?.to_public();
        std::fs::create_dir_all(folder).map_err(|source| RecordingError::Folder {
            path: folder.clone(),
            source,
        })?;
        let unix_secs = i64::try_from(since_unix_epoch().as_secs()).unwrap_or(i64::MAX);
        let start = RecordingStart {
            recorder,
            recorder_name: target.recorder_name.clone(),
            session_schema: jam_session_crdt::schema::SCHEMA_MAJOR,
            tempo_bpm,
        };
        let mut attempt = 1;
        loop {
            let label = target.label(document_name);
            let path = folder.join(capture_file_name(unix_secs, label, attempt));
            match Recording::create(&path, &[owner], start.clone(), clock, rng) {
                Err(RecordingError::Create { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists
                        && attempt < MAX_NAME_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// True once a write error has ended the recording (nothing more is
    /// appended; [`Recording::finish`] reports the error).
    pub fn failed(&self) -> bool {
        matches!(self.state, State::Failed(..))
    }

    /// Why a write error ended the recording, for the user interface: the
    /// error [`Recording::finish`] will report, and that the chunks written
    /// before it are kept.
    pub fn failure(&self) -> Option<String> {
        let State::Failed(e, _) = &self.state else {
            return None;
        };
        Some(format!(
            "capture {} stopped: {e}; what was written before is kept \
             (`jam capture replay` reads it, `jam capture repair` closes the file)",
            self.path.display()
        ))
    }

    /// The clock every record's time is on.
    pub(crate) fn clock(&self) -> &MonotonicClock {
        &self.clock
    }

    /// The capture file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts so far; after a write error, the counts when it happened
    /// (records appended, of which the last chunk's did not reach the file).
    pub fn stats(&self) -> CaptureStats {
        match &self.state {
            State::Writing(w) => w.stats().clone(),
            State::Failed(_, stats) => stats.clone(),
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
            // Keep what is written: hand the complete chunks to the disk if
            // it still takes them (a full disk may refuse), and append
            // nothing after a failed write. The file closes here.
            let _ = w.get_ref().sync_data();
            let stats = w.stats().clone();
            self.state = State::Failed(e, stats);
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
            State::Failed(source, _) => return Err(RecordingError::Write { path, source }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(unix_secs: i64, session: &str, attempt: u32, expected: &str) {
        assert_eq!(capture_file_name(unix_secs, session, attempt), expected);
    }

    #[test]
    fn captures_are_named_after_the_session_name_before_its_address() {
        let mut t = CaptureTarget {
            session: "127.0.0.1:5004".into(),
            ..CaptureTarget::default()
        };
        assert_eq!(t.label(None), "127.0.0.1:5004");
        assert_eq!(t.label(Some(" ")), "127.0.0.1:5004");
        assert_eq!(t.label(Some("bob's session")), "bob's session");
        t.session_name = Some(String::new());
        assert_eq!(t.label(Some("bob's session")), "bob's session");
        t.session_name = Some("friday night".into());
        assert_eq!(t.label(Some("bob's session")), "friday night");
        assert_eq!(
            capture_file_name(0, t.label(None), 1),
            "1970-01-01_000000_friday-night.scp"
        );
    }

    #[test]
    fn capture_file_names_carry_the_utc_date_time_and_session() {
        check(
            0,
            "127.0.0.1:5004",
            1,
            "1970-01-01_000000_127.0.0.1-5004.scp",
        );
        // 2026-11-21 14:25:10 UTC.
        check(
            1_795_271_110,
            "lan:Band Room",
            1,
            "2026-11-21_142510_lan-Band-Room.scp",
        );
        check(1_795_271_110, "", 2, "2026-11-21_142510_session_2.scp");
        check(951_825_600, "ä/..\\x", 3, "2000-02-29_120000_x_3.scp");
        let long = "y".repeat(100);
        let name = capture_file_name(0, &long, 1);
        assert_eq!(name.len(), "1970-01-01_000000_".len() + 40 + ".scp".len());
    }
}
