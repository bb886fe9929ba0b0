//! tshark for tests: [`LiveCapture`] records UDP on `lo` while a test runs,
//! and [`fields`] / [`applemidi_commands`] read a capture back through
//! tshark's dissectors.
//!
//! tshark's AppleMIDI dissector is heuristic: it recognises a session by
//! its `IN` and only then decodes that conversation's PT 97 packets as
//! RTP-MIDI. A capture must therefore be live before the first invitation.
//! "Capturing on 'lo'" is printed before packets are really being recorded,
//! so [`LiveCapture::start`] sends probe datagrams to itself (included in
//! the capture filter) until tshark reports one.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A tshark process writing a pcapng capture of `lo`.
pub struct LiveCapture {
    child: Child,
    /// Taken by [`LiveCapture::stop`], which hands it to the [`Capture`].
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

/// A finished capture file (deleted with this value).
pub struct Capture {
    _dir: tempfile::TempDir,
    /// The pcapng file.
    pub path: PathBuf,
}

impl LiveCapture {
    /// Starts capturing UDP on `lo` that matches the BPF expression
    /// `filter` (for example `portrange 5004-5005`), and returns once
    /// packets are really being recorded. Stops by itself after
    /// `max_duration` in any case.
    pub fn start(tshark: &Path, filter: &str, max_duration: Duration) -> LiveCapture {
        let dir = tempfile::Builder::new()
            .prefix("jam-capture-")
            .tempdir()
            .expect("create a scratch folder");
        let path = dir.path().join("capture.pcapng");
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
        let probe_port = probe.local_addr().expect("probe address").port();
        let bpf = format!("udp and (port {probe_port} or ({filter}))");
        let mut child = Command::new(tshark)
            .args(["-i", "lo", "-n", "-l", "-P", "-f", &bpf, "-a"])
            .arg(format!("duration:{}", max_duration.as_secs().max(1)))
            .arg("-w")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tshark");
        // With -P -l tshark prints a line per captured packet as it goes.
        let stdout = child.stdout.take().expect("piped stdout");
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = seen_tx.send(line);
            }
        });
        let live = (0..300).any(|_| {
            let _ = probe.send_to(b"probe", ("127.0.0.1", probe_port));
            seen_rx.recv_timeout(Duration::from_millis(100)).is_ok()
        });
        if !live {
            let _ = child.kill();
            panic!("tshark did not start capturing on lo (needs root or the wireshark group)");
        }
        LiveCapture {
            child,
            dir: Some(dir),
            path,
        }
    }

    /// Lets the last packets reach the file, stops tshark cleanly (SIGINT
    /// makes it finish the file) and returns the capture.
    pub fn stop(mut self) -> Capture {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("tshark exits");
        assert!(
            self.path.is_file(),
            "no capture written (tshark exit {status})"
        );
        Capture {
            path: self.path.clone(),
            _dir: self.dir.take().expect("stop runs once"),
        }
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `capture` with tshark (`extra` options first, for example decode
/// rules), keeps the packets matching the display filter `filter`, and
/// returns the values of `fields` for each, one row per packet. A field
/// that occurs several times in a packet comes back comma-separated.
pub fn fields(
    tshark: &Path,
    capture: &Path,
    extra: &[&str],
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new(tshark);
    cmd.arg("-r").arg(capture).args(extra).args([
        "-n",
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "separator=\t",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The frame numbers tshark flags as malformed or with an expert-info
/// entry (warnings, errors, notes) among those matching `filter`.
pub fn flagged_frames(tshark: &Path, capture: &Path, extra: &[&str], filter: &str) -> Vec<String> {
    fields(
        tshark,
        capture,
        extra,
        &format!("({filter}) && (_ws.malformed || _ws.expert)"),
        &["frame.number"],
    )
    .into_iter()
    .map(|row| row.join(" "))
    .collect()
}

/// The AppleMIDI session commands tshark decoded, as their two letters
/// (`IN`, `OK`, `CK`, ...).
pub fn applemidi_commands(tshark: &Path, capture: &Path) -> BTreeSet<String> {
    fields(tshark, capture, &[], "applemidi", &["applemidi.command"])
        .into_iter()
        .filter_map(|row| {
            let v = row.first()?.trim();
            let n = match v.strip_prefix("0x") {
                Some(hex) => u16::from_str_radix(hex, 16).ok()?,
                None => v.parse().ok()?,
            };
            let [a, b] = n.to_be_bytes();
            Some(String::from_utf8_lossy(&[a, b]).into_owned())
        })
        .collect()
}
