//! What several command groups share: where the key lives, reading it
//! (with its passphrase), the OS random generator, and replacing a file
//! safely.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use jam_capture::keys::{decode_key_file, key_file_is_encrypted};
use jam_capture::{Identity, KeyError};

/// Help text shared by every `--key` option.
pub(crate) const KEY_HELP: &str = "Secret key file [default: $JAM_KEY, else $XDG_CONFIG_HOME/jam/identity.key, else ~/.config/jam/identity.key]";

/// The default key file: `$JAM_KEY`, else `$XDG_CONFIG_HOME/jam/identity.key`,
/// else `$HOME/.config/jam/identity.key`.
pub(crate) fn default_key_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("JAM_KEY").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(x).join("jam").join("identity.key"));
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(h) => Ok(PathBuf::from(h)
            .join(".config")
            .join("jam")
            .join("identity.key")),
        None => bail!("no key file given and neither JAM_KEY, XDG_CONFIG_HOME nor HOME is set"),
    }
}

/// Reads a passphrase: `$JAM_PASSPHRASE`, else one line from standard input
/// (after a prompt on standard error; the input is not hidden).
pub(crate) fn passphrase(prompt: &str) -> Result<zeroize::Zeroizing<String>> {
    if let Ok(p) = std::env::var("JAM_PASSPHRASE") {
        return Ok(zeroize::Zeroizing::new(p));
    }
    eprint!("{prompt}: ");
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the passphrase")?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        bail!("empty passphrase");
    }
    Ok(zeroize::Zeroizing::new(p))
}

/// Loads the identity from `key` (or the default key file), asking for the
/// passphrase if the key is protected.
pub(crate) fn load_identity(key: Option<&Path>) -> Result<Identity> {
    let path = match key {
        Some(p) => p.to_path_buf(),
        None => default_key_path()?,
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read key file {} (create one with `jam keys new`)",
            path.display()
        )
    })?;
    let pass = if key_file_is_encrypted(&text) {
        Some(passphrase(&format!("passphrase for {}", path.display()))?)
    } else {
        None
    };
    decode_key_file(&text, pass.as_ref().map(|p| p.as_str())).map_err(|e| match e {
        KeyError::BadSecretKey | KeyError::NoKeyLine => {
            anyhow::anyhow!("{} is not a jam secret key file: {e}", path.display())
        }
        e => anyhow::anyhow!("key file {}: {e}", path.display()),
    })
}

/// The operating system's random number generator.
pub(crate) fn os_rng() -> rand_core::UnwrapErr<rand::rngs::SysRng> {
    rand_core::UnwrapErr(rand::rngs::SysRng)
}

/// Opens `path` for reading, naming it in the error.
pub(crate) fn open(path: &Path) -> Result<BufReader<File>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(BufReader::with_capacity(256 * 1024, f))
}

/// Writes a file through a temporary file next to `dest` and renames it
/// into place only when `write` succeeded, so `dest` (which may be the
/// input) is never left half-written.
pub(crate) fn replace_file<T>(
    dest: &Path,
    write: impl FnOnce(&mut File) -> Result<T>,
) -> Result<T> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = write(&mut f).and_then(|v| {
        f.flush()?;
        f.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        Ok(v)
    });
    match result {
        Ok(v) => {
            std::fs::rename(&tmp, dest)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Creates a new file, refusing to replace an existing one.
pub(crate) fn create_new(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// A name for a file in messages.
pub(crate) fn shown(p: &Path) -> String {
    p.display().to_string()
}
