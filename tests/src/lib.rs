//! Helpers for jam.togthr's integration tests; the scenarios live in
//! `tests/tests/`, the loopback latency benchmark in `tests/benches/`.
//!
//! - this file: finding tools ([`require_tool`], [`require_python`]), the
//!   workspace ([`workspace_root`], [`workspace_bin`]) and CI ([`in_ci`]);
//! - [`process`]: [`process::JsonChild`], a child process that prints JSON
//!   lines (the shape of every external test peer here), and
//!   [`process::KillOnDrop`];
//! - [`pymidi`]: pymidi 0.5.0 as an AppleMIDI peer in a subprocess
//!   (`tests/python/pymidi_peer.py`), receiving and, with its own packet
//!   builder, sending RTP-MIDI;
//! - [`jam_peer`]: the `jam peer` binary as a test peer;
//! - [`jamd`]: the `jamd` binary serving on loopback;
//! - [`keys`]: key files made with `jam keys new`;
//! - [`clap_host`]: hosting the plugin's CLAP entry with clack-host (the
//!   plugin's own tests and the `jam-clap-host` binary);
//! - [`bench`]: how a `harness = false` benchmark was started (listed by a
//!   test runner, run once as a test, or measuring);
//! - [`tshark`]: live captures on `lo` and reading them back through
//!   tshark's AppleMIDI and RTP-MIDI dissectors;
//! - [`smf`]: writing Standard MIDI Files for `jam peer --play`;
//! - [`small_disk`]: a program run with a small tmpfs of its own (a full
//!   disk, for real).
//!
//! The rule these helpers enforce: a test that needs a system tool (tshark, a
//! Python package from the project's venv, PostgreSQL, Chromium) says so
//! loudly and skips when the tool is missing on a developer's machine, and
//! fails in CI (`CI=true`), where `.ci/run` installs every such tool.
//!
//! ```no_run
//! if let Some(tshark) = jam_tests::require_tool("tshark", "apt-get install tshark") {
//!     // ... run tshark ...
//! }
//! ```

pub mod session_mesh;

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod bench;
pub mod clap_host;
pub mod jam_peer;
pub mod jamd;
pub mod keys;
pub mod process;
pub mod pymidi;
pub mod small_disk;
pub mod smf;
pub mod tshark;

/// True when running under CI (`CI` set to `true` or `1`), where missing
/// tools are failures instead of skips.
pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Ok("true") | Ok("1")
    )
}

/// Reports a missing prerequisite: panics in CI, prints a loud skip notice
/// otherwise. Always returns `None` so callers can `return` on it.
pub fn missing<T>(what: &str, how_to_get_it: &str) -> Option<T> {
    let msg = format!("{what} is not available (get it with: {how_to_get_it})");
    if in_ci() {
        panic!("CI=true and {msg}");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    None
}

/// Finds `name` on `PATH` (or at the path in the environment variable
/// `JAM_<NAME>` if set), or reports it missing with `install_hint`.
pub fn require_tool(name: &str, install_hint: &str) -> Option<PathBuf> {
    let var = format!("JAM_{}", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    find_on_path(name).or_else(|| missing(&format!("`{name}`"), install_hint))
}

/// Looks `name` up on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits one level below the workspace root")
        .to_path_buf()
}

/// The project's Python interpreter: `$JAM_VENV/bin/python`, else
/// `.venv/bin/python` at the workspace root (created by `cargo xtask test`),
/// provided it can import every module in `modules`. Reports it missing
/// otherwise.
pub fn require_python(modules: &[&str]) -> Option<PathBuf> {
    let venv = std::env::var_os("JAM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"));
    let python = venv.join("bin").join("python");
    let hint = "`cargo xtask test` creates .venv from tests/requirements.txt";
    if !python.is_file() {
        return missing(&format!("the project venv ({})", venv.display()), hint);
    }
    for m in modules {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {m}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return missing(
                &format!("the Python module `{m}` in {}", venv.display()),
                hint,
            );
        }
    }
    Some(python)
}

