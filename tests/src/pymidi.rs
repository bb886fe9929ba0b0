//! [`PymidiPeer`]: pymidi 0.5.0 as an AppleMIDI responder in a subprocess
//! (`tests/python/pymidi_peer.py`, whose docstring lists what it prints and
//! reads), and [`Command`]s for it to send with pymidi's own packet
//! builder.
//!
//! pymidi only accepts invitations: a test invites its control port.

use crate::process::JsonChild;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// How long [`PymidiPeer::expect`] waits by default.
pub const LIMIT: Duration = Duration::from_secs(10);

/// The pymidi peer process.
pub struct PymidiPeer {
    proc: JsonChild,
    /// The script's first line: `{"event": "ready", "port", "control_ssrc", "data_ssrc"}`.
    pub ready: Value,
}

impl PymidiPeer {
    /// Starts the script with the project venv's `python`, a 30 s time
    /// limit and `extra` arguments, and waits for its ports.
    pub fn start(python: &Path, extra: &[&str]) -> PymidiPeer {
        let script = crate::workspace_root().join("tests/python/pymidi_peer.py");
        let mut cmd = std::process::Command::new(python);
        cmd.arg(&script).args(["--timeout", "30"]).args(extra);
        let mut proc = JsonChild::spawn("pymidi", &mut cmd);
        let ready = proc.expect("ready line", LIMIT, |_| true);
        assert_eq!(ready["event"], "ready", "{ready}");
        PymidiPeer { proc, ready }
    }

    /// Its control port on 127.0.0.1 (the data port is one up).
    pub fn control(&self) -> SocketAddr {
        let port = self.ready["port"].as_u64().expect("port") as u16;
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The SSRC it answers the control invitation with.
    pub fn ssrc(&self) -> u32 {
        self.ready["control_ssrc"].as_u64().expect("control_ssrc") as u32
    }

    /// Waits for the first line `pick` accepts (see [`JsonChild::expect`]).
    pub fn expect(&mut self, what: &str, pick: impl FnMut(&Value) -> bool) -> Value {
        self.proc.expect(what, LIMIT, pick)
    }

    /// Waits until both invitations (control and data port) were accepted.
    pub fn expect_joined(&mut self) {
        for port in ["control", "data"] {
            self.expect("connected", |v| {
                v["event"] == "connected" && v["port"] == port
            });
        }
    }

    /// Has pymidi build one RTP-MIDI packet of `commands` with its own
    /// builder and send it to every peer joined on its data port; returns
    /// the script's `sent` line (`seq`, `timestamp`, `hex`, `t_ns`).
    pub fn send(&mut self, commands: &[Command], running_status: bool) -> Value {
        let list: Vec<Value> = commands.iter().map(|c| json!(c.bytes)).collect();
        let deltas: Vec<Value> = commands.iter().map(|c| json!(c.delta)).collect();
        self.proc.send(&json!({
            "op": "send",
            "commands": list,
            "deltas": deltas,
            "running_status": running_status,
        }));
        self.expect("sent", |v| v["event"] == "sent")
    }

    /// Has pymidi send `count` one-note packets, one every `interval`
    /// (note on and note off in turn); their `sent` lines follow.
    pub fn send_series(&mut self, count: usize, interval: Duration) {
        self.proc.send(&json!({
            "op": "series",
            "count": count,
            "interval_ms": interval.as_secs_f64() * 1000.0,
        }));
    }

    /// The underlying process (raw lines, stderr).
    pub fn process(&mut self) -> &mut JsonChild {
        &mut self.proc
    }

    /// Waits for the script to exit on its own (it does after a `BY`) and
    /// returns its exit code and every line it printed.
    pub fn wait(self, limit: Duration) -> (Option<i32>, Vec<Value>) {
        let (status, lines) = self.proc.wait(limit);
        (status.code(), lines)
    }
}

/// One command for pymidi to send: status and data octets, and the delta
/// time written before it (ignored for the first command of a packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Status and data octets (note on/off, poly aftertouch, control change:
    /// the kinds pymidi's packet format knows).
    pub bytes: Vec<u8>,
    /// Delta time before this command, in 100 µs ticks.
    pub delta: Option<u32>,
}

impl Command {
    /// A command with no delta time of its own (0 when not first).
    pub fn new(bytes: &[u8]) -> Command {
        Command {
            bytes: bytes.to_vec(),
            delta: None,
        }
    }

    /// A command `delta` ticks after the previous one.
    pub fn after(delta: u32, bytes: &[u8]) -> Command {
        Command {
            bytes: bytes.to_vec(),
            delta: Some(delta),
        }
    }
}

/// One command as pymidi's command-section parser read it: status, the
/// two data octets and the delta time before it (`None` for the first).
pub type Parsed = (u8, u8, u8, Option<u64>);

/// The commands of one `midi` line, read back from pymidi's `[name,
/// channel, data1, data2, delta]` form; `None` for a command pymidi could
/// not name.
pub fn commands(midi_line: &Value) -> Vec<Option<Parsed>> {
    let list = midi_line["commands"].as_array().expect("commands array");
    list.iter()
        .map(|c| {
            let kind = match c[0].as_str()? {
                "note_off" => 0x80,
                "note_on" => 0x90,
                "aftertouch" => 0xA0,
                "control_mode_change" => 0xB0,
                _ => return None,
            };
            let channel = c[1].as_u64()? as u8;
            Some((
                kind | channel,
                c[2].as_u64()? as u8,
                c[3].as_u64()? as u8,
                c[4].as_u64(),
            ))
        })
        .collect()
}

/// The LEB128 reading of octets that pymidi (construct's `VarInt`) uses for
/// delta times, for showing how it misreads RFC 6295 deltas.
pub fn leb128(octets: &[u8]) -> u64 {
    octets
        .iter()
        .enumerate()
        .map(|(i, o)| u64::from(o & 0x7F) << (7 * i))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_reads_low_group_first() {
        // 200 in RFC 6295 order is 81 48; LEB128 reads it as 1 + 0x48 << 7.
        assert_eq!(leb128(&[0x81, 0x48]), 9217);
        assert_eq!(leb128(&[0x05]), 5);
        // 200 in LEB128 is C8 01.
        assert_eq!(leb128(&[0xC8, 0x01]), 200);
    }
}
