//! `cargo xtask`: project tasks that need more than one cargo command.
//!
//! - `cargo xtask test [--no-lint] [-- NEXTEST_ARGS...]`: the whole test suite as
//!   CI runs it. Creates the project-local Python venv (`.venv`) from
//!   `tests/requirements.txt` when it is missing or out of date, checks
//!   formatting and clippy, then runs every test in the workspace (with
//!   cargo-nextest when it is installed, else `cargo test`) and the doctests.
//!   It builds the tests first and hands the tests the paths of the
//!   workspace's binaries (`JAM_TEST_BINS`), so `jam_tests::workspace_bin`
//!   need not build them again.
//!   The plugin's host tests load the bundle, so it builds the (debug) plugin
//!   bundle first.
//! - `cargo xtask bundle jam-plugin [--release]`: builds the plugin and puts
//!   `jam-togthr.clap` and `jam-togthr.vst3` into `target/bundled/` (product
//!   names from `bundler.toml`), through nice-plug-xtask.
//! - `cargo xtask install [--clap-dir DIR] [--vst3-dir DIR]`: copies those
//!   bundles into the user's plugin folders: `~/.clap` and `~/.vst3` on
//!   Linux, `~/Library/Audio/Plug-Ins/{CLAP,VST3}` on macOS,
//!   `%LOCALAPPDATA%\Programs\Common\{CLAP,VST3}` on Windows.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        // Internal: the bundler itself, run by `bundle` in a child process.
        Some("nice-plug-bundle") => nice_plug_xtask::main_with_args(
            "cargo xtask",
            std::iter::once("bundle".to_string()).chain(rest),
        ),
        Some("test") => test(&rest),
        Some("venv") => venv().map(|_| ()),
        Some("bundle") => bundle(&rest),
        Some("install") => install(&rest),
        _ => {
            eprintln!("usage: cargo xtask test [--no-lint] [-- NEXTEST_ARGS...]");
            eprintln!("       cargo xtask venv      create/update the project Python venv");
            eprintln!("       cargo xtask bundle jam-plugin [--release]");
            eprintln!("       cargo xtask install [--clap-dir DIR] [--vst3-dir DIR]");
            bail!("unknown or missing task")
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn run_step(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Creates `.venv` and installs `tests/requirements.txt` into it unless the
/// installed copy of the requirements file is identical.
fn venv() -> Result<PathBuf> {
    let root = root();
    let venv = root.join(".venv");
    let python = venv.join("bin").join("python");
    let reqs = root.join("tests").join("requirements.txt");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read(&reqs).with_context(|| format!("reading {}", reqs.display()))?;
    if python.is_file() && std::fs::read(&stamp).ok().as_deref() == Some(&wanted[..]) {
        return Ok(venv);
    }
    if !python.is_file() {
        let py = ["python3", "python"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok())
            .context("no python3 on PATH: install Python 3.10 or newer")?;
        run_step(
            "create the project venv (.venv)",
            Command::new(py).arg("-m").arg("venv").arg(&venv),
        )?;
    }
    run_step(
        "install Python test packages into .venv",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&reqs),
    )?;
    std::fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(venv)
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn test(args: &[String]) -> Result<()> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    let passthrough: Vec<&String> = args.iter().skip_while(|a| *a != "--").skip(1).collect();
    let venv = venv()?;
    // Debug, not release: the host tests then run the plugin with
    // nice-plug's allocation assertions on, and the bundle shares its
    // dependency builds with the test build instead of compiling nice-plug
    // and egui a second time with optimizations.
    bundle(&["jam-plugin".to_string()])?;
    if lint {
        run_step(
            "cargo fmt --check",
            cargo().args(["fmt", "--all", "--", "--check"]),
        )?;
        run_step(
            "cargo clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--quiet",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    // The build the test run makes, made first so that its binaries are
    // known: the tests run them (`JAM_TEST_BINS`) instead of building
    // `jam` and `jamd` a second time into a folder of their own.
    let bins = build_tests()?;
    let mut tests = cargo();
    if has_nextest() {
        tests.args([
            "nextest",
            "run",
            "--workspace",
            "--all-targets",
            "--no-fail-fast",
        ]);
    } else {
        eprintln!("xtask: cargo-nextest not installed, using cargo test");
        tests.args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    }
    tests
        .args(&passthrough)
        .env("JAM_VENV", &venv)
        .env("JAM_TEST_BINS", bins);
    run_step("workspace tests", &mut tests)?;
    run_step(
        "doctests",
        cargo()
            .args(["test", "--workspace", "--doc", "--quiet"])
            .env("JAM_VENV", &venv),
    )?;
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// Builds every test target of the workspace as the test run will (same
/// command as nextest's and `cargo test`'s build, so they find it all up
/// to date), and returns the workspace's binaries as `name=path` lines.
fn build_tests() -> Result<String> {
    eprintln!("xtask: building the tests");
    let out = cargo()
        .args([
            "test",
            "--workspace",
            "--all-targets",
            "--no-run",
            "--message-format",
            "json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("could not start cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the tests failed ({})", out.status);
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_bin = v["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|x| x == "bin"));
        // A binary's own unit-test harness has `profile.test` set.
        if v["reason"] != "compiler-artifact" || !is_bin || v["profile"]["test"] == true {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            bins.push(format!("{name}={exe}"));
        }
    }
    Ok(bins.join("\n"))
}

/// The product name `bundler.toml` gives the plugin package.
const PLUGIN_PRODUCT: &str = "jam-togthr";

/// `cargo xtask bundle ...`: nice-plug-xtask's bundler, run in a child
/// process so its change of directory and its exit do not affect ours.
fn bundle(args: &[String]) -> Result<()> {
    if args.is_empty() {
        bail!("usage: cargo xtask bundle jam-plugin [--release]");
    }
    let what = format!("bundle {}", args.join(" "));
    run_step(
        &what,
        Command::new(std::env::current_exe().context("finding the xtask binary")?)
            .arg("nice-plug-bundle")
            .args(args)
            .current_dir(root()),
    )
}

/// Where bundles go on this operating system: (CLAP folder, VST3 folder).
fn plugin_dirs() -> Result<(PathBuf, PathBuf)> {
    let home = || -> Result<PathBuf> {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .context("HOME is not set")
    };
    if cfg!(target_os = "macos") {
        let base = home()?.join("Library/Audio/Plug-Ins");
        Ok((base.join("CLAP"), base.join("VST3")))
    } else if cfg!(windows) {
        let base = std::env::var_os("LOCALAPPDATA")
            .map(PathBuf::from)
            .context("LOCALAPPDATA is not set")?
            .join("Programs")
            .join("Common");
        Ok((base.join("CLAP"), base.join("VST3")))
    } else {
        let h = home()?;
        Ok((h.join(".clap"), h.join(".vst3")))
    }
}

/// `cargo xtask install`: copies the bundles from `target/bundled/`.
fn install(args: &[String]) -> Result<()> {
    let (mut clap_dir, mut vst3_dir) = plugin_dirs()?;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = || -> Result<PathBuf> {
            Ok(PathBuf::from(
                it.clone()
                    .next()
                    .with_context(|| format!("{a} needs a folder"))?,
            ))
        };
        match a.as_str() {
            "--clap-dir" => clap_dir = value()?,
            "--vst3-dir" => vst3_dir = value()?,
            other => bail!("unknown install option {other:?}"),
        }
        it.next();
    }
    let bundled = target_dir()?.join("bundled");
    let clap = bundled.join(format!("{PLUGIN_PRODUCT}.clap"));
    let vst3 = bundled.join(format!("{PLUGIN_PRODUCT}.vst3"));
    for b in [&clap, &vst3] {
        if !b.exists() {
            bail!(
                "{} is missing: run `cargo xtask bundle jam-plugin --release` first",
                b.display()
            );
        }
    }
    for (bundle, dir) in [(&clap, &clap_dir), (&vst3, &vst3_dir)] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dest = dir.join(bundle.file_name().expect("bundle paths end in a file name"));
        if dest.is_dir() {
            std::fs::remove_dir_all(&dest)
                .with_context(|| format!("removing the old {}", dest.display()))?;
        }
        copy_recursively(bundle, &dest)?;
        eprintln!("xtask: installed {}", dest.display());
    }
    Ok(())
}

/// The cargo target folder (honours `CARGO_TARGET_DIR`).
fn target_dir() -> Result<PathBuf> {
    Ok(match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { root().join(d) }
        }
        None => root().join("target"),
    })
}

fn copy_recursively(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        for entry in
            std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?
        {
            let entry = entry?;
            copy_recursively(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}
