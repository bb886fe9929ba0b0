//! How a `harness = false` benchmark binary was started: to be listed, to
//! run once as a test, or to measure.
//!
//! `cargo bench` passes `--bench`. Test runners start benchmark targets
//! too: `cargo test --all-targets` runs them without `--bench` (a quick
//! smoke run), and nextest first lists every target with `--list`, where a
//! benchmark must print nothing (anything on stdout breaks the listing) and
//! do nothing.
//!
//! ```no_run
//! use jam_tests::bench::{self, Mode};
//! match bench::mode() {
//!     Mode::List => return,
//!     Mode::Test => { /* a small fixture, once */ }
//!     Mode::Measure => { /* the real run */ }
//! }
//! ```

/// Why the benchmark binary was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A test runner lists targets (`--list`): print nothing, do nothing.
    List,
    /// A test run (`cargo test --all-targets`): run once, on small inputs.
    Test,
    /// `cargo bench` (`--bench`): measure.
    Measure,
}

/// The mode of this process, from its command line.
pub fn mode() -> Mode {
    mode_of(std::env::args().skip(1))
}

/// The mode for the arguments `args` (without the program name). `--list`
/// wins over `--bench`.
pub fn mode_of<S: AsRef<str>>(args: impl IntoIterator<Item = S>) -> Mode {
    let (mut list, mut bench) = (false, false);
    for a in args {
        match a.as_ref() {
            "--list" => list = true,
            "--bench" => bench = true,
            _ => {}
        }
    }
    if list {
        Mode::List
    } else if bench {
        Mode::Measure
    } else {
        Mode::Test
    }
}

/// True when run by `cargo bench` to measure (not listing, not test mode).
pub fn measuring() -> bool {
    mode() == Mode::Measure
}

/// True when a test runner lists targets: the benchmark must print nothing.
pub fn listing() -> bool {
    mode() == Mode::List
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_decide_the_mode() {
        let none: [&str; 0] = [];
        assert_eq!(mode_of(none), Mode::Test);
        assert_eq!(mode_of(["--bench"]), Mode::Measure);
        assert_eq!(mode_of(["--list"]), Mode::List);
        // nextest lists with `--list --format terse`; cargo may add --bench.
        assert_eq!(
            mode_of(["--bench", "--list", "--format", "terse"]),
            Mode::List
        );
        assert_eq!(mode_of(["--exact", "some_bench"]), Mode::Test);
    }
}
