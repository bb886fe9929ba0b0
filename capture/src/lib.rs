//! Sealed files for jam.togthr: identity keys, the encrypted container
//! behind session captures (`.scp`) and agents (`.agent`), capture records,
//! replay, share and revoke.
//!
//! Everything a session produces is recorded into a capture that only the
//! keys its owner chose can open; agents trained from captures are sealed
//! the same way and can be given to a collaborator and taken back.
//!
//! Which type for which job:
//! - keys: [`Identity`] (secret) and [`Recipient`] (public, `jam1…`), key
//!   files in [`keys`];
//! - the container ([`format`] describes it byte by byte): [`Sealer`] /
//!   [`Opener`] chunk by chunk, [`SealWriter`] / [`OpenReader`] as byte
//!   streams; [`share`], [`revoke`] and [`repair`] change a sealed file;
//! - captures: [`writer::CaptureWriter`] records a session (driven by a
//!   peer or the engine worker), [`reader::CaptureReader`] replays it and
//!   rebuilds the session document at any time, [`export::export_midi`]
//!   writes a Standard MIDI File, [`reader::repair_capture`] closes a
//!   capture after a crash;
//! - agents: [`agent::write_agent`] and [`agent::open_agent`];
//! - [`synth`]: seeded synthetic sessions for tests, benchmarks and demos.
//!
//! Everything works on any [`std::io::Read`] / [`std::io::Write`] (plus
//! [`std::io::Seek`] where it jumps): the caller opens files. Randomness is
//! passed in (`&mut impl CryptoRng`), so known-answer tests are
//! reproducible; the CLI uses the operating system's generator. Time is
//! passed in too: the capture writer never reads a clock.
//!
//! ```
//! use jam_capture::{Identity, Kind, Opener, SealWriter};
//! use std::io::{Read, Write};
//! # use rand::SeedableRng;
//! # let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let (alice, bob) = (Identity::generate(&mut rng), Identity::generate(&mut rng));
//! let mut w = SealWriter::new(Vec::new(), Kind::Agent, &[alice.to_public()], &mut rng)?;
//! w.write_all(b"weights")?;
//! let file = w.finish()?;
//!
//! // Alice shares it with Bob: only the header changes.
//! let mut shared = Vec::new();
//! jam_capture::share(&file[..], &mut shared, &[alice], &[bob.to_public()], &mut rng)?;
//! let mut out = Vec::new();
//! Opener::new(&shared[..], &[bob])?.into_reader().read_to_end(&mut out)?;
//! assert_eq!(out, b"weights");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Not here: opening files, reading passphrases, the OS random generator
//! (the `jam` CLI); what model bytes mean (`jam-predict`); the session
//! document's schema (`jam-session-crdt`: replay hands back a plain
//! `automerge::Automerge`).

pub mod agent;
mod codec;
mod doc;
pub mod error;
pub mod export;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
mod primitives;
pub mod reader;
pub mod record;
pub mod seal;
pub mod synth;
pub mod writer;

pub use error::CaptureError;
pub use format::{Header, HeaderError, Kind};
pub use keys::{Identity, KdfParams, KeyError, Recipient};
pub use seal::{
    Chunk, ChunkPos, OpenError, OpenReader, Opener, RepairOutcome, RevokeOutcome, SealError,
    SealWriter, Sealer, ShareOutcome, repair, revoke, share,
};

/// Installs a panic hook that stays silent for the panics this crate
/// catches itself (automerge panics on some malformed changes; see
/// `CaptureError::Document`) and hands every other panic to the hook that
/// was installed before. For programs (the `jam` CLI, the fuzz targets): a
/// library should leave the process's panic hook alone.
pub fn hide_caught_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !doc::inside_guard() {
            previous(info);
        }
    }));
}
