//! Opening the player's agent (a sealed `.agent` file) for predictive mode.
//!
//! The worker calls [`load_agent`] when told to
//! ([`crate::EngineControl::load_agent`], or [`crate::EngineConfig::agent`]
//! at start): the file is opened with the identity in the key file (an
//! unencrypted key file: the engine cannot ask for a passphrase), its model
//! is read to the end (every chunk checked) and decoded, and the model's
//! kind must be the one its metadata names. Realtime-safe: no (file I/O).

use crate::key_file::{KeyFileError, read_identity};
use jam_capture::CaptureError;
use jam_capture::agent::open_agent;
use jam_predict::agent::{ModelError, decode_model};
use std::path::PathBuf;

/// Where the agent comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSource {
    /// The sealed `.agent` file.
    pub path: PathBuf,
    /// The secret key file of one of its recipients (not passphrase
    /// protected).
    pub key_file: PathBuf,
}

/// Why an agent could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentLoadError {
    /// The agent file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file cannot be used (unreadable, passphrase protected, not
    /// a jam secret key).
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The agent file cannot be opened or is damaged.
    #[error("agent {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CaptureError,
    },
    /// The model inside cannot be used.
    #[error("agent {path}: the model inside cannot be used: {source}")]
    Model {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ModelError,
    },
    /// The metadata and the model disagree about the kind.
    #[error("agent {path}: the metadata says {meta} but the model inside is {model}")]
    KindMismatch {
        /// The file.
        path: PathBuf,
        /// Kind named by the metadata.
        meta: String,
        /// Kind of the model bytes.
        model: &'static str,
    },
}

/// Opens `source` and returns the model bytes, checked.
pub fn load_agent(source: &AgentSource) -> Result<Vec<u8>, AgentLoadError> {
    let id = read_identity(&source.key_file)?;
    let file = std::fs::File::open(&source.path).map_err(|e| AgentLoadError::Read {
        path: source.path.clone(),
        source: e,
    })?;
    let open_err = |e| AgentLoadError::Open {
        path: source.path.clone(),
        source: e,
    };
    let opened = open_agent(std::io::BufReader::new(file), &[id]).map_err(open_err)?;
    let meta_kind = opened.meta.kind.clone();
    let bytes = opened.read_model().map_err(open_err)?;
    let model = decode_model(&bytes).map_err(|e| AgentLoadError::Model {
        path: source.path.clone(),
        source: e,
    })?;
    if model.kind().name() != meta_kind {
        return Err(AgentLoadError::KindMismatch {
            path: source.path.clone(),
            meta: meta_kind,
            model: model.kind().name(),
        });
    }
    Ok(bytes)
}
