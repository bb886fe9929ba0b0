//! Errors at the boundaries of the session document.

use crate::schema::{SchemaError, WriteError};
use jam_core::PeerId;

/// Why a local edit was refused. The document is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// This replica has not received the session yet (it started empty and
    /// has not synced with a member).
    #[error("no session yet: sync with a member before editing")]
    NoSession,
    /// The edit is about a participant the document does not know.
    #[error("peer {0} is not a participant of this session")]
    NotAParticipant(PeerId),
    /// Only an entry of this same device (another entry with our key)
    /// can be retired ([`crate::SessionDoc::retire`]).
    #[error("peer {0} is not an earlier entry of this device")]
    NotThisDevice(PeerId),
    /// A text value is longer than the schema allows.
    #[error("{what} is {len} bytes long, more than the {max} allowed")]
    TooLong {
        /// Which value.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Automerge refused the write.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Why saved bytes could not be loaded as a session document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not a valid Automerge document (truncated, corrupt,
    /// failed checksum).
    #[error("not a valid session document ({len} bytes)")]
    Corrupt {
        /// Length of the input.
        len: usize,
        /// What Automerge found wrong.
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    /// The input is empty.
    #[error("empty input: not a session document")]
    Empty,
    /// Change number `index` of a list of changes is corrupt (does not
    /// parse, or fails its checksum).
    #[error("change {index} is corrupt")]
    BadChange {
        /// Position in the list.
        index: usize,
    },
    /// A valid document that is not a usable session.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Why a sync message from a peer was rejected. The document and the sync
/// state for that peer are unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The message is larger than [`crate::MAX_SYNC_MESSAGE_LEN`].
    #[error("sync message from {peer} is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Sender.
        peer: PeerId,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a sync message.
    #[error("malformed sync message from {peer} ({len} bytes)")]
    Decode {
        /// Sender.
        peer: PeerId,
        /// Its length.
        len: usize,
        /// What the decoder found wrong.
        #[source]
        source: Box<automerge::sync::ReadMessageError>,
    },
    /// A direct-changes message whose framing is broken.
    #[error("malformed direct-changes message from {peer} ({len} bytes)")]
    Direct {
        /// Sender.
        peer: PeerId,
        /// Its length.
        len: usize,
    },
    /// Chunk number `index` of the message's changes is corrupt.
    #[error("sync message from {peer} carries corrupt change chunk {index}")]
    BadChunk {
        /// Sender.
        peer: PeerId,
        /// Position in the message.
        index: usize,
        /// What Automerge found wrong, when it says (a failed checksum
        /// has no further detail).
        #[source]
        source: Option<Box<automerge::AutomergeError>>,
    },
    /// The message decoded but its changes could not be applied.
    #[error("sync message from {peer} carries changes that cannot be applied")]
    Apply {
        /// Sender.
        peer: PeerId,
        /// What Automerge found wrong.
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    /// Applying the message would have made the document unreadable (for
    /// example a newer schema major version).
    #[error("sync message from {peer} would make the session unreadable")]
    Schema {
        /// Sender.
        peer: PeerId,
        /// What is wrong with the result.
        #[source]
        source: SchemaError,
    },
}
