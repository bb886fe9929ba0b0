//! [`JamdProcess`]: the real `jamd` binary serving on loopback from a data
//! directory, with open registration, killed when the test ends.
//!
//! Tests that need `jamd` in-process (its `Server` type) start it
//! themselves; this is for tests of processes that talk to it (`jam peer
//! --server`) and for killing and restarting it.

use crate::process::KillOnDrop;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port (for HTTP) and a free UDP port (for the relay) on
/// 127.0.0.1. They are free when this returns; a test that passes them on
/// straight away rarely loses them to another process.
pub fn free_ports() -> (SocketAddr, SocketAddr) {
    let t = TcpListener::bind("127.0.0.1:0").expect("binding a TCP port");
    let u = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP port");
    (
        t.local_addr().expect("a bound address"),
        u.local_addr().expect("a bound address"),
    )
}

/// A running `jamd serve` process (output discarded).
pub struct JamdProcess {
    proc: KillOnDrop,
    http: SocketAddr,
    relay: SocketAddr,
}

impl JamdProcess {
    /// Builds `jamd` if needed ([`crate::workspace_bin`]), starts it on
    /// free ports with its data in `dir`, and waits until it accepts
    /// connections on its HTTP port.
    pub fn start(dir: &Path) -> JamdProcess {
        let (http, relay) = free_ports();
        let jamd = JamdProcess::start_on(dir, http, relay);
        jamd.wait_listening();
        jamd
    }

    /// Starts `jamd serve --data-dir DIR --http-listen HTTP --relay-listen
    /// RELAY --registration open` and returns at once (a restarted `jamd`
    /// takes the same ports and directory again).
    pub fn start_on(dir: &Path, http: SocketAddr, relay: SocketAddr) -> JamdProcess {
        JamdProcess::start_on_with(dir, http, relay, &[])
    }

    /// [`JamdProcess::start_on`] with more flags (`--database-url`,
    /// `--node-name`, ...).
    pub fn start_on_with(
        dir: &Path,
        http: SocketAddr,
        relay: SocketAddr,
        extra: &[&str],
    ) -> JamdProcess {
        let bin = crate::workspace_bin("jam-control-plane", "jamd");
        let child = Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--http-listen", &http.to_string()])
            .args(["--relay-listen", &relay.to_string()])
            .args(["--registration", "open"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("jamd starts");
        JamdProcess {
            proc: KillOnDrop(child),
            http,
            relay,
        }
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Its HTTP address.
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    /// Its relay (UDP) address.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Waits up to 30 s until its HTTP port accepts connections.
    pub fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.http).is_err() {
            assert!(
                Instant::now() < deadline,
                "jamd did not listen on {}",
                self.http
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it with SIGKILL (no goodbye, no flush) and reaps it.
    pub fn kill(&mut self) {
        self.proc.0.kill().expect("killing jamd");
        let _ = self.proc.0.wait();
    }
}
