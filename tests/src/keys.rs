//! Key files for tests: `jam keys new` run as a musician runs it.

use std::path::Path;
use std::process::Command;

/// Runs `jam keys new -o PATH` with the binary `jam` (no passphrase: the
/// plugin and the engine cannot ask for one; `JAM_KEY` and
/// `JAM_PASSPHRASE` of the test's environment are not passed on), asserts
/// it succeeded, and returns the public key it prints (`jam1…`).
pub fn new_key(jam: &Path, path: &Path) -> String {
    let out = Command::new(jam)
        .args(["keys", "new", "-o"])
        .arg(path)
        .env_remove("JAM_KEY")
        .env_remove("JAM_PASSPHRASE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", jam.display()));
    assert!(
        out.status.success(),
        "jam keys new -o {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
