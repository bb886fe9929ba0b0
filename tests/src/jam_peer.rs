//! [`JamPeer`]: the real `jam peer` binary as a test peer, with `--print`
//! output read as JSON lines.

use crate::process::{Exited, JsonChild};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// A running `jam peer` process.
pub struct JamPeer {
    proc: JsonChild,
    control: SocketAddr,
    data: SocketAddr,
}

impl JamPeer {
    /// Builds (if needed) and starts `jam peer --name NAME --listen LISTEN
    /// --print EXTRA...`, and waits for the line that names its ports.
    ///
    /// The first build in a cold target folder can take a minute: a test
    /// whose other peer runs against a clock builds `jam` first
    /// ([`crate::workspace_bin`]).
    pub fn start(name: &str, listen: &str, extra: &[&str]) -> JamPeer {
        JamPeer::start_bin(&crate::workspace_bin("jam-cli", "jam"), name, listen, extra)
    }

    /// [`JamPeer::start`] with the `jam` binary at `jam` (the jam-cli
    /// crate's own tests run the binary cargo built for them).
    pub fn start_bin(jam: &Path, name: &str, listen: &str, extra: &[&str]) -> JamPeer {
        JamPeer::start_command(Command::new(jam), name, listen, extra)
    }

    /// [`JamPeer::start`] with `jam` as `cmd`: the binary, or a wrapper
    /// that runs it (as [`crate::small_disk::SmallDisk::command`] does).
    pub fn start_command(mut cmd: Command, name: &str, listen: &str, extra: &[&str]) -> JamPeer {
        cmd.args(["peer", "--name", name, "--listen", listen, "--print"])
            .args(extra);
        let mut proc = JsonChild::spawn(&format!("jam peer {name}"), &mut cmd);
        // "jam peer NAME: listening on control A / data B"
        let line = proc.expect_stderr("the listening line", Duration::from_secs(30), |l| {
            l.contains("listening on control ")
        });
        let addr = |key: &str| -> SocketAddr {
            line.split(key)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("unexpected listening line: {line}"))
        };
        let (control, data) = (addr("control "), addr("data "));
        JamPeer {
            proc,
            control,
            data,
        }
    }

    /// Its control address.
    pub fn control(&self) -> SocketAddr {
        self.control
    }

    /// Its data address.
    pub fn data(&self) -> SocketAddr {
        self.data
    }

    /// The process (printed lines, stderr).
    pub fn process(&mut self) -> &mut JsonChild {
        &mut self.proc
    }

    /// Waits for the peer to exit by itself (`--duration`), and returns its
    /// status and every MIDI line it printed.
    pub fn wait(self, limit: Duration) -> (ExitStatus, Vec<Value>) {
        self.proc.wait(limit)
    }

    /// [`JamPeer::wait`], returning also what it printed that was not JSON
    /// and its stderr after the listening line.
    pub fn finish(self, limit: Duration) -> Exited {
        self.proc.finish(limit)
    }
}

/// The `midi` octets of printed lines from `from` that came from a MIDI
/// list (not `recovered` by the journal or by the end of a session).
pub fn played(lines: &[Value], from: &str) -> Vec<Vec<u8>> {
    lines
        .iter()
        .filter(|l| l["from"] == from && l["recovered"] == false)
        .map(|l| serde_json::from_value(l["midi"].clone()).expect("midi is a byte array"))
        .collect()
}
