//! Reading the identity in a key file on the worker, where nobody can type
//! a passphrase: the agent ([`crate::agent`]) and the capture switch
//! ([`crate::capture`]) open their key file this way. Realtime-safe: no
//! (file I/O).

use jam_capture::keys::{decode_key_file, key_file_is_encrypted};
use jam_capture::{Identity, KeyError};
use std::path::{Path, PathBuf};

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is passphrase protected.
    #[error("key file {0} is passphrase protected; the engine needs an unencrypted one")]
    Encrypted(PathBuf),
    /// The file is not a jam secret key.
    #[error("key file {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
}

/// Reads the (unencrypted) secret key in `path`.
pub fn read_identity(path: &Path) -> Result<Identity, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if key_file_is_encrypted(&text) {
        return Err(KeyFileError::Encrypted(path.to_path_buf()));
    }
    decode_key_file(&text, None).map_err(|source| KeyFileError::Key {
        path: path.to_path_buf(),
        source,
    })
}
