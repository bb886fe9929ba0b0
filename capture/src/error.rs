//! [`CaptureError`]: what can go wrong reading or writing captures and agents.

use crate::record::RecordError;
use crate::seal::{OpenError, SealError};

/// Why a capture or agent could not be written, read, replayed or exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The sealed container could not be opened or read.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The sealed container could not be written or changed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// An authenticated chunk holds a malformed record (written by a broken
    /// writer; a modified file fails authentication first).
    #[error("malformed record in chunk {chunk}: {source}")]
    Record {
        /// The chunk's number, counting from 1.
        chunk: u64,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
    /// The first record is not a session start.
    #[error("the capture does not begin with a session-start record")]
    NoSessionStart,
    /// The capture uses a newer record schema.
    #[error("capture record schema {0} is newer than this build reads ({max})", max = crate::record::SCHEMA_VERSION)]
    UnsupportedSchema(u16),
    /// Bytes given as an Automerge change are not one.
    #[error("not an Automerge change: {0}")]
    InvalidChange(String),
    /// A checkpoint or change could not be loaded into the session document.
    #[error("rebuilding the session document failed: {0}")]
    Document(String),
    /// Agent metadata is malformed.
    #[error("malformed agent metadata: {0}")]
    AgentMeta(String),
    /// Writing a MIDI file failed.
    #[error("writing the MIDI file failed: {0}")]
    Midi(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
