//! What several engine integration tests share.

use std::time::{Duration, Instant};

/// Polls `f` until it holds; fails the test after 20 s, naming `what`.
pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
