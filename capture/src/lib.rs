//! Sealed files for jam.togthr (crate doc written below).

mod codec;
pub mod format;
pub mod keys;
mod primitives;
pub mod seal;

pub use format::{Header, HeaderError, Kind};
pub use keys::{Identity, KdfParams, KeyError, Recipient};
pub use seal::{
    Chunk, ChunkPos, OpenError, OpenReader, Opener, RepairOutcome, RevokeOutcome, SealError,
    SealWriter, Sealer, ShareOutcome, repair, revoke, share,
};
