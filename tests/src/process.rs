//! [`JsonChild`]: a child process that prints one JSON object per line,
//! read on a thread and waited for with time limits; killed on drop.
//!
//! Both test peers that run as processes speak this way: the pymidi script
//! (`tests/python/pymidi_peer.py`) and `jam peer --print`.
//!
//! [`KillOnDrop`] is the plain guard for any other child process a test
//! starts (a `jamd`, a `jam peer` whose pipes the test reads itself).

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A child process whose stdout is JSON lines and whose stderr is passed
/// through (prefixed with a label) and kept for inspection.
pub struct JsonChild {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// Lines on stdout that were not JSON.
    not_json: Receiver<String>,
    stderr: Receiver<String>,
    /// Every JSON line taken from `lines` so far, in order.
    seen: Vec<Value>,
}

/// What a [`JsonChild`] left behind when it exited: see
/// [`JsonChild::finish`].
#[derive(Debug)]
pub struct Exited {
    /// Its exit status.
    pub status: ExitStatus,
    /// Every JSON line it printed on stdout, in order.
    pub lines: Vec<Value>,
    /// The lines on stdout that were not JSON (a `--print` output must have
    /// none).
    pub not_json: Vec<String>,
    /// Its stderr lines not already taken by [`JsonChild::expect_stderr`].
    pub stderr: Vec<String>,
}

impl JsonChild {
    /// Starts `cmd` with piped stdin, stdout and stderr. Lines on stdout that
    /// are not JSON are echoed to our stderr and otherwise ignored.
    pub fn spawn(label: &str, cmd: &mut Command) -> JsonChild {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let (ntx, not_json) = mpsc::channel();
        let tag = label.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(_) => {
                        eprintln!("{tag} (stdout): {line}");
                        let _ = ntx.send(line);
                    }
                }
            }
        });
        let (etx, stderr_lines) = mpsc::channel();
        let tag = label.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{tag}: {line}");
                let _ = etx.send(line);
            }
        });
        JsonChild {
            label: label.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            not_json,
            stderr: stderr_lines,
            seen: Vec::new(),
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Writes one JSON object as a line on the child's stdin.
    pub fn send(&mut self, v: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{v}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to {}: {e}", self.label));
    }

    /// Closes the child's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next JSON line, waiting up to `limit`.
    pub fn next(&mut self, limit: Duration) -> Option<Value> {
        let v = self.lines.recv_timeout(limit).ok()?;
        self.seen.push(v.clone());
        Some(v)
    }

    /// Waits up to `limit` for the first line that `pick` accepts; panics
    /// with the lines it skipped otherwise.
    pub fn expect(
        &mut self,
        what: &str,
        limit: Duration,
        mut pick: impl FnMut(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + limit;
        let mut skipped = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pick(&v) {
                        return v;
                    }
                    skipped.push(v);
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no {what} within {limit:?}; skipped {skipped:#?}",
                    self.label
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited while waiting for {what}; skipped {skipped:#?}",
                    self.label
                ),
            }
        }
    }

    /// Waits up to `limit` for a stderr line that `pick` accepts.
    pub fn expect_stderr(
        &mut self,
        what: &str,
        limit: Duration,
        mut pick: impl FnMut(&str) -> bool,
    ) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if pick(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("{}: no {what} on stderr within {limit:?}", self.label),
            }
        }
    }

    /// Waits up to `limit` for the process to exit on its own, then returns
    /// its status and every JSON line it printed (including those already
    /// taken). Kills it and panics if it does not exit in time.
    pub fn wait(self, limit: Duration) -> (ExitStatus, Vec<Value>) {
        let exited = self.finish(limit);
        (exited.status, exited.lines)
    }

    /// [`JsonChild::wait`], returning also the stdout lines that were not
    /// JSON and the stderr lines nothing took yet.
    pub fn finish(mut self, limit: Duration) -> Exited {
        self.stdin = None;
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                break status;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                panic!("{} did not exit within {limit:?}", self.label);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF; take what they still hold.
        fn drain<T>(rx: &Receiver<T>, into: &mut Vec<T>) {
            while let Ok(v) = rx.recv_timeout(Duration::from_secs(2)) {
                into.push(v);
            }
        }
        drain(&self.lines, &mut self.seen);
        let (mut not_json, mut stderr) = (Vec::new(), Vec::new());
        drain(&self.not_json, &mut not_json);
        drain(&self.stderr, &mut stderr);
        Exited {
            status,
            lines: std::mem::take(&mut self.seen),
            not_json,
            stderr,
        }
    }
}

impl Drop for JsonChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process that is killed and reaped when this guard drops,
/// whatever happens in the test (a panic included).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
