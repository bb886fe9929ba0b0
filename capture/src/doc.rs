//! Automerge calls on bytes from outside (change bytes from peers, records
//! and checkpoints from a capture), with a panic inside automerge turned
//! into an error.
//!
//! Automerge 0.12 panics on some malformed changes instead of returning an
//! error (found by the `capture_replay` fuzz target; the inputs are in
//! `tests/fuzz-crashers/`). Captured content is not trusted even when it
//! authenticates: anyone a file was shared with can seal anything. So every
//! call that parses or applies such bytes goes through here, and a document
//! that was being changed when automerge panicked is never used again (the
//! reader drops it; the writer rebuilds its copy, see
//! [`crate::writer::CaptureWriter::append_change`]). This needs unwinding
//! panics, the default; a build with `panic = "abort"` loses this guard.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{Automerge, Change};

thread_local! {
    /// True while this thread runs automerge under [`guarded`].
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// True if a panic on this thread right now would be caught by the guard
/// (a panic hook that aborts, like the fuzzer's, lets these through).
pub(crate) fn inside_guard() -> bool {
    GUARDED.with(Cell::get)
}

/// Runs `f`, turning a panic into an error that names `what`.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let outer = GUARDED.with(|g| g.replace(true));
    // AssertUnwindSafe: on a panic the caller discards whatever `f` was
    // changing (see the module docs).
    let r = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    r.unwrap_or_else(|_| Err(format!("automerge failed on {what}")))
}

/// Parses an Automerge change.
pub(crate) fn parse_change(bytes: Vec<u8>) -> Result<Change, String> {
    guarded("malformed change bytes", || {
        Change::from_bytes(bytes).map_err(|e| e.to_string())
    })
}

/// Applies one change to `doc`. On error `doc` may be half-changed and
/// must not be used again.
pub(crate) fn apply(doc: &mut Automerge, change: Change) -> Result<(), String> {
    guarded("a malformed change", || {
        doc.apply_changes([change]).map_err(|e| e.to_string())
    })
}

/// Loads a saved document.
pub(crate) fn load(bytes: &[u8]) -> Result<Automerge, String> {
    guarded("a malformed saved document", || {
        Automerge::load(bytes).map_err(|e| e.to_string())
    })
}