/// The path of a binary built from this workspace (for example `jam`),
/// built once per test process and shared by every test process of a run.
///
/// Under `cargo xtask test` it is not built here: the binary the test
/// build made is used (`JAM_TEST_BINS`, `name=path` lines, from the build
/// xtask makes before the run; taken only when it is in this test's
/// profile folder). Otherwise it is built with `cargo build --package PACKAGE --bin BIN` (the test's
/// profile, no extra features) into its own target folder,
/// `<target>/test-bins/`, never into the folder the test build writes:
/// cargo resolves features per command, so building `jam-cli` alone differs
/// from a workspace test build, and sharing one folder made each side
/// rebuild and replace the binary the other had just built, sometimes under
/// a test that was running it. A file lock serializes the builds of
/// concurrent test processes; after the first, cargo finds the binary up to
/// date and leaves the file alone, so no test ever runs a binary that is
/// being written, and none runs a stale one.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashMap<(String, String), PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = (package.to_owned(), bin.to_owned());
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in <target>/<profile>/deps");
    if let Some(path) = prebuilt(bin, profile_dir) {
        built.insert(key, path.clone());
        return path;
    }
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let bins_dir = profile_dir
        .parent()
        .expect("the profile folder sits inside the target folder")
        .join("test-bins");
    std::fs::create_dir_all(&bins_dir).expect("creating target/test-bins");
    let lock = std::fs::File::create(bins_dir.join(".build.lock")).expect("creating the lock file");
    lock.lock().expect("locking target/test-bins");
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.current_dir(workspace_root())
        .env_remove("CARGO_TARGET_DIR")
        .args(["build", "--quiet", "--package", package, "--bin", bin])
        .arg("--target-dir")
        .arg(&bins_dir);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo can be started");
    assert!(status.success(), "building {package}/{bin} failed");
    let path = bins_dir
        .join(if release { "release" } else { "debug" })
        .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} missing after build", path.display());
    drop(lock);
    built.insert(key, path.clone());
    path
}

/// The binary `bin` from `JAM_TEST_BINS`, if it lies in `profile_dir`.
fn prebuilt(bin: &str, profile_dir: &Path) -> Option<PathBuf> {
    let list = std::env::var("JAM_TEST_BINS").ok()?;
    let (_, path) = list
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(name, _)| *name == bin)?;
    let path = PathBuf::from(path);
    let folder = |p: &Path| std::fs::canonicalize(p).ok();
    let here = path.parent().and_then(folder);
    (path.is_file() && here.is_some() && here == folder(profile_dir)).then_some(path)
}

/// The plugin bundles `target/bundled/<product>.clap` and `.vst3`, freshly
/// built by `cargo xtask bundle <package>` in the profile of the running
/// test (debug tests load a debug bundle, with nice-plug's allocation
/// assertions on). Concurrent callers are serialized with a file lock, and
/// cargo keeps the rebuild cheap when nothing changed.
pub fn plugin_bundles(package: &str, product: &str) -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in <target>/<profile>/deps");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let target_dir = profile_dir
        .parent()
        .expect("the profile folder sits inside the target folder")
        .to_path_buf();
    let bundled = target_dir.join("bundled");
    std::fs::create_dir_all(&bundled).expect("creating target/bundled");
    let lock = std::fs::File::create(bundled.join(".bundle.lock")).expect("creating the lock file");
    lock.lock().expect("locking target/bundled");
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "xtask",
            "--",
            "bundle",
            package,
        ]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo can be started");
    assert!(status.success(), "bundling {package} failed");
    let clap = bundled.join(format!("{product}.clap"));
    let vst3 = bundled.join(format!("{product}.vst3"));
    assert!(
        clap.exists() && vst3.exists(),
        "bundles missing in {}",
        bundled.display()
    );
    (clap, vst3)
}

/// ONNX Runtime's shared library from the `onnxruntime` wheel in the
/// project venv (`onnxruntime/capi/libonnxruntime.so.1.*`; the wheel ships
/// only the versioned name), or `$JAM_ONNXRUNTIME` if set. Reports it
/// missing otherwise.
pub fn onnxruntime_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("JAM_ONNXRUNTIME").map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    let python = require_python(&["onnxruntime"])?;
    let out = Command::new(&python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .ok()?;
    let capi = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&capi)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    libs.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.1."))
    });
    libs.sort();
    libs.pop().or_else(|| {
        missing(
            &format!("libonnxruntime.so.1.* in {}", capi.display()),
            "pip install onnxruntime (tests/requirements.txt)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_that_is_always_there() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("surely-not-a-real-tool-name").is_none());
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
