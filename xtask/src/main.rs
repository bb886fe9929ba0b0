//! `cargo xtask`: project tasks that need more than one cargo command.
//!
//! - `cargo xtask test [--no-lint] [-- NEXTEST_ARGS...]`: the whole test suite as
//!   CI runs it. Creates the project-local Python venv (`.venv`) from
//!   `tests/requirements.txt` when it is missing or out of date, checks
//!   formatting and clippy, then runs every test in the workspace (with
//!   cargo-nextest when it is installed, else `cargo test`) and the doctests.

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
        Some("test") => test(&rest),
        Some("venv") => venv().map(|_| ()),
        _ => {
            eprintln!("usage: cargo xtask test [--no-lint] [-- NEXTEST_ARGS...]");
            eprintln!("       cargo xtask venv      create/update the project Python venv");
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
    tests.args(&passthrough).env("JAM_VENV", &venv);
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
